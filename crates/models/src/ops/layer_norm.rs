//! Layer norm over the last dimension, differentiable: candle-nn 0.11's `LayerNorm` (and
//! `candle_nn::ops::layer_norm`) runs a fused op without a backward pass
//! (`apply_op3_no_bwd`), so a gradient silently stops there; a transformer encoder built
//! on it (candle-transformers' DINOv2) cannot be fine-tuned. This one is composed from
//! candle ops, whose backward candle has. Low-precision inputs are normalised in f32 and
//! cast back, as batch norm is here ([`crate::precision`]).

use candle_core::{DType, Result, Tensor, D};

/// `(x − mean) / √(var + eps) · weight + bias` over the last dimension of `x` (biased
/// variance, as `torch.nn.LayerNorm`); `weight` and `bias` have that dimension's size.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if weight.dims() != [d] || bias.dims() != [d] {
        candle_core::bail!(
            "layer norm over {d} features needs weight and bias of [{d}], got {:?} and {:?}",
            weight.dims(),
            bias.dims()
        )
    }
    let own = weight.dtype();
    if x.dtype() != own && matches!(x.dtype(), DType::F16 | DType::BF16) {
        return layer_norm(&x.to_dtype(own)?, weight, bias, eps)?.to_dtype(x.dtype());
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}
