//! Batch norm (optionally followed by ReLU) as one op with an explicit backward.
//!
//! Composed from candle ops, a train-mode batch norm keeps five full-size intermediates
//! alive for the backward pass (centred input, its square, the normalised input, the
//! scaled and the shifted one) and reads memory a dozen times. This op keeps only its
//! input and output, computes the statistics in f64 in two passes, and its backward is
//! the closed form `dx = γ·σ⁻¹·(g − mean(g) − x̂·mean(g·x̂))` (train) or `γ·σ⁻¹·g` (eval),
//! with the ReLU mask read from the output. On other devices (and with `RECO_OPS=generic`)
//! the composed form is used.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::cpu::{storage, with_real_slices};
use super::Real;

/// Per-channel batch mean and biased variance `[C]`, on the input's device, for the
/// caller's running-average update. Kept as tensors so that the device path never waits
/// for a copy to the host (two per layer would be ~200 round trips per ResNet-101 step).
#[derive(Clone, Debug)]
pub struct ChannelStats {
    /// f64 from the CPU kernel; the input's dtype on the device-generic path.
    pub mean: Tensor,
    pub var: Tensor,
}

/// The CPU kernel's statistics, computed and used on the host.
#[derive(Clone, Debug, PartialEq)]
struct HostStats {
    mean: Vec<f64>,
    var: Vec<f64>,
}

/// Where the normalisation statistics come from.
pub enum Normalize<'a> {
    /// Batch statistics (training); they are returned for the running-average update.
    Batch,
    /// Running statistics `[C]` (evaluation).
    Running { mean: &'a Tensor, var: &'a Tensor },
}

/// `relu?(γ · (x − μ) / √(σ² + eps) + β)` over `x [N,C,H,W]`, per channel. Returns the
/// output and, for [`Normalize::Batch`], the batch statistics (variance biased).
pub fn batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    norm: Normalize,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Option<ChannelStats>)> {
    let (n, c, h, w) = x.dims4()?;
    check_affine("batch norm", c, weight, bias)?;
    if matches!(norm, Normalize::Batch) && n * h * w < 2 {
        candle_core::bail!(
            "batch norm in training mode needs more than one value per channel, got input {:?}: use a batch of at least 2",
            x.dims()
        )
    }
    if super::use_generic_path(x.device()) {
        return composed(x, weight, bias, norm, eps, relu);
    }
    let given = match norm {
        Normalize::Batch => None,
        Normalize::Running { mean, var } => Some(HostStats {
            mean: mean.to_dtype(candle_core::DType::F64)?.to_vec1()?,
            var: var.to_dtype(candle_core::DType::F64)?.to_vec1()?,
        }),
    };
    let is_batch = given.is_none();
    let stats = Arc::new(Mutex::new(given));
    let op = BatchNormOp {
        eps,
        relu,
        train: is_batch,
        stats: stats.clone(),
    };
    let y = x.contiguous()?.apply_op3(weight, bias, op)?;
    let batch_stats = match (is_batch, lock(&stats)?.as_ref()) {
        (true, Some(s)) => Some(ChannelStats {
            mean: Tensor::new(s.mean.as_slice(), x.device())?,
            var: Tensor::new(s.var.as_slice(), x.device())?,
        }),
        _ => None,
    };
    Ok((y, batch_stats))
}

/// Errors unless `weight` and `bias` hold one value per channel (`what` names the op).
pub(crate) fn check_affine(what: &str, c: usize, weight: &Tensor, bias: &Tensor) -> Result<()> {
    if weight.dims() != [c] || bias.dims() != [c] {
        candle_core::bail!(
            "{what} over {c} channels got weight {:?} and bias {:?}",
            weight.dims(),
            bias.dims()
        )
    }
    Ok(())
}

fn lock(m: &Mutex<Option<HostStats>>) -> Result<std::sync::MutexGuard<'_, Option<HostStats>>> {
    m.lock()
        .map_err(|_| candle_core::Error::Msg("batch-norm statistics poisoned by a panic".into()))
}

/// The same computation from candle ops, for devices without the CPU kernel.
fn composed(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    norm: Normalize,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, Option<ChannelStats>)> {
    let c = x.dim(1)?;
    let (mean, var, stats) = match norm {
        Normalize::Batch => {
            let mean = x.mean_keepdim((0, 2, 3))?;
            let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim((0, 2, 3))?;
            let stats = ChannelStats {
                mean: mean.flatten_all()?,
                var: var.flatten_all()?,
            };
            (mean, var, Some(stats))
        }
        Normalize::Running { mean, var } => (
            mean.reshape((1, c, 1, 1))?,
            var.reshape((1, c, 1, 1))?,
            None,
        ),
    };
    let scale = weight
        .reshape((1, c, 1, 1))?
        .broadcast_div(&(var + eps)?.sqrt()?)?;
    let y = x
        .broadcast_sub(&mean)?
        .broadcast_mul(&scale)?
        .broadcast_add(&bias.reshape((1, c, 1, 1))?)?;
    Ok((if relu { y.relu()? } else { y }, stats))
}

