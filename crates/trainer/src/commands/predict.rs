//! `trainer predict`: segments one image or every image of a folder
//! ([`crate::inference::segment`]) and writes, per image, the class mask in the dataset's
//! palette and an overlay on the photo; with `--explain` also the pictures of
//! [`crate::reports::explain`]. An image that cannot be read does not stop a folder: the
//! others are predicted, and the failures are listed at the end (with an error).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::args::{DeviceArgs, InferenceArgs, ModelSource, PREDICT_TILE, PREDICT_TILE_ABOVE};
use crate::inference::checkpoint::run_config_beside;
use crate::inference::palette::palette_for;
use crate::inference::segment::{list_images, segment_photo};
use crate::reports::explain::{
    explain_file, Thresholds, DEFAULT_STRONG_THRESHOLD, DEFAULT_WEAK_THRESHOLD,
};

#[derive(clap::Args, Debug, Clone)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// An image (jpg or png) or a folder of images.
    #[arg(long)]
    pub input: PathBuf,
    /// Folder for <name>_mask.png and <name>_overlay.png.
    #[arg(long)]
    pub output: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub explain: ExplainArgs,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExplainArgs {
    /// Also write <name>_confidence.png (max softmax probability) and <name>_hard.png
    /// (the pixels that would be hard ReCo queries) per image.
    #[arg(long)]
    pub explain: bool,
    /// Strong threshold of --explain (default: the run's final value from the
    /// config.json beside the checkpoint, else 0.97).
    #[arg(long)]
    pub explain_threshold: Option<f64>,
}

impl ExplainArgs {
    /// `None` without `--explain`; else the flag's strong threshold, or the run's
    /// (its schedule's value at the last step), or the original's.
    pub fn thresholds(&self, checkpoint: &Path) -> anyhow::Result<Option<Thresholds>> {
        if !self.explain {
            return Ok(None);
        }
        let run = run_config_beside(checkpoint);
        let strong = match (self.explain_threshold, &run) {
            (Some(t), _) => t,
            (None, Some(cfg)) => cfg.strong_threshold.value_at(cfg.iters),
            (None, None) => DEFAULT_STRONG_THRESHOLD,
        };
        anyhow::ensure!(
            (0.0..=1.0).contains(&strong),
            "--explain-threshold must lie in [0, 1], got {strong}"
        );
        let weak = run
            .map(|c| c.weak_threshold)
            .unwrap_or(DEFAULT_WEAK_THRESHOLD);
        Ok(Some(Thresholds { weak, strong }))
    }
}

/// Returns the files written; an error (after predicting every readable image) when
/// some image failed, listing each with its reason.
pub fn run(args: &PredictArgs) -> anyhow::Result<Vec<PathBuf>> {
    let device = args.device.open()?;
    // Bad flags fail here, not once per image.
    args.inference
        .options(0, 0, Some((PREDICT_TILE, PREDICT_TILE_ABOVE)))?;
    let loaded = args.model.load(&device)?;
    let palette = palette_for(
        loaded.dataset_or_guess(),
        loaded.num_classes(),
        &args.model.checkpoint,
    );
    let explain = args.explain.thresholds(&args.model.checkpoint)?;
    let images = list_images(&args.input)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut written = Vec::new();
    let mut failed: Vec<(PathBuf, anyhow::Error)> = Vec::new();
    let mut explained = Vec::new();
    for path in images {
        let options = |h, w| {
            args.inference
                .options(h, w, Some((PREDICT_TILE, PREDICT_TILE_ABOVE)))
        };
        match segment_photo(&path, &loaded, &palette, options, &args.output) {
            Ok(files) => {
                eprintln!("{} -> {}", path.display(), files[0].display());
                written.extend(files);
                if let Some(t) = explain {
                    let maps = explain_file(&loaded.segmenter, &path, t, &device, &args.output)?;
                    explained.extend(maps);
                }
            }
            Err(e) => {
                eprintln!("{}: failed: {e:#}", path.display());
                failed.push((path, e));
            }
        }
    }
    if !failed.is_empty() {
        let list: Vec<String> = failed
            .iter()
            .map(|(p, e)| format!("  {}: {e:#}", p.display()))
            .collect();
        bail!(
            "{} of {} images could not be segmented ({} written to {}):\n{}",
            failed.len(),
            failed.len() + written.len() / 2,
            written.len() / 2,
            args.output.display(),
            list.join("\n")
        );
    }
    written.extend(explained);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_io::tests::{jpeg_with_orientation, photo};
    use crate::train::config::TrainConfig;
    use reco_data::DatasetKind;

    /// An untrained synthetic-dataset network saved as a checkpoint: predict only needs
    /// weights of the right shapes.
    fn checkpoint(dir: &Path) -> PathBuf {
        let net =
            crate::train::Network::new(&TrainConfig::default(), &candle_core::Device::Cpu).unwrap();
        let path = dir.join("model.safetensors");
        reco_models::export_state_dict(&net.vars, &path, 0).unwrap();
        path
    }

    #[test]
    fn a_folder_with_a_corrupt_image_predicts_the_rest_and_lists_the_failure() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = checkpoint(dir.path());
        let input = dir.path().join("photos");
        std::fs::create_dir_all(&input).unwrap();
        photo(45, 37).save(input.join("good.png")).unwrap();
        std::fs::write(input.join("broken.jpg"), b"\xff\xd8 not really").unwrap();
        std::fs::write(input.join("phone.jpg"), jpeg_with_orientation(45, 37, 6)).unwrap();
        let output = dir.path().join("preds");
        let args = PredictArgs {
            model: ModelSource {
                checkpoint: ckpt,
                dataset: Some(DatasetKind::Synthetic),
                output_stride: None,
            },
            input,
            output: output.clone(),
            device: DeviceArgs::default(),
            explain: Default::default(),
            inference: InferenceArgs::default(),
        };
        let err = format!("{:#}", run(&args).unwrap_err());
        assert!(err.contains("1 of 3 images"), "{err}");
        assert!(err.contains("broken.jpg"), "{err}");
        assert!(
            !err.contains("good.png") && !err.contains("phone.jpg"),
            "{err}"
        );
        let mask = image::open(output.join("good_mask.png")).unwrap();
        assert_eq!((mask.width(), mask.height()), (45, 37));
        assert!(output.join("good_overlay.png").is_file());
        // The phone photo's mask has the upright photo's size.
        let mask = image::open(output.join("phone_mask.png")).unwrap();
        assert_eq!((mask.width(), mask.height()), (37, 45));
        assert!(!output.join("broken_mask.png").exists());
    }
}
