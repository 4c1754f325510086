//! The training run: the loop from the current step to the last, with the poly
//! learning rate, periodic logging (metrics.jsonl and TensorBoard, the progress bar),
//! evaluation with atomic checkpoints (last, best, the run state), the state written
//! every `save_every` steps, a clean stop on SIGTERM/SIGINT/SIGUSR1 ([`super::stop`])
//! and exact resume.
//!
//! In a data-parallel run (docs/distributed.md) every rank runs this loop on its own
//! batches; rank 0 alone evaluates and writes the run folder (settings, metrics, event
//! file, curves, relation graph, checkpoints, state), the others only train.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::Device;
use reco_data::{
    open, Loader, PartialLabels, SegDataset, Split, Subset, TrainLoaderConfig, UnlabelledFolder,
};
use reco_models::export_with_meta;
use reco_util::fs::write_atomic;
use reco_util::seed::mix_seed;

use super::config::{parse_device, TrainConfig, TrainMode};
use super::learner::{Learner, Network, StepLosses, TAG_LABELLED, TAG_PARTIAL, TAG_UNLABELLED};
use super::state::{self, Best, STATE_FILE};
use super::stop::{signal_name, Interrupted, StopSignal};
use crate::distributed::{ProcessGroup, SingleProcess};
use crate::evaluation::evaluate_with_relation;
use crate::optim::poly_lr;
use crate::reports::explain::{explain_sample, Thresholds};
use crate::reports::metrics::SegMetrics;
use crate::reports::relation::{draw_relation, RELATION_FILE};
use crate::reports::run_log::RunLog;

pub(crate) const METRICS_FILE: &str = "metrics.jsonl";
/// Validation images (the first ones) whose prediction, confidence map and hard queries
/// TensorBoard shows at each evaluation.
pub const TENSORBOARD_IMAGES: usize = 3;

/// Whether a run continues the state saved in its folder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Resume {
    /// Start at step 0; a folder that already holds a run is an error.
    #[default]
    #[value(skip)]
    No,
    /// Continue the run in the folder; a folder without a saved state is an error.
    Required,
    /// Continue the run when the folder holds one, else start at step 0: one command line
    /// for a job's first start and every requeue.
    Auto,
}

/// The poly schedule's power, the original's and UniMatch V2's.
const POLY_POWER: f64 = 0.9;

/// The learning rate at `step` of `total`: the poly schedule `(1 − epoch/epochs)^0.9`
/// never below `lr_floor` (an epoch is `epoch_iters` steps: 200 in the original, 1 in
/// UniMatch V2), after a linear warmup over the first `warmup_iters` steps.
pub fn scheduled_lr(cfg: &TrainConfig, step: usize, total: usize) -> f64 {
    let lr = poly_lr(
        cfg.lr,
        step,
        cfg.epoch_iters,
        total,
        POLY_POWER,
        cfg.lr_floor,
    );
    if step < cfg.warmup_iters {
        lr * (step + 1) as f64 / cfg.warmup_iters as f64
    } else {
        lr
    }
}

/// What the run reports when it ends.
pub struct RunSummary {
    pub last: SegMetrics,
    pub last_step: usize,
    pub best_miou: f64,
    pub best_step: usize,
    pub out: PathBuf,
    /// The dataset's class names (index = class id).
    pub class_names: Vec<String>,
}

/// A training run: the dataset and split, the learner, and where the run stands.
pub struct Trainer {
    cfg: TrainConfig,
    device: Device,
    ds: Arc<dyn SegDataset>,
    split: Split,
    /// `--unlabelled-root`: photos that replace the split's unlabelled images.
    unlabelled: Option<Arc<UnlabelledFolder>>,
    learner: Learner,
    step: usize,
    best: Option<Best>,
    last: Option<SegMetrics>,
    /// Rank 0 (or the only process): evaluates and writes the run folder.
    writer: bool,
    /// metrics.jsonl and the TensorBoard event file (rank 0 only).
    log: Option<RunLog>,
}

impl Trainer {
    pub fn new(cfg: TrainConfig, resume: Resume) -> anyhow::Result<Self> {
        Self::in_group(cfg, resume, Arc::new(SingleProcess))
    }

