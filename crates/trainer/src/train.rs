//! The training run: DESIGN.md's semi-supervised step (mean teacher, pseudo-labels,
//! mixing, supervised + unsupervised + ReCo losses, nesterov SGD, poly schedule, EMA)
//! and the supervised-only variant, with periodic evaluation, atomic checkpoints and
//! exact resume.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use reco_data::{
    open, unsup_transform, Loader, PartialLabels, SegDataset, Split, Subset, TrainLoaderConfig,
    UnsupAugConfig,
};
use reco_loss::{
    reco_loss, reco_targets, reco_targets_labelled, supervised_loss, unsupervised_loss, ReCoTargets,
};
use reco_models::ops::resize_bilinear;
use reco_models::{export_state_dict, init_seeded, load_backbone, DeepLabV3Plus};
use serde::{Deserialize, Serialize};

use crate::config::{parse_device, TrainConfig, TrainMode};
use crate::eval::evaluate;
use crate::fsutil::{mix_seed, write_atomic};
use crate::metrics::SegMetrics;
use crate::optim::{is_running_stat, poly_lr, Ema, Sgd};

/// Stream tags for per-step seeds.
const TAG_INIT: u64 = 1;
const TAG_LABELLED: u64 = 2;
const TAG_UNLABELLED: u64 = 3;
const TAG_MIX: u64 = 4;
const TAG_RECO: u64 = 5;
const TAG_PARTIAL: u64 = 6;

const STATE_FILE: &str = "state.safetensors";
pub(crate) const METRICS_FILE: &str = "metrics.jsonl";

/// A model and the VarMap that owns its variables.
pub struct Network {
    pub vars: VarMap,
    pub model: DeepLabV3Plus,
}

impl Network {
    pub fn new(cfg: &TrainConfig, device: &Device) -> anyhow::Result<Self> {
        let vars = VarMap::new();
        let model = DeepLabV3Plus::new(
            &cfg.model_config()?,
            VarBuilder::from_varmap(&vars, DType::F32, device),
        )?;
        Ok(Self { vars, model })
    }

    /// Variables by name, sorted.
    pub fn named_vars(&self) -> BTreeMap<String, Var> {
        self.vars
            .data()
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    fn copy_from(&self, other: &Network) -> anyhow::Result<()> {
        let src = other.named_vars();
        for (name, var) in self.named_vars() {
            var.set(&src[&name].as_detached_tensor().copy()?)?;
        }
        Ok(())
    }
}

struct Teacher {
    net: Network,
    ema: Ema,
}

/// Losses of one step, as plain numbers.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct StepLosses {
    pub sup: f64,
    pub unsup: f64,
    pub reco: f64,
    pub total: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Best {
    miou: f64,
    step: usize,
}

/// What the run reports when it ends.
pub struct RunSummary {
    pub last: SegMetrics,
    pub last_step: usize,
    pub best_miou: f64,
    pub best_step: usize,
    pub out: PathBuf,
}

/// The networks and the optimiser: one training step from two batches, with no
/// knowledge of datasets or files (the trainer, `bench` and `check` share it).
pub struct Learner {
    pub cfg: TrainConfig,
    pub device: Device,
    pub student: Network,
    teacher: Option<Teacher>,
    sgd: Sgd,
}

pub struct Trainer {
    cfg: TrainConfig,
    device: Device,
    ds: Arc<dyn SegDataset>,
    split: Split,
    learner: Learner,
    step: usize,
    best: Option<Best>,
    last: Option<SegMetrics>,
}

impl Learner {
    /// The student initialised from the seed (and the pretrained backbone, if any), its
    /// optimiser, and in semi-supervised mode a teacher that starts as its copy.
    pub fn new(cfg: TrainConfig, device: Device) -> anyhow::Result<Self> {
        let student = Network::new(&cfg, &device)?;
        init_seeded(&student.vars, mix_seed(&[cfg.seed, TAG_INIT]))?;
        if let Some(path) = &cfg.pretrained {
            if !path.is_file() {
                bail!(
                    "pretrained weights {} not found: fetch them with `cargo xtask fetch-weights --backbone {}`",
                    path.display(),
                    cfg.backbone
                );
            }
            load_backbone(&student.vars, path).with_context(|| {
                format!(
                    "cannot initialise the {} backbone from {}",
                    cfg.backbone,
                    path.display()
                )
            })?;
        }
        let params: Vec<(String, Var)> = student
            .named_vars()
            .into_iter()
            .filter(|(k, _)| !is_running_stat(k))
            .collect();
        let sgd = Sgd::new(params, cfg.momentum, cfg.weight_decay);
        let teacher = match cfg.mode {
            TrainMode::Sup => None,
            TrainMode::Semi => {
                let net = Network::new(&cfg, &device)?;
                net.copy_from(&student)?;
                let (t, s) = (net.named_vars(), student.named_vars());
                let pairs = t
                    .iter()
                    .filter(|(k, _)| !is_running_stat(k))
                    .map(|(k, v)| (v.clone(), s[k].clone()))
                    .collect();
                Some(Teacher {
                    net,
                    ema: Ema::new(pairs, cfg.ema_decay),
                })
            }
        };
        Ok(Self {
            cfg,
            device,
            student,
            teacher,
            sgd,
        })
    }

