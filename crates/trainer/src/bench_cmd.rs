//! `trainer bench`: the costs that decide a training run, as a table: the full
//! semi-supervised train step of DeepLabV3+ on the Pascal VOC setting (ClassMix + ReCo),
//! the evaluation forward at VOC's 513x513, and the ReCo loss forward+backward at the VOC
//! shape. Median of several runs after a warm-up; each measurement runs in a process of
//! its own so that its peak memory is its own.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use reco_data::{Batch, DatasetKind};
use reco_loss::{one_hot, reco_loss, ReCoConfig};
use reco_util::bench::{median, peak_rss_mb};
use reco_util::seed::mix_seed;

use crate::cli_args::DeviceArgs;
use crate::config::TrainConfig;
use crate::train::Learner;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    #[arg(long, default_value = "resnet101")]
    pub backbone: String,
    /// Labelled (= unlabelled) crops per train step: default 10 (the original) on CUDA,
    /// 2 on the CPU.
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, default_value_t = 321)]
    pub crop: usize,
    /// Timed runs per measurement (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Measurements to run: any of train, eval, reco.
    #[arg(long, value_delimiter = ',', default_value = "train,eval,reco")]
    pub only: Vec<String>,
    /// Allow TF32 in f32 matrix products on CUDA (PyTorch's default for convolutions;
    /// off by default, as in `trainer check`).
    #[arg(long)]
    pub tf32: bool,
    /// Internal: run one measurement in this process and print
    /// `median min images peak_mb host_copies_per_run`.
    #[arg(long, hide = true)]
    pub child: bool,
}

const MEASUREMENTS: [&str; 3] = ["train", "eval", "reco"];

/// A label map of rectangular blobs, about six classes per image as in VOC crops.
fn blob_labels(b: usize, h: usize, w: usize, classes: usize, seed: u64) -> Vec<i64> {
    let mut out = vec![0i64; b * h * w];
    for i in 0..b {
        let r = |k: u64| mix_seed(&[seed, i as u64, k]);
        let cells = 3;
        for (n, px) in out[i * h * w..(i + 1) * h * w].iter_mut().enumerate() {
            let (y, x) = (n / w, n % w);
            let cell = (y * cells / h) * cells + x * cells / w;
            // Pairs of cells share a class: ~5-6 classes per image.
            *px = (r(cell as u64 / 2 + 1) % classes as u64) as i64;
        }
    }
    out
}

