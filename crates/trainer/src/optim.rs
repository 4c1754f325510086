//! What candle lacks for the original's optimisation (docs/design.md, candle gap 7): SGD with
//! momentum, nesterov and weight decay exactly as `torch.optim.SGD`, the poly learning
//! rate of the original (`PolyLR`, stepped per epoch), and the mean-teacher EMA.

use std::collections::BTreeMap;

use candle_core::{backprop::GradStore, Result, Tensor, Var};

/// `torch.optim.SGD(params, lr, momentum, weight_decay, nesterov=True)` (dampening 0):
/// `g ← ∇ + wd·p; b ← g (first step) or μ·b + g; p ← p − lr·(g + μ·b)`.
pub struct Sgd {
    params: Vec<(String, Var)>,
    momentum: f64,
    weight_decay: f64,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// `params` by name; sorted so that the order never depends on a hash map.
    pub fn new(mut params: Vec<(String, Var)>, momentum: f64, weight_decay: f64) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            params,
            momentum,
            weight_decay,
            buffers: BTreeMap::new(),
        }
    }

    /// One update with learning rate `lr`. A parameter without gradient is left as is
    /// (as PyTorch skips parameters whose `.grad` is None).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (name, var) in &self.params {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let p = var.as_detached_tensor();
            let g = (grad.detach() + (&p * self.weight_decay)?)?;
            let buf = match self.buffers.get(name) {
                None => g.clone(),
                Some(b) => ((b * self.momentum)? + &g)?,
            };
            let update = (&g + (&buf * self.momentum)?)?;
            var.set(&(&p - (update * lr)?)?)?;
            self.buffers.insert(name.clone(), buf);
        }
        Ok(())
    }

    /// Momentum buffers by parameter name (for resuming).
    pub fn buffers(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    pub fn set_buffers(&mut self, buffers: BTreeMap<String, Tensor>) {
        self.buffers = buffers;
    }
}

/// The original's poly schedule, `max(base·(1 − epoch/epochs)^power, floor)`, for the
/// epoch that iteration `iter` falls in.
pub fn poly_lr(
    base: f64,
    iter: usize,
    epoch_iters: usize,
    total_iters: usize,
    power: f64,
    floor: f64,
) -> f64 {
    let epochs = total_iters.div_ceil(epoch_iters).max(1) as f64;
    let epoch = (iter / epoch_iters) as f64;
    (base * (1.0 - epoch / epochs).max(0.0).powf(power)).max(floor)
}

/// The original's mean teacher: after the `n`-th update (counted from 0) the teacher's
/// parameters become `d·teacher + (1 − d)·student` with `d = min(1 − 1/(n + 1), alpha)`.
/// Batch-norm running statistics are not averaged (the teacher keeps its own).
pub struct Ema {
    pairs: Vec<(Var, Var)>,
    alpha: f64,
    pub updates: u64,
}

impl Ema {
    /// `pairs`: (teacher, student) variables of the same parameter.
    pub fn new(pairs: Vec<(Var, Var)>, alpha: f64) -> Self {
        Self {
            pairs,
            alpha,
            updates: 0,
        }
    }

    pub fn update(&mut self) -> Result<()> {
        let decay = (1.0 - 1.0 / (self.updates as f64 + 1.0)).min(self.alpha);
        for (teacher, student) in &self.pairs {
            let t = teacher.as_detached_tensor();
            let s = student.as_detached_tensor();
            teacher.set(&((t * decay)? + (s * (1.0 - decay))?)?)?;
        }
        self.updates += 1;
        Ok(())
    }
}
