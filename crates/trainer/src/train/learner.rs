//! The networks and the optimiser: one training step from two batches, with no knowledge
//! of datasets or files (the run loop, `bench` and `check` share it). The step is the
//! method of docs/design.md#the-semi-supervised-step (mean teacher, pseudo-labels,
//! mixing, supervised + unsupervised + ReCo losses, nesterov SGD, EMA) and its
//! supervised-only variant.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use candle_core::{backprop::GradStore, DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use reco_data::unsup_transform;
use reco_loss::{
    reco_loss, reco_targets, reco_targets_labelled, supervised_loss, unsupervised_loss, ReCoTargets,
};
use reco_models::ops::resize_bilinear;
use reco_models::vars::{named_vars, trainable_vars};
use reco_models::{init_seeded, load_backbone, SyncBn};
use reco_util::seed::mix_seed;
use serde::{Deserialize, Serialize};

use super::config::{TrainConfig, TrainMode};
use super::seeds::RankSeeds;
use crate::distributed::{self, ProcessGroup, SingleProcess, SyncBnGroup};
use crate::optim::{
    AdamW, Ema, LossScaler, Optimizer, OptimizerKind, Sgd, Verdict, MAX_SKIPS_IN_A_ROW,
};

/// Stream tags of the per-run and per-step seeds, one per kind of random decision.
pub(crate) const TAG_INIT: u64 = 1;
pub(crate) const TAG_LABELLED: u64 = 2;
pub(crate) const TAG_UNLABELLED: u64 = 3;
pub(crate) const TAG_MIX: u64 = 4;
pub(crate) const TAG_RECO: u64 = 5;
pub(crate) const TAG_PARTIAL: u64 = 6;

/// A model (the run's `--network`) and the VarMap that owns its variables.
pub struct Network {
    pub vars: VarMap,
    pub model: reco_models::Network,
}

impl Network {
    pub fn new(cfg: &TrainConfig, device: &Device) -> anyhow::Result<Self> {
        Self::with_sync_bn(cfg, device, None)
    }

    /// A network whose train-mode batch norm is synchronized over `sync`'s ranks.
    pub fn with_sync_bn(
        cfg: &TrainConfig,
        device: &Device,
        sync: Option<SyncBn>,
    ) -> anyhow::Result<Self> {
        let vars = VarMap::new();
        let model = reco_models::Network::new(
            cfg.network()?,
            &cfg.model_config()?,
            VarBuilder::from_varmap(&vars, DType::F32, device),
        )?
        .with_sync_bn(sync)
        .with_precision(cfg.precision);
        Ok(Self { vars, model })
    }

    /// Variables by name, sorted.
    pub fn named_vars(&self) -> anyhow::Result<BTreeMap<String, Var>> {
        Ok(named_vars(&self.vars)?)
    }

    /// The variables the optimiser and the EMA update, by name, sorted.
    pub fn trainable_vars(&self) -> anyhow::Result<BTreeMap<String, Var>> {
        Ok(trainable_vars(&self.vars)?)
    }

    fn copy_from(&self, other: &Network) -> anyhow::Result<()> {
        let src = other.named_vars()?;
        for (name, var) in self.named_vars()? {
            let from = src
                .get(&name)
                .with_context(|| format!("the source network lacks {name}"))?;
            var.set(&from.as_detached_tensor().copy()?)?;
        }
        Ok(())
    }
}

/// The mean teacher: a second network that follows the student by EMA.
pub struct Teacher {
    pub net: Network,
    pub ema: Ema,
}

