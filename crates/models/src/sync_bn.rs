//! Synchronized batch norm: training-mode batch norm whose statistics are those of the
//! global batch spread over several processes (data-parallel training, docs/distributed.md).
//!
//! Forward: every rank sums `count`, `Σx` and `Σx²` per channel over its local batch; one
//! all-reduce gives the global sums, hence the global mean and (biased) variance, and each
//! rank normalises its own slice with them.
//!
//! Backward: the global statistics depend on every rank's input, so the input gradient
//! needs global sums too. With `x̂ = (x − μ)·σ⁻¹`, `g` the gradient reaching the
//! normalisation (after the ReLU's mask when fused) and `N` the global count,
//! `dx = γ·σ⁻¹·(g − ΣG/N − x̂·ΣGX/N)` where `ΣG = Σ_all g` and `ΣGX = Σ_all g·x̂` are
//! all-reduced over ranks. This is the gradient of the SUM of the ranks' losses; averaging
//! parameter gradients over ranks afterwards (as data-parallel training does) gives the
//! gradient of their mean. `dγ = Σ_local g·x̂` and `dβ = Σ_local g` stay local: they are
//! averaged with every other parameter gradient.
//!
//! Two paths compute this. On the CPU a fused kernel normalises (with the ReLU) and its
//! backward is the formula above. Off the CPU, and with `RECO_OPS=generic`, a composed
//! path of candle ops runs instead, so that any device (and any float type: f16/bf16
//! inputs are normalised in f32) gets it: `x̂ = (x − μ)·σ⁻¹` with the global statistics
//! as constants, then an identity op on `x̂` whose backward turns the gradient `h`
//! reaching `x̂` into `h − Σ_all h/N − x̂·Σ_all(h·x̂)/N` (one all-reduce), then `γ·x̂ + β`
//! and the ReLU by candle's own ops. Since `h = γ·g` and `γ` is per channel, the input
//! gradient is the formula above; `dγ`, `dβ` come from candle's autograd, local.
//!
//! Every rank must call [`sync_batch_norm`] (and run its backward) the same number of
//! times in the same order, as for any collective: the same network on every rank
//! guarantees it, since candle's backward visits the graph in a deterministic order.

use std::sync::Arc;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, MetalStorage, Result, Shape,
    Tensor,
};
use rayon::prelude::*;

use crate::ops::check_affine;
use crate::ops::cpu::{storage, with_real_slices};

/// The one collective synchronized batch norm needs. Implemented by the trainer's
/// process groups; `Send + Sync` because candle custom ops must be.
pub trait StatsAllReduce: Send + Sync {
    /// Element-wise sum of `t` over all ranks, returned on every rank (same shape,
    /// dtype and device as `t`). `t` is a small f64 vector (`1 + 2C` or `2C` values).
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
}

/// The group a model's batch-norm layers synchronize over: one reducer shared by every
/// layer (a model holds it, see [`crate::Network::with_sync_bn`], and hands it down the
/// forward pass in [`crate::Mode::sync`]).
#[derive(Clone)]
pub struct SyncBn(Arc<dyn StatsAllReduce>);

impl SyncBn {
    pub fn new(reducer: Arc<dyn StatsAllReduce>) -> Self {
        Self(reducer)
    }

    pub fn reducer(&self) -> Arc<dyn StatsAllReduce> {
        self.0.clone()
    }
}

impl std::fmt::Debug for SyncBn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncBn")
    }
}

/// The same group: the same reducer.
impl PartialEq for SyncBn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for SyncBn {}

/// Training-mode batch norm (optionally followed by ReLU) over `x [N,C,H,W]` with the
/// statistics of the global batch across the ranks of `group`. Returns the output and
/// the global batch statistics (biased variance), which are the same on every rank, for
/// the running-average update (with the unbiased factor of the GLOBAL count).
///
/// On the CPU (unless `RECO_OPS=generic`) a fused kernel; elsewhere the composed path of
/// the module documentation. Both backwards are candle ops plus one all-reduce.
pub fn sync_batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    group: Arc<dyn StatsAllReduce>,
    eps: f64,
    relu: bool,
) -> Result<(Tensor, GlobalStats)> {
    let (_, c, _, _) = x.dims4()?;
    check_affine("synchronized batch norm", c, weight, bias)?;
    let stats = global_stats(x, group.as_ref())?;
    if stats.count < 2.0 {
        candle_core::bail!(
            "synchronized batch norm needs more than one value per channel over all ranks, got {} (input {:?} on this rank)",
            stats.count,
            x.dims()
        )
    }
    if crate::ops::use_generic_path(x.device()) {
        let y = composed_sync_batch_norm(x, weight, bias, &stats, group, eps, relu)?;
        return Ok((y, stats));
    }
    let op = SyncBatchNormOp {
        stats: stats.clone(),
        eps,
        relu,
        group,
    };
    let y = x.contiguous()?.apply_op3(weight, bias, op)?;
    Ok((y, stats))
}

