//! A network for inference rebuilt from a checkpoint file: a [`Segmenter`] built from the
//! file's metadata, or, for files without it (older runs, converted originals), from the
//! tensor shapes with the output stride and dataset from the flags, else from the
//! `config.json` of the run folder the checkpoint sits in.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::Device;
use reco_data::DatasetKind;
use reco_models::{read_meta, MetaFallback, Segmenter};

use crate::train::config::TrainConfig;

pub struct LoadedModel {
    pub segmenter: Segmenter,
    /// The dataset the checkpoint was trained on, when known (flag, metadata or run config).
    pub dataset: Option<DatasetKind>,
}

impl LoadedModel {
    pub fn num_classes(&self) -> usize {
        self.segmenter.meta().num_classes
    }

    /// The dataset when known, else the first whose class count is the network's (for
    /// the colours of pictures; never for metrics).
    pub fn dataset_or_guess(&self) -> Option<DatasetKind> {
        let num_classes = self.num_classes();
        self.dataset.or_else(|| {
            DatasetKind::ALL
                .into_iter()
                .find(|k| k.defaults().num_classes == num_classes)
        })
    }
}

/// The settings of the run that wrote `checkpoint`, if it sits in a run folder.
pub fn run_config_beside(checkpoint: &Path) -> Option<TrainConfig> {
    let path = checkpoint.parent()?.join("config.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(value.get("config")?.clone()).ok()
}

pub fn load_model(
    checkpoint: &Path,
    dataset: Option<DatasetKind>,
    output_stride: Option<usize>,
    device: &Device,
) -> anyhow::Result<LoadedModel> {
    if !checkpoint.is_file() {
        bail!("checkpoint {} not found", checkpoint.display());
    }
    let is_safetensors = checkpoint
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let meta = if is_safetensors {
        read_meta(checkpoint).with_context(|| format!("cannot load {}", checkpoint.display()))?
    } else {
        None
    };
    if let (Some(meta), Some(os)) = (&meta, output_stride) {
        if meta.output_stride != os {
            bail!(
                "--output-stride {os} contradicts {}, whose metadata says it was trained at output stride {}: drop the flag",
                checkpoint.display(),
                meta.output_stride
            );
        }
    }
    let run = run_config_beside(checkpoint);
    let dataset = dataset
        .or_else(|| {
            meta.as_ref()
                .and_then(|m| m.dataset.as_deref())
                .and_then(|d| d.parse().ok())
        })
        .or(run.as_ref().map(|c| c.dataset));
    let fallback = MetaFallback {
        output_stride: output_stride.or(run.as_ref().map(|c| c.output_stride)),
        dataset: dataset.map(|d| d.name().to_string()),
        class_names: match dataset {
            Some(d) => d.class_names().iter().map(|n| n.to_string()).collect(),
            None => Vec::new(),
        },
        normalization: None,
    };
    let segmenter = Segmenter::load(checkpoint, device, &fallback)
        .with_context(|| format!("cannot load {}", checkpoint.display()))?;
    let num_classes = segmenter.meta().num_classes;
    if let Some(kind) = dataset {
        // The folder dataset's count is that of its classes.txt: the run's, when known.
        let want = match kind {
            DatasetKind::Folder => run.as_ref().map_or(0, |c| c.num_classes),
            _ => kind.defaults().num_classes,
        };
        if want != 0 && num_classes != want {
            bail!(
                "checkpoint {} predicts {num_classes} classes but the {kind} dataset has {want}: pass the --dataset it was trained on",
                checkpoint.display(),
            );
        }
    }
    Ok(LoadedModel { segmenter, dataset })
}