struct BatchNormOp {
    eps: f64,
    relu: bool,
    /// Batch statistics (true) or the given running ones: selects the backward formula.
    train: bool,
    /// The statistics used: given (eval) or computed by the forward pass (train), kept
    /// for the backward pass and the caller's running-average update.
    stats: Arc<Mutex<Option<HostStats>>>,
}

/// Per-channel mean and biased variance of `x [N,C,HW]`, accumulated in f64 (two
/// passes: the variance from centred values, as PyTorch's CPU kernel does).
fn channel_stats<T: Real>(x: &[T], n: usize, c: usize, hw: usize) -> HostStats {
    let (mean, var) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = (0..n).map(|i| &x[(i * c + ch) * hw..(i * c + ch + 1) * hw]);
            let count = (n * hw) as f64;
            let mean = planes.clone().map(|p| lane_sum(p, |v| v)).sum::<f64>() / count;
            let sq: f64 = planes
                .map(|p| {
                    lane_sum(p, |v| {
                        let d = v - mean;
                        d * d
                    })
                })
                .sum();
            (mean, sq / count)
        })
        .unzip();
    HostStats { mean, var }
}

/// Independent f64 accumulators: a strict sequential f64 sum cannot be vectorised, and
/// one dependency chain of additions is several times slower than the memory it reads.
const LANES: usize = 8;

/// `Σ f(x)` over `xs` in f64, in [`LANES`] interleaved partial sums.
fn lane_sum<T: Real>(xs: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0f64; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(to_f64(v));
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|&v| f(to_f64(v))).sum();
    acc.iter().sum::<f64>() + tail
}

fn to_f64<T: Real>(v: T) -> f64 {
    <T as candle_core::WithDType>::to_f64(v)
}

fn to_t<T: Real>(v: f64) -> T {
    <T as candle_core::WithDType>::from_f64(v)
}

/// Per-channel `(scale, shift)` such that `y = scale·x + shift`.
fn affine<T: Real>(stats: &HostStats, w: &[T], b: &[T], eps: f64) -> Vec<(T, T)> {
    (0..w.len())
        .map(|ch| {
            let inv = 1.0 / (stats.var[ch] + eps).sqrt();
            let scale = to_f64(w[ch]) * inv;
            let shift = to_f64(b[ch]) - stats.mean[ch] * scale;
            (to_t(scale), to_t(shift))
        })
        .collect()
}

fn forward<T: Real>(x: &[T], coef: &[(T, T)], c: usize, hw: usize, relu: bool) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let (scale, shift) = coef[p % c];
            for (yv, &xv) in yp.iter_mut().zip(xp) {
                let v = xv * scale + shift;
                *yv = if relu && v <= T::zero() { T::zero() } else { v };
            }
        });
    y
}

impl CustomOp3 for BatchNormOp {
    fn name(&self) -> &'static str {
        "reco-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        let dims = l1.dims();
        let (n, c, hw) = (dims[0], dims[1], dims[2] * dims[3]);
        let mut stats = lock(&self.stats)?;
        let out = with_real_slices!(
            "batch norm",
            |x = (s1, l1), w = (s2, l2), b = (s3, l3)| {
                if stats.is_none() {
                    *stats = Some(channel_stats(x, n, c, hw));
                }
                let st = stats
                    .as_ref()
                    .ok_or_else(|| candle_core::Error::Msg("no statistics".into()))?;
                storage(forward(x, &affine(st, w, b, self.eps), c, hw, self.relu))
            }
        );
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // The backward pass runs here, on host slices, not in an op of its own.
        let _timed = super::timing::scope("reco-batch-norm-backward");
        let stats = lock(&self.stats)?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("batch norm backward before forward".into()))?;
        let grad = grad.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (bs, bl) = b.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(bs), Storage::Cpu(gs)) =
            (&*xs, &*ws, &*bs, &*gs)
        else {
            candle_core::bail!("batch norm backward: expected CPU tensors")
        };
        let (dims, x_dev) = (x.dims(), x.device());
        let (n, c, hw) = (dims[0], dims[1], dims[2] * dims[3]);
        let ctx = BackwardCtx {
            stats: &stats,
            eps: self.eps,
            relu: self.relu,
            train: self.train,
            n,
            c,
            hw,
        };
        let (dx, dw, db) = with_real_slices!(
            "batch norm backward",
            |x = (xs, xl), w = (ws, wl), b = (bs, bl), g = (gs, gl)| {
                let (dx, dw, db) = ctx.run(x, w, b, g);
                (
                    Tensor::from_vec(dx, dims, x_dev)?,
                    Tensor::from_vec(dw, c, x_dev)?,
                    Tensor::from_vec(db, c, x_dev)?,
                )
            }
        );
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

