//! A network for inference rebuilt from a checkpoint file: a [`Segmenter`] built from the
//! file's metadata, or, for files without it (older runs, converted originals), from the
//! tensor shapes with the output stride and dataset from the flags, else from the
//! `config.json` of the run folder the checkpoint sits in.
//!
//! `--output-stride` on a file whose metadata names another stride runs the network at
//! the flag's stride (DeepLab trains at 16 and often evaluates at 8: the same weights,
//! other dilations) with a note on stderr; the metadata stays the truth about training.
//! When that stride was only assumed (a converted checkpoint whose converter was not
//! told), the note says so, and without the flag it reminds the user of the assumption.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::Device;
use reco_data::DatasetKind;
use reco_models::{read_meta, CheckpointMeta, MetaFallback, Segmenter, ASSUMED_OUTPUT_STRIDE};

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
    if let Some(meta) = &meta {
        if let Some(note) = stride_note(meta, output_stride) {
            eprintln!("note: {}: {note}", checkpoint.display());
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
    let segmenter = Segmenter::load_at(checkpoint, device, &fallback, output_stride)
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

/// What a user should know about the output stride a checkpoint with metadata runs at,
/// given `--output-stride` (`requested`); `None` when there is nothing to say.
pub fn stride_note(meta: &CheckpointMeta, requested: Option<usize>) -> Option<String> {
    let trained = meta.output_stride;
    let assumed = meta.is_assumed(ASSUMED_OUTPUT_STRIDE);
    match requested {
        Some(os) if os != trained && assumed => Some(format!(
            "running at output stride {os}; the metadata's {trained} was an assumption (its \
             converter was not told), so the flag replaces it"
        )),
        Some(os) if os != trained => Some(format!(
            "running at output stride {os}; it was trained at {trained} (the same weights with \
             other dilations; the metrics are those of the network at {os})"
        )),
        None if assumed => Some(format!(
            "output stride {trained} assumed (the original's default: the weights do not say); \
             pass --output-stride N if it was trained at another, or convert it with \
             `cargo xtask convert --output-stride N`"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reco_models::{DeepLabConfig, NetworkKind};

    #[test]
    fn the_stride_note_tells_a_fact_from_an_assumption() {
        let trained = CheckpointMeta::new(NetworkKind::DeepLabV3Plus, &DeepLabConfig::default());
        let assumed = trained.clone().assuming(ASSUMED_OUTPUT_STRIDE);
        assert_eq!(stride_note(&trained, None), None);
        assert_eq!(stride_note(&trained, Some(16)), None);
        assert!(stride_note(&trained, Some(8))
            .unwrap()
            .contains("trained at 16"));
        assert!(stride_note(&assumed, Some(8))
            .unwrap()
            .contains("assumption"));
        assert!(stride_note(&assumed, None)
            .unwrap()
            .contains("--output-stride N"));
        assert_eq!(stride_note(&assumed, Some(16)), None);
    }
}
