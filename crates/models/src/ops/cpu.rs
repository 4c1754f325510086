//! What every CPU kernel of this crate does before its loops: check that its operands are
//! all f32 or all f64, borrow each as a contiguous slice, and run the kernel written once
//! over [`Real`](super::Real) for that type. One place for it, so that each op states
//! only its kernel and the errors name the op the same way.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, WithDType};
use rayon::prelude::*;

use super::Real;

/// The float type a kernel runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Float {
    F32,
    F64,
}

/// The one float type of `storages` (all f32 or all f64), else an error naming `what`.
pub(crate) fn float_of(what: &str, storages: &[&CpuStorage]) -> Result<Float> {
    let dtypes: Vec<DType> = storages.iter().map(|s| s.dtype()).collect();
    match dtypes.first() {
        Some(DType::F32) if dtypes.iter().all(|&d| d == DType::F32) => Ok(Float::F32),
        Some(DType::F64) if dtypes.iter().all(|&d| d == DType::F64) => Ok(Float::F64),
        _ => candle_core::bail!("{what}: operands must be all f32 or all f64, got {dtypes:?}"),
    }
}

/// The elements of the contiguous tensor `(s, l)` as `&[T]`; errors name `what`.
pub(crate) fn contiguous<'a, T: WithDType>(
    what: &str,
    s: &'a CpuStorage,
    l: &Layout,
) -> Result<&'a [T]> {
    if s.dtype() != T::DTYPE {
        candle_core::bail!("{what}: expected {:?}, got {:?}", T::DTYPE, s.dtype())
    }
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&T::cpu_storage_as_slice(s)?[start..end]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

/// Fewest elements per parallel task of an element-wise kernel: large enough to
/// amortise rayon's dispatch.
pub(crate) const MIN_LEN: usize = 1 << 14;

/// An element-wise map of two equally shaped tensors, written once per float type.
pub(crate) trait Elementwise2 {
    /// What errors call the op.
    const WHAT: &'static str;
    fn map<T: Real>(a: &[T], b: &[T]) -> Vec<T>;
}

/// Runs `E::map` on two f32 or two f64 storages of one shape (else an error naming
/// `E::WHAT`); the result has that shape.
pub(crate) fn elementwise2<E: Elementwise2>(
    s1: &CpuStorage,
    l1: &Layout,
    s2: &CpuStorage,
    l2: &Layout,
) -> Result<(CpuStorage, Shape)> {
    if l1.dims() != l2.dims() {
        candle_core::bail!("{}: shapes {:?} and {:?}", E::WHAT, l1.dims(), l2.dims())
    }
    let out = with_real_slices!(E::WHAT, |a = (s1, l1), b = (s2, l2)| storage(E::map(a, b)));
    Ok((out, l1.shape().clone()))
}

/// `f(a[i], b[i])` for every `i`, in parallel. An indexed collect writes each element
/// once: no zero-filled buffer first.
pub(crate) fn zip_map<T: Real>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Vec<T> {
    a.par_iter()
        .zip(b)
        .with_min_len(MIN_LEN)
        .map(|(&a, &b)| f(a, b))
        .collect()
}

/// A kernel's output vector as the storage of its type.
pub(crate) fn storage<T: WithDType>(data: Vec<T>) -> CpuStorage {
    T::to_cpu_storage_owned(data)
}

/// `with_real_slices!(what, |a = (s1, l1), b = (s2, l2)| body)`: binds each name to its
/// storage's contiguous slice, all as `&[f32]` or all as `&[f64]` (else an error naming
/// `what`), and evaluates `body` for that type. `body` is compiled once per type, so the
/// kernel it calls is monomorphised as if written out for f32 and f64; it must have one
/// type for both (wrap a kernel's `Vec<T>` with [`storage`]). `?` in `body` returns from
/// the enclosing function.
macro_rules! with_real_slices {
    ($what:expr, |$($x:ident = ($s:expr, $l:expr)),+ $(,)?| $body:expr) => {{
        let what: &str = $what;
        match $crate::ops::cpu::float_of(what, &[$($s),+])? {
            $crate::ops::cpu::Float::F32 => {
                $(let $x = $crate::ops::cpu::contiguous::<f32>(what, $s, $l)?;)+
                $body
            }
            $crate::ops::cpu::Float::F64 => {
                $(let $x = $crate::ops::cpu::contiguous::<f64>(what, $s, $l)?;)+
                $body
            }
        }
    }};
}
pub(crate) use with_real_slices;
