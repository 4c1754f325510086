//! Flag groups that several subcommands share, flattened into their arguments with
//! `#[command(flatten)]` so that each flag is declared (and documented) once.

use std::path::PathBuf;

use candle_core::Device;
use reco_data::DatasetKind;

use crate::checkpoint_model::{load_model, LoadedModel};
use crate::config::parse_device;

/// `--device`: train, eval, predict, bench and check.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DeviceArgs {
    /// cpu, cuda or cuda:N (default cpu; for `train`, that of --config if it names one).
    #[arg(long)]
    pub device: Option<String>,
}

impl DeviceArgs {
    /// The device named by the flag, `cpu` without it.
    pub fn name(&self) -> &str {
        self.device.as_deref().unwrap_or("cpu")
    }

    pub fn open(&self) -> anyhow::Result<Device> {
        parse_device(self.name())
    }
}

/// The dataset and where it lives: train (and ablate) and split.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DataArgs {
    /// pascal, cityscapes, sun, synthetic or folder (train: default synthetic).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Prepared dataset folder (default data/<dataset>; unused for synthetic; required
    /// for folder: DIR/images, DIR/labels, DIR/classes.txt, see the README).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
}

/// How a validation pass reads the data: train and eval.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ValArgs {
    /// Evaluate on the first N validation images only (0 = all, the default).
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Data loader threads (0 = one per core, the default).
    #[arg(long)]
    pub num_threads: Option<usize>,
}

/// A trained network: the checkpoint and what the file alone does not say. Eval and
/// predict.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelSource {
    /// Weights (.safetensors of this project or of the original code, or .pth).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// pascal, cityscapes, sun or synthetic (default: that of the run the checkpoint is
    /// in; predict then guesses it from the class count).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// 8, 16 or 32 (default: that of the run the checkpoint is in, else 16).
    #[arg(long)]
    pub output_stride: Option<usize>,
}

impl ModelSource {
    /// The network rebuilt from the checkpoint on `device`.
    pub fn load(&self, device: &Device) -> anyhow::Result<LoadedModel> {
        load_model(&self.checkpoint, self.dataset, self.output_stride, device)
    }
}
