//! Step 5's tensor plumbing: one-hot labels, nearest resizing to the representation
//! size, and the (label, mask, prob) triple of the concatenated labelled + unlabelled
//! batch, as the original's `train_semisup.py` builds it.

use candle_core::{DType, Tensor};

use crate::check;

/// One-hot encoding of `labels` `[B,H,W]` (integer, -1 = ignore) as `[B,C,H,W]` f32.
///
/// Ignored pixels get an all-zero vector. (The original maps them to class 0 and relies
/// on the mask to drop them; with an all-zero vector they can never count as valid.)
pub fn one_hot(labels: &Tensor, num_classes: usize) -> candle_core::Result<Tensor> {
    let [_b, _h, _w] = check::dims::<3>(labels, "one_hot: labels", "[B,H,W] class indices")?;
    let labels = check::labels(labels, num_classes, "one_hot: labels")?;
    let classes = Tensor::arange(0i64, num_classes as i64, labels.device())?.reshape((
        1,
        num_classes,
        1,
        1,
    ))?;
    labels
        .unsqueeze(1)?
        .broadcast_eq(&classes)?
        .to_dtype(DType::F32)
}

/// Source index of every output position of PyTorch's `F.interpolate(mode="nearest")`
/// from `input` to `output` samples: `min(floor(i * s), input - 1)` with the scale
/// `s = input / output` and the product computed in f32, exactly as ATen does
/// (`nearest_idx`: equal sizes copy, doubling shifts). In exact arithmetic this is
/// `floor(i * input / output)`; the f32 rounding is kept so that indices match the original.
pub fn nearest_source_indices(input: usize, output: usize) -> Vec<u32> {
    if output == input {
        return (0..output as u32).collect();
    }
    if output == 2 * input {
        return (0..output as u32).map(|i| i >> 1).collect();
    }
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|i| ((i as f32 * scale).floor() as usize).min(input.saturating_sub(1)) as u32)
        .collect()
}

/// Nearest resizing (PyTorch's `mode="nearest"`) of the last two dimensions of `x`
/// (rank ≥ 2, any dtype) to `out_h x out_w`.
pub fn resize_nearest(x: &Tensor, out_h: usize, out_w: usize) -> candle_core::Result<Tensor> {
    let rank = x.rank();
    if rank < 2 {
        candle_core::bail!(
            "resize_nearest: input must have rank >= 2, got shape {:?}",
            x.dims()
        );
    }
    if out_h == 0 || out_w == 0 {
        candle_core::bail!("resize_nearest: output size must be positive, got {out_h}x{out_w}");
    }
    let (in_h, in_w) = (x.dim(rank - 2)?, x.dim(rank - 1)?);
    if in_h == 0 || in_w == 0 {
        candle_core::bail!(
            "resize_nearest: input has an empty spatial dimension {:?}",
            x.dims()
        );
    }
    let mut y = x.contiguous()?;
    if out_h != in_h {
        let rows = Tensor::new(nearest_source_indices(in_h, out_h), x.device())?;
        y = y.index_select(&rows, rank - 2)?;
    }
    if out_w != in_w {
        let cols = Tensor::new(nearest_source_indices(in_w, out_w), x.device())?;
        y = y.contiguous()?.index_select(&cols, rank - 1)?;
    }
    Ok(y)
}

/// Inputs of [`crate::reco_loss`] for one batch, at representation resolution.
#[derive(Clone, Debug)]
pub struct ReCoTargets {
    /// `[N,C,h,w]` f32 one-hot labels (all-zero where ignored).
    pub label: Tensor,
    /// `[N,1,h,w]` f32, 1 where the pixel may be used.
    pub mask: Tensor,
    /// `[N,C,h,w]` softmax of the student's prediction, detached.
    pub prob: Tensor,
}

fn check_pred(pred: &Tensor, what: &str) -> candle_core::Result<[usize; 4]> {
    let d = check::dims::<4>(pred, what, "[B,C,h,w] logits at representation resolution")?;
    check::float(pred, what)?;
    Ok(d)
}

