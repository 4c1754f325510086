//! Softmax over the last dimension with a backward pass, fused on the CPU.
//!
//! candle-nn's fused `softmax_last_dim` has no backward, and the composed softmax (max,
//! subtract, exp, sum, divide) keeps four tensors of the input's size alive for the
//! backward and walks them a dozen times: for a ViT's attention (`heads × N²` per image,
//! 11 M elements per block of DINOv2-S at 518 pixels) that is most of the step's
//! element-wise time and memory. Here the forward is one pass per row, the graph keeps
//! only the output, and the backward `x̄ = y ⊙ (ȳ − ⟨ȳ, y⟩)` is one more. On other
//! devices (and with `RECO_OPS=generic`) the composition is used.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu::{storage, with_real_slices};
use super::Real;

/// Rows per parallel task, at least.
const MIN_ROWS: usize = 16;

/// Softmax over the last dimension of `x`; `grad`: whether gradients will flow through
/// it. On the CPU (f32, f64) the fused op of this module either way, so that a forward
/// pass computes the same with and without a graph; elsewhere candle-nn's fused op
/// without a graph and the composition with one.
pub fn softmax_last_dim(x: &Tensor, grad: bool) -> Result<Tensor> {
    match (super::takes_cpu_kernel(x), grad) {
        (true, _) => x.contiguous()?.apply_op1(SoftmaxLastDim),
        (false, false) => candle_nn::ops::softmax_last_dim(x),
        (false, true) => candle_nn::ops::softmax(x, D::Minus1),
    }
}

fn row_len(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

fn forward<T: Real>(x: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .with_min_len(MIN_ROWS)
        .for_each(|(y, x)| {
            let max = x
                .iter()
                .copied()
                .fold(T::neg_infinity(), num_traits::Float::max);
            let mut sum = T::zero();
            for (y, &x) in y.iter_mut().zip(x) {
                *y = (x - max).exp();
                sum += *y;
            }
            let inv = T::one() / sum;
            y.iter_mut().for_each(|y| *y *= inv);
        });
    out
}

fn backward<T: Real>(y: &[T], g: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); y.len()];
    out.par_chunks_mut(n)
        .zip(y.par_chunks(n).zip(g.par_chunks(n)))
        .with_min_len(MIN_ROWS)
        .for_each(|(dx, (y, g))| {
            let mut dot = T::zero();
            for (&y, &g) in y.iter().zip(g) {
                dot += y * g;
            }
            for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                *dx = y * (g - dot);
            }
        });
    out
}

struct SoftmaxLastDim;

impl CustomOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "reco-softmax-last-dim"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        let n = row_len(l);
        let out = with_real_slices!("softmax", |x = (s, l)| storage(forward(x, n)));
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?,
        ))
    }
}

/// `(y, ȳ) → y ⊙ (ȳ − ⟨ȳ, y⟩)` row by row.
struct SoftmaxBackward;

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "reco-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        if l1.dims() != l2.dims() {
            candle_core::bail!(
                "softmax backward: shapes {:?} and {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        let n = row_len(l1);
        let out = with_real_slices!("softmax backward", |y = (s1, l1), g = (s2, l2)| storage(
            backward(y, g, n)
        ));
        Ok((out, l1.shape().clone()))
    }
}
