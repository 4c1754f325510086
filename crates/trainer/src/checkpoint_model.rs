//! A network rebuilt from a checkpoint file alone: the architecture is read from the
//! tensor shapes; the output stride and dataset come from the flags, else from the
//! `config.json` of the run folder the checkpoint sits in.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use reco_data::DatasetKind;
use reco_models::{infer_config, load_checkpoint_tensors, read_tensors, DeepLabV3Plus};

use crate::config::TrainConfig;

pub struct LoadedModel {
    pub model: DeepLabV3Plus,
    pub vars: VarMap,
    /// The dataset the checkpoint was trained on, when known (flag or run config).
    pub dataset: Option<DatasetKind>,
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
    let run = run_config_beside(checkpoint);
    let output_stride = output_stride
        .or(run.as_ref().map(|c| c.output_stride))
        .unwrap_or(16);
    let dataset = dataset.or(run.as_ref().map(|c| c.dataset));
    let tensors = read_tensors(checkpoint)?;
    let cfg = infer_config(&tensors, output_stride, checkpoint)?;
    if let Some(kind) = dataset {
        // The folder dataset's count is that of its classes.txt: the run's, when known.
        let want = match kind {
            DatasetKind::Folder => run.as_ref().map_or(0, |c| c.num_classes),
            _ => kind.defaults().num_classes,
        };
        if want != 0 && cfg.num_classes != want {
            bail!(
                "checkpoint {} predicts {} classes but the {kind} dataset has {want}: pass the --dataset it was trained on",
                checkpoint.display(),
                cfg.num_classes
            );
        }
    }
    let vars = VarMap::new();
    let model = DeepLabV3Plus::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    load_checkpoint_tensors(&vars, &tensors, checkpoint).with_context(|| {
        format!(
            "cannot load {} as a {} network",
            checkpoint.display(),
            cfg.backbone.name()
        )
    })?;
    Ok(LoadedModel {
        model,
        vars,
        dataset,
    })
}
