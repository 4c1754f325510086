//! `trainer bench`: the measurements of [`crate::bench`] as a table. Each measurement
//! runs in a process of its own (this binary with the hidden `--child`) so that its peak
//! memory is its own.

use std::process::Command;

use anyhow::{bail, Context};
use reco_util::bench::peak_rss_mb;

use super::args::DeviceArgs;
use crate::bench::{measure, Workload, MEASUREMENTS};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// deeplabv3p, deeplabv2 or dpt, with its Pascal VOC recipe (`trainer train`'s).
    #[arg(long, default_value = "deeplabv3p")]
    pub network: String,
    /// The encoder (default: the recipe's, resnet101 for the DeepLabs, dinov2-s for DPT).
    #[arg(long)]
    pub backbone: Option<String>,
    /// Labelled (= unlabelled) crops per train step: default 10 (the original) on CUDA,
    /// 2 on the CPU.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Side of the training crops (default: the recipe's, 321 for the DeepLabs, 518 for
    /// DPT).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Timed runs per measurement (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Measurements to run: any of train, eval, reco, save (the run state written to the
    /// temporary folder, as `--save-every` does).
    #[arg(long, value_delimiter = ',', default_value = "train,eval,reco,save")]
    pub only: Vec<String>,
    /// Allow TF32 in f32 matrix products on CUDA (PyTorch's default for convolutions;
    /// off by default, as in `trainer check`).
    #[arg(long)]
    pub tf32: bool,
    /// The train step's and eval forward's convolutions in f32, bf16 or f16 (as `trainer
    /// train --precision`).
    #[arg(long, default_value = "f32")]
    pub precision: reco_models::Precision,
    /// Internal: run one measurement in this process and print
    /// `median min images peak_mb host_copies_per_run`.
    #[arg(long, hide = true)]
    pub child: bool,
}

/// The workload of the flags, with `batch` crops; the network's Pascal recipe fills
/// the backbone and the crop the flags leave out.
fn workload(args: &BenchArgs, batch: usize) -> anyhow::Result<Workload> {
    let network: reco_models::NetworkKind = args
        .network
        .parse()
        .map_err(|e| anyhow::anyhow!("--network: {e}"))?;
    let recipe =
        crate::train::config::TrainConfig::for_recipe(reco_data::DatasetKind::Pascal, network);
    Ok(Workload {
        network,
        backbone: args.backbone.clone().unwrap_or(recipe.backbone),
        batch,
        crop: args.crop.unwrap_or(recipe.crop_size),
        runs: args.runs,
        device: args.device.name().to_string(),
        precision: args.precision,
        tf32: args.tf32,
    })
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let batch = args.batch.unwrap_or(if device.is_cpu() { 2 } else { 10 });
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for what in &args.only {
        if !MEASUREMENTS.contains(&what.as_str()) {
            bail!("unknown measurement {what:?} in --only: expected train, eval, reco or save");
        }
    }
    candle_core::cuda::set_gemm_reduced_precision_f32(args.tf32);
    if args.child {
        let what = args
            .only
            .first()
            .context("--child needs one --only measurement")?;
        let t = measure(what, &workload(args, batch)?, &device)?;
        println!(
            "{} {} {} {} {}",
            t.median,
            t.min,
            t.images,
            peak_rss_mb().unwrap_or(f64::NAN),
            t.host_copies
        );
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find the trainer executable")?;
    let work = workload(args, batch)?;
    let recipe = crate::bench::pascal_config(&work);
    println!(
        "{} {} OS{} on {} ({}), Pascal VOC setting: {batch} labelled + {batch} unlabelled crops of {}, ClassMix + ReCo, {:?}; median of {} runs",
        match work.network {
            reco_models::NetworkKind::DeepLabV3Plus => "DeepLabV3+",
            reco_models::NetworkKind::DeepLabV2 => "DeepLabV2",
            reco_models::NetworkKind::Dpt => "DPT",
        },
        work.backbone,
        recipe.output_stride,
        args.device.name(),
        if device.is_cpu() { format!("{} threads", candle_core::utils::get_num_threads()) } else { "CUDA".into() },
        work.crop,
        recipe.optimizer,
        args.runs
    );
    println!(
        "kernels: {}; convolutions in {}; f32 matmul reduced precision (TF32): {}",
        crate::check::kernels(&device),
        args.precision,
        if args.tf32 { "on" } else { "off" }
    );
    println!("| measurement | median (ms) | min (ms) | images/s | peak host RSS (MB) | host copies/run |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut medians = std::collections::HashMap::new();
    for what in &args.only {
        let out = Command::new(&exe)
            .args([
                "bench",
                "--child",
                "--device",
                args.device.name(),
                "--network",
                work.network.name(),
                "--backbone",
                &work.backbone,
            ])
            .args([
                "--batch",
                &batch.to_string(),
                "--crop",
                &work.crop.to_string(),
            ])
            .args(["--runs", &args.runs.to_string(), "--only", what])
            .args(["--precision", args.precision.name()])
            .args(args.tf32.then_some("--tf32"))
            .output()
            .context("cannot start the measurement process")?;
        if !out.status.success() {
            bail!(
                "the {what} measurement failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        let [med, min, images, mb, copies] = v[..] else {
            bail!("the {what} measurement printed {text:?}");
        };
        let label = match what.as_str() {
            "train" => format!(
                "train step (teacher + 2 student passes, 3 losses, {:?}, EMA)",
                recipe.optimizer
            ),
            "eval" => {
                let (eh, ew) = reco_data::DatasetKind::Pascal.defaults().eval_size;
                let side = eh.max(ew);
                match work.network.takes_vit() {
                    true => format!(
                        "eval forward + argmax, 1 image {side}x{side} (run at {0}x{0})",
                        reco_models::dpt::nearest_patch_multiple(side)
                    ),
                    false => format!("eval forward + argmax, 1 image {side}x{side}"),
                }
            }
            "save" => "run state write (student, teacher, optimiser state; atomic)".to_string(),
            _ => "ReCo loss fwd+bwd, rep 20x256x81x81, 256 queries, 512 negatives".to_string(),
        };
        let rate = if images > 0.0 {
            format!("{:.2}", images / med)
        } else {
            "-".into()
        };
        println!(
            "| {label} | {:.1} | {:.1} | {rate} | {mb:.0} | {copies} |",
            1e3 * med,
            1e3 * min,
        );
        medians.insert(what.as_str(), med);
    }
    if let (Some(train), Some(save)) = (medians.get("train"), medians.get("save")) {
        let every = crate::train::config::DEFAULT_SAVE_EVERY as f64;
        println!(
            "\nthe state written every {every} steps (--save-every default) costs {:.2} % of the step time",
            100.0 * save / (every * train)
        );
    }
    Ok(())
}
