//! The costs that decide a training run: the full semi-supervised train step of
//! DeepLabV3+ on the Pascal VOC setting (ClassMix + ReCo), the evaluation forward at
//! VOC's 513x513, the ReCo loss forward+backward at the VOC shape, each on synthetic
//! inputs of the real shapes, and the write of the run state (what `--save-every` costs).
//! Median of several runs after a warm-up.

use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use reco_data::{Batch, DatasetKind};
use reco_loss::{one_hot, reco_loss, ReCoConfig};
use reco_util::bench::median;
use reco_util::seed::mix_seed;

use crate::train::{Learner, TrainConfig};

/// The measurements, by name.
pub const MEASUREMENTS: [&str; 4] = ["train", "eval", "reco", "save"];

/// What is measured: the network, the batch and the device.
#[derive(Clone, Debug)]
pub struct Workload {
    pub network: reco_models::NetworkKind,
    pub backbone: String,
    /// Labelled (= unlabelled) crops per train step.
    pub batch: usize,
    pub crop: usize,
    /// Timed runs per measurement (after one warm-up run).
    pub runs: usize,
    /// The device's name, as in the settings of a run.
    pub device: String,
    /// The convolutions' precision (`--precision`).
    pub precision: reco_models::Precision,
    /// TF32 f32 matmuls on CUDA (`--tf32`).
    pub tf32: bool,
}

/// One measurement's result.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Median and fastest run, seconds.
    pub median: f64,
    pub min: f64,
    /// Images one run processes.
    pub images: usize,
    /// Copies to the host per timed run.
    pub host_copies: f64,
}

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

/// A [`Timing`] from [`time_runs`]' (median, min, host copies) and the images per run.
fn timing((median, min, host_copies): (f64, f64, f64), images: usize) -> Timing {
    Timing {
        median,
        min,
        images,
        host_copies,
    }
}

/// The Pascal VOC recipe of the workload's network, at its backbone, batch and crop.
pub fn pascal_config(w: &Workload) -> TrainConfig {
    let mut cfg = TrainConfig::for_recipe(DatasetKind::Pascal, w.network);
    cfg.backbone = w.backbone.clone();
    cfg.batch_size = w.batch;
    cfg.crop_size = w.crop;
    cfg.device = w.device.clone();
    cfg.precision = w.precision;
    cfg.tf32 = w.tf32;
    cfg
}

/// One measurement (one of [`MEASUREMENTS`]) of `w` in this process.
pub fn measure(what: &str, work: &Workload, device: &Device) -> anyhow::Result<Timing> {
    let batch = work.batch;
    let classes = DatasetKind::Pascal.defaults().num_classes;
    match what {
        "train" => {
            let cfg = pascal_config(work);
            cfg.validate()?;
            let mut learner = Learner::new(cfg, device.clone())?;
            let lb = random_batch(batch, work.crop, classes, 1, device)?;
            let ub = random_batch(batch, work.crop, classes, 2, device)?;
            let lr = learner.cfg.lr;
            let runs = time_runs(work.runs, device, |i| {
                learner.step(&lb, Some(&ub), i, lr)?;
                Ok(())
            })?;
            Ok(timing(runs, 2 * batch))
        }
        "eval" => {
            let cfg = pascal_config(work);
            let learner = Learner::new(cfg, device.clone())?;
            let (eh, ew) = DatasetKind::Pascal.defaults().eval_size;
            let x = random_batch(1, eh.max(ew), classes, 3, device)?.images;
            let runs = time_runs(work.runs, device, |_| {
                crate::evaluation::predict_classes(&learner.eval_net().model, &x)?;
                Ok(())
            })?;
            Ok(timing(runs, 1))
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
            let runs = time_runs(work.runs, device, |i| {
                let loss = reco_loss(rep.as_tensor(), &label, &mask, &prob, &cfg, i as u64)?;
                let grads = loss.backward()?;
                drop(grads);
                Ok(())
            })?;
            Ok(timing(runs, b))
        }
        "save" => {
            let cfg = pascal_config(work);
            let mut learner = Learner::new(cfg.clone(), device.clone())?;
            // One step first, so that the momentum buffers exist as in a running job.
            let lb = random_batch(batch, work.crop, classes, 1, device)?;
            let ub = random_batch(batch, work.crop, classes, 2, device)?;
            let lr = learner.cfg.lr;
            learner.step(&lb, Some(&ub), 0, lr)?;
            let dir = std::env::temp_dir().join(format!("reco-bench-save-{}", std::process::id()));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let path = dir.join(crate::train::state::STATE_FILE);
            let runs = time_runs(work.runs, device, |_| {
                crate::train::state::save(&learner, &cfg, 1, None, &path)
            });
            let _ = std::fs::remove_dir_all(&dir);
            Ok(timing(runs?, 0))
        }
        other => bail!("unknown measurement {other:?}: expected train, eval, reco or save"),
    }
}
