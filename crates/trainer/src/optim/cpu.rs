//! The optimiser's and the EMA's element-wise updates as in-place CPU kernels.
//!
//! Composed from candle ops, one SGD step costs nine full passes over every parameter
//! (eight fresh tensors plus the copy into the variable) and one EMA update four; for the
//! default run's ResNet-18 DeepLabV3+ that is about 2 GB of memory traffic per training
//! step, a large part of the step. Here each is one pass that writes in place. The
//! arithmetic is candle's, operation by operation (`x * s` is candle's affine
//! `x·s + 0`, in the tensor's type), so the results equal the composed ones. Other
//! devices, and `RECO_OPS=generic`, keep the composition.

use candle_core::{CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, WithDType};
use rayon::prelude::*;

/// Fewest elements per parallel task.
const MIN_LEN: usize = 1 << 14;

/// True when `t` takes the in-place CPU kernels.
pub(super) fn use_kernels(t: &Tensor) -> bool {
    t.device().is_cpu() && !reco_util::ops_path::generic_forced()
}

trait Float: WithDType + num_traits::Float + Send + Sync {}
impl Float for f32 {}
impl Float for f64 {}

/// candle's `x * s` (affine with add 0) in the element type.
#[inline(always)]
fn scale<T: Float>(x: T, s: T) -> T {
    x * s + T::zero()
}

fn slice<'a, T: Float>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// The tensor's range of a mutable storage vector.
fn range_mut<'a, T>(v: &'a mut [T], l: &Layout, what: &str) -> Result<&'a mut [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// `dst[i] = f(dst[i], a[i], b[i])` in parallel.
fn zip3<T: Float>(dst: &mut [T], a: &[T], b: &[T], f: impl Fn(T, T, T) -> T + Sync) -> Result<()> {
    if a.len() != dst.len() || b.len() != dst.len() {
        candle_core::bail!(
            "optimiser update: {} elements against {} and {}",
            dst.len(),
            a.len(),
            b.len()
        )
    }
    dst.par_iter_mut()
        .zip(a.par_iter().zip(b))
        .with_min_len(MIN_LEN)
        .for_each(|(d, (&a, &b))| *d = f(*d, a, b));
    Ok(())
}

/// Runs a three-operand kernel on f32 or f64 storages.
macro_rules! dispatch3 {
    ($name:expr, $s1:ident, $l1:ident, $s2:ident, $l2:ident, $s3:ident, $l3:ident, |$t:ident| $f:expr) => {
        match ($s1, $s2, $s3) {
            (CpuStorage::F32(dst), CpuStorage::F32(_), CpuStorage::F32(_)) => {
                type $t = f32;
                let (a, b) = (slice::<$t>($s2, $l2, $name)?, slice::<$t>($s3, $l3, $name)?);
                zip3(range_mut(dst, $l1, $name)?, a, b, $f)
            }
            (CpuStorage::F64(dst), CpuStorage::F64(_), CpuStorage::F64(_)) => {
                type $t = f64;
                let (a, b) = (slice::<$t>($s2, $l2, $name)?, slice::<$t>($s3, $l3, $name)?);
                zip3(range_mut(dst, $l1, $name)?, a, b, $f)
            }
            _ => candle_core::bail!("{}: expected f32 or f64 tensors of one type", $name),
        }
    };
}

/// The momentum buffer, in place: `b ← μ·b + (∇ + wd·p)`; operands `(∇, p)`.
pub(super) struct MomentumUpdate {
    pub momentum: f64,
    pub weight_decay: f64,
}

impl InplaceOp3 for MomentumUpdate {
    fn name(&self) -> &'static str {
        "reco-sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (m, wd) = (self.momentum, self.weight_decay);
        dispatch3!(self.name(), s1, l1, s2, l2, s3, l3, |T| {
            let (m, wd) = (T::from_f64(m), T::from_f64(wd));
            move |b: T, g: T, p: T| scale(b, m) + (g + scale(p, wd))
        })
    }
}

/// The nesterov parameter update, in place: `p ← p − lr·((∇ + wd·p) + μ·b)`; operands
/// `(∇, b)` with `b` already updated.
pub(super) struct NesterovUpdate {
    pub momentum: f64,
    pub weight_decay: f64,
    pub lr: f64,
}

impl InplaceOp3 for NesterovUpdate {
    fn name(&self) -> &'static str {
        "reco-sgd-nesterov"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (m, wd, lr) = (self.momentum, self.weight_decay, self.lr);
        dispatch3!(self.name(), s1, l1, s2, l2, s3, l3, |T| {
            let (m, wd, lr) = (T::from_f64(m), T::from_f64(wd), T::from_f64(lr));
            move |p: T, g: T, b: T| p - scale((g + scale(p, wd)) + scale(b, m), lr)
        })
    }
}

/// The mean teacher, in place: `t ← decay·t + (1 − decay)·s`; operand `s`.
pub(super) struct EmaUpdate {
    pub decay: f64,
}

impl InplaceOp2 for EmaUpdate {
    fn name(&self) -> &'static str {
        "reco-ema"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let name = self.name();
        // Both scale factors as candle computes them: `t * decay`, `s * (1 - decay)`.
        let (d, rest) = (self.decay, 1.0 - self.decay);
        dispatch3!(name, s1, l1, s2, l2, s2, l2, |T| {
            let (d, rest) = (T::from_f64(d), T::from_f64(rest));
            move |t: T, s: T, _: T| scale(t, d) + scale(s, rest)
        })
    }
}
