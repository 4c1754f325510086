//! Evaluation on a validation set: per-pixel class predictions at the label size into a
//! confusion matrix. During training the network being trained predicts (eval mode,
//! logits upsampled bilinearly with align_corners=true, argmax); `trainer eval` predicts
//! with a [`Segmenter`] (folded batch norm, optional sliding window and test-time
//! augmentation), whose whole-image mode is the same computation.

use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use reco_data::{Batch, Loader, SegDataset, ValLoaderConfig, IMAGENET_MEAN, IMAGENET_STD};
use reco_models::ops::resize_bilinear;
use reco_models::{Network, PredictOptions, Segmenter};

use reco_loss::{ClassMeanAccumulator, ClassRelation};

use crate::reports::metrics::{ConfusionMatrix, SegMetrics};

/// Class ids `[B,H,W]` predicted for `images [B,3,H,W]` at their full size.
pub fn predict_classes(model: &Network, images: &Tensor) -> anyhow::Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    let (pred, _) = model.forward_no_grad(&model.fit_input(images)?, false)?;
    Ok(resize_bilinear(&pred, h, w, true)?.argmax(1)?)
}

/// The metrics of `model` (in eval mode, unfolded: the path of evaluation during
/// training) on the images `ids` of `ds`.
pub fn evaluate(
    model: &Network,
    ds: Arc<dyn SegDataset>,
    ids: Vec<String>,
    device: &Device,
    num_threads: usize,
) -> anyhow::Result<SegMetrics> {
    evaluate_with(model.config().num_classes, ds, ids, num_threads, |batch| {
        let classes = predict_classes(model, &batch.images.to_device(device)?)?;
        Ok(classes
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?)
    })
}

/// The metrics of `segmenter` predicting with `opts` on the images `ids` of `ds`.
pub fn evaluate_segmenter(
    segmenter: &Segmenter,
    opts: &PredictOptions,
    ds: Arc<dyn SegDataset>,
    ids: Vec<String>,
    num_threads: usize,
) -> anyhow::Result<SegMetrics> {
    let opts = PredictOptions {
        probabilities: false,
        ..opts.clone()
    };
    evaluate_with(
        segmenter.meta().num_classes,
        ds,
        ids,
        num_threads,
        |batch| {
            // The loader normalises; the segmenter takes RGB in 0..1 and normalises itself.
            let p = segmenter.predict_tensor(&imagenet_to_rgb(&batch.images)?, &opts)?;
            Ok(p.classes.flatten_all()?.to_vec1::<u32>()?)
        },
    )
}

/// Undoes the loader's ImageNet normalisation: `[B,3,H,W]` back to RGB in 0..1.
fn imagenet_to_rgb(images: &Tensor) -> anyhow::Result<Tensor> {
    let device = images.device();
    let std = Tensor::new(&IMAGENET_STD, device)?.reshape((1, 3, 1, 1))?;
    let mean = Tensor::new(&IMAGENET_MEAN, device)?.reshape((1, 3, 1, 1))?;
    Ok(images.broadcast_mul(&std)?.broadcast_add(&mean)?)
}

/// The metrics of `model` as in [`evaluate`] and, from the same forward passes, the
/// class-relation matrix of its representations (`temp`: the ReCo temperature), which
/// the ReCo key sampler draws negative classes from.
pub fn evaluate_with_relation(
    model: &Network,
    ds: Arc<dyn SegDataset>,
    ids: Vec<String>,
    device: &Device,
    num_threads: usize,
    temp: f64,
) -> anyhow::Result<(SegMetrics, ClassRelation)> {
    let mc = model.config();
    let mut means = ClassMeanAccumulator::new(mc.num_classes, mc.output_dim);
    let metrics = evaluate_with(mc.num_classes, ds, ids, num_threads, |batch| {
        let images = batch.images.to_device(device)?;
        let (_, _, h, w) = images.dims4()?;
        // DPT takes patch multiples: other sizes are resized to the nearest ones.
        let (pred, rep) = model.forward_no_grad(&model.fit_input(&images)?, false)?;
        let labels = batch.labels.to_device(device)?;
        means
            .add(&rep, &labels)
            .context("class-mean representations")?;
        Ok(resize_bilinear(&pred, h, w, true)?
            .argmax(1)?
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?)
    })?;
    let relation = means.relation(temp).context("class-relation matrix")?;
    Ok((metrics, relation))
}

/// The confusion matrix of `predict` (a validation batch, images ImageNet-normalised, to
/// class ids, row-major) against the batch's labels.
fn evaluate_with(
    num_classes: usize,
    ds: Arc<dyn SegDataset>,
    ids: Vec<String>,
    num_threads: usize,
    mut predict: impl FnMut(&Batch) -> anyhow::Result<Vec<u32>>,
) -> anyhow::Result<SegMetrics> {
    anyhow::ensure!(!ids.is_empty(), "the validation set is empty");
    let mut cfg = ValLoaderConfig::for_dataset(ds.as_ref());
    cfg.num_threads = num_threads;
    let mut confusion = ConfusionMatrix::new(num_classes);
    for batch in Loader::val(ds, ids, cfg)? {
        let batch = batch.context("cannot load a validation batch")?;
        let predictions = predict(&batch)?;
        let targets = batch.labels.flatten_all()?.to_vec1::<i64>()?;
        confusion.add(&targets, &predictions)?;
    }
    Ok(confusion.metrics())
}
