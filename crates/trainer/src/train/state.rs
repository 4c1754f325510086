//! The saved state of a run (`state.safetensors`): student, teacher, momentum buffers,
//! step, EMA count, best evaluation and settings, written atomically after every
//! evaluation, every `save_every` steps and when a signal stops the run; and the exact
//! resume from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use candle_core::{Device, Tensor, Var};
use reco_util::fs::write_atomic;
use serde::{Deserialize, Serialize};

use super::config::TrainConfig;
use super::learner::Learner;

pub(crate) const STATE_FILE: &str = "state.safetensors";
/// The safetensors metadata key that holds [`StateMeta`].
const META_KEY: &str = "reco_state";

/// The best evaluation so far.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Best {
    pub miou: f64,
    pub step: usize,
}

/// Where a run stands, besides its tensors.
#[derive(Serialize, Deserialize)]
struct StateMeta {
    step: usize,
    ema_updates: u64,
    best_miou: Option<f64>,
    best_step: Option<usize>,
    config: String,
    /// Ranks of the run that wrote it (absent in states from before data-parallel
    /// training: one).
    #[serde(default = "one")]
    world_size: usize,
    /// The f16 loss scaler's `LossScaler::to_values` (scale, good steps, skips in a row,
    /// skips in all); absent without one.
    #[serde(default)]
    loss_scale: Option<Vec<f64>>,
}

fn one() -> usize {
    1
}

/// The step and best evaluation of a resumed run.
pub(crate) struct Resumed {
    pub step: usize,
    pub best: Option<Best>,
}

/// Writes the state of `learner` at `step` to `path` atomically.
pub(crate) fn save(
    learner: &Learner,
    cfg: &TrainConfig,
    step: usize,
    best: Option<&Best>,
    path: &Path,
) -> anyhow::Result<()> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (k, v) in learner.student.named_vars()? {
        tensors.push((format!("student/{k}"), v.as_detached_tensor()));
    }
    if let Some(t) = learner.teacher() {
        for (k, v) in t.net.named_vars()? {
            tensors.push((format!("teacher/{k}"), v.as_detached_tensor()));
        }
    }
    tensors.extend(learner.optimizer.state_tensors()?);
    let tensors: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    let meta = StateMeta {
        step,
        ema_updates: learner.teacher().map(|t| t.ema.updates).unwrap_or(0),
        best_miou: best.map(|b| b.miou),
        best_step: best.map(|b| b.step),
        config: serde_json::to_string(cfg)?,
        world_size: learner.group().world_size(),
        loss_scale: learner.loss_scaler().map(|s| s.to_values().to_vec()),
    };
    let mut md = std::collections::HashMap::new();
    md.insert(META_KEY.to_string(), serde_json::to_string(&meta)?);
    let bytes =
        safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(md))?;
    write_atomic(path, &bytes)
        .with_context(|| format!("cannot save the run state {}", path.display()))
}

/// Loads the state in `path` into `learner`, after checking that it was saved with the
/// same settings as `cfg` (folder, device and threads may differ) and by as many ranks as
/// `learner` has (the ranks' data streams continue only then).
pub(crate) fn load(
    learner: &mut Learner,
    cfg: &TrainConfig,
    path: &Path,
) -> anyhow::Result<Resumed> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a valid state file", path.display()))?;
    let meta: StateMeta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY))
        .context("state file without run metadata")
        .and_then(|s| serde_json::from_str(s).context("bad run metadata"))
        .with_context(|| format!("cannot resume from {}", path.display()))?;
    crate::distributed::check_resume_world_size(meta.world_size, learner.group().world_size())
        .with_context(|| format!("cannot resume from {}", path.display()))?;
    let saved: TrainConfig = serde_json::from_str(&meta.config)?;
    let comparable = |c: &TrainConfig| TrainConfig {
        out: PathBuf::new(),
        device: String::new(),
        num_threads: 0,
        save_every: 0,
        ..c.clone()
    };
    if comparable(&saved) != comparable(cfg) {
        bail!(
            "--resume: the settings differ from those of the run in {} (see its config.json); resume with the same settings or choose another --out",
            cfg.out.display()
        );
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &learner.device)?;
    let set = |prefix: &str, vars: BTreeMap<String, Var>| -> anyhow::Result<()> {
        for (k, v) in vars {
            let t = tensors
                .get(&format!("{prefix}/{k}"))
                .with_context(|| format!("{} lacks {prefix}/{k}", path.display()))?;
            v.set(t)?;
        }
        Ok(())
    };
    set("student", learner.student.named_vars()?)?;
    if let Some(t) = learner.teacher_mut() {
        set("teacher", t.net.named_vars()?)?;
        t.ema.updates = meta.ema_updates;
    }
    learner
        .optimizer
        .load_state(&tensors)
        .with_context(|| format!("cannot restore the optimiser from {}", path.display()))?;
    if learner.scaler.is_some() {
        let values = meta.loss_scale.with_context(|| {
            format!("{} holds no loss scale for --precision f16", path.display())
        })?;
        learner.scaler = Some(
            crate::optim::LossScaler::from_values(&values)
                .with_context(|| format!("{}: bad loss scale {values:?}", path.display()))?,
        );
    }
    Ok(Resumed {
        step: meta.step,
        best: meta
            .best_miou
            .zip(meta.best_step)
            .map(|(miou, step)| Best { miou, step }),
    })
}