/// The device-generic synchronized batch norm (see the module documentation).
fn composed_sync_batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    stats: &GlobalStats,
    group: Arc<dyn StatsAllReduce>,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let c = weight.dim(0)?;
    let dev = x.device();
    // Batch norm stays in f32 under mixed precision; f64 stays f64.
    let work = if x.dtype() == DType::F64 {
        DType::F64
    } else {
        DType::F32
    };
    let per_channel = |v: Vec<f64>| -> Result<Tensor> {
        match work {
            DType::F64 => Tensor::from_vec(v, (1, c, 1, 1), dev),
            _ => Tensor::from_vec(
                v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
                (1, c, 1, 1),
                dev,
            ),
        }
    };
    let mean = per_channel(stats.mean.clone())?;
    let inv = per_channel(stats.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect())?;
    let xhat = x
        .to_dtype(work)?
        .broadcast_sub(&mean)?
        .broadcast_mul(&inv)?
        .apply_op1(SyncGradient {
            count: stats.count,
            group,
        })?;
    let y = xhat
        .broadcast_mul(&weight.to_dtype(work)?.reshape((1, c, 1, 1))?)?
        .broadcast_add(&bias.to_dtype(work)?.reshape((1, c, 1, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    y.to_dtype(x.dtype())
}

/// Identity on `x̂` whose backward adds what the other ranks' losses contribute through
/// the shared statistics: `h ↦ h − Σ_all h/N − x̂·Σ_all(h·x̂)/N`.
struct SyncGradient {
    count: f64,
    group: Arc<dyn StatsAllReduce>,
}

/// A copy of the tensor a storage and layout describe, on the storage's own device.
fn copy_of<S>(storage: &S, layout: &Layout) -> Result<(S, Shape)>
where
    S: BackendStorage,
    S::Device: BackendDevice<Storage = S>,
{
    let shape = layout.shape().clone();
    // SAFETY: every element of `dst` is written by the strided copy below.
    let mut dst = unsafe { storage.device().alloc_uninit(&shape, storage.dtype())? };
    storage.copy_strided_src(&mut dst, 0, layout)?;
    Ok((dst, shape))
}

impl CustomOp1 for SyncGradient {
    fn name(&self) -> &'static str {
        "reco-sync-batch-norm-gradient"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        copy_of(storage, layout)
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        copy_of(storage, layout)
    }

    fn metal_fwd(&self, storage: &MetalStorage, layout: &Layout) -> Result<(MetalStorage, Shape)> {
        copy_of(storage, layout)
    }

    fn bwd(&self, xhat: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let c = xhat.dim(1)?;
        let dtype = xhat.dtype();
        let grad = grad.to_dtype(dtype)?;
        let sh = grad.sum((0, 2, 3))?;
        let shx = grad.mul(xhat)?.sum((0, 2, 3))?;
        let local = Tensor::cat(&[&sh, &shx], 0)?.to_dtype(DType::F64)?;
        let global = self.group.all_reduce_sum(&local)?;
        if global.dims() != [2 * c] {
            candle_core::bail!(
                "synchronized batch norm backward: the all-reduce returned {:?}, expected [{}]",
                global.dims(),
                2 * c
            )
        }
        let global = (global / self.count)?.to_dtype(dtype)?;
        let mh = global.narrow(0, 0, c)?.reshape((1, c, 1, 1))?;
        let mhx = global.narrow(0, c, c)?.reshape((1, c, 1, 1))?;
        let dx = grad.broadcast_sub(&mh)?.sub(&xhat.broadcast_mul(&mhx)?)?;
        Ok(Some(dx))
    }
}

/// The statistics of the global batch: the same on every rank.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalStats {
    /// Values per channel over all ranks (`Σ N·H·W`).
    pub count: f64,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel biased variance.
    pub var: Vec<f64>,
}

impl GlobalStats {
    /// The unbiased variance for the running-statistics update (PyTorch's `n/(n−1)`).
    pub fn unbiased_var(&self) -> Vec<f64> {
        let f = self.count / (self.count - 1.0);
        self.var.iter().map(|v| v * f).collect()
    }
}