impl Teacher {
    /// A copy of `student` whose trainable variables then follow it with `decay`. It
    /// synchronizes batch norm like the student (its train-mode pseudo-labelling pass).
    fn follow(student: &Network, cfg: &TrainConfig, device: &Device) -> anyhow::Result<Self> {
        let net = Network::with_sync_bn(cfg, device, student.model.sync_bn().cloned())?;
        net.copy_from(student)?;
        let s = student.named_vars()?;
        let pairs = net
            .trainable_vars()?
            .into_iter()
            .map(|(k, t)| {
                let sv = s
                    .get(&k)
                    .with_context(|| format!("the student lacks {k}"))?;
                Ok((t, sv.clone()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            net,
            ema: Ema::new(pairs, cfg.ema_decay),
        })
    }
}

/// Supervised only, or semi-supervised with the mean teacher that makes the pseudo-labels
/// and is the network evaluated and exported.
pub enum Regime {
    Supervised,
    // Boxed: a network is large, and `Supervised` carries nothing.
    SemiSupervised { teacher: Box<Teacher> },
}

/// Losses of one step, as plain numbers.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct StepLosses {
    pub sup: f64,
    pub unsup: f64,
    pub reco: f64,
    pub total: f64,
}

/// The networks and the optimiser: one training step from two batches.
pub struct Learner {
    pub cfg: TrainConfig,
    pub device: Device,
    pub student: Network,
    pub regime: Regime,
    pub(crate) optimizer: Optimizer,
    /// The ranks this learner trains with (one process: [`SingleProcess`]).
    group: Arc<dyn ProcessGroup>,
    /// This rank's step seeds (mixing, ReCo sampling).
    seeds: RankSeeds,
    /// The student's trainable variables sorted by name: the order of the gradient
    /// all-reduce, the same on every rank.
    grad_vars: Vec<Var>,
    /// Dynamic loss scaling (`--precision f16` only).
    pub(crate) scaler: Option<LossScaler>,
}

impl Learner {
    /// The student initialised from the seed (and the pretrained backbone, if any), its
    /// optimiser, and in semi-supervised mode a teacher that starts as its copy.
    pub fn new(cfg: TrainConfig, device: Device) -> anyhow::Result<Self> {
        Self::in_group(cfg, device, Arc::new(SingleProcess))
    }

    /// As [`Learner::new`], as one rank of `group` (docs/distributed.md): the initial
    /// weights are rank 0's, gradients are averaged over the ranks before SGD, and with
    /// `cfg.sync_bn` batch norm uses the statistics of the batch over all ranks.
    pub fn in_group(
        cfg: TrainConfig,
        device: Device,
        group: Arc<dyn ProcessGroup>,
    ) -> anyhow::Result<Self> {
        distributed::check_sync_bn(cfg.sync_bn, group.world_size())?;
        cfg.precision.check_device(&device).context("--precision")?;
        set_tf32(cfg.tf32, &device);
        let sync = cfg.sync_bn.then(|| {
            let reducer: Arc<dyn reco_models::sync_bn::StatsAllReduce> =
                Arc::new(SyncBnGroup(group.clone()));
            SyncBn::new(reducer)
        });
        let student = Network::with_sync_bn(&cfg, &device, sync)?;
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
        // Equal already when every rank seeds alike and reads the same file; the
        // broadcast makes it a guarantee (another file or build on one machine).
        let all: Vec<Var> = student.named_vars()?.into_values().collect();
        distributed::broadcast_vars(group.as_ref(), &all)
            .context("broadcasting rank 0's initial weights")?;
        let grad_vars = student.trainable_vars()?.into_values().collect();
        let seeds = RankSeeds::new(cfg.seed, group.rank(), group.world_size());
        let optimizer = build_optimizer(&cfg, student.trainable_vars()?);
        let scaler = cfg.precision.needs_loss_scaling().then(LossScaler::default);
        let regime = match cfg.mode {
            TrainMode::Sup => Regime::Supervised,
            TrainMode::Semi => Regime::SemiSupervised {
                teacher: Box::new(Teacher::follow(&student, &cfg, &device)?),
            },
        };
        Ok(Self {
            cfg,
            device,
            student,
            regime,
            optimizer,
            group,
            seeds,
            grad_vars,
            scaler,
        })
    }

    /// The loss scaler's state (`--precision f16`).
    pub fn loss_scaler(&self) -> Option<LossScaler> {
        self.scaler
    }

