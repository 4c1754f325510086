//! Bilinear resizing as two matrix products, `A_h · x · A_wᵀ`.
//!
//! candle 0.11's `upsample_bilinear2d` has no backward. Bilinear interpolation is linear
//! in the input and separable, so multiplying by interpolation matrices is exact, runs on
//! any device and is differentiable through candle's matmul.

use candle_core::{DType, Device, Result, Tensor};

/// The `[out, in]` matrix of PyTorch's 1-D linear interpolation (`F.interpolate`,
/// mode="bilinear", given an output size) along one axis.
pub fn interpolation_matrix(
    input: usize,
    output: usize,
    align_corners: bool,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let mut a = vec![0f64; output * input];
    for o in 0..output {
        let (i0, i1, lambda) = linear_taps(o, input, output, align_corners);
        a[o * input + i0] += 1.0 - lambda;
        a[o * input + i1] += lambda;
    }
    Tensor::from_vec(a, (output, input), device)?.to_dtype(dtype)
}

/// PyTorch's linear interpolation at output index `o` of `output` from `input` values:
/// `(i0, i1, λ)` with out = (1−λ)·in[i0] + λ·in[i1]. One definition for the training
/// path's matrices and the CPU score-map resizing (`segment::maps`).
pub(crate) fn linear_taps(
    o: usize,
    input: usize,
    output: usize,
    align_corners: bool,
) -> (usize, usize, f64) {
    let src = if align_corners {
        if output > 1 {
            o as f64 * (input as f64 - 1.0) / (output as f64 - 1.0)
        } else {
            0.0
        }
    } else {
        ((o as f64 + 0.5) * input as f64 / output as f64 - 0.5).max(0.0)
    };
    let i0 = (src.floor() as usize).min(input - 1);
    let i1 = (i0 + 1).min(input - 1);
    (i0, i1, src - i0 as f64)
}

/// Resizes `x [N,C,h,w]` to `[N,C,out_h,out_w]` like
/// `F.interpolate(x, (out_h, out_w), mode="bilinear", align_corners=...)`.
pub fn resize_bilinear(
    x: &Tensor,
    out_h: usize,
    out_w: usize,
    align_corners: bool,
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!("cannot resize {h}x{w} to {out_h}x{out_w}")
    }
    let (dtype, dev) = (x.dtype(), x.device());
    let a_w = interpolation_matrix(w, out_w, align_corners, dtype, dev)?;
    let a_h = interpolation_matrix(h, out_h, align_corners, dtype, dev)?;
    // Along W: [N·C·h, w] · A_wᵀ.
    let y = x
        .contiguous()?
        .reshape((n * c * h, w))?
        .matmul(&a_w.t()?)?
        .reshape((n, c, h, out_w))?;
    // Along H, on the transposed image: [N·C·out_w, h] · A_hᵀ.
    let y = y
        .transpose(2, 3)?
        .contiguous()?
        .reshape((n * c * out_w, h))?
        .matmul(&a_h.t()?)?
        .reshape((n, c, out_w, out_h))?;
    y.transpose(2, 3)?.contiguous()
}

/// The `[out, in]` matrix of PyTorch's 1-D bicubic interpolation (`F.interpolate`,
/// mode="bicubic", align_corners=False, no antialias) when called with a
/// `scale_factor`: the source coordinate of output `o` is `(o + 0.5) / scale_factor −
/// 0.5` (PyTorch uses the given factor, not `input / output`), the cubic convolution
/// kernel has A = −0.75, and taps beyond the border repeat the edge value.
/// DINOv2 resizes its position embeddings this way ([`crate::vit`]).
pub fn bicubic_matrix(
    input: usize,
    output: usize,
    scale_factor: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if input == 0 || output == 0 || scale_factor.is_nan() || scale_factor <= 0.0 {
        candle_core::bail!(
            "bicubic interpolation from {input} to {output} needs positive sizes and scale, got scale {scale_factor}"
        )
    }
    const A: f64 = -0.75;
    // PyTorch's cubic_convolution1 (|x| <= 1) and cubic_convolution2 (1 < |x| < 2).
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let mut a = vec![0f64; output * input];
    for o in 0..output {
        let src = (o as f64 + 0.5) / scale_factor - 0.5;
        let i = src.floor();
        let t = src - i;
        let weights = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (tap, w) in weights.into_iter().enumerate() {
            let j = (i as i64 - 1 + tap as i64).clamp(0, input as i64 - 1) as usize;
            a[o * input + j] += w;
        }
    }
    Tensor::from_vec(a, (output, input), device)?.to_dtype(dtype)
}
