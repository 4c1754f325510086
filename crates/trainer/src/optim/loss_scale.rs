//! Dynamic loss scaling for f16 training, as `torch.amp.GradScaler` with its defaults:
//! the loss is multiplied by the scale before the backward pass so that small f16
//! gradients do not flush to zero; the gradients are divided by it before SGD. A step
//! whose gradients hold an inf or NaN is skipped and the scale halved; after 2000
//! steps in a row without one the scale doubles. candle has no GradScaler.

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};

/// GradScaler's `init_scale`.
pub const INITIAL_SCALE: f64 = 65536.0;
/// GradScaler's `growth_interval`.
pub const GROWTH_INTERVAL: u64 = 2000;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
/// Skipped steps in a row after which the run stops: from 2^16 the scale is then 2^-14,
/// the smallest normal f16, and the overflow is no longer a matter of the scale.
pub const MAX_SKIPS_IN_A_ROW: u64 = 30;

/// The scale and its counters (saved with the run state, so a resumed run continues
/// with the same scale).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    /// Good steps since the last change of the scale.
    pub good_steps: u64,
    /// Steps skipped in a row (0 after a good one).
    pub skips_in_a_row: u64,
    /// Steps skipped in all.
    pub skipped: u64,
}

/// What [`LossScaler::unscale`] decided for one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The gradients are finite and were divided by the scale: take the step.
    Step,
    /// A gradient held an inf or NaN: skip the step (the scale was halved).
    Skip,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: INITIAL_SCALE,
            good_steps: 0,
            skips_in_a_row: 0,
            skipped: 0,
        }
    }
}

impl LossScaler {
    /// `loss · scale`, the tensor to run the backward pass from.
    pub fn scale_loss(&self, loss: &Tensor) -> Result<Tensor> {
        loss * self.scale
    }

    /// Checks the gradients of `vars` in `grads` (one host read for all of them), divides
    /// them by the scale when finite, and updates the scale for the next step.
    pub fn unscale(&mut self, vars: &[Var], grads: &mut GradStore) -> Result<Verdict> {
        let mut sums = Vec::new();
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                sums.push(g.to_dtype(DType::F32)?.sum_all()?);
            }
        }
        // An inf or NaN anywhere makes the total non-finite (inf - inf = NaN).
        let finite = match sums.is_empty() {
            true => true,
            false => Tensor::stack(&sums, 0)?
                .sum_all()?
                .to_scalar::<f32>()?
                .is_finite(),
        };
        if !finite {
            self.scale *= BACKOFF_FACTOR;
            self.good_steps = 0;
            self.skips_in_a_row += 1;
            self.skipped += 1;
            return Ok(Verdict::Skip);
        }
        let inv = 1.0 / self.scale;
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * inv)?);
            }
        }
        self.skips_in_a_row = 0;
        self.good_steps += 1;
        if self.good_steps == GROWTH_INTERVAL {
            self.scale *= GROWTH_FACTOR;
            self.good_steps = 0;
        }
        Ok(Verdict::Step)
    }

    /// The state as four f64 values, for the run state file.
    pub fn to_values(self) -> [f64; 4] {
        [
            self.scale,
            self.good_steps as f64,
            self.skips_in_a_row as f64,
            self.skipped as f64,
        ]
    }

    /// The state from [`Self::to_values`]; `None` when the values cannot be one.
    pub fn from_values(v: &[f64]) -> Option<Self> {
        match v {
            [scale, good, row, all]
                if scale.is_finite()
                    && *scale > 0.0
                    && [good, row, all].iter().all(|c| **c >= 0.0) =>
            {
                Some(Self {
                    scale: *scale,
                    good_steps: *good as u64,
                    skips_in_a_row: *row as u64,
                    skipped: *all as u64,
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn grads_of(v: &Var, k: f32) -> GradStore {
        let w = Tensor::new(&[k, 2.0 * k], &Device::Cpu).unwrap();
        (v.as_tensor() * w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }

    #[test]
    fn finite_gradients_are_unscaled_and_the_scale_grows_after_the_interval() {
        let v = Var::new(&[1f32, 1.0], &Device::Cpu).unwrap();
        let mut s = LossScaler::default();
        let mut g = grads_of(&v, 4.0 * s.scale as f32);
        assert_eq!(
            s.unscale(std::slice::from_ref(&v), &mut g).unwrap(),
            Verdict::Step
        );
        let got = g.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got, vec![4.0, 8.0]);
        s.good_steps = GROWTH_INTERVAL - 1;
        let mut g = grads_of(&v, 1.0);
        s.unscale(std::slice::from_ref(&v), &mut g).unwrap();
        assert_eq!((s.scale, s.good_steps), (2.0 * INITIAL_SCALE, 0));
    }

    #[test]
    fn an_inf_or_nan_skips_the_step_and_halves_the_scale() {
        let v = Var::new(&[1f32, 1.0], &Device::Cpu).unwrap();
        for bad in [f32::INFINITY, f32::NAN] {
            let mut s = LossScaler {
                good_steps: 5,
                ..LossScaler::default()
            };
            let mut g = grads_of(&v, bad);
            assert_eq!(
                s.unscale(std::slice::from_ref(&v), &mut g).unwrap(),
                Verdict::Skip
            );
            assert_eq!(s.scale, INITIAL_SCALE / 2.0);
            assert_eq!((s.good_steps, s.skips_in_a_row, s.skipped), (0, 1, 1));
        }
    }

    #[test]
    fn the_state_round_trips_and_bad_values_are_refused() {
        let s = LossScaler {
            scale: 1024.0,
            good_steps: 17,
            skips_in_a_row: 2,
            skipped: 9,
        };
        assert_eq!(LossScaler::from_values(&s.to_values()), Some(s));
        assert_eq!(LossScaler::from_values(&[0.0, 1.0, 0.0, 0.0]), None);
        assert_eq!(LossScaler::from_values(&[f64::NAN, 1.0, 0.0, 0.0]), None);
        assert_eq!(LossScaler::from_values(&[1.0, 2.0, 0.0]), None);
    }
}
