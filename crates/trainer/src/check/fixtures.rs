//! The reference fixtures of the original code (docs/design.md#reference-fixtures): the
//! DeepLabV3+ networks and UniMatch V2's DPT on the formula weights (eval in f32; train and its input gradient
//! in f64) and the losses (supervised and unsupervised cross-entropy, the ReCo loss's
//! distribution over seeds), each compared with the fixture's values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use reco_loss::{reco_loss, supervised_loss, unsupervised_loss, ReCoConfig};
use reco_models::reference::{fill_formula, formula_x, rel_err};
use reco_models::{DeepLabConfig, Network, NetworkKind};

use super::CheckLine;

pub const MODEL_FIXTURES: [&str; 3] = [
    "deeplabv3p_resnet50_os16.safetensors",
    "deeplabv3p_resnet101_os8.safetensors",
    // UniMatch V2's DPT on DINOv2-S with ReCo's head (crates/models/tests/parity_dpt.rs).
    "dpt_dinov2s.safetensors",
];
pub const LOSS_FIXTURE: &str = "losses.safetensors";
const RECO_CASES: [&str; 4] = ["stripes", "imbalanced", "easyclass", "single"];

/// The fixture file `name`: in `dir`, else in the repository's fixture folders.
pub fn find(dir: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let candidates: Vec<PathBuf> = match dir {
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

pub fn model_checks(path: &Path, device: &Device, out: &mut Vec<CheckLine>) -> anyhow::Result<()> {
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
    let count = |key: &str, default: usize| -> anyhow::Result<usize> {
        match meta.get(key) {
            Some(v) => v
                .parse()
                .with_context(|| format!("fixture metadata {key} = {v:?}")),
            None => Ok(default),
        }
    };
    let network: NetworkKind = match meta.get("network") {
        Some(n) => n.parse().map_err(anyhow::Error::msg)?,
        None => NetworkKind::DeepLabV3Plus,
    };
    let cfg = DeepLabConfig {
        backbone: backbone.parse().map_err(anyhow::Error::msg)?,
        output_stride: os,
        num_classes: count("num_classes", 21)?,
        output_dim: count("output_dim", 256)?,
    };
    let vars = VarMap::new();
    let model = Network::new(
        network,
        &cfg,
        VarBuilder::from_varmap(&vars, DType::F32, device),
    )?;
    fill_formula(&vars)?;
    let name = match network {
        NetworkKind::DeepLabV3Plus => format!("{backbone} OS{os}"),
        other => format!("{other} {backbone}"),
    };
    let (pred, rep) = model.forward_no_grad(get(&fx, "input")?, false)?;
    let compare = |what: &str, got: &Tensor, key: &str, limit: f64| -> anyhow::Result<_> {
        Ok(CheckLine {
            what: format!("{name} {what}"),
            value: rel_err(got, get(&fx, key)?)?,
            limit,
        })
    };
    out.push(compare("eval pred (f32)", &pred, "eval.pred", 1e-4)?);
    out.push(compare("eval rep (f32)", &rep, "eval.rep", 1e-4)?);
    // Train mode in f64, as docs/design.md#reference-fixtures prescribes: batch
    // statistics of the formula network amplify f32 rounding far beyond any useful
    // tolerance.
    let vars64 = VarMap::new();
    let model64 = Network::new(
        network,
        &cfg,
        VarBuilder::from_varmap(&vars64, DType::F64, device),
    )?;
    fill_formula(&vars64)?;
    let input = Var::from_tensor(&get(&fx, "input")?.to_dtype(DType::F64)?)?;
    let (pred, rep) = model64.forward_t(input.as_tensor(), true)?;
    out.push(compare("train pred (f64)", &pred, "train.pred", 1e-6)?);
    out.push(compare("train rep (f64)", &rep, "train.rep", 1e-6)?);
    let gp = formula_x("grad.pred", pred.dims(), 1.0, DType::F64, device)?;
    let gr = formula_x("grad.rep", rep.dims(), 1.0, DType::F64, device)?;
    let loss = ((&pred * &gp)?.sum_all()? + (&rep * &gr)?.sum_all()?)?;
    let grads = loss.backward()?;
    let gi = grads
        .get(input.as_tensor())
        .context("no gradient reaches the input")?;
    out.push(compare(
        "train grad input (f64)",
        gi,
        "train.grad.input",
        1e-6,
    )?);
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

pub fn loss_checks(
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