    /// The network evaluated and exported: the teacher, or the model itself when supervised.
    pub fn eval_net(&self) -> &Network {
        self.teacher
            .as_ref()
            .map(|t| &t.net)
            .unwrap_or(&self.student)
    }

    /// One optimisation step at iteration `step` (which seeds the mixing and ReCo draws).
    pub fn step(
        &mut self,
        lb: &reco_data::Batch,
        ub: Option<&reco_data::Batch>,
        step: usize,
        lr: f64,
    ) -> anyhow::Result<StepLosses> {
        match ub {
            None => self.sup_step(lb, step, lr),
            Some(ub) => self.semi_step(lb, ub, step, lr),
        }
    }

    /// Upsamples logits to the crop size, as the original does before its losses.
    fn to_crop(&self, pred: &Tensor, like: &Tensor) -> anyhow::Result<Tensor> {
        let (h, w) = (like.dim(D::Minus2)?, like.dim(D::Minus1)?);
        Ok(resize_bilinear(pred, h, w, true)?)
    }

    fn finish_step(
        &mut self,
        sup: Tensor,
        unsup: Option<Tensor>,
        reco: Option<Tensor>,
        step: usize,
        lr: f64,
    ) -> anyhow::Result<StepLosses> {
        let scalar = |t: &Option<Tensor>| -> anyhow::Result<f64> {
            Ok(match t {
                Some(t) => t.to_dtype(DType::F64)?.to_scalar::<f64>()?,
                None => 0.0,
            })
        };
        let mut total = sup.clone();
        for t in [&unsup, &reco].into_iter().flatten() {
            total = (total + t)?;
        }
        let losses = StepLosses {
            sup: sup.to_dtype(DType::F64)?.to_scalar::<f64>()?,
            unsup: scalar(&unsup)?,
            reco: scalar(&reco)?,
            total: total.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        };
        if !losses.total.is_finite() {
            bail!(
                "the loss became {} at step {} (supervised {}, unsupervised {}, ReCo {}): training stopped; the last good checkpoint in {} is kept. Try a lower --lr.",
                losses.total,
                step + 1,
                losses.sup,
                losses.unsup,
                losses.reco,
                self.cfg.out.display()
            );
        }
        let grads = total.backward()?;
        self.sgd.step(&grads, lr)?;
        drop(grads);
        if let Some(t) = self.teacher.as_mut() {
            t.ema.update()?;
        }
        Ok(losses)
    }

    /// The ReCo loss of step `step`, its draws seeded by (run seed, step).
    fn reco_term(&self, rep: &Tensor, t: &ReCoTargets, step: usize) -> anyhow::Result<Tensor> {
        let seed = mix_seed(&[self.cfg.seed, TAG_RECO, step as u64]);
        Ok(reco_loss(
            rep,
            &t.label,
            &t.mask,
            &t.prob,
            &self.cfg.reco_config(),
            seed,
        )?)
    }

