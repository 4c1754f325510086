//! `trainer check`: the reference fixtures of the original code, run on a device (the
//! GPU as well as the CPU), with their errors against the tolerances of
//! docs/design.md#reference-fixtures; on a GPU also the same train step on the CPU and on the
//! device from the same weights and batch, compared.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use reco_data::DatasetKind;
use reco_loss::{reco_loss, supervised_loss, unsupervised_loss, ReCoConfig};
use reco_models::reference::{fill_formula, formula_x, rel_err};
use reco_models::{DeepLabConfig, DeepLabV3Plus};

use crate::cli_args::DeviceArgs;
use crate::config::TrainConfig;
use crate::train::Learner;

const MODEL_FIXTURES: [&str; 2] = [
    "deeplabv3p_resnet50_os16.safetensors",
    "deeplabv3p_resnet101_os8.safetensors",
];
const LOSS_FIXTURE: &str = "losses.safetensors";
const RECO_CASES: [&str; 4] = ["stripes", "imbalanced", "easyclass", "single"];

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Folder with the reference fixtures (default: the copies in the repository,
    /// crates/models/tests/fixtures and crates/loss/tests/fixtures).
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Seeds for the ReCo distribution check.
    #[arg(long, default_value_t = 300)]
    pub seeds: u64,
    /// Skip the two large network fixtures (ResNet-50 and -101 forward passes).
    #[arg(long)]
    pub skip_models: bool,
    /// Only the smoke test (seconds): device, copies, matmul, softmax, conv and its
    /// gradients, the composed max-pool and batch norm, randn, against the CPU kernels.
    #[arg(long)]
    pub smoke: bool,
}

fn find_fixture(args: &CheckArgs, name: &str) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match &args.fixtures {
        Some(dir) => vec![dir.join(name)],
        None => vec![
            PathBuf::from("crates/models/tests/fixtures").join(name),
            PathBuf::from("crates/loss/tests/fixtures").join(name),
        ],
    };
    candidates.iter().find(|p| p.is_file()).cloned().with_context(|| {
        format!(
            "fixture {name} not found (looked in {}): run from the repository root, or pass --fixtures DIR",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

fn load(path: &Path, device: &Device) -> anyhow::Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device)
        .with_context(|| format!("cannot read fixture {}", path.display()))
}

fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> anyhow::Result<&'a Tensor> {
    f.get(key)
        .with_context(|| format!("fixture key {key} missing"))
}

fn scalar(f: &HashMap<String, Tensor>, key: &str) -> anyhow::Result<f64> {
    Ok(get(f, key)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?[0])
}

/// One line of the report.
pub struct CheckLine {
    pub what: String,
    pub value: f64,
    pub limit: f64,
}

impl CheckLine {
    pub fn ok(&self) -> bool {
        self.value <= self.limit
    }
}

