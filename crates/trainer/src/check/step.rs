//! The same semi-supervised train step on the CPU and on a device, from the same weights
//! and batches: where a GPU's kernels, each within its tolerance, add up to a different
//! step.

use candle_core::{DType, Device, Tensor};
use reco_data::DatasetKind;
use reco_models::reference::{formula_x, rel_err};

use super::CheckLine;
use crate::train::{Learner, TrainConfig};

/// The same semi-supervised step on the CPU and on `device`: relative differences of the
/// losses and of the teacher after the step.
pub fn step_comparison(device: &Device, out: &mut Vec<CheckLine>) -> anyhow::Result<()> {
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