fn check_labels_like(t: &Tensor, b: usize, what: &str) -> candle_core::Result<()> {
    let [tb, _, _] = check::dims::<3>(t, what, "[B,H,W]")?;
    if tb != b {
        candle_core::bail!("{what} has batch size {tb}, the predictions have {b}");
    }
    Ok(())
}

/// Labels, masks and probabilities for the concatenated `[labelled; unlabelled]` batch
/// (docs/design.md#the-semi-supervised-step, step 5).
///
/// * `labels_l` `[B,H,W]` i64 ground truth (-1 = ignore): valid where `label >= 0`.
/// * `pseudo_u` `[B,H,W]` i64 pseudo-labels and `confidence_u` `[B,H,W]` float (after
///   mixing): valid where `confidence >= weak_threshold` (δw = 0.7 in the original).
/// * `pred_l`, `pred_u` `[B,C,h,w]`: the student's logits at representation resolution.
///
/// Labels and masks go to `h x w` with PyTorch's nearest rule; probabilities are the
/// softmax of the (detached) predictions. Pixels whose label is -1 are never valid, even
/// where the unlabelled confidence passes the threshold.
pub fn reco_targets(
    labels_l: &Tensor,
    pseudo_u: &Tensor,
    confidence_u: &Tensor,
    pred_l: &Tensor,
    pred_u: &Tensor,
    weak_threshold: f64,
) -> candle_core::Result<ReCoTargets> {
    let [b, c, h, w] = check_pred(pred_l, "reco_targets: pred_l")?;
    let [bu, cu, hu, wu] = check_pred(pred_u, "reco_targets: pred_u")?;
    if (c, h, w) != (cu, hu, wu) {
        candle_core::bail!(
            "reco_targets: pred_l {:?} and pred_u {:?} differ in classes or size",
            pred_l.dims(),
            pred_u.dims()
        );
    }
    check_labels_like(labels_l, b, "reco_targets: labels_l")?;
    check_labels_like(pseudo_u, bu, "reco_targets: pseudo_u")?;
    check::same_dims(
        confidence_u,
        pseudo_u,
        "reco_targets",
        ("confidence_u", "pseudo_u"),
    )?;
    check::float(confidence_u, "reco_targets: confidence_u")?;
    let labels_l = check::labels(labels_l, c, "reco_targets: labels_l")?;
    let pseudo_u = check::labels(pseudo_u, c, "reco_targets: pseudo_u")?;

    let mask_l = labels_l.ge(0i64)?.to_dtype(DType::F32)?;
    let mask_u = confidence_u.ge(weak_threshold)?.to_dtype(DType::F32)?;
    let mask = resize_nearest(&Tensor::cat(&[mask_l, mask_u], 0)?, h, w)?.unsqueeze(1)?;

    // Nearest resizing commutes with one-hot encoding, so resize the small integer maps.
    let labels = resize_nearest(&Tensor::cat(&[labels_l, pseudo_u], 0)?, h, w)?;
    let label = one_hot(&labels, c)?;

    let pred = Tensor::cat(&[pred_l.detach(), pred_u.detach()], 0)?;
    let prob = candle_nn::ops::softmax(&pred, 1)?.to_dtype(DType::F32)?;
    Ok(ReCoTargets { label, mask, prob })
}

/// The same triple for a labelled batch alone (the original's supervised training with
/// ReCo): valid where `label >= 0`.
pub fn reco_targets_labelled(labels: &Tensor, pred: &Tensor) -> candle_core::Result<ReCoTargets> {
    let [b, c, h, w] = check_pred(pred, "reco_targets_labelled: pred")?;
    check_labels_like(labels, b, "reco_targets_labelled: labels")?;
    let labels = check::labels(labels, c, "reco_targets_labelled: labels")?;
    let labels = resize_nearest(&labels, h, w)?;
    let mask = labels.ge(0i64)?.to_dtype(DType::F32)?.unsqueeze(1)?;
    let label = one_hot(&labels, c)?;
    let prob = candle_nn::ops::softmax(&pred.detach(), 1)?.to_dtype(DType::F32)?;
    Ok(ReCoTargets { label, mask, prob })
}
