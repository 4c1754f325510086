//! Flag groups that several subcommands share, flattened into their arguments with
//! `#[command(flatten)]` so that each flag is declared (and documented) once.

use std::path::PathBuf;

use candle_core::Device;
use reco_data::DatasetKind;
use reco_models::{PredictOptions, SlidingWindow, MIN_INPUT_SIZE};

use crate::inference::checkpoint::{load_model, LoadedModel};
use crate::train::config::parse_device;

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
    /// The output stride to run at: 8, 16 or 32 (default: the trained one, from the
    /// checkpoint's metadata; without metadata that of the run the checkpoint is in, else
    /// the original's: 16 for DeepLabV3+, 8 for DeepLabV2). Another than the trained one
    /// runs the same weights with other dilations, e.g. trained at 16, evaluated at 8.
    #[arg(long)]
    pub output_stride: Option<usize>,
}

impl ModelSource {
    /// The network rebuilt from the checkpoint on `device`.
    pub fn load(&self, device: &Device) -> anyhow::Result<LoadedModel> {
        load_model(&self.checkpoint, self.dataset, self.output_stride, device)
    }
}

/// How eval and predict run the network: whole image or sliding window, a maximum
/// working size, test-time augmentation.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InferenceArgs {
    /// Predict in overlapping tiles of N x N pixels (bounded memory); 0 = the whole image
    /// at once (default: eval whole images; predict tiles of 512 on images larger than
    /// 1024 pixels on a side).
    #[arg(long)]
    pub tile: Option<usize>,
    /// Step between tiles (default 2/3 of the tile, overlapping by a third).
    #[arg(long)]
    pub tile_stride: Option<usize>,
    /// Downscale images whose long side exceeds N pixels, upsample the result back.
    #[arg(long)]
    pub max_size: Option<usize>,
    /// Test-time scales, probabilities averaged, e.g. 0.5,0.75,1,1.25,1.5,1.75 (default 1).
    #[arg(long, value_delimiter = ',')]
    pub scales: Option<Vec<f64>>,
    /// Also predict the mirrored image and average (test-time augmentation).
    #[arg(long)]
    pub flip: bool,
}

impl InferenceArgs {
    /// The options for an image of `height` x `width`; `auto_tile`: the tile used without
    /// `--tile` for images whose long side exceeds `.1` pixels (`None`: whole images).
    pub fn options(
        &self,
        height: usize,
        width: usize,
        auto_tile: Option<(usize, usize)>,
    ) -> anyhow::Result<PredictOptions> {
        let tile = match (self.tile, auto_tile) {
            (Some(0), _) => None,
            (Some(t), _) => Some(t),
            (None, Some((t, above))) if height.max(width) > above => Some(t),
            (None, _) => None,
        };
        if self.tile_stride.is_some() && self.tile.is_none() && auto_tile.is_none() {
            anyhow::bail!("--tile-stride needs --tile (the size of the tiles)");
        }
        if self.tile == Some(0) && self.tile_stride.is_some() {
            anyhow::bail!("--tile-stride needs tiles, but --tile 0 asks for the whole image");
        }
        self.check()?;
        let sliding_window = tile.map(|t| match self.tile_stride {
            Some(stride) => SlidingWindow { tile: t, stride },
            None => SlidingWindow::new(t),
        });
        Ok(PredictOptions {
            sliding_window,
            max_size: self.max_size,
            scales: self.scales.clone().unwrap_or_else(|| vec![1.0]),
            flip: self.flip,
            probabilities: false,
        })
    }

    /// The flags' own limits, named as flags (the library checks the same, in its terms).
    fn check(&self) -> anyhow::Result<()> {
        if let Some(t) = self.tile.filter(|t| *t > 0 && *t < MIN_INPUT_SIZE) {
            anyhow::bail!(
                "--tile {t} is smaller than the network's minimum input of {MIN_INPUT_SIZE} pixels: use --tile {MIN_INPUT_SIZE} or more (512 is usual), or --tile 0 for whole images"
            );
        }
        if let Some(s) = self.tile_stride {
            let tile = self.tile.unwrap_or(PREDICT_TILE);
            if s == 0 || s > tile {
                anyhow::bail!(
                    "--tile-stride {s} must be between 1 and the tile size {tile} (a larger step leaves pixels unpredicted)"
                );
            }
        }
        if let Some(m) = self.max_size.filter(|m| *m < MIN_INPUT_SIZE) {
            anyhow::bail!(
                "--max-size {m} is smaller than the network's minimum input of {MIN_INPUT_SIZE} pixels"
            );
        }
        if let Some(scales) = &self.scales {
            if scales.is_empty() || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                anyhow::bail!(
                    "--scales must be positive numbers separated by commas, got {scales:?}"
                );
            }
        }
        Ok(())
    }
}

/// `trainer predict`'s tile without `--tile`, on images larger than [`PREDICT_TILE_ABOVE`]:
/// keeps a 12-megapixel photo with ResNet-101 within a few GB (see docs/benchmarks.md).
pub const PREDICT_TILE: usize = 512;
/// Long side (pixels) above which `trainer predict` tiles by default.
pub const PREDICT_TILE_ABOVE: usize = 1024;