fn model_checks(path: &Path, device: &Device, out: &mut Vec<CheckLine>) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let meta = st
        .metadata()
        .clone()
        .context("model fixture without metadata")?;
    let backbone = meta
        .get("backbone")
        .context("fixture metadata lacks backbone")?;
    let os: usize = meta
        .get("output_stride")
        .context("fixture metadata lacks output_stride")?
        .parse()?;
    let fx = load(path, device)?;
    let cfg = DeepLabConfig {
        backbone: backbone.parse().map_err(anyhow::Error::msg)?,
        output_stride: os,
        num_classes: 21,
        output_dim: 256,
    };
    let vars = VarMap::new();
    let model = DeepLabV3Plus::new(&cfg, VarBuilder::from_varmap(&vars, DType::F32, device))?;
    fill_formula(&vars)?;
    let name = format!("{backbone} OS{os}");
    let (pred, rep) = model.forward_no_grad(get(&fx, "input")?, false)?;
    out.push(CheckLine {
        what: format!("{name} eval pred (f32)"),
        value: rel_err(&pred, get(&fx, "eval.pred")?)?,
        limit: 1e-4,
    });
    out.push(CheckLine {
        what: format!("{name} eval rep (f32)"),
        value: rel_err(&rep, get(&fx, "eval.rep")?)?,
        limit: 1e-4,
    });
    // Train mode in f64, as docs/design.md#reference-fixtures prescribes: batch
    // statistics of the formula network amplify f32 rounding far beyond any useful
    // tolerance.
    let vars64 = VarMap::new();
    let model64 = DeepLabV3Plus::new(&cfg, VarBuilder::from_varmap(&vars64, DType::F64, device))?;
    fill_formula(&vars64)?;
    let input = Var::from_tensor(&get(&fx, "input")?.to_dtype(DType::F64)?)?;
    let (pred, rep) = model64.forward_t(input.as_tensor(), true)?;
    out.push(CheckLine {
        what: format!("{name} train pred (f64)"),
        value: rel_err(&pred, get(&fx, "train.pred")?)?,
        limit: 1e-6,
    });
    out.push(CheckLine {
        what: format!("{name} train rep (f64)"),
        value: rel_err(&rep, get(&fx, "train.rep")?)?,
        limit: 1e-6,
    });
    let gp = formula_x("grad.pred", pred.dims(), 1.0, DType::F64, device)?;
    let gr = formula_x("grad.rep", rep.dims(), 1.0, DType::F64, device)?;
    let loss = ((&pred * &gp)?.sum_all()? + (&rep * &gr)?.sum_all()?)?;
    let grads = loss.backward()?;
    let gi = grads
        .get(input.as_tensor())
        .context("no gradient reaches the input")?;
    out.push(CheckLine {
        what: format!("{name} train grad input (f64)"),
        value: rel_err(gi, get(&fx, "train.grad.input")?)?,
        limit: 1e-6,
    });
    Ok(())
}

/// The loss (relative error, limit 1e-5) and gradient (relative L2, `grad_limit`) of a
/// cross-entropy fixture `<key>.loss` / `<key>.grad`.
fn ce_lines(
    name: &str,
    f: &HashMap<String, Tensor>,
    key: &str,
    pred: &Var,
    loss: &Tensor,
    grad_limit: f64,
    out: &mut Vec<CheckLine>,
) -> anyhow::Result<()> {
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let want = scalar(f, &format!("{key}.loss"))?;
    out.push(CheckLine {
        what: format!("{name} CE loss"),
        value: ((value - want) / want).abs(),
        limit: 1e-5,
    });
    let grads = loss.backward()?;
    let g = grads.get(pred.as_tensor()).context("no gradient")?;
    out.push(CheckLine {
        what: format!("{name} CE gradient"),
        value: rel_err(g, get(f, &format!("{key}.grad"))?)?,
        limit: grad_limit,
    });
    Ok(())
}