fn random_batch(
    b: usize,
    size: usize,
    classes: usize,
    seed: u64,
    device: &Device,
) -> anyhow::Result<Batch> {
    let n = b * 3 * size * size;
    let images: Vec<f32> = (0..n)
        .map(|k| (mix_seed(&[seed, k as u64]) >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0)
        .collect();
    Ok(Batch {
        images: Tensor::from_vec(images, (b, 3, size, size), device)?,
        labels: Tensor::from_vec(
            blob_labels(b, size, size, classes, seed),
            (b, size, size),
            device,
        )?,
        ids: (0..b).map(|i| format!("bench-{i}")).collect(),
    })
}

fn sync(device: &Device) -> anyhow::Result<()> {
    device.synchronize().context("device synchronisation")
}

/// Times `f` `runs` times after one warm-up; returns (median, min) seconds and the
/// copies to the host per timed run (`reco_util::ops_path::host_copies`: the copies the
/// library crates make; on a GPU each is a synchronisation).
fn time_runs(
    runs: usize,
    device: &Device,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64, f64)> {
    let mut times = Vec::new();
    let mut copies = 0;
    for i in 0..=runs {
        sync(device)?;
        let before = reco_util::ops_path::host_copies();
        let t = Instant::now();
        f(i)?;
        sync(device)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
            copies += reco_util::ops_path::host_copies() - before;
        }
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok((median(times), min, copies as f64 / runs as f64))
}

fn pascal_config(args: &BenchArgs, batch: usize) -> TrainConfig {
    let mut cfg = TrainConfig::for_dataset(DatasetKind::Pascal);
    cfg.backbone = args.backbone.clone();
    cfg.batch_size = batch;
    cfg.crop_size = args.crop;
    cfg.device = args.device.name().to_string();
    cfg
}

/// One measurement in this process: (median s, min s, images per run).
fn measure(
    what: &str,
    args: &BenchArgs,
    batch: usize,
    device: &Device,
) -> anyhow::Result<(f64, f64, usize, f64)> {
    let classes = DatasetKind::Pascal.defaults().num_classes;
    match what {
        "train" => {
            let cfg = pascal_config(args, batch);
            cfg.validate()?;
            let mut learner = Learner::new(cfg, device.clone())?;
            let lb = random_batch(batch, args.crop, classes, 1, device)?;
            let ub = random_batch(batch, args.crop, classes, 2, device)?;
            let (med, min, copies) = time_runs(args.runs, device, |i| {
                learner.step(&lb, Some(&ub), i, 2.5e-3)?;
                Ok(())
            })?;
            Ok((med, min, 2 * batch, copies))
        }
        "eval" => {
            let cfg = pascal_config(args, batch);
            let learner = Learner::new(cfg, device.clone())?;
            let (eh, ew) = DatasetKind::Pascal.defaults().eval_size;
            let x = random_batch(1, eh.max(ew), classes, 3, device)?.images;
            let (med, min, copies) = time_runs(args.runs, device, |_| {
                crate::eval::predict_classes(&learner.eval_net().model, &x)?;
                Ok(())
            })?;
            Ok((med, min, 1, copies))
        }
        "reco" => {
            // VOC: 10 + 10 crops of 321 give representations of 81x81, 256 channels.
            let (b, d, h, w) = (20, 256, 81, 81);
            let labels = Tensor::from_vec(blob_labels(b, h, w, classes, 4), (b, h, w), device)?;
            let label = one_hot(&labels, classes)?;
            let mask = Tensor::ones((b, 1, h, w), DType::F32, device)?;
            let logits = (random_batch(b, h, classes, 5, device)?
                .images
                .narrow(1, 0, 1)?
                .broadcast_as((b, classes, h, w))?
                + label.affine(3.0, 0.0)?)?;
            let prob = candle_nn::ops::softmax(&logits.contiguous()?, 1)?;
            let rep = Var::from_tensor(
                &random_batch(b, h, classes, 6, device)?
                    .images
                    .repeat((1, d / 3 + 1, 1, 1))?
                    .narrow(1, 0, d)?
                    .contiguous()?,
            )?;
            let cfg = ReCoConfig::default();
            let (med, min, copies) = time_runs(args.runs, device, |i| {
                let loss = reco_loss(rep.as_tensor(), &label, &mask, &prob, &cfg, i as u64)?;
                let grads = loss.backward()?;
                drop(grads);
                Ok(())
            })?;
            Ok((med, min, b, copies))
        }
        other => bail!("unknown measurement {other:?}: expected train, eval or reco"),
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let device = args.device.open()?;
    let batch = args.batch.unwrap_or(if device.is_cpu() { 2 } else { 10 });
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    for what in &args.only {
        if !MEASUREMENTS.contains(&what.as_str()) {
            bail!("unknown measurement {what:?} in --only: expected train, eval or reco");
        }
    }
    candle_core::cuda::set_gemm_reduced_precision_f32(args.tf32);
    if args.child {
        let what = args
            .only
            .first()
            .context("--child needs one --only measurement")?;
        let (med, min, images, copies) = measure(what, args, batch, &device)?;
        println!(
            "{med} {min} {images} {} {copies}",
            peak_rss_mb().unwrap_or(f64::NAN)
        );
        return Ok(());
    }
    let exe = std::env::current_exe().context("cannot find the trainer executable")?;
    println!(
        "DeepLabV3+ {} OS16 on {} ({}), Pascal VOC setting: {batch} labelled + {batch} unlabelled crops of {}, ClassMix + ReCo; median of {} runs",
        args.backbone,
        args.device.name(),
        if device.is_cpu() { format!("{} threads", candle_core::utils::get_num_threads()) } else { "CUDA".into() },
        args.crop,
        args.runs
    );
    println!(
        "kernels: {}; f32 matmul reduced precision (TF32): {}",
        if !device.is_cpu() {
            "device (generic)"
        } else if reco_models::ops::use_generic_path(&device) {
            "generic on the CPU (RECO_OPS=generic)"
        } else {
            "CPU kernels"
        },
        if args.tf32 { "on" } else { "off" }
    );
    println!("| measurement | median (ms) | min (ms) | images/s | peak host RSS (MB) | host copies/run |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for what in &args.only {
        let out = Command::new(&exe)
            .args([
                "bench",
                "--child",
                "--device",
                args.device.name(),
                "--backbone",
                &args.backbone,
            ])
            .args([
                "--batch",
                &batch.to_string(),
                "--crop",
                &args.crop.to_string(),
            ])
            .args(["--runs", &args.runs.to_string(), "--only", what])
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
            "train" => "train step (teacher + 2 student passes, 3 losses, SGD, EMA)".to_string(),
            "eval" => "eval forward + argmax, 1 image 513x513".to_string(),
            _ => "ReCo loss fwd+bwd, rep 20x256x81x81, 256 queries, 512 negatives".to_string(),
        };
        println!(
            "| {label} | {:.1} | {:.1} | {:.2} | {:.0} | {copies} |",
            1e3 * med,
            1e3 * min,
            images / med,
            mb
        );
    }
    Ok(())
}