    fn sup_step(
        &mut self,
        lb: &reco_data::Batch,
        step: usize,
        lr: f64,
    ) -> anyhow::Result<StepLosses> {
        let x = lb.images.to_device(&self.device)?;
        let y = lb.labels.to_device(&self.device)?;
        let (pred, rep) = self.student.model.forward_t(&x, true)?;
        let sup = supervised_loss(&self.to_crop(&pred, &y)?, &y)?;
        let reco = if self.cfg.reco {
            let t = reco_targets_labelled(&y, &pred)?;
            Some(self.reco_term(&rep, &t, step)?)
        } else {
            None
        };
        self.finish_step(sup, None, reco, step, lr)
    }

    fn semi_step(
        &mut self,
        lb: &reco_data::Batch,
        ub: &reco_data::Batch,
        step: usize,
        lr: f64,
    ) -> anyhow::Result<StepLosses> {
        let teacher = self
            .teacher
            .as_ref()
            .context("semi-supervised step without a teacher")?;
        let xl = lb.images.to_device(&self.device)?;
        let yl = lb.labels.to_device(&self.device)?;
        let xu = ub.images.to_device(&self.device)?;
        // 1. Pseudo-labels from the teacher, in train mode as the original, without a graph.
        let (pred_t, _) = teacher.net.model.forward_no_grad(&xu, true)?;
        let prob = candle_nn::ops::softmax(&self.to_crop(&pred_t, &xu)?, 1)?;
        let confidence = prob.max(1)?;
        let pseudo = prob.argmax(1)?.to_dtype(DType::I64)?;
        // 2. Rescale + crop, mix, photometric augmentation.
        let mut ucfg = UnsupAugConfig::new(self.cfg.dataset, self.cfg.mix);
        ucfg.crop_size = (self.cfg.crop_size, self.cfg.crop_size);
        ucfg.scale_range = (self.cfg.scale_min, self.cfg.scale_max);
        ucfg.photometric.hue = (-self.cfg.hue_jitter, self.cfg.hue_jitter);
        let mix_seed_ = mix_seed(&[self.cfg.seed, TAG_MIX, step as u64]);
        let mixed = unsup_transform(&xu, &pseudo, &confidence, &ucfg, mix_seed_)?;
        // 3. Student on both batches (two forward passes, as the original).
        let (pred_l, rep_l) = self.student.model.forward_t(&xl, true)?;
        let (pred_u, rep_u) = self.student.model.forward_t(&mixed.images, true)?;
        // 4. Supervised and confidence-weighted unsupervised losses at crop size.
        let sup = supervised_loss(&self.to_crop(&pred_l, &yl)?, &yl)?;
        let unsup = unsupervised_loss(
            &self.to_crop(&pred_u, &mixed.labels)?,
            &mixed.labels,
            &mixed.confidence,
            self.cfg.strong_threshold,
        )?;
        // 5. ReCo on the concatenated representations.
        let reco = if self.cfg.reco {
            let t = reco_targets(
                &yl,
                &mixed.labels,
                &mixed.confidence,
                &pred_l,
                &pred_u,
                self.cfg.weak_threshold,
            )?;
            let rep = Tensor::cat(&[rep_l, rep_u], 0)?;
            Some(self.reco_term(&rep, &t, step)?)
        } else {
            None
        };
        self.finish_step(sup, Some(unsup), reco, step, lr)
    }
}

impl Trainer {
    pub fn new(cfg: TrainConfig, resume: bool) -> anyhow::Result<Self> {
        cfg.validate()?;
        let device = parse_device(&cfg.device)?;
        let ds = open(cfg.dataset, cfg.data_root.as_deref()).with_context(|| {
            format!(
                "cannot open the {} dataset (fetch it with `cargo xtask fetch-data --dataset {}`, or pass --data-root)",
                cfg.dataset, cfg.dataset
            )
        })?;
        let split = match &cfg.split {
            Some(path) => Split::load(path, ds.as_ref())?,
            None => Split::sample(ds.as_ref(), cfg.num_labels, cfg.seed, cfg.partial)?,
        };
        if split.labelled.is_empty() {
            bail!("the split has no labelled images: raise --num-labels");
        }
        if cfg.mode == TrainMode::Semi && split.unlabelled.is_empty() {
            bail!("semi-supervised training needs unlabelled images, but the split labels every image: lower --num-labels or use --mode sup");
        }
        let learner = Learner::new(cfg.clone(), device.clone())?;
        let mut trainer = Self {
            cfg,
            device,
            ds,
            split,
            learner,
            step: 0,
            best: None,
            last: None,
        };
        std::fs::create_dir_all(&trainer.cfg.out).with_context(|| {
            format!(
                "cannot create the output folder {}",
                trainer.cfg.out.display()
            )
        })?;
        let state = trainer.cfg.out.join(STATE_FILE);
        if resume {
            if state.is_file() {
                trainer.load_state(&state)?;
            } else {
                eprintln!(
                    "--resume: no {} in {}, starting from step 0",
                    STATE_FILE,
                    trainer.cfg.out.display()
                );
            }
        } else if state.is_file() {
            bail!(
                "{} already holds a run ({}): pass --resume to continue it, or choose another --out",
                trainer.cfg.out.display(),
                STATE_FILE
            );
        }
        trainer.write_config()?;
        Ok(trainer)
    }