    /// The ranks this learner trains with.
    pub fn group(&self) -> &Arc<dyn ProcessGroup> {
        &self.group
    }

    /// This rank's seeds.
    pub fn seeds(&self) -> RankSeeds {
        self.seeds
    }

    /// The teacher, in semi-supervised mode.
    pub fn teacher(&self) -> Option<&Teacher> {
        match &self.regime {
            Regime::Supervised => None,
            Regime::SemiSupervised { teacher } => Some(&**teacher),
        }
    }

    pub(crate) fn teacher_mut(&mut self) -> Option<&mut Teacher> {
        match &mut self.regime {
            Regime::Supervised => None,
            Regime::SemiSupervised { teacher } => Some(&mut **teacher),
        }
    }

    /// The network evaluated and exported: the teacher, or the model itself when supervised.
    pub fn eval_net(&self) -> &Network {
        self.teacher().map(|t| &t.net).unwrap_or(&self.student)
    }

    /// One optimisation step at iteration `step` (which seeds the mixing and ReCo draws).
    /// The unlabelled batch `ub` is used in semi-supervised mode and must be given there.
    pub fn step(
        &mut self,
        lb: &reco_data::Batch,
        ub: Option<&reco_data::Batch>,
        step: usize,
        lr: f64,
    ) -> anyhow::Result<StepLosses> {
        let losses = match (&self.regime, ub) {
            (Regime::Supervised, None) => self.sup_losses(lb, step)?,
            (Regime::Supervised, Some(_)) => {
                bail!("a supervised step takes no unlabelled batch")
            }
            (Regime::SemiSupervised { teacher }, Some(ub)) => {
                self.semi_losses(teacher, lb, ub, step)?
            }
            (Regime::SemiSupervised { .. }, None) => {
                bail!("a semi-supervised step needs an unlabelled batch")
            }
        };
        self.finish_step(losses, step, lr)
    }

    /// The method's last steps: backward, the average of the gradients over the ranks
    /// (nothing with one process), SGD, EMA. Every rank then holds the same weights, so
    /// the teachers stay equal without communication.
    fn finish_step(&mut self, losses: Losses, step: usize, lr: f64) -> anyhow::Result<StepLosses> {
        let numbers = losses.numbers()?;
        self.check_finite(&numbers, step)?;
        let total = match &self.scaler {
            Some(s) => s.scale_loss(&losses.total)?,
            None => losses.total,
        };
        let mut grads = backward(&total)?;
        distributed::average_grads(self.group.as_ref(), &self.grad_vars, &mut grads)
            .context("averaging the gradients over the ranks")?;
        // Every rank holds the same averaged gradients, so every rank decides alike. A
        // skipped step (GradScaler's rule) leaves the student unchanged; the teacher
        // still follows it, as the training loop calls its update every step.
        let take_step = match &mut self.scaler {
            None => true,
            Some(scaler) => {
                let verdict = scaler.unscale(&self.grad_vars, &mut grads)?;
                if scaler.skips_in_a_row >= MAX_SKIPS_IN_A_ROW {
                    bail!(
                        "the f16 gradients overflowed at {} steps in a row (up to step {}; loss scale now {:e}): training stopped; the last good checkpoint in {} is kept. Use --precision bf16 (f32's range) or f32, or a lower --lr.",
                        scaler.skips_in_a_row,
                        step + 1,
                        scaler.scale,
                        self.cfg.out.display()
                    );
                }
                verdict == Verdict::Step
            }
        };
        if take_step {
            self.sgd_step(&grads, lr)?;
        }
        drop(grads);
        self.ema_update()?;
        Ok(numbers)
    }

    fn check_finite(&self, l: &StepLosses, step: usize) -> anyhow::Result<()> {
        if !l.total.is_finite() {
            bail!(
                "the loss became {} at step {} (supervised {}, unsupervised {}, ReCo {}): training stopped; the last good checkpoint in {} is kept. Try a lower --lr.",
                l.total,
                step + 1,
                l.sup,
                l.unsup,
                l.reco,
                self.cfg.out.display()
            );
        }
        Ok(())
    }