/// All-reduces `[count, Σx (C), Σx² (C)]` in f64 and turns it into mean and variance.
fn global_stats(x: &Tensor, group: &dyn StatsAllReduce) -> Result<GlobalStats> {
    let (n, c, h, w) = x.dims4()?;
    let xd = x.to_dtype(DType::F64)?;
    let sum = xd.sum((0, 2, 3))?;
    let sumsq = xd.sqr()?.sum((0, 2, 3))?;
    let count = Tensor::new(&[(n * h * w) as f64], x.device())?;
    let local = Tensor::cat(&[&count, &sum, &sumsq], 0)?;
    let global: Vec<f64> = group.all_reduce_sum(&local)?.to_vec1()?;
    if global.len() != 1 + 2 * c {
        candle_core::bail!(
            "synchronized batch norm: the all-reduce returned {} values, expected {}",
            global.len(),
            1 + 2 * c
        )
    }
    let total = global[0];
    let mean: Vec<f64> = global[1..1 + c].iter().map(|s| s / total).collect();
    // Σx²/N − μ² in f64; clamped because rounding can make it slightly negative.
    let var = global[1 + c..]
        .iter()
        .zip(&mean)
        .map(|(q, m)| (q / total - m * m).max(0.0))
        .collect();
    Ok(GlobalStats {
        count: total,
        mean,
        var,
    })
}

struct SyncBatchNormOp {
    stats: GlobalStats,
    eps: f64,
    relu: bool,
    group: Arc<dyn StatsAllReduce>,
}

impl SyncBatchNormOp {
    fn inv_std(&self) -> Vec<f64> {
        self.stats
            .var
            .iter()
            .map(|v| 1.0 / (v + self.eps).sqrt())
            .collect()
    }
}

fn normalize<T: candle_core::WithDType>(
    x: &[T],
    w: &[T],
    b: &[T],
    mean: &[f64],
    inv: &[f64],
    hw: usize,
    relu: bool,
) -> Vec<T> {
    let c = w.len();
    let mut y = vec![T::from_f64(0.0); x.len()];
    y.par_chunks_mut(hw)
        .zip(x.par_chunks(hw))
        .enumerate()
        .for_each(|(p, (yp, xp))| {
            let ch = p % c;
            let scale = w[ch].to_f64() * inv[ch];
            let shift = b[ch].to_f64() - mean[ch] * scale;
            for (yv, xv) in yp.iter_mut().zip(xp) {
                let v = xv.to_f64() * scale + shift;
                *yv = T::from_f64(if relu && v <= 0.0 { 0.0 } else { v });
            }
        });
    y
}

impl CustomOp3 for SyncBatchNormOp {
    fn name(&self) -> &'static str {
        "reco-sync-batch-norm"
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
        let dims = l1.dims();
        let hw = dims[2] * dims[3];
        let inv = self.inv_std();
        let mean = &self.stats.mean;
        let out = with_real_slices!(
            "synchronized batch norm",
            |x = (s1, l1), w = (s2, l2), b = (s3, l3)| {
                storage(normalize(x, w, b, mean, &inv, hw, self.relu))
            }
        );
        Ok((out, Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let c = w.dim(0)?;
        let dtype = x.dtype();
        let dev = x.device();
        let per_channel =
            |v: &[f64]| -> Result<Tensor> { Tensor::from_slice(v, (1, c, 1, 1), dev) };
        let mean = per_channel(&self.stats.mean)?;
        let inv = per_channel(&self.inv_std())?;
        // In f64 throughout: the sums below feed an all-reduce and a subtraction.
        let g = grad.to_dtype(DType::F64)?;
        let g = if self.relu {
            g.mul(&res.gt(0.0)?.to_dtype(DType::F64)?)?
        } else {
            g
        };
        let xhat = x
            .to_dtype(DType::F64)?
            .broadcast_sub(&mean)?
            .broadcast_mul(&inv)?;
        let sg = g.sum((0, 2, 3))?;
        let sgx = g.mul(&xhat)?.sum((0, 2, 3))?;
        let global = self.group.all_reduce_sum(&Tensor::cat(&[&sg, &sgx], 0)?)?;
        if global.dims() != [2 * c] {
            candle_core::bail!(
                "synchronized batch norm backward: the all-reduce returned {:?}, expected [{}]",
                global.dims(),
                2 * c
            )
        }
        let n = self.stats.count;
        let mg = (global.narrow(0, 0, c)? / n)?.reshape((1, c, 1, 1))?;
        let mgx = (global.narrow(0, c, c)? / n)?.reshape((1, c, 1, 1))?;
        let scale = w.to_dtype(DType::F64)?.reshape((1, c, 1, 1))?.mul(&inv)?;
        let dx = g
            .broadcast_sub(&mg)?
            .sub(&xhat.broadcast_mul(&mgx)?)?
            .broadcast_mul(&scale)?
            .to_dtype(dtype)?;
        Ok((
            Some(dx),
            Some(sgx.to_dtype(dtype)?),
            Some(sg.to_dtype(dtype)?),
        ))
    }
}