    /// As [`Trainer::new`], as one rank of `group`. Every rank reads `--out` when
    /// resuming (the state file must be on a filesystem they all see); rank 0 alone
    /// writes it.
    pub fn in_group(
        mut cfg: TrainConfig,
        resume: Resume,
        group: Arc<dyn ProcessGroup>,
    ) -> anyhow::Result<Self> {
        let writer = group.rank() == 0;
        cfg.validate()?;
        let device = parse_device(&cfg.device)?;
        // The data crate's error already says how to fetch the dataset.
        let ds = open(cfg.dataset, cfg.data_root.as_deref())
            .with_context(|| format!("cannot open the {} dataset", cfg.dataset))?;
        // The network has the opened dataset's classes (the folder dataset's come from
        // its classes.txt).
        if cfg.num_classes != 0 && cfg.num_classes != ds.num_classes() {
            bail!(
                "the settings ask for {} classes but the {} dataset has {}: drop num_classes from the config file",
                cfg.num_classes,
                cfg.dataset,
                ds.num_classes()
            );
        }
        cfg.num_classes = ds.num_classes();
        let unlabelled = match &cfg.unlabelled_root {
            None => None,
            Some(root) => {
                let folder = UnlabelledFolder::open(root).with_context(|| {
                    format!(
                        "--unlabelled-root {}: cannot use it as the unlabelled images",
                        root.display()
                    )
                })?;
                if writer {
                    eprintln!(
                        "unlabelled images: {} from {} ({} unreadable files skipped)",
                        folder.len(),
                        root.display(),
                        folder.skipped_count()
                    );
                }
                Some(Arc::new(folder))
            }
        };
        let split = match &cfg.split {
            Some(path) => Split::load(path, ds.as_ref())?,
            None => Split::sample(ds.as_ref(), cfg.num_labels, cfg.seed, cfg.partial)?,
        };
        if split.labelled.is_empty() {
            bail!("the split has no labelled images: raise --num-labels");
        }
        if cfg.mode == TrainMode::Semi && split.unlabelled.is_empty() && unlabelled.is_none() {
            bail!("semi-supervised training needs unlabelled images, but the split labels every image: lower --num-labels or use --mode sup");
        }
        let learner = Learner::in_group(cfg.clone(), device.clone(), group)?;
        let mut trainer = Self {
            cfg,
            device,
            ds,
            split,
            unlabelled,
            learner,
            step: 0,
            best: None,
            last: None,
            writer,
            log: None,
        };
        if writer {
            std::fs::create_dir_all(&trainer.cfg.out).with_context(|| {
                format!(
                    "cannot create the output folder {}",
                    trainer.cfg.out.display()
                )
            })?;
        }
        let state = trainer.cfg.out.join(STATE_FILE);
        match (resume, state.is_file()) {
            (Resume::No, false) => {}
            (Resume::No, true) => bail!(
                "{} already holds a run ({}): pass --resume to continue it, or choose another --out",
                trainer.cfg.out.display(),
                STATE_FILE
            ),
            (Resume::Required | Resume::Auto, true) => {
                let resumed = state::load(&mut trainer.learner, &trainer.cfg, &state)?;
                trainer.step = resumed.step;
                trainer.best = resumed.best;
                if writer {
                    state::truncate_metrics(&trainer.cfg.out.join(METRICS_FILE), resumed.step)?;
                    eprintln!("resuming the run in {} at step {}", trainer.cfg.out.display(), resumed.step);
                }
            }
            (Resume::Required, false) => bail!(
                "--resume: {} holds no saved run ({} is missing): check --out, or pass --resume auto to start a new run when there is none",
                trainer.cfg.out.display(),
                STATE_FILE
            ),
            (Resume::Auto, false) => {
                if writer {
                    eprintln!(
                        "--resume auto: no {} in {}, starting from step 0",
                        STATE_FILE,
                        trainer.cfg.out.display()
                    );
                }
            }
        }
        trainer.check_ranks_agree_on_the_step()?;
        if writer {
            // Created now, so that an unwritable folder fails before the first step.
            trainer.log = Some(RunLog::open(
                &trainer.cfg.out,
                trainer.cfg.out.join(METRICS_FILE),
                trainer.ds.class_names(),
                trainer.step,
            )?);
            trainer.write_config()?;
        }
        Ok(trainer)
    }

    /// Every rank must start at the step rank 0 starts at (a rank that could not see
    /// `--out` would start from 0 and join the wrong collectives).
    fn check_ranks_agree_on_the_step(&self) -> anyhow::Result<()> {
        let group = self.group();
        if group.world_size() == 1 {
            return Ok(());
        }
        let mine = candle_core::Tensor::new(&[self.step as f64], &Device::Cpu)?;
        let rank0 = group.broadcast_flat(&mine, 0)?.to_vec1::<f64>()?[0] as usize;
        if rank0 != self.step {
            bail!(
                "rank {} starts at step {} but rank 0 at step {rank0}: every rank must see the same {} (put --out on a filesystem all ranks share)",
                group.rank(),
                self.step,
                self.cfg.out.join(STATE_FILE).display()
            );
        }
        Ok(())
    }