fn loss_checks(
    path: &Path,
    device: &Device,
    seeds: u64,
    out: &mut Vec<CheckLine>,
) -> anyhow::Result<()> {
    let f = load(path, device)?;
    // Supervised and unsupervised cross-entropy: loss and gradient against the fixture.
    let pred = Var::from_tensor(get(&f, "sup.pred")?)?;
    let loss = supervised_loss(pred.as_tensor(), get(&f, "sup.target")?)?;
    ce_lines("supervised", &f, "sup", &pred, &loss, 1e-5, out)?;
    let pred = Var::from_tensor(get(&f, "unsup.pred")?)?;
    let loss = unsupervised_loss(
        pred.as_tensor(),
        get(&f, "unsup.target")?,
        get(&f, "unsup.confidence")?,
        scalar(&f, "unsup.strong_threshold")?,
    )?;
    ce_lines("unsupervised", &f, "unsup", &pred, &loss, 1e-4, out)?;
    // ReCo: distribution over seeds (docs/design.md#reference-fixtures: |mean − ref| ≤ 4 s.e.; gradient statistic < 2.5).
    for case in RECO_CASES {
        let k = |s: &str| format!("reco.{case}.{s}");
        let cfg = ReCoConfig {
            strong_threshold: scalar(&f, &k("cfg.strong_threshold"))?,
            temp: scalar(&f, &k("cfg.temp"))?,
            num_queries: scalar(&f, &k("cfg.num_queries"))? as usize,
            num_negatives: scalar(&f, &k("cfg.num_negatives"))? as usize,
            ..ReCoConfig::default()
        };
        let rep = Var::from_tensor(get(&f, &k("rep"))?)?;
        let (label, mask, prob) = (
            get(&f, &k("label_onehot"))?,
            get(&f, &k("mask"))?,
            get(&f, &k("prob"))?,
        );
        let n = rep.elem_count();
        let (mut s, mut s2) = (0.0, 0.0);
        let (mut g, mut g2) = (vec![0.0f64; n], vec![0.0f64; n]);
        for seed in 0..seeds {
            let loss = reco_loss(rep.as_tensor(), label, mask, prob, &cfg, 1000 + seed)?;
            let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            s += l;
            s2 += l * l;
            let grads = loss.backward()?;
            if let Some(grad) = grads.get(rep.as_tensor()) {
                for ((a, b), x) in g
                    .iter_mut()
                    .zip(g2.iter_mut())
                    .zip(grad.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
                {
                    *a += x;
                    *b += x * x;
                }
            }
        }
        let kf = seeds as f64;
        let var = |sum: f64, sum2: f64| ((sum2 - sum * sum / kf) / (kf - 1.0)).max(0.0);
        let (ref_mean, ref_std, ref_n) = (
            scalar(&f, &k("loss.mean"))?,
            scalar(&f, &k("loss.std"))?,
            scalar(&f, &k("samples"))?,
        );
        let se = (ref_std * ref_std / ref_n + var(s, s2) / kf).sqrt();
        let dev = (s / kf - ref_mean).abs();
        out.push(CheckLine {
            what: format!("ReCo {case}: |mean loss − ref| / s.e. ({seeds} seeds)"),
            value: if se > 0.0 {
                dev / se
            } else if dev == 0.0 {
                0.0
            } else {
                f64::INFINITY
            },
            limit: 4.0,
        });
        let ref_gmean = get(&f, &k("grad.mean"))?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let ref_gstd = get(&f, &k("grad.std"))?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let num: f64 = g
            .iter()
            .zip(&ref_gmean)
            .map(|(a, b)| (a / kf - b) * (a / kf - b))
            .sum();
        let den: f64 = ref_gstd
            .iter()
            .zip(g.iter().zip(&g2))
            .map(|(sd, (&a, &b))| sd * sd / ref_n + var(a, b) / kf)
            .sum();
        if den > 0.0 {
            out.push(CheckLine {
                what: format!("ReCo {case}: gradient statistic"),
                value: num / den,
                limit: 2.5,
            });
        }
    }
    Ok(())
}

/// The same semi-supervised step on the CPU and on `device`: relative differences of the
/// losses and of the teacher after the step.
fn step_comparison(device: &Device, out: &mut Vec<CheckLine>) -> anyhow::Result<()> {
    let mut cfg = TrainConfig::for_dataset(DatasetKind::Pascal);
    cfg.batch_size = 2;
    let batch = |seed, dev: &Device| -> anyhow::Result<reco_data::Batch> {
        let images = formula_x(
            &format!("images{seed}"),
            &[2, 3, 321, 321],
            2.0,
            DType::F32,
            dev,
        )?;
        let labels = (formula_x(
            &format!("labels{seed}"),
            &[2, 321, 321],
            10.5,
            DType::F32,
            dev,
        )? + 10.5)?
            .floor()?
            .clamp(0f64, 20f64)?
            .to_dtype(DType::I64)?;
        Ok(reco_data::Batch {
            images,
            labels,
            ids: vec!["a".into(), "b".into()],
        })
    };
    let mut results = Vec::new();
    for dev in [Device::Cpu, device.clone()] {
        let mut learner = Learner::new(cfg.clone(), dev.clone())?;
        let losses = learner.step(&batch(1, &dev)?, Some(&batch(2, &dev)?), 0, 2.5e-3)?;
        let losses2 = learner.step(&batch(3, &dev)?, Some(&batch(4, &dev)?), 1, 2.5e-3)?;
        let weights: Vec<(String, Tensor)> = learner
            .eval_net()
            .named_vars()?
            .into_iter()
            .map(|(k, v)| Ok((k, v.as_detached_tensor().to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<_>>()?;
        results.push((losses, losses2, weights));
    }
    let (a, b) = (&results[0], &results[1]);
    let rel = |x: f64, y: f64| ((x - y) / y.abs().max(1e-12)).abs();
    out.push(CheckLine {
        what: "CPU vs device step 1: supervised loss".into(),
        value: rel(b.0.sup, a.0.sup),
        limit: 1e-4,
    });
    out.push(CheckLine {
        what: "CPU vs device step 1: unsupervised loss".into(),
        value: rel(b.0.unsup, a.0.unsup),
        limit: 1e-3,
    });
    out.push(CheckLine {
        what: "CPU vs device step 1: ReCo loss".into(),
        value: rel(b.0.reco, a.0.reco),
        limit: 1e-3,
    });
    out.push(CheckLine {
        what: "CPU vs device step 2: total loss".into(),
        value: rel(b.1.total, a.1.total),
        limit: 1e-3,
    });
    let worst =
        a.2.iter()
            .zip(&b.2)
            .map(|((_, x), (_, y))| rel_err(y, x).unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max);
    out.push(CheckLine {
        what: "CPU vs device after 2 steps: worst teacher tensor".into(),
        value: worst,
        limit: 1e-3,
    });
    Ok(())
}

/// Which kernels the tensor code takes on `device` (see `reco_util::ops_path`).
fn ops_description(device: &Device) -> &'static str {
    if !device.is_cpu() {
        "device (generic)"
    } else if reco_models::ops::use_generic_path(device) {
        "generic on the CPU (RECO_OPS=generic)"
    } else {
        "CPU kernels"
    }
}

/// `--smoke`: the smoke lines as a table; fails when one fails.
fn smoke_report(args: &CheckArgs, device: &Device) -> anyhow::Result<Vec<CheckLine>> {
    println!(
        "smoke test on {} (kernels: {})",
        args.device.name(),
        ops_description(device)
    );
    println!("| check | value | limit | |\n| --- | --- | --- | --- |");
    let mut lines = Vec::new();
    for (line, error) in crate::smoke::smoke_checks(device) {
        let verdict = match (&error, line.ok()) {
            (Some(e), _) => format!("FAIL: {e}"),
            (None, true) => "ok".to_string(),
            (None, false) => "FAIL".to_string(),
        };
        println!(
            "| {} | {:.3e} | {:.1e} | {verdict} |",
            line.what, line.value, line.limit
        );
        lines.push(line);
    }
    let failed = lines.iter().filter(|l| !l.ok()).count();
    if failed > 0 {
        bail!("{failed} of {} smoke checks failed", lines.len());
    }
    println!("all {} smoke checks passed", lines.len());
    Ok(lines)
}

pub fn run(args: &CheckArgs) -> anyhow::Result<Vec<CheckLine>> {
    let device = args.device.open()?;
    if args.seeds < 2 {
        bail!("--seeds must be at least 2");
    }
    // The fixtures' tolerances are for full f32: no TF32 in f32 matrix products.
    candle_core::cuda::set_gemm_reduced_precision_f32(false);
    if args.smoke {
        return smoke_report(args, &device);
    }
    let mut lines = Vec::new();
    if !args.skip_models {
        for name in MODEL_FIXTURES {
            model_checks(&find_fixture(args, name)?, &device, &mut lines)?;
        }
    }
    loss_checks(
        &find_fixture(args, LOSS_FIXTURE)?,
        &device,
        args.seeds,
        &mut lines,
    )?;
    if !device.is_cpu() {
        step_comparison(&device, &mut lines)?;
    }
    println!(
        "reference checks on {} (kernels: {}, f32 matmul reduced precision: off)",
        args.device.name(),
        ops_description(&device)
    );
    println!("| check | value | limit | |\n| --- | --- | --- | --- |");
    for l in &lines {
        println!(
            "| {} | {:.3e} | {:.1e} | {} |",
            l.what,
            l.value,
            l.limit,
            if l.ok() { "ok" } else { "FAIL" }
        );
    }
    if device.is_cpu() {
        println!("(the CPU-vs-device train step comparison runs when --device is a GPU)");
    }
    let failed = lines.iter().filter(|l| !l.ok()).count();
    if failed > 0 {
        bail!("{failed} of {} checks failed", lines.len());
    }
    println!("all {} checks passed", lines.len());
    Ok(lines)
}