    fn eval_net(&self) -> &Network {
        self.learner.eval_net()
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let json = serde_json::json!({
            "config": self.cfg,
            "split": self.split,
            "versions": {
                "trainer": env!("CARGO_PKG_VERSION"),
                "candle": "0.11",
            },
        });
        write_atomic(
            &self.cfg.out.join("config.json"),
            serde_json::to_string_pretty(&json)?.as_bytes(),
        )
    }

    fn loaders(&self) -> anyhow::Result<(Loader, Option<Loader>)> {
        let c = &self.cfg;
        let partial = c.partial.map(|mode| PartialLabels {
            mode,
            seed: mix_seed(&[c.seed, TAG_PARTIAL]),
        });
        let mut lcfg = TrainLoaderConfig::labelled(c.dataset, mix_seed(&[c.seed, TAG_LABELLED]));
        lcfg.batch_size = match c.mode {
            TrainMode::Sup => 2 * c.batch_size,
            TrainMode::Semi => c.batch_size,
        };
        lcfg.aug.crop_size = (c.crop_size, c.crop_size);
        lcfg.aug.scale_range = (c.scale_min, c.scale_max);
        lcfg.aug.hue = (-c.hue_jitter, c.hue_jitter);
        lcfg.num_threads = c.num_threads;
        lcfg.partial = partial;
        lcfg.start_batch = self.step;
        let labelled = Loader::train(self.ds.clone(), self.split.labelled.clone(), lcfg)?;
        let unlabelled = match c.mode {
            TrainMode::Sup => None,
            TrainMode::Semi => {
                let mut ucfg =
                    TrainLoaderConfig::unlabelled(c.dataset, mix_seed(&[c.seed, TAG_UNLABELLED]));
                ucfg.batch_size = c.batch_size;
                ucfg.aug.crop_size = (c.crop_size, c.crop_size);
                ucfg.num_threads = c.num_threads;
                ucfg.start_batch = self.step;
                Some(Loader::train(
                    self.ds.clone(),
                    self.split.unlabelled.clone(),
                    ucfg,
                )?)
            }
        };
        Ok((labelled, unlabelled))
    }