    fn eval_net(&self) -> &Network {
        self.learner.eval_net()
    }

    /// The networks and the optimiser (to compare ranks, or to look at the weights).
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    fn group(&self) -> &dyn ProcessGroup {
        self.learner.group().as_ref()
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let group = self.group();
        let json = serde_json::json!({
            "config": self.cfg,
            "split": self.split,
            "class_names": self.ds.class_names(),
            "unlabelled": self.unlabelled.as_ref().map(|u| u.summary()),
            "distributed": {
                "world_size": group.world_size(),
                "backend": group.backend().name(),
            },
            "versions": {
                "trainer": env!("CARGO_PKG_VERSION"),
                "candle": "0.11",
            },
        });
        let path = self.cfg.out.join("config.json");
        write_atomic(&path, serde_json::to_string_pretty(&json)?.as_bytes())
            .with_context(|| format!("cannot write the run settings {}", path.display()))
    }

    fn loaders(&self) -> anyhow::Result<(Loader, Option<Loader>)> {
        let c = &self.cfg;
        let partial = c.partial.map(|mode| PartialLabels {
            mode,
            seed: mix_seed(&[c.seed, TAG_PARTIAL]),
        });
        // Each rank draws its own batches; the split and partial labels are shared.
        let seeds = self.learner.seeds();
        let mut lcfg = TrainLoaderConfig::labelled(c.dataset, seeds.stream(TAG_LABELLED));
        lcfg.batch_size = match c.mode {
            TrainMode::Sup => 2 * c.batch_size,
            TrainMode::Semi => c.batch_size,
        };
        lcfg.aug = c.labelled_aug_config();
        lcfg.num_threads = c.num_threads;
        lcfg.partial = partial;
        lcfg.start_batch = self.step;
        let labelled = Loader::train(self.ds.clone(), self.split.labelled.clone(), lcfg)?;
        let unlabelled = match c.mode {
            TrainMode::Sup => None,
            TrainMode::Semi => {
                let mut ucfg =
                    TrainLoaderConfig::unlabelled(c.dataset, seeds.stream(TAG_UNLABELLED));
                ucfg.batch_size = c.batch_size;
                ucfg.aug = c.unlabelled_crop_config();
                ucfg.num_threads = c.num_threads;
                ucfg.start_batch = self.step;
                Some(match &self.unlabelled {
                    Some(folder) => Loader::unlabelled(folder.clone(), ucfg)?,
                    None => Loader::train(self.ds.clone(), self.split.unlabelled.clone(), ucfg)?,
                })
            }
        };
        Ok((labelled, unlabelled))
    }

