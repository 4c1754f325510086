//! `torch.optim.AdamW` (decoupled weight decay, no amsgrad), the optimiser foundation
//! backbones are fine-tuned with (UniMatch V2: betas (0.9, 0.999), eps 1e-8, weight decay
//! 0.01 on every parameter). candle-nn 0.11 has an `AdamW`, but with one learning rate
//! for all its variables and no access to its moments for saving a run's state; this one
//! takes a learning-rate factor per parameter (the encoder's and the head's groups) and
//! exposes its state.
//!
//! Per step `t` (from 1), with `lr_p = lr · factor_p`:
//! `p ← p·(1 − lr_p·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
//! p ← p − lr_p/(1−β1^t) · m / (√v / √(1−β2^t) + eps)`.

use std::collections::{BTreeMap, HashMap};

use candle_core::{backprop::GradStore, Result, Tensor, Var};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// PyTorch's defaults with UniMatch V2's weight decay.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// The first and second moments of one parameter.
#[derive(Clone, Debug)]
struct Moments {
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    cfg: AdamWConfig,
    /// (name, variable, learning-rate factor), sorted by name.
    params: Vec<(String, Var, f64)>,
    moments: BTreeMap<String, Moments>,
    /// Steps taken (PyTorch keeps one per parameter; they are equal here, as every
    /// parameter with a gradient steps together).
    steps: u64,
}

/// Keys of the optimiser's tensors in a run's state file.
const EXP_AVG: &str = "adamw.exp_avg/";
const EXP_AVG_SQ: &str = "adamw.exp_avg_sq/";
const STEPS: &str = "adamw.steps";

impl AdamW {
    /// `params`: name, variable and the factor on the scheduled learning rate.
    pub fn new(mut params: Vec<(String, Var, f64)>, cfg: AdamWConfig) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            cfg,
            params,
            moments: BTreeMap::new(),
            steps: 0,
        }
    }

    /// One update at learning rate `lr` (times each parameter's factor). A parameter
    /// without gradient is left as is, moments included (PyTorch skips `.grad is None`).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let c = self.cfg;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        for (name, var, factor) in &self.params {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            let lr_p = lr * factor;
            let p = var.as_detached_tensor();
            let (m, v) = match self.moments.get(name) {
                Some(mo) => (mo.m.clone(), mo.v.clone()),
                None => (p.zeros_like()?, p.zeros_like()?),
            };
            let m = ((m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let denom = ((v.sqrt()? / bias2_sqrt)? + c.eps)?;
            let decayed = (&p * (1.0 - lr_p * c.weight_decay))?;
            let update = ((&m / &denom)? * (lr_p / bias1))?;
            var.set(&(decayed - update)?)?;
            self.moments.insert(name.clone(), Moments { m, v });
        }
        Ok(())
    }

    /// The moments and the step count as named tensors for the run's state file.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.moments.len() + 1);
        for (name, mo) in &self.moments {
            out.push((format!("{EXP_AVG}{name}"), mo.m.clone()));
            out.push((format!("{EXP_AVG_SQ}{name}"), mo.v.clone()));
        }
        let steps = Tensor::new(&[self.steps as f64], &candle_core::Device::Cpu)?;
        out.push((STEPS.to_string(), steps));
        Ok(out)
    }

    /// Restores [`AdamW::state_tensors`] (tensors of other keys are ignored).
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let steps = tensors
            .get(STEPS)
            .ok_or_else(|| candle_core::Error::Msg(format!("the state holds no {STEPS}")))?;
        self.steps = steps
            .flatten_all()?
            .to_vec1::<f64>()?
            .first()
            .copied()
            .unwrap_or(0.0) as u64;
        self.moments.clear();
        for (key, m) in tensors {
            let Some(name) = key.strip_prefix(EXP_AVG) else {
                continue;
            };
            let v = tensors.get(&format!("{EXP_AVG_SQ}{name}")).ok_or_else(|| {
                candle_core::Error::Msg(format!("the state has {key} but no {EXP_AVG_SQ}{name}"))
            })?;
            self.moments.insert(
                name.to_string(),
                Moments {
                    m: m.clone(),
                    v: v.clone(),
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Three steps on one parameter against the update written out by hand (what
    /// `torch.optim.AdamW` computes), with a factor on the learning rate.
    #[test]
    fn matches_the_adamw_update_and_restores_its_state() {
        let dev = Device::Cpu;
        let w0 = [0.5f64, -1.0, 2.0];
        let var = Var::from_tensor(&Tensor::new(&w0, &dev).unwrap()).unwrap();
        let cfg = AdamWConfig::default();
        let mut opt = AdamW::new(vec![("w".into(), var.clone(), 2.0)], cfg);
        let gs = [[0.1f64, -0.2, 0.3], [0.0, 0.5, -0.1], [1.0, 1.0, 1.0]];
        let (mut w, mut m, mut v) = (w0, [0.0; 3], [0.0; 3]);
        for (k, g) in gs.iter().enumerate() {
            let gt = Tensor::new(g, &dev).unwrap();
            let store = (var.as_tensor() * &gt)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let lr = 1e-2 / (k + 1) as f64;
            opt.step(&store, lr).unwrap();
            let t = (k + 1) as i32;
            let lr_p = 2.0 * lr;
            for i in 0..3 {
                w[i] *= 1.0 - lr_p * cfg.weight_decay;
                m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * g[i];
                v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * g[i] * g[i];
                let denom = v[i].sqrt() / (1.0 - cfg.beta2.powi(t)).sqrt() + cfg.eps;
                w[i] -= lr_p / (1.0 - cfg.beta1.powi(t)) * m[i] / denom;
            }
            let ours = var.as_tensor().to_vec1::<f64>().unwrap();
            for i in 0..3 {
                assert!(
                    (ours[i] - w[i]).abs() < 1e-12,
                    "step {k}: {ours:?} vs {w:?}"
                );
            }
        }
        // The state round-trips: a fresh optimiser continues identically.
        let state: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        let copy = Var::from_tensor(&var.as_tensor().copy().unwrap()).unwrap();
        let mut resumed = AdamW::new(vec![("w".into(), copy.clone(), 2.0)], cfg);
        resumed.load_state(&state).unwrap();
        let g = Tensor::new(&[0.3f64, 0.3, -0.3], &dev).unwrap();
        for (o, x) in [(&mut opt, &var), (&mut resumed, &copy)] {
            let store = (x.as_tensor() * &g)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            o.step(&store, 1e-3).unwrap();
        }
        assert_eq!(
            var.as_tensor().to_vec1::<f64>().unwrap(),
            copy.as_tensor().to_vec1::<f64>().unwrap()
        );
    }
}
