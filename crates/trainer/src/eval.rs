//! Evaluation on a validation set: per-pixel class predictions at the label size into a
//! confusion matrix. During training the network being trained predicts (eval mode,
//! logits upsampled bilinearly with align_corners=true, argmax); `trainer eval` predicts
//! with a [`Segmenter`] (folded batch norm, optional sliding window and test-time
//! augmentation), whose whole-image mode is the same computation.

use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use reco_data::{Loader, SegDataset, ValLoaderConfig, IMAGENET_MEAN, IMAGENET_STD};
use reco_models::ops::resize_bilinear;
use reco_models::{Network, PredictOptions, Segmenter};

use crate::metrics::{ConfusionMatrix, SegMetrics};

/// Class ids `[B,H,W]` predicted for `images [B,3,H,W]` at their full size.
pub fn predict_classes(model: &Network, images: &Tensor) -> anyhow::Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    let (pred, _) = model.forward_no_grad(images, false)?;
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
    evaluate_with(model.config().num_classes, ds, ids, num_threads, |images| {
        let classes = predict_classes(model, &images.to_device(device)?)?;
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
        |images| {
            // The loader normalises; the segmenter takes RGB in 0..1 and normalises itself.
            let p = segmenter.predict_tensor(&imagenet_to_rgb(images)?, &opts)?;
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

/// The confusion matrix of `predict` (images `[B,3,H,W]` in 0..1 to class ids, row-major)
/// against the labels.
fn evaluate_with(
    num_classes: usize,
    ds: Arc<dyn SegDataset>,
    ids: Vec<String>,
    num_threads: usize,
    mut predict: impl FnMut(&Tensor) -> anyhow::Result<Vec<u32>>,
) -> anyhow::Result<SegMetrics> {
    anyhow::ensure!(!ids.is_empty(), "the validation set is empty");
    let mut cfg = ValLoaderConfig::for_dataset(ds.as_ref());
    cfg.num_threads = num_threads;
    let mut confusion = ConfusionMatrix::new(num_classes);
    for batch in Loader::val(ds, ids, cfg)? {
        let batch = batch.context("cannot load a validation batch")?;
        let predictions = predict(&batch.images)?;
        let targets = batch.labels.flatten_all()?.to_vec1::<i64>()?;
        confusion.add(&targets, &predictions)?;
    }
    Ok(confusion.metrics())
}
