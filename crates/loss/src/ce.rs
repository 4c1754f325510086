//! The supervised and unsupervised cross-entropy losses of the original
//! (`compute_supervised_loss`, `compute_unsupervised_loss`).
//!
//! candle's cross-entropy has no ignore index (docs/design.md, candle gap 6), so both use a masked
//! formulation: ignored pixels gather class 0 and are multiplied by 0, which keeps every
//! index in range on every device and gives them exactly zero gradient.

use candle_core::{DType, Tensor, D};

use crate::check;

/// Per-pixel cross-entropy `[B,H,W]` (0 on ignored pixels) and the valid mask `[B,H,W]`
/// in `pred`'s dtype.
fn pixel_cross_entropy(
    pred: &Tensor,
    target: &Tensor,
    what: &str,
) -> candle_core::Result<(Tensor, Tensor)> {
    let [b, c, h, w] = check::dims::<4>(pred, &format!("{what}: pred"), "[B,C,H,W] logits")?;
    check::float(pred, &format!("{what}: pred"))?;
    let t_dims = check::dims::<3>(target, &format!("{what}: target"), "[B,H,W] class indices")?;
    if t_dims != [b, h, w] {
        candle_core::bail!(
            "{what}: target shape {t_dims:?} does not match pred [B,C,H,W] = {:?}",
            pred.dims()
        );
    }
    let target = check::labels(target, c, &format!("{what}: target"))?;
    let valid = target.ge(0i64)?.to_dtype(pred.dtype())?;
    let index = target.maximum(0i64)?.to_dtype(DType::U32)?.unsqueeze(1)?;
    // Composed log-softmax: the fused softmax kernels drop gradients (docs/design.md, candle gap 10).
    let log_prob = candle_nn::ops::log_softmax(pred, 1)?;
    let picked = log_prob
        .contiguous()?
        .gather(&index.contiguous()?, 1)?
        .squeeze(1)?;
    let ce = picked.neg()?.mul(&valid)?;
    Ok((ce, valid))
}

/// Mean cross-entropy over the pixels whose target is not -1.
///
/// `pred` `[B,C,H,W]` logits, `target` `[B,H,W]` i64 with -1 = ignore. Returns a 0-dim
/// tensor on `pred`'s device. Unlike PyTorch (which returns NaN), a batch without any
/// labelled pixel gives 0, so that it cannot poison a training run.
pub fn supervised_loss(pred: &Tensor, target: &Tensor) -> candle_core::Result<Tensor> {
    let (ce, valid) = pixel_cross_entropy(pred, target, "supervised_loss")?;
    let count = valid.sum_all()?.maximum(1.0)?;
    ce.sum_all()?.div(&count)
}

/// The original's confidence-weighted loss on pseudo-labels.
///
/// Each image `b` gets the weight `#(confidence ≥ strong_threshold) / #(target ≥ 0)`;
/// the loss is the mean, over the pixels whose cross-entropy is positive, of
/// `weight[b] * CE`. `pred` `[B,C,H,W]` logits, `target` `[B,H,W]` i64 (-1 = ignore),
/// `confidence` `[B,H,W]` (the teacher's max probability, after mixing). Where the
/// original divides by zero (an image without a valid target, or no pixel with positive
/// loss) this returns a finite value (that image contributes 0; the loss is 0).
pub fn unsupervised_loss(
    pred: &Tensor,
    target: &Tensor,
    confidence: &Tensor,
    strong_threshold: f64,
) -> candle_core::Result<Tensor> {
    let (ce, valid) = pixel_cross_entropy(pred, target, "unsupervised_loss")?;
    check::same_dims(
        confidence,
        target,
        "unsupervised_loss",
        ("confidence", "target"),
    )?;
    check::float(confidence, "unsupervised_loss: confidence")?;
    let b = ce.dim(0)?;
    // The comparison happens in the confidence's dtype, as in PyTorch (f32 vs 0.97f32).
    let confident = confidence
        .ge(strong_threshold)?
        .to_dtype(ce.dtype())?
        .reshape((b, ()))?
        .sum(D::Minus1)?;
    let labelled = valid.reshape((b, ()))?.sum(D::Minus1)?.maximum(1.0)?;
    let weight = confident.div(&labelled)?.reshape((b, 1, 1))?;
    // The selection `loss > 0` carries no gradient; only selected pixels contribute.
    let selected = ce.gt(0.0)?.to_dtype(ce.dtype())?;
    let numerator = ce.mul(&selected)?.broadcast_mul(&weight)?.sum_all()?;
    let count = selected.sum_all()?.maximum(1.0)?;
    numerator.div(&count)
}