    fn sgd_step(&mut self, grads: &GradStore, lr: f64) -> anyhow::Result<()> {
        Ok(self.optimizer.step(grads, lr)?)
    }

    /// The teacher follows the student (nothing to do when supervised).
    fn ema_update(&mut self) -> anyhow::Result<()> {
        if let Some(t) = self.teacher_mut() {
            t.ema.update()?;
        }
        Ok(())
    }

    /// Upsamples logits to the crop size, as the original does before its losses.
    fn to_crop(&self, pred: &Tensor, like: &Tensor) -> anyhow::Result<Tensor> {
        let (h, w) = (like.dim(D::Minus2)?, like.dim(D::Minus1)?);
        Ok(resize_bilinear(pred, h, w, true)?)
    }

    /// The ReCo loss of step `step`, its draws seeded by (run seed, rank, step).
    fn reco_term(&self, rep: &Tensor, t: &ReCoTargets, step: usize) -> anyhow::Result<Tensor> {
        let seed = self.seeds.at_step(TAG_RECO, step);
        let loss = reco_loss(
            rep,
            &t.label,
            &t.mask,
            &t.prob,
            &self.cfg.reco_config_at(step),
            seed,
        )?;
        // With synchronized batch norm every rank must run the same collectives in its
        // backward pass. A ReCo loss that is a constant on this rank (fewer than two
        // classes, no hard query) would leave the representation head out of this rank's
        // backward while the others all-reduce its batch-norm gradients: mismatched
        // all-reduces, which MPI does not detect (it corrupts memory). A zero-weighted
        // term keeps the head in the graph with a zero gradient (a product with a zero
        // tensor: candle drops `x * 0.0`, an affine op, from the backward graph).
        if self.cfg.sync_bn && !loss.track_op() {
            let zero = Tensor::zeros((), rep.dtype(), rep.device())?;
            return Ok((loss + rep.sum_all()?.mul(&zero)?)?);
        }
        Ok(loss)
    }

    fn sup_losses(&self, lb: &reco_data::Batch, step: usize) -> anyhow::Result<Losses> {
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
        Losses::new(sup, None, reco)
    }

    fn semi_losses(
        &self,
        teacher: &Teacher,
        lb: &reco_data::Batch,
        ub: &reco_data::Batch,
        step: usize,
    ) -> anyhow::Result<Losses> {
        let xl = lb.images.to_device(&self.device)?;
        let yl = lb.labels.to_device(&self.device)?;
        let xu = ub.images.to_device(&self.device)?;
        // 1. Pseudo-labels from the teacher, in train mode as the original, without a graph.
        let (pred_t, _) = teacher.net.model.forward_no_grad(&xu, true)?;
        let prob = candle_nn::ops::softmax(&self.to_crop(&pred_t, &xu)?, 1)?;
        let confidence = prob.max(1)?;
        let pseudo = prob.argmax(1)?.to_dtype(DType::I64)?;
        // 2. Rescale + crop, mix, photometric augmentation.
        let ucfg = self.cfg.unsup_aug_config();
        let mix_seed_ = self.seeds.at_step(TAG_MIX, step);
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
            self.cfg.strong_threshold.value_at(step),
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
        // 6. (finish_step) backward, SGD, EMA.
        Losses::new(sup, Some(unsup), reco)
    }
}

/// The loss tensors of one step and their sum, before the backward pass.
struct Losses {
    sup: Tensor,
    unsup: Option<Tensor>,
    reco: Option<Tensor>,
    total: Tensor,
}

impl Losses {
    fn new(sup: Tensor, unsup: Option<Tensor>, reco: Option<Tensor>) -> anyhow::Result<Self> {
        let mut total = sup.clone();
        for t in [&unsup, &reco].into_iter().flatten() {
            total = (total + t)?;
        }
        Ok(Self {
            sup,
            unsup,
            reco,
            total,
        })
    }

