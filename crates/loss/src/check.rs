//! Shape and range checks shared by the public functions: bad input is an error naming
//! the argument, never a panic or a silent wrong answer.

use candle_core::{DType, Tensor};

/// Dims of a tensor that must have the given rank.
pub(crate) fn dims<const N: usize>(
    t: &Tensor,
    what: &str,
    layout: &str,
) -> candle_core::Result<[usize; N]> {
    let d = t.dims();
    if d.len() != N {
        candle_core::bail!("{what} must be {layout}, got shape {:?}", d);
    }
    let mut out = [0usize; N];
    out.copy_from_slice(d);
    Ok(out)
}

/// Fails unless `t` has the shape of `like` (`context: t_name shape .. must equal
/// like_name shape ..`).
pub(crate) fn same_dims(
    t: &Tensor,
    like: &Tensor,
    context: &str,
    names: (&str, &str),
) -> candle_core::Result<()> {
    if t.dims() != like.dims() {
        candle_core::bail!(
            "{context}: {} shape {:?} must equal {} shape {:?}",
            names.0,
            t.dims(),
            names.1,
            like.dims()
        );
    }
    Ok(())
}

/// Fails unless `t` is a float tensor.
pub(crate) fn float(t: &Tensor, what: &str) -> candle_core::Result<()> {
    if !t.dtype().is_float() {
        candle_core::bail!("{what} must be a float tensor, got {:?}", t.dtype());
    }
    Ok(())
}

/// Class labels as i64, checked to lie in -1..num_classes (-1 = ignore). One host sync
/// of two scalars: an out-of-range label would otherwise crash the CPU gather and
/// assert on CUDA.
pub(crate) fn labels(t: &Tensor, num_classes: usize, what: &str) -> candle_core::Result<Tensor> {
    if t.dtype().is_float() {
        candle_core::bail!(
            "{what} must be an integer tensor (i64, -1 = ignore), got {:?}",
            t.dtype()
        );
    }
    let t = t.to_dtype(DType::I64)?;
    if t.elem_count() == 0 {
        return Ok(t);
    }
    let flat = t.flatten_all()?;
    // Both bounds in one copy: on a GPU every copy to the host is a synchronisation.
    let bounds = Tensor::stack(&[flat.min(0)?, flat.max(0)?], 0)?.to_vec1::<i64>()?;
    reco_util::ops_path::record_host_copy();
    let (lo, hi) = (bounds[0], bounds[1]);
    if lo < -1 || hi >= num_classes as i64 {
        candle_core::bail!(
            "{what} holds values in [{lo}, {hi}]; expected -1 (ignore) or 0..{num_classes}"
        );
    }
    Ok(t)
}