    /// Runs from the current step to `iters`, evaluating every `eval_every` steps.
    /// Returns the summary on rank 0 (or the only process); other ranks, which neither
    /// evaluate nor log, return `None`.
    ///
    /// A stop signal (SIGTERM, SIGINT, SIGUSR1) on any rank ends every rank after the
    /// same step: rank 0 writes the state and `last.safetensors`, and each rank returns
    /// [`Interrupted`].
    pub fn run(&mut self, log: &mut dyn FnMut(&str)) -> anyhow::Result<Option<RunSummary>> {
        let stop = StopSignal::install()?;
        let (mut labelled, mut unlabelled) = self.loaders()?;
        let total = self.cfg.iters;
        let ranks = self.group().world_size();
        let bar = match self.writer {
            true => progress_bar(total as u64, self.step as u64),
            false => None,
        };
        let mut window = Instant::now();
        let mut window_images = 0usize;
        let mut acc = StepLosses::default();
        let mut acc_n = 0usize;
        while self.step < total {
            let lr = scheduled_lr(&self.cfg, self.step, total);
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
                // The ranks' mean, counted over the window of every rank.
                let mean = mean_over_ranks(self.group(), acc)?;
                let n = acc_n as f64;
                // Every rank trains on as many images per step.
                let images = window_images * ranks;
                let mut line = serde_json::json!({
                    "kind": "train", "step": self.step, "lr": lr,
                    "strong_threshold": self.cfg.strong_threshold.value_at(self.step - 1),
                    "loss": mean.total / n, "sup": mean.sup / n, "unsup": mean.unsup / n, "reco": mean.reco / n,
                    "images_per_s": images as f64 / secs.max(1e-9),
                });
                if let Some(scaler) = self.learner.loss_scaler() {
                    line["loss_scale"] = scaler.scale.into();
                    line["skipped_steps"] = scaler.skipped.into();
                }
                if self.writer {
                    self.append_metrics(&line)?;
                }
                if self.writer && bar.is_none() {
                    log(&format!(
                        "step {}/{} loss {:.4} (sup {:.4} unsup {:.4} reco {:.4}) lr {:.2e} {:.1} img/s",
                        self.step, total, mean.total / n, mean.sup / n, mean.unsup / n, mean.reco / n, lr,
                        images as f64 / secs.max(1e-9)
                    ));
                }
                window = Instant::now();
                window_images = 0;
                acc = StepLosses::default();
                acc_n = 0;
            }
            let eval_step = self.step.is_multiple_of(self.cfg.eval_every) || self.step == total;
            let save_step = self.step.is_multiple_of(self.cfg.save_every);
            if eval_step && self.writer {
                self.evaluate_and_save(log, bar.as_ref())?;
            } else if save_step && self.writer {
                self.save_state()?;
            }
            if self.step == total {
                break;
            }
            // After the step, its evaluation and its checkpoints: every rank asks the
            // others, so that all stop after this same step.
            if let Some(signal) = stop.agreed(self.group())? {
                if let Some(b) = &bar {
                    b.abandon();
                }
                let state = self.cfg.out.join(STATE_FILE);
                if self.writer {
                    if !(eval_step || save_step) {
                        self.save_state()?;
                    }
                    log(&format!(
                        "{} received: stopped after step {}/{total}; state written to {} and last.safetensors",
                        signal_name(signal),
                        self.step,
                        state.display()
                    ));
                }
                return Err(Interrupted {
                    signal,
                    step: self.step,
                    state,
                }
                .into());
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if !self.writer {
            return Ok(None);
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
        Ok(Some(RunSummary {
            last,
            last_step: self.step,
            best_miou: best.miou,
            best_step: best.step,
            out: self.cfg.out.clone(),
            class_names: self.ds.class_names(),
        }))
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
        let (metrics, relation) = evaluate_with_relation(
            &self.eval_net().model,
            self.ds.clone(),
            self.val_ids(),
            &self.device,
            self.cfg.num_threads,
            self.cfg.temp,
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
            "relation": relation.rows_json(),
        });
        self.append_metrics(&line)?;
        let out = self.cfg.out.clone();
        if improved {
            export_with_meta(
                &self.eval_net().vars,
                &self.cfg.checkpoint_meta()?,
                &out.join("best.safetensors"),
                self.step as i64,
            )?;
        }
        self.save_state()?;
        if let Err(e) =
            crate::reports::curves::draw_curves(&out.join(METRICS_FILE), &out.join("curves.png"))
        {
            log(&format!("warning: could not draw curves.png: {e:#}"));
        }
        let relation_png = out.join(RELATION_FILE);
        match draw_relation(&relation, &self.ds.class_names(), &relation_png) {
            Ok(()) => {
                let step = self.step;
                self.run_log()?
                    .png_file(step, "eval/relation", &relation_png)?
            }
            Err(e) => log(&format!("warning: could not draw {RELATION_FILE}: {e:#}")),
        }
        self.log_val_pictures()?;
        if let Some(folder) = &self.unlabelled {
            // Files that failed to decode while loading are only known now.
            if folder.skipped_count() > 0 {
                log(&format!(
                    "unlabelled images skipped so far: {} (listed in config.json)",
                    folder.skipped_count()
                ));
            }
            self.write_config()?;
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

    /// `last.safetensors` (the evaluated network's weights) and the run state, both
    /// written atomically: what a resume needs, at the current step.
    fn save_state(&self) -> anyhow::Result<()> {
        let out = &self.cfg.out;
        export_with_meta(
            &self.eval_net().vars,
            &self.cfg.checkpoint_meta()?,
            &out.join("last.safetensors"),
            self.step as i64,
        )?;
        state::save(
            &self.learner,
            &self.cfg,
            self.step,
            self.best.as_ref(),
            &out.join(STATE_FILE),
        )
    }

    /// The prediction, confidence map and hard queries of the first validation images,
    /// as TensorBoard images (tags `val/<id>/...`).
    fn log_val_pictures(&mut self) -> anyhow::Result<()> {
        let thresholds = Thresholds {
            weak: self.cfg.weak_threshold,
            strong: self
                .cfg
                .strong_threshold
                .value_at(self.step.saturating_sub(1)),
        };
        let palette = self.ds.palette();
        let ids: Vec<String> = self
            .val_ids()
            .into_iter()
            .take(TENSORBOARD_IMAGES)
            .collect();
        for id in ids {
            let sample = self
                .ds
                .load(&id)
                .with_context(|| format!("validation image {id} for TensorBoard"))?;
            let pictures = explain_sample(
                &self.eval_net().model,
                &sample.image,
                &palette,
                thresholds,
                &self.device,
            )
            .with_context(|| format!("TensorBoard pictures of validation image {id}"))?;
            let step = self.step;
            let run_log = self.run_log()?;
            for (name, img) in ["prediction", "confidence", "hard_queries"]
                .iter()
                .zip(&pictures)
            {
                run_log.image(step, &format!("val/{id}/{name}"), img)?;
            }
        }
        Ok(())
    }

    fn run_log(&mut self) -> anyhow::Result<&mut RunLog> {
        self.log
            .as_mut()
            .context("only rank 0 writes the run's log")
    }

    fn append_metrics(&mut self, line: &serde_json::Value) -> anyhow::Result<()> {
        self.run_log()?.append(line)
    }
}

/// The losses summed over a logging window, averaged over the ranks (one small
/// all-reduce at each log line; nothing with one process).
fn mean_over_ranks(group: &dyn ProcessGroup, acc: StepLosses) -> anyhow::Result<StepLosses> {
    let n = group.world_size();
    if n == 1 {
        return Ok(acc);
    }
    let local = candle_core::Tensor::new(&[acc.sup, acc.unsup, acc.reco, acc.total], &Device::Cpu)?;
    let sum: Vec<f64> = group.all_reduce_flat(&local)?.to_vec1()?;
    let n = n as f64;
    Ok(StepLosses {
        sup: sum[0] / n,
        unsup: sum[1] / n,
        reco: sum[2] / n,
        total: sum[3] / n,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::testing::FakeGroup;

    /// Rank 1 of 2 whose "rank 0" is one step ahead: broadcasts come back plus one.
    fn ahead_rank_zero() -> FakeGroup {
        FakeGroup {
            all_reduce: |_, flat| flat * 2.0,
            broadcast: |flat| flat + 1.0,
            ..FakeGroup::mirrored(1, 2)
        }
    }

    #[test]
    fn a_rank_that_would_start_elsewhere_than_rank_0_is_an_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let cfg = TrainConfig {
            mode: TrainMode::Sup,
            output_dim: 8,
            out: out.clone(),
            ..TrainConfig::default()
        };
        let err = Trainer::in_group(cfg, Resume::Auto, Arc::new(ahead_rank_zero()))
            .err()
            .expect("the ranks disagree on the step");
        let err = format!("{err:#}");
        assert!(
            err.contains("rank 1 starts at step 0 but rank 0 at step 1"),
            "{err}"
        );
        assert!(!out.exists(), "a rank other than 0 created the run folder");
    }

    #[test]
    fn the_schedule_warms_up_then_follows_poly_down_to_its_floor() {
        // UniMatch V2's: per iteration, down to 0.
        let cfg = TrainConfig {
            lr: 1e-3,
            epoch_iters: 1,
            lr_floor: 0.0,
            warmup_iters: 4,
            ..TrainConfig::default()
        };
        let total = 100;
        let poly = |step: usize| 1e-3 * (1.0 - step as f64 / total as f64).powf(0.9);
        for step in 0..4 {
            let want = poly(step) * (step + 1) as f64 / 4.0;
            assert!(
                (scheduled_lr(&cfg, step, total) - want).abs() < 1e-15,
                "step {step}"
            );
        }
        for step in [4, 50, 99] {
            assert!((scheduled_lr(&cfg, step, total) - poly(step)).abs() < 1e-15);
        }
        // The original's: per epoch, never below 1e-6, no warmup.
        let original = TrainConfig {
            lr: 2.5e-3,
            epoch_iters: 10,
            lr_floor: 1e-6,
            warmup_iters: 0,
            ..TrainConfig::default()
        };
        assert_eq!(scheduled_lr(&original, 0, 100), 2.5e-3);
        assert_eq!(scheduled_lr(&original, 9, 100), 2.5e-3);
        let last_epoch = scheduled_lr(&original, 99, 100);
        assert!(
            (last_epoch - 2.5e-3 * 0.1f64.powf(0.9)).abs() < 1e-15,
            "{last_epoch}"
        );
        assert_eq!(scheduled_lr(&original, 100, 100), 1e-6);
    }
}