    fn numbers(&self) -> anyhow::Result<StepLosses> {
        let scalar = |t: Option<&Tensor>| -> anyhow::Result<f64> {
            Ok(match t {
                Some(t) => t.to_dtype(DType::F64)?.to_scalar::<f64>()?,
                None => 0.0,
            })
        };
        Ok(StepLosses {
            sup: scalar(Some(&self.sup))?,
            unsup: scalar(self.unsup.as_ref())?,
            reco: scalar(self.reco.as_ref())?,
            total: scalar(Some(&self.total))?,
        })
    }
}

/// The run's optimiser over the student's trainable variables: the encoder at the
/// scheduled learning rate, the decoder and heads at `head_lr_multiplier` times it.
fn build_optimizer(cfg: &TrainConfig, vars: BTreeMap<String, Var>) -> Optimizer {
    let factor = |name: &str| {
        if reco_models::is_encoder(name) {
            1.0
        } else {
            cfg.head_lr_multiplier
        }
    };
    match cfg.optimizer {
        OptimizerKind::Sgd => {
            let factors = vars
                .keys()
                .filter(|n| factor(n) != 1.0)
                .map(|n| (n.clone(), factor(n)))
                .collect();
            Optimizer::Sgd(
                Sgd::new(vars.into_iter().collect(), cfg.momentum, cfg.weight_decay)
                    .with_lr_factors(factors),
            )
        }
        OptimizerKind::AdamW => Optimizer::AdamW(AdamW::new(
            vars.into_iter()
                .map(|(n, v)| {
                    let f = factor(&n);
                    (n, v, f)
                })
                .collect(),
            cfg.adamw_config(),
        )),
    }
}

fn backward(total: &Tensor) -> anyhow::Result<GradStore> {
    Ok(total.backward()?)
}

/// `--tf32`: f32 matmuls (and candle's convolutions, which are matmuls) on CUDA in TF32,
/// as PyTorch's `torch.backends.cuda.matmul.allow_tf32` (off by default in both; note
/// that PyTorch's `torch.backends.cudnn.allow_tf32`, for its cuDNN convolutions, is on
/// by default). A process-wide switch of candle's CUDA backend; nothing on the CPU.
fn set_tf32(on: bool, device: &Device) {
    if device.is_cuda() {
        candle_core::cuda::set_gemm_reduced_precision_f32(on);
    } else if on {
        eprintln!("note: --tf32 changes only CUDA matmuls; on {device:?} f32 stays f32");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::testing::FakeGroup;

    fn tiny(mode: TrainMode, sync_bn: bool) -> TrainConfig {
        TrainConfig {
            mode,
            sync_bn,
            num_classes: 3,
            output_dim: 8,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn sync_bn_without_a_group_is_refused() {
        let err = Learner::new(tiny(TrainMode::Sup, true), Device::Cpu)
            .err()
            .expect("--sync-bn on one process must fail")
            .to_string();
        assert!(err.contains("--sync-bn needs a process group"), "{err}");
    }

    #[test]
    fn sync_bn_reaches_the_student_and_the_teacher() {
        let group = Arc::new(FakeGroup::mirrored(1, 2));
        let l = Learner::in_group(tiny(TrainMode::Semi, true), Device::Cpu, group).unwrap();
        let student = l.student.model.sync_bn().expect("the student synchronizes");
        let teacher = l.teacher().unwrap().net.model.sync_bn();
        assert_eq!(teacher, Some(student), "one group for both networks");
        assert_eq!(l.seeds(), RankSeeds::new(0, 1, 2));
        // Without the flag, neither does (the single-process path).
        let l = Learner::new(tiny(TrainMode::Semi, false), Device::Cpu).unwrap();
        assert!(l.student.model.sync_bn().is_none());
        assert!(l.teacher().unwrap().net.model.sync_bn().is_none());
    }
}
