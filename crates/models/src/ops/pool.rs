//! The ResNet stem's 3x3 stride-2 max-pool with padding 1.
//!
//! candle 0.11's max_pool2d has no padding and its backward only works when kernel ==
//! stride. On the CPU (unless `RECO_OPS=generic`) this is a direct kernel whose backward routes each output gradient
//! to the first maximum of its window, as PyTorch does. On other devices it is composed
//! from differentiable ops: pad with −∞, split into the 2x2 stride phases, and select
//! the first of the nine taps equal to their maximum (so ties route the gradient as on
//! the CPU and in PyTorch).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{storage, with_real_slices};
use super::Real;

const K: usize = 3;
const STRIDE: usize = 2;
const PAD: usize = 1;

fn out_size(n: usize) -> usize {
    (n + 2 * PAD - K) / STRIDE + 1
}

/// Max-pool with kernel 3, stride 2, padding 1 over `x [N,C,H,W]`.
pub fn max_pool_3x3_s2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 2 || w < 2 {
        candle_core::bail!(
            "max-pool input {h}x{w} is too small: the image is too small for this network"
        )
    }
    if super::use_generic_path(x.device()) {
        max_pool_3x3_s2_composed(x)
    } else {
        x.contiguous()?.apply_op1(MaxPool)
    }
}

/// The device-generic composition used off the CPU (public for tests and benchmarks).
pub fn max_pool_3x3_s2_composed(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (ho, wo) = (out_size(h), out_size(w));
    // Pad to an even size that covers every tap: 2·(ho+1) rows.
    let (hp, wp) = (2 * (ho + 1), 2 * (wo + 1));
    let neg = f64::NEG_INFINITY;
    let fill = |t: &Tensor, dim: usize, before: usize, after: usize| -> Result<Tensor> {
        let mut parts = Vec::new();
        let mut shape = t.dims().to_vec();
        if before > 0 {
            shape[dim] = before;
            parts.push(Tensor::full(neg, shape.clone(), t.device())?.to_dtype(t.dtype())?);
        }
        parts.push(t.clone());
        if after > 0 {
            shape[dim] = after;
            parts.push(Tensor::full(neg, shape, t.device())?.to_dtype(t.dtype())?);
        }
        Tensor::cat(&parts, dim)
    };
    let x = fill(x, 2, PAD, hp - h - PAD)?;
    let x = fill(&x, 3, PAD, wp - w - PAD)?;
    let phases = x.reshape((n, c, hp / 2, 2, wp / 2, 2))?;
    let mut taps = Vec::with_capacity(K * K);
    for i in 0..K {
        for j in 0..K {
            taps.push(
                phases
                    .narrow(2, i / 2, ho)?
                    .narrow(3, i % 2, 1)?
                    .narrow(4, j / 2, wo)?
                    .narrow(5, j % 2, 1)?
                    .reshape((n, c, ho, wo))?,
            );
        }
    }
    // The maximum's value, without a graph: candle's `maximum` splits the gradient between
    // equal operands, PyTorch gives it all to the window's first maximum (row-major).
    let mut max = taps[0].detach();
    for tap in &taps[1..] {
        max = max.maximum(&tap.detach())?;
    }
    // Select each output from its first tap equal to the maximum; `where_cond` sends the
    // gradient to the selected tap only. A NaN tap is never equal, so it is selected
    // when no tap equals the maximum (PyTorch propagates NaN too).
    let mut out = max.clone();
    let mut taken = max.ne(&max)?.to_dtype(x.dtype())?;
    for tap in &taps {
        let hit = tap.detach().eq(&max)?.to_dtype(x.dtype())?;
        let first = (&hit * (1.0 - &taken)?)?;
        out = first.ne(0.0)?.where_cond(tap, &out)?;
        taken = (taken + first)?;
    }
    Ok(out)
}

/// Visits each output position of one `h x w` plane with the index (in the plane) of its
/// window's first maximum.
fn for_each_argmax<T: Real>(plane: &[T], h: usize, w: usize, mut f: impl FnMut(usize, usize)) {
    let (ho, wo) = (out_size(h), out_size(w));
    for oh in 0..ho {
        for ow in 0..wo {
            let mut best = None::<(usize, T)>;
            for ki in 0..K {
                let ih = (oh * STRIDE + ki) as isize - PAD as isize;
                if ih < 0 || ih >= h as isize {
                    continue;
                }
                for kj in 0..K {
                    let iw = (ow * STRIDE + kj) as isize - PAD as isize;
                    if iw < 0 || iw >= w as isize {
                        continue;
                    }
                    let idx = ih as usize * w + iw as usize;
                    let v = plane[idx];
                    // NaN propagates, as in PyTorch.
                    if best.is_none_or(|(_, b)| v > b || v.is_nan()) {
                        best = Some((idx, v));
                    }
                }
            }
            if let Some((idx, _)) = best {
                f(oh * wo + ow, idx);
            }
        }
    }
}

// Planes (image x channel) are independent: one rayon task each, in both passes
// (`max_pool_3x3_s2` guarantees H, W >= 2, so no chunk size is 0).

fn pool_fwd<T: Real>(x: &[T], dims: &[usize]) -> Vec<T> {
    let (h, w) = (dims[2], dims[3]);
    let plane_out = out_size(h) * out_size(w);
    let mut out = vec![T::zero(); dims[0] * dims[1] * plane_out];
    out.par_chunks_mut(plane_out)
        .zip(x.par_chunks(h * w))
        .for_each(|(out, plane)| for_each_argmax(plane, h, w, |o, i| out[o] = plane[i]));
    out
}

fn pool_bwd<T: Real>(x: &[T], g: &[T], dims: &[usize]) -> Vec<T> {
    let (h, w) = (dims[2], dims[3]);
    let plane_out = out_size(h) * out_size(w);
    let mut dx = vec![T::zero(); x.len()];
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .zip(g.par_chunks(plane_out))
        .for_each(|((dx, plane), g)| for_each_argmax(plane, h, w, |o, i| dx[i] += g[o]));
    dx
}

fn out_shape(dims: &[usize]) -> Shape {
    Shape::from((dims[0], dims[1], out_size(dims[2]), out_size(dims[3])))
}

struct MaxPool;

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "reco-max-pool-3x3-s2"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        let dims = l.dims();
        let out = with_real_slices!("max-pool", |x = (s, l)| storage(pool_fwd(x, dims)));
        Ok((out, out_shape(dims)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&grad.contiguous()?, &MaxPoolGrad)?))
    }
}

/// `(X, dY) → dX` for [`MaxPool`].
struct MaxPoolGrad;

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "reco-max-pool-3x3-s2-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        let dims = l1.dims();
        if out_shape(dims).dims() != l2.dims() {
            candle_core::bail!(
                "max-pool backward: gradient {:?} does not fit input {dims:?}",
                l2.dims()
            )
        }
        let out = with_real_slices!("max-pool backward", |x = (s1, l1), g = (s2, l2)| {
            storage(pool_bwd(x, g, dims))
        });
        Ok((out, Shape::from(dims)))
    }
}