    /// Runs from the current step to `iters`, evaluating every `eval_every` steps.
    pub fn run(&mut self, log: &mut dyn FnMut(&str)) -> anyhow::Result<RunSummary> {
        let (mut labelled, mut unlabelled) = self.loaders()?;
        let total = self.cfg.iters;
        let bar = progress_bar(total as u64, self.step as u64);
        let mut window = Instant::now();
        let mut window_images = 0usize;
        let mut acc = StepLosses::default();
        let mut acc_n = 0usize;
        while self.step < total {
            let lr = poly_lr(
                self.cfg.lr,
                self.step,
                self.cfg.epoch_iters,
                total,
                0.9,
                1e-6,
            );
            let lb = next_batch(&mut labelled, "labelled")?;
            let ub = match unlabelled.as_mut() {
                None => None,
                Some(u) => Some(next_batch(u, "unlabelled")?),
            };
            if let Some(ub) = &ub {
                window_images += ub.images.dim(0)?;
            }
            let losses = self.learner.step(&lb, ub.as_ref(), self.step, lr)?;
            window_images += lb.images.dim(0)?;
            self.step += 1;
            acc.sup += losses.sup;
            acc.unsup += losses.unsup;
            acc.reco += losses.reco;
            acc.total += losses.total;
            acc_n += 1;
            if let Some(b) = &bar {
                b.set_position(self.step as u64);
                b.set_message(format!(
                    "loss {:.3} (sup {:.3} unsup {:.3} reco {:.3})",
                    losses.total, losses.sup, losses.unsup, losses.reco
                ));
            }
            if self.step.is_multiple_of(self.cfg.log_every) || self.step == total {
                let secs = window.elapsed().as_secs_f64();
                let n = acc_n as f64;
                let line = serde_json::json!({
                    "kind": "train", "step": self.step, "lr": lr,
                    "loss": acc.total / n, "sup": acc.sup / n, "unsup": acc.unsup / n, "reco": acc.reco / n,
                    "images_per_s": window_images as f64 / secs.max(1e-9),
                });
                self.append_metrics(&line)?;
                if bar.is_none() {
                    log(&format!(
                        "step {}/{} loss {:.4} (sup {:.4} unsup {:.4} reco {:.4}) lr {:.2e} {:.1} img/s",
                        self.step, total, acc.total / n, acc.sup / n, acc.unsup / n, acc.reco / n, lr,
                        window_images as f64 / secs.max(1e-9)
                    ));
                }
                window = Instant::now();
                window_images = 0;
                acc = StepLosses::default();
                acc_n = 0;
            }
            if self.step.is_multiple_of(self.cfg.eval_every) || self.step == total {
                self.evaluate_and_save(log, bar.as_ref())?;
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let last = match &self.last {
            Some(m) => m.clone(),
            None => {
                // Resumed after the final evaluation: evaluate again (deterministic).
                self.evaluate_and_save(log, None)?;
                self.last.clone().context("no evaluation")?
            }
        };
        let best = self.best.clone().context("no evaluation")?;
        Ok(RunSummary {
            last,
            last_step: self.step,
            best_miou: best.miou,
            best_step: best.step,
            out: self.cfg.out.clone(),
        })
    }

    fn val_ids(&self) -> Vec<String> {
        let ids = self.ds.ids(Subset::Val).to_vec();
        match self.cfg.val_limit {
            0 => ids,
            n => ids.into_iter().take(n).collect(),
        }
    }

    fn evaluate_and_save(
        &mut self,
        log: &mut dyn FnMut(&str),
        bar: Option<&indicatif::ProgressBar>,
    ) -> anyhow::Result<()> {
        let metrics = evaluate(
            &self.eval_net().model,
            self.ds.clone(),
            self.val_ids(),
            &self.device,
            self.cfg.num_threads,
        )?;
        let improved = self.best.as_ref().is_none_or(|b| metrics.miou > b.miou);
        if improved {
            self.best = Some(Best {
                miou: metrics.miou,
                step: self.step,
            });
        }
        let line = serde_json::json!({
            "kind": "eval", "step": self.step, "miou": metrics.miou, "pixel_acc": metrics.pixel_acc,
            "per_class_iou": metrics.per_class_iou, "best": improved,
        });
        self.append_metrics(&line)?;
        let out = &self.cfg.out;
        let tracked = self.step as i64;
        export_state_dict(
            &self.eval_net().vars,
            &out.join("last.safetensors"),
            tracked,
        )?;
        if improved {
            export_state_dict(
                &self.eval_net().vars,
                &out.join("best.safetensors"),
                tracked,
            )?;
        }
        self.save_state()?;
        if let Err(e) = crate::plot::draw_curves(&out.join(METRICS_FILE), &out.join("curves.png")) {
            log(&format!("warning: could not draw curves.png: {e:#}"));
        }
        let msg = format!(
            "eval at step {}: mIoU {:.2}%, pixel accuracy {:.2}%{}",
            self.step,
            100.0 * metrics.miou,
            100.0 * metrics.pixel_acc,
            if improved { " (best so far)" } else { "" }
        );
        match bar {
            Some(b) => b.println(msg),
            None => log(&msg),
        }
        self.last = Some(metrics);
        Ok(())
    }

    fn append_metrics(&self, line: &serde_json::Value) -> anyhow::Result<()> {
        use std::io::Write;
        let path = self.cfg.out.join(METRICS_FILE);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))
    }

