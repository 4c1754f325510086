//! `trainer eval`: mIoU, pixel accuracy and per-class IoU of a checkpoint on a
//! validation set, as a table or as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use reco_data::{open, Subset};

use super::args::{DeviceArgs, InferenceArgs, ModelSource, ValArgs};
use crate::evaluation::evaluate_segmenter;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelSource,
    /// Prepared dataset folder (default data/<dataset>).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub val: ValArgs,
    #[command(flatten)]
    pub inference: InferenceArgs,
}

pub fn run(args: &EvalArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let device = args.device.open()?;
    // Whole images unless --tile: the evaluation protocol of the paper.
    let opts = args.inference.options(0, 0, None)?;
    let loaded = args.model.load(&device)?;
    let checkpoint = &args.model.checkpoint;
    let kind = loaded.dataset.with_context(|| {
        format!(
            "which dataset? {} is not in a run folder with a config.json: pass --dataset",
            checkpoint.display()
        )
    })?;
    // The data crate's error already says how to fetch the dataset.
    // Without --data-root: the run's folder (the folder dataset has no default one).
    let data_root = args.data_root.clone().or_else(|| {
        crate::inference::checkpoint::run_config_beside(checkpoint).and_then(|c| c.data_root)
    });
    let ds = open(kind, data_root.as_deref())
        .with_context(|| format!("cannot open the {kind} dataset"))?;
    let mut ids = ds.ids(Subset::Val).to_vec();
    let val_limit = args.val.val_limit.unwrap_or(0);
    if val_limit > 0 {
        ids.truncate(val_limit);
    }
    let n = ids.len();
    let class_names = ds.class_names();
    let names: Vec<&str> = class_names.iter().map(String::as_str).collect();
    let m = evaluate_segmenter(
        &loaded.segmenter,
        &opts,
        ds,
        ids,
        args.val.num_threads.unwrap_or(0),
    )?;
    if args.json {
        let per_class: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .zip(&m.per_class_iou)
            .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
            .collect();
        let json = serde_json::json!({
            "checkpoint": checkpoint, "dataset": kind.name(), "images": n,
            "output_stride": loaded.segmenter.output_stride(),
            // null when the metadata only assumed it (a converted checkpoint).
            "trained_output_stride": trained_output_stride(loaded.segmenter.meta()),
            "miou": m.miou, "pixel_acc": m.pixel_acc, "per_class_iou": per_class,
        });
        writeln!(out, "{json}")?;
    } else {
        writeln!(
            out,
            "{} on {kind} validation ({n} images)\n",
            checkpoint.display()
        )?;
        writeln!(out, "{}", m.table(&names))?;
    }
    Ok(())
}

/// The output stride a checkpoint was trained at, when known (not assumed).
fn trained_output_stride(meta: &reco_models::CheckpointMeta) -> Option<usize> {
    (!meta.is_assumed(reco_models::ASSUMED_OUTPUT_STRIDE)).then_some(meta.output_stride)
}
