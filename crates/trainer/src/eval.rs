//! Evaluation on a validation set: predictions of the network in eval mode, upsampled
//! to the label size (bilinear, align_corners=true), argmax, into a confusion matrix.

use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use reco_data::{Loader, SegDataset, ValLoaderConfig};
use reco_models::ops::resize_bilinear;
use reco_models::DeepLabV3Plus;

use crate::metrics::{ConfusionMatrix, SegMetrics};

/// Class ids `[B,H,W]` predicted for `images [B,3,H,W]` at their full size.
pub fn predict_classes(model: &DeepLabV3Plus, images: &Tensor) -> anyhow::Result<Tensor> {
    let (_, _, h, w) = images.dims4()?;
    let (pred, _) = model.forward_no_grad(images, false)?;
    Ok(resize_bilinear(&pred, h, w, true)?.argmax(1)?)
}

pub fn evaluate(
    model: &DeepLabV3Plus,
    ds: Arc<dyn SegDataset>,
    ids: Vec<String>,
    device: &Device,
    num_threads: usize,
) -> anyhow::Result<SegMetrics> {
    anyhow::ensure!(!ids.is_empty(), "the validation set is empty");
    let mut cfg = ValLoaderConfig::for_dataset(ds.as_ref());
    cfg.num_threads = num_threads;
    let mut confusion = ConfusionMatrix::new(model.config().num_classes);
    for batch in Loader::val(ds, ids, cfg)? {
        let batch = batch.context("cannot load a validation batch")?;
        let classes = predict_classes(model, &batch.images.to_device(device)?)?;
        let predictions = classes
            .flatten_all()?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?;
        let targets = batch.labels.flatten_all()?.to_vec1::<i64>()?;
        confusion.add(&targets, &predictions)?;
    }
    Ok(confusion.metrics())
}