    fn save_state(&self) -> anyhow::Result<()> {
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for (k, v) in self.learner.student.named_vars() {
            tensors.push((format!("student/{k}"), v.as_detached_tensor()));
        }
        if let Some(t) = &self.learner.teacher {
            for (k, v) in t.net.named_vars() {
                tensors.push((format!("teacher/{k}"), v.as_detached_tensor()));
            }
        }
        for (k, v) in self.learner.sgd.buffers() {
            tensors.push((format!("momentum/{k}"), v.clone()));
        }
        let tensors: Vec<(String, Tensor)> = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<_>>()?;
        let meta = StateMeta {
            step: self.step,
            ema_updates: self
                .learner
                .teacher
                .as_ref()
                .map(|t| t.ema.updates)
                .unwrap_or(0),
            best_miou: self.best.as_ref().map(|b| b.miou),
            best_step: self.best.as_ref().map(|b| b.step),
            config: serde_json::to_string(&self.cfg)?,
        };
        let mut md = std::collections::HashMap::new();
        md.insert("reco_state".to_string(), serde_json::to_string(&meta)?);
        let bytes =
            safetensors::tensor::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(md))?;
        write_atomic(&self.cfg.out.join(STATE_FILE), &bytes)
    }

    fn load_state(&mut self, path: &Path) -> anyhow::Result<()> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .with_context(|| format!("{} is not a valid state file", path.display()))?;
        let meta: StateMeta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get("reco_state"))
            .context("state file without run metadata")
            .and_then(|s| serde_json::from_str(s).context("bad run metadata"))
            .with_context(|| format!("cannot resume from {}", path.display()))?;
        let saved: TrainConfig = serde_json::from_str(&meta.config)?;
        let comparable = |c: &TrainConfig| TrainConfig {
            out: PathBuf::new(),
            device: String::new(),
            num_threads: 0,
            ..c.clone()
        };
        if comparable(&saved) != comparable(&self.cfg) {
            bail!(
                "--resume: the settings differ from those of the run in {} (see its config.json); resume with the same settings or choose another --out",
                self.cfg.out.display()
            );
        }
        let tensors = candle_core::safetensors::load_buffer(&bytes, &self.device)?;
        let set = |prefix: &str, vars: BTreeMap<String, Var>| -> anyhow::Result<()> {
            for (k, v) in vars {
                let t = tensors
                    .get(&format!("{prefix}/{k}"))
                    .with_context(|| format!("{} lacks {prefix}/{k}", path.display()))?;
                v.set(t)?;
            }
            Ok(())
        };
        set("student", self.learner.student.named_vars())?;
        if let Some(t) = &mut self.learner.teacher {
            set("teacher", t.net.named_vars())?;
            t.ema.updates = meta.ema_updates;
        }
        let buffers = tensors
            .iter()
            .filter_map(|(k, t)| {
                k.strip_prefix("momentum/")
                    .map(|n| (n.to_string(), t.clone()))
            })
            .collect();
        self.learner.sgd.set_buffers(buffers);
        self.step = meta.step;
        self.best = meta
            .best_miou
            .zip(meta.best_step)
            .map(|(miou, step)| Best { miou, step });
        self.truncate_metrics(meta.step)?;
        Ok(())
    }

    /// Drops the metric lines written after the saved state, which the resumed run
    /// writes again.
    fn truncate_metrics(&self, step: usize) -> anyhow::Result<()> {
        let path = self.cfg.out.join(METRICS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
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
        write_atomic(&path, out.as_bytes())
    }
}

#[derive(Serialize, Deserialize)]
struct StateMeta {
    step: usize,
    ema_updates: u64,
    best_miou: Option<f64>,
    best_step: Option<usize>,
    config: String,
}

fn next_batch(loader: &mut Loader, which: &str) -> anyhow::Result<reco_data::Batch> {
    loader
        .next()
        .with_context(|| format!("the {which} loader stopped"))?
        .with_context(|| format!("cannot load a {which} batch"))
}

fn progress_bar(total: u64, pos: u64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total).with_position(pos);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} {per_sec} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}
