//! What candle lacks for the original's optimisation (docs/design.md, candle gap 7): SGD with
//! momentum, nesterov and weight decay exactly as `torch.optim.SGD`, the poly learning
//! rate of the original (`PolyLR`, stepped per epoch), and the mean-teacher EMA; and for
//! foundation backbones AdamW with a learning-rate factor per parameter group
//! ([`adamw`]).

use std::collections::{BTreeMap, HashMap};

use candle_core::{backprop::GradStore, Result, Tensor, Var};

mod adamw;
mod cpu;
mod loss_scale;

pub use adamw::{AdamW, AdamWConfig};
pub use loss_scale::{LossScaler, Verdict, MAX_SKIPS_IN_A_ROW};

/// Which optimiser a run uses (`--optimizer`, config key `optimizer`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Nesterov SGD, the original's (and the DeepLabs' default).
    #[default]
    Sgd,
    /// AdamW, UniMatch V2's for DINOv2 (DPT's default).
    #[value(name = "adamw")]
    AdamW,
}

/// The run's optimiser, either kind behind one step and one saved state.
pub enum Optimizer {
    Sgd(Sgd),
    AdamW(AdamW),
}

/// The state-file prefix of SGD's momentum buffers.
const MOMENTUM: &str = "momentum/";

impl Optimizer {
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        match self {
            Optimizer::Sgd(o) => o.step(grads, lr),
            Optimizer::AdamW(o) => o.step(grads, lr),
        }
    }

    /// The optimiser's state as named tensors for the run's state file.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        match self {
            Optimizer::Sgd(o) => Ok(o
                .buffers()
                .iter()
                .map(|(k, v)| (format!("{MOMENTUM}{k}"), v.clone()))
                .collect()),
            Optimizer::AdamW(o) => o.state_tensors(),
        }
    }

    /// Restores [`Optimizer::state_tensors`] from a state file's tensors.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        match self {
            Optimizer::Sgd(o) => {
                o.set_buffers(
                    tensors
                        .iter()
                        .filter_map(|(k, t)| {
                            k.strip_prefix(MOMENTUM).map(|n| (n.to_string(), t.clone()))
                        })
                        .collect(),
                );
                Ok(())
            }
            Optimizer::AdamW(o) => o.load_state(tensors),
        }
    }
}

/// `torch.optim.SGD(params, lr, momentum, weight_decay, nesterov=True)` (dampening 0):
/// `g ← ∇ + wd·p; b ← g (first step) or μ·b + g; p ← p − lr·(g + μ·b)`.
pub struct Sgd {
    params: Vec<(String, Var)>,
    momentum: f64,
    weight_decay: f64,
    buffers: BTreeMap<String, Tensor>,
    /// Factors on the learning rate by parameter name (absent: 1).
    lr_factors: BTreeMap<String, f64>,
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
            lr_factors: BTreeMap::new(),
        }
    }

    /// Parameters whose learning rate is the scheduled one times a factor (e.g. a head
    /// trained faster than its pretrained encoder).
    pub fn with_lr_factors(self, lr_factors: BTreeMap<String, f64>) -> Self {
        Self { lr_factors, ..self }
    }

    /// One update with learning rate `lr`. A parameter without gradient is left as is
    /// (as PyTorch skips parameters whose `.grad` is None).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (name, var) in &self.params {
            let Some(grad) = grads.get(var.as_tensor()) else {
                continue;
            };
            let lr = lr * self.lr_factors.get(name).copied().unwrap_or(1.0);
            let p = var.as_detached_tensor();
            if cpu::use_kernels(&p) {
                // Two in-place passes; the first step's buffer starts at 0, so μ·0 + g = g.
                let grad = grad.detach().contiguous()?;
                let buf = match self.buffers.get(name) {
                    Some(b) => b.clone(),
                    None => p.zeros_like()?,
                };
                buf.inplace_op3(
                    &grad,
                    &p,
                    &cpu::InPlace(cpu::MomentumUpdate {
                        momentum: self.momentum,
                        weight_decay: self.weight_decay,
                    }),
                )?;
                p.inplace_op3(
                    &grad,
                    &buf,
                    &cpu::InPlace(cpu::NesterovUpdate {
                        momentum: self.momentum,
                        weight_decay: self.weight_decay,
                        lr,
                    }),
                )?;
                self.buffers.insert(name.clone(), buf);
                continue;
            }
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
            if cpu::use_kernels(&t) {
                t.inplace_op2(&s, &cpu::InPlace(cpu::EmaUpdate { decay }))?;
                continue;
            }
            teacher.set(&((t * decay)? + (s * (1.0 - decay))?)?)?;
        }
        self.updates += 1;
        Ok(())
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;
    use candle_core::{DType, Device};
    use reco_util::ops_path::{with_ops_path, OpsPath};

    /// Three SGD steps and EMA updates on one parameter, returning the student, the
    /// teacher and the momentum buffer.
    fn run(dtype: DType) -> Vec<Vec<f64>> {
        let dev = Device::Cpu;
        let init = Tensor::randn(0f32, 1.0, (3, 700), &dev)
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
        // The same draws for both paths: fixed gradients from a fixed seed-free formula.
        let grads: Vec<Tensor> = (0..3)
            .map(|k| {
                let v: Vec<f64> = (0..2100)
                    .map(|i| ((i * 7 + k * 13) % 17) as f64 / 17.0 - 0.4)
                    .collect();
                Tensor::from_vec(v, (3, 700), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            })
            .collect();
        let compute = |init: &Tensor| {
            let student = Var::from_tensor(init).unwrap();
            let teacher = Var::from_tensor(&init.copy().unwrap()).unwrap();
            let mut sgd = Sgd::new(vec![("w".into(), student.clone())], 0.9, 5e-4);
            let mut ema = Ema::new(vec![(teacher.clone(), student.clone())], 0.99);
            for (k, g) in grads.iter().enumerate() {
                // A GradStore holding `g` for the student: the gradient of sum(w * g).
                let store = (student.as_tensor() * g)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                sgd.step(&store, 1e-2 / (k + 1) as f64).unwrap();
                ema.update().unwrap();
            }
            [
                student.as_tensor().clone(),
                teacher.as_tensor().clone(),
                sgd.buffers()["w"].clone(),
            ]
            .iter()
            .map(|t| {
                t.to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
            })
            .collect::<Vec<_>>()
        };
        let kernels = compute(&init);
        let composed = with_ops_path(OpsPath::Generic, || compute(&init));
        assert_eq!(kernels.len(), composed.len());
        for (a, b) in kernels.iter().zip(&composed) {
            assert_eq!(a, b, "in-place kernels differ from the composed updates");
        }
        kernels
    }

    #[test]
    fn in_place_updates_equal_the_composed_ones_bit_for_bit() {
        for dtype in [DType::F32, DType::F64] {
            let out = run(dtype);
            // The updates did something: the student moved away from the teacher.
            assert_ne!(out[0], out[1]);
        }
    }
}