/// Drops the metric lines of `path` written after `step`, which the resumed run writes
/// again.
pub(crate) fn truncate_metrics(path: &Path, step: usize) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s as usize <= step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    write_atomic(path, out.as_bytes()).with_context(|| format!("cannot rewrite {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::distributed::testing::FakeGroup;
    use crate::train::config::TrainMode;

    #[test]
    fn a_state_resumes_only_with_the_world_size_that_wrote_it() {
        let cfg = TrainConfig {
            mode: TrainMode::Sup,
            num_classes: 3,
            output_dim: 8,
            ..TrainConfig::default()
        };
        let two = Arc::new(FakeGroup::mirrored(0, 2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut learner = Learner::in_group(cfg.clone(), Device::Cpu, two.clone()).unwrap();
        save(&learner, &cfg, 4, None, &path).unwrap();
        let resumed = load(&mut learner, &cfg, &path).unwrap();
        assert_eq!(resumed.step, 4);
        let mut alone = Learner::new(cfg.clone(), Device::Cpu).unwrap();
        let err = format!("{:#}", load(&mut alone, &cfg, &path).err().unwrap());
        assert!(
            err.contains("written by 2 rank(s) but this run has 1"),
            "{err}"
        );
        // A single-process state refuses two ranks the same way.
        save(&alone, &cfg, 4, None, &path).unwrap();
        let err = format!("{:#}", load(&mut learner, &cfg, &path).err().unwrap());
        assert!(
            err.contains("written by 1 rank(s) but this run has 2"),
            "{err}"
        );
        // States from before data-parallel training hold no world size: one process.
        let old: StateMeta =
            serde_json::from_str(r#"{"step": 3, "ema_updates": 0, "best_miou": null, "best_step": null, "config": "{}"}"#)
                .unwrap();
        assert_eq!(old.world_size, 1);
    }

    #[test]
    fn an_f16_run_resumes_with_its_loss_scale() {
        use reco_util::ops_path::{with_ops_path, OpsPath};
        let cfg = TrainConfig {
            mode: TrainMode::Sup,
            num_classes: 3,
            output_dim: 8,
            precision: reco_models::Precision::F16,
            ..TrainConfig::default()
        };
        with_ops_path(OpsPath::Generic, || {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(STATE_FILE);
            let mut a = Learner::new(cfg.clone(), Device::Cpu).unwrap();
            let scaler = crate::optim::LossScaler {
                scale: 512.0,
                good_steps: 33,
                skips_in_a_row: 1,
                skipped: 7,
            };
            a.scaler = Some(scaler);
            save(&a, &cfg, 2, None, &path).unwrap();
            let mut b = Learner::new(cfg.clone(), Device::Cpu).unwrap();
            assert_eq!(b.loss_scaler(), Some(crate::optim::LossScaler::default()));
            load(&mut b, &cfg, &path).unwrap();
            assert_eq!(b.loss_scaler(), Some(scaler));
            // A state written in another precision is refused like any other setting.
            let f32_cfg = TrainConfig {
                precision: reco_models::Precision::F32,
                ..cfg.clone()
            };
            let mut c = Learner::new(f32_cfg.clone(), Device::Cpu).unwrap();
            let err = format!("{:#}", load(&mut c, &f32_cfg, &path).err().unwrap());
            assert!(err.contains("settings differ"), "{err}");
        });
    }
}