struct BackwardCtx<'a> {
    stats: &'a HostStats,
    eps: f64,
    relu: bool,
    train: bool,
    n: usize,
    c: usize,
    hw: usize,
}

impl BackwardCtx<'_> {
    fn run<T: Real>(&self, x: &[T], w: &[T], bias: &[T], g: &[T]) -> (Vec<T>, Vec<T>, Vec<T>) {
        let (n, c, hw) = (self.n, self.c, self.hw);
        let inv: Vec<f64> = self
            .stats
            .var
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect();
        // The gradient reaching the normalisation, after the ReLU's mask. The mask is
        // recomputed from x with the forward's own coefficients and arithmetic (the
        // output is `max(scale·x + shift, 0)`, so `y <= 0` exactly where
        // `scale·x + shift <= 0`, NaN included) rather than read from the output: these
        // passes read the forward's activations back from memory, and the output would
        // be a third full-size array to read.
        let relu = self.relu;
        let coef = affine(self.stats, w, bias, self.eps);
        let masked = move |g: T, x: T, (scale, shift): (T, T)| -> T {
            if relu && x * scale + shift <= T::zero() {
                T::zero()
            } else {
                g
            }
        };
        let plane = |p: usize| p * hw..(p + 1) * hw;
        // Σ g and Σ g·x̂ per channel, in f64 lanes (x̂ = (x − μ)·σ⁻¹, so
        // Σ g·x̂ = σ⁻¹·Σ g·(x − μ)).
        let (db, dw): (Vec<f64>, Vec<f64>) = (0..c)
            .into_par_iter()
            .map(|ch| {
                let mean = self.stats.mean[ch];
                let cf = coef[ch];
                let (mut sg, mut sgc) = (0.0, 0.0);
                for i in 0..n {
                    let r = plane(i * c + ch);
                    let (xs, gs) = (&x[r.clone()], &g[r]);
                    let mut acc_g = [0f64; LANES];
                    let mut acc_gc = [0f64; LANES];
                    // Exact chunks: the lane loop has no bounds checks.
                    let (xc, gc) = (xs.chunks_exact(LANES), gs.chunks_exact(LANES));
                    let tail = (xc.remainder(), gc.remainder());
                    for (x8, g8) in xc.zip(gc) {
                        for l in 0..LANES {
                            let gv = to_f64(masked(g8[l], x8[l], cf));
                            acc_g[l] += gv;
                            acc_gc[l] += gv * (to_f64(x8[l]) - mean);
                        }
                    }
                    for (&xv, &gv) in tail.0.iter().zip(tail.1) {
                        let gv = to_f64(masked(gv, xv, cf));
                        sg += gv;
                        sgc += gv * (to_f64(xv) - mean);
                    }
                    sg += acc_g.iter().sum::<f64>();
                    sgc += acc_gc.iter().sum::<f64>();
                }
                (sg, sgc * inv[ch])
            })
            .unzip();
        let count = (n * hw) as f64;
        // dx = γσ⁻¹·(g − mean(g) − x̂·mean(g·x̂)) = a·g − b·(x − μ) − c per channel, the
        // coefficients in f64 and the elementwise part in the tensor's type (as PyTorch).
        let mut dx = vec![T::zero(); x.len()];
        dx.par_chunks_mut(hw).enumerate().for_each(|(p, dxp)| {
            let ch = p % c;
            let scale = to_f64(w[ch]) * inv[ch];
            let (a, b, off, mean) = if self.train {
                let (mg, mgx) = (db[ch] / count, dw[ch] / count);
                (
                    scale,
                    scale * inv[ch] * mgx,
                    scale * mg,
                    self.stats.mean[ch],
                )
            } else {
                (scale, 0.0, 0.0, 0.0)
            };
            let (a, b, off, mean) = (to_t::<T>(a), to_t::<T>(b), to_t::<T>(off), to_t::<T>(mean));
            let (r, cf) = (plane(p), coef[ch]);
            for ((d, &gv), &xv) in dxp.iter_mut().zip(&g[r.clone()]).zip(&x[r]) {
                *d = a * masked(gv, xv, cf) - b * (xv - mean) - off;
            }
        });
        let cast = |v: Vec<f64>| v.into_iter().map(to_t::<T>).collect::<Vec<T>>();
        (dx, cast(dw), cast(db))
    }
}
