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

pub(super) trait Float: WithDType + num_traits::Float + Send + Sync {}
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

/// An element-wise update in place, `dst[i] ← f(dst[i], a[i], b[i])`, as candle's
/// in-place op through [`InPlace`]. The kernel is written once, generic over the element
/// type, and monomorphised for f32 and f64: each type gets its own inlined loop.
pub(super) trait Update: Sync {
    /// candle's name of the op.
    const NAME: &'static str;
    fn kernel<T: Float>(&self) -> impl Fn(T, T, T) -> T + Sync;
}

/// An [`Update`] as a candle in-place op: three operands (`dst`, `a`, `b`), or two
/// (`dst`, `a`; the kernel's third operand is `a` again and goes unused).
pub(super) struct InPlace<U>(pub U);

impl<U: Update> InplaceOp3 for InPlace<U> {
    fn name(&self) -> &'static str {
        U::NAME
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
        run(&self.0, s1, l1, (s2, l2), (s3, l3))
    }
}

impl<U: Update> InplaceOp2 for InPlace<U> {
    fn name(&self) -> &'static str {
        U::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        run(&self.0, s1, l1, (s2, l2), (s2, l2))
    }
}

/// `update` on f32 or f64 storages of one type.
fn run<U: Update>(
    update: &U,
    s1: &mut CpuStorage,
    l1: &Layout,
    a: (&CpuStorage, &Layout),
    b: (&CpuStorage, &Layout),
) -> Result<()> {
    match (s1, a.0, b.0) {
        (CpuStorage::F32(dst), CpuStorage::F32(_), CpuStorage::F32(_)) => {
            typed::<f32>(dst, l1, a, b, update.kernel(), U::NAME)
        }
        (CpuStorage::F64(dst), CpuStorage::F64(_), CpuStorage::F64(_)) => {
            typed::<f64>(dst, l1, a, b, update.kernel(), U::NAME)
        }
        _ => candle_core::bail!("{}: expected f32 or f64 tensors of one type", U::NAME),
    }
}

/// [`zip3`] over the tensors' ranges of their storages.
fn typed<T: Float>(
    dst: &mut [T],
    l1: &Layout,
    (sa, la): (&CpuStorage, &Layout),
    (sb, lb): (&CpuStorage, &Layout),
    f: impl Fn(T, T, T) -> T + Sync,
    name: &str,
) -> Result<()> {
    let (a, b) = (slice::<T>(sa, la, name)?, slice::<T>(sb, lb, name)?);
    zip3(range_mut(dst, l1, name)?, a, b, f)
}

/// The momentum buffer, in place: `b ← μ·b + (∇ + wd·p)`; operands `(∇, p)`.
pub(super) struct MomentumUpdate {
    pub momentum: f64,
    pub weight_decay: f64,
}

impl Update for MomentumUpdate {
    const NAME: &'static str = "reco-sgd-momentum";

    fn kernel<T: Float>(&self) -> impl Fn(T, T, T) -> T + Sync {
        let (m, wd) = (T::from_f64(self.momentum), T::from_f64(self.weight_decay));
        move |b: T, g: T, p: T| scale(b, m) + (g + scale(p, wd))
    }
}

/// The nesterov parameter update, in place: `p ← p − lr·((∇ + wd·p) + μ·b)`; operands
/// `(∇, b)` with `b` already updated.
pub(super) struct NesterovUpdate {
    pub momentum: f64,
    pub weight_decay: f64,
    pub lr: f64,
}

impl Update for NesterovUpdate {
    const NAME: &'static str = "reco-sgd-nesterov";

    fn kernel<T: Float>(&self) -> impl Fn(T, T, T) -> T + Sync {
        let (m, wd, lr) = (
            T::from_f64(self.momentum),
            T::from_f64(self.weight_decay),
            T::from_f64(self.lr),
        );
        move |p: T, g: T, b: T| p - scale((g + scale(p, wd)) + scale(b, m), lr)
    }
}

/// The mean teacher, in place: `t ← decay·t + (1 − decay)·s`; operand `s` (an
/// [`InplaceOp2`]).
pub(super) struct EmaUpdate {
    pub decay: f64,
}

impl Update for EmaUpdate {
    const NAME: &'static str = "reco-ema";

    fn kernel<T: Float>(&self) -> impl Fn(T, T, T) -> T + Sync {
        // Both scale factors as candle computes them: `t * decay`, `s * (1 - decay)`.
        let (d, rest) = (T::from_f64(self.decay), T::from_f64(1.0 - self.decay));
        move |t: T, s: T, _: T| scale(t, d) + scale(s, rest)
    }
}
