//! GELU in its exact form, `x · Φ(x) = x/2 · (1 + erf(x/√2))` (PyTorch's `nn.GELU()`),
//! with an exact gradient: candle 0.11's fused `gelu_erf` differentiates with the
//! constant 1/√(2π) rounded to 0.398942, a relative error of 7e-7 in every gradient
//! behind it (enough to fail the f64 parity fixtures). Where a graph is recorded this
//! composes candle's `erf`, whose backward is exact; without a graph it is the fused op.

use candle_core::{Result, Tensor};

/// `x/2 · (1 + erf(x/√2))`; `grad`: whether gradients will flow through the result.
pub fn gelu_erf(x: &Tensor, grad: bool) -> Result<Tensor> {
    if !grad {
        return x.gelu_erf();
    }
    let phi = ((x * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)?;
    (x * 0.5)? * phi
}
