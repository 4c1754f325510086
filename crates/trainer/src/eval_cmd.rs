//! `trainer eval`: mIoU, pixel accuracy and per-class IoU of a checkpoint on a
//! validation set, as a table or as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use reco_data::{open, DatasetKind, Subset};

use crate::checkpoint_model::load_model;
use crate::config::parse_device;
use crate::eval::evaluate;

#[derive(clap::Args, Debug, Clone)]
pub struct EvalArgs {
    /// Weights to evaluate (.safetensors of this project or of the original code, or .pth).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// pascal, cityscapes, sun or synthetic (default: that of the run the checkpoint is in).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Prepared dataset folder (default data/<dataset>).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// 8, 16 or 32 (default: that of the run the checkpoint is in, else 16).
    #[arg(long)]
    pub output_stride: Option<usize>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Evaluate on the first N validation images only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub val_limit: usize,
    /// Data loader threads (0 = one per core).
    #[arg(long, default_value_t = 0)]
    pub num_threads: usize,
}

pub fn run(args: &EvalArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let device = parse_device(&args.device)?;
    let loaded = load_model(&args.checkpoint, args.dataset, args.output_stride, &device)?;
    let kind = loaded.dataset.with_context(|| {
        format!(
            "which dataset? {} is not in a run folder with a config.json: pass --dataset",
            args.checkpoint.display()
        )
    })?;
    let ds = open(kind, args.data_root.as_deref()).with_context(|| {
        format!("cannot open the {kind} dataset (fetch it with `cargo xtask fetch-data --dataset {kind}`, or pass --data-root)")
    })?;
    let mut ids = ds.ids(Subset::Val).to_vec();
    if args.val_limit > 0 {
        ids.truncate(args.val_limit);
    }
    let n = ids.len();
    let m = evaluate(&loaded.model, ds, ids, &device, args.num_threads)?;
    if args.json {
        let names = kind.class_names();
        let per_class: serde_json::Map<String, serde_json::Value> = names
            .iter()
            .zip(&m.per_class_iou)
            .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
            .collect();
        let json = serde_json::json!({
            "checkpoint": args.checkpoint, "dataset": kind.name(), "images": n,
            "miou": m.miou, "pixel_acc": m.pixel_acc, "per_class_iou": per_class,
        });
        writeln!(out, "{json}")?;
    } else {
        writeln!(
            out,
            "{} on {kind} validation ({n} images)\n",
            args.checkpoint.display()
        )?;
        writeln!(out, "{}", m.table(kind.class_names()))?;
    }
    Ok(())
}
