//! Every setting of a training run, resolved from (lowest to highest priority) the
//! dataset's defaults, a `--config` JSON file with the same keys, and the flags.
//! The resolved settings are written to `config.json` in the run folder.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use reco_data::{AugConfig, DatasetKind, MixMode, Partial, UnsupAugConfig};
use reco_loss::{ReCoConfig, ThresholdSchedule};
use reco_models::{Backbone, CheckpointMeta, DeepLabConfig, NetworkKind, Precision};
use serde::{Deserialize, Serialize};

use crate::optim::{AdamWConfig, OptimizerKind};

/// Iterations per epoch of the original's poly schedule (it steps the schedule per epoch
/// of 200 iterations).
pub const ORIGINAL_EPOCH_ITERS: usize = 200;

/// Steps between state writes (`--save-every`): writing the state (student, teacher,
/// momentum) costs under 1 % of the steps between two writes on the default run and on
/// VOC at 321 (measured in docs/benchmarks.md, "Saving the run state").
pub const DEFAULT_SAVE_EVERY: usize = 200;

/// Supervised only (the original's `train_sup.py`) or semi-supervised with a mean
/// teacher (`train_semisup.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrainMode {
    Sup,
    Semi,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub dataset: DatasetKind,
    pub data_root: Option<PathBuf>,
    /// Classes of the network; 0 = those of the dataset, filled in when the run opens it
    /// (the folder dataset's count comes from its classes.txt, not from a table).
    pub num_classes: usize,
    /// A folder of photos (any sizes, recursive) that replaces the unlabelled half of the
    /// split in semi-supervised mode.
    pub unlabelled_root: Option<PathBuf>,
    pub num_labels: usize,
    pub partial: Option<Partial>,
    pub split: Option<PathBuf>,
    pub mode: TrainMode,
    pub mix: MixMode,
    pub reco: bool,
    /// deeplabv3p or deeplabv2 (absent in runs from before DeepLabV2: deeplabv3p).
    pub network: String,
    pub backbone: String,
    pub output_stride: usize,
    pub pretrained: Option<PathBuf>,
    pub iters: usize,
    pub eval_every: usize,
    pub log_every: usize,
    /// Steps between writes of the run state besides those at evaluations (resume,
    /// preemption); may change when resuming.
    pub save_every: usize,
    /// Labelled batch size (the unlabelled batch has the same size; `sup` doubles it).
    pub batch_size: usize,
    pub crop_size: usize,
    pub scale_min: f32,
    pub scale_max: f32,
    /// Largest hue shift of the colour jitter (the original: 0.25, as a fraction of the
    /// colour wheel).
    pub hue_jitter: f32,
    pub lr: f64,
    /// sgd (the original's nesterov SGD) or adamw (UniMatch V2's for DINOv2).
    pub optimizer: OptimizerKind,
    /// SGD's momentum.
    pub momentum: f64,
    /// SGD's L2 weight decay, or AdamW's decoupled one.
    pub weight_decay: f64,
    /// AdamW's β1, β2 and ε.
    pub adam_betas: [f64; 2],
    pub adam_eps: f64,
    /// The learning rate of every parameter outside the encoder (decoder and heads) is
    /// `lr` times this (UniMatch V2's `lr_multi`: 40 with a pretrained DINOv2).
    pub head_lr_multiplier: f64,
    /// Steps of linear warmup from 0 to the scheduled learning rate (0: none, as the
    /// original and UniMatch V2).
    pub warmup_iters: usize,
    /// The poly schedule never goes below this (the original: 1e-6; UniMatch V2: 0).
    pub lr_floor: f64,
    /// Iterations per epoch of the poly schedule (the original steps it per epoch;
    /// UniMatch V2 per iteration, i.e. 1).
    pub epoch_iters: usize,
    pub ema_decay: f64,
    pub seed: u64,
    pub out: PathBuf,
    pub device: String,
    pub temp: f64,
    pub num_queries: usize,
    pub num_negatives: usize,
    pub weak_threshold: f64,
    /// δs: constant (the original's 0.97) or a ramp; written as `0.97` or
    /// `0.9..0.99@0..20000` (numbers in older config files are read as constants).
    #[serde(with = "schedule_text")]
    pub strong_threshold: ThresholdSchedule,
    pub output_dim: usize,
    /// Validation images per evaluation (0 = all).
    pub val_limit: usize,
    /// Data loader threads (0 = one per core).
    pub num_threads: usize,
    /// Synchronized batch norm over the ranks of a data-parallel run (docs/distributed.md):
    /// the batch statistics of the global batch instead of each rank's.
    pub sync_bn: bool,
    /// Mixed precision (`reco_models::precision`): the convolutions in f32, bf16 or f16;
    /// batch norm, the losses, SGD, the EMA and checkpoints in f32. f16 adds dynamic loss
    /// scaling.
    pub precision: Precision,
    /// f32 matmuls in TF32 on CUDA (PyTorch's `torch.backends.cuda.matmul.allow_tf32`).
    pub tf32: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::for_dataset(DatasetKind::Synthetic)
    }
}

impl TrainConfig {
    /// The original's settings for `dataset`; for the synthetic dataset, the default run:
    /// ReCo + ClassMix with 20 labels on a ResNet-18, a few minutes on a laptop CPU.
    pub fn for_dataset(dataset: DatasetKind) -> Self {
        let d = dataset.defaults();
        let reco = ReCoConfig::default();
        let mut cfg = Self {
            dataset,
            data_root: None,
            num_classes: 0,
            unlabelled_root: None,
            num_labels: 60,
            partial: None,
            split: None,
            mode: TrainMode::Semi,
            mix: MixMode::ClassMix,
            reco: true,
            network: NetworkKind::DeepLabV3Plus.name().to_string(),
            backbone: Backbone::ResNet101.name().to_string(),
            output_stride: 16,
            pretrained: None,
            iters: 40_000,
            eval_every: 1000,
            log_every: 20,
            save_every: DEFAULT_SAVE_EVERY,
            batch_size: d.batch_size,
            crop_size: d.crop_size.0,
            scale_min: d.scale_range.0,
            scale_max: d.scale_range.1,
            hue_jitter: 0.25,
            lr: 2.5e-3,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 5e-4,
            adam_betas: [0.9, 0.999],
            adam_eps: 1e-8,
            head_lr_multiplier: 1.0,
            warmup_iters: 0,
            lr_floor: 1e-6,
            epoch_iters: ORIGINAL_EPOCH_ITERS,
            ema_decay: 0.99,
            seed: 0,
            out: PathBuf::from("runs").join(dataset.name()),
            device: "cpu".into(),
            temp: reco.temp,
            num_queries: reco.num_queries,
            num_negatives: reco.num_negatives,
            weak_threshold: 0.7,
            strong_threshold: ThresholdSchedule::constant(reco.strong_threshold),
            output_dim: 256,
            val_limit: 0,
            num_threads: 0,
            sync_bn: false,
            precision: Precision::F32,
            tf32: false,
        };
        match dataset {
            DatasetKind::Cityscapes => cfg.num_labels = 20,
            DatasetKind::Folder => {}
            DatasetKind::Sun => cfg.num_labels = 50,
            DatasetKind::Synthetic => {
                // 20 of 2000 images: with 10, ClassMix's pseudo-labels collapse two classes
                // and the run shows little; with 20, ReCo + ClassMix ends above supervised
                // at 500 iterations over two seeds (docs/ablation.md).
                cfg.num_labels = 20;
                cfg.backbone = Backbone::ResNet18.name().to_string();
                cfg.batch_size = 4;
                cfg.iters = 500;
                cfg.eval_every = 250;
                cfg.epoch_iters = 20;
                cfg.lr = 1e-2;
                cfg.output_dim = 64;
                cfg.num_queries = 64;
                cfg.num_negatives = 128;
                // Synthetic classes have colours of their own; a quarter-turn hue shift
                // would hide that cue from a network trained for minutes.
                cfg.hue_jitter = 0.05;
            }
            DatasetKind::Pascal => {}
        }
        cfg
    }

    /// The defaults for `dataset` trained with `network`: [`TrainConfig::for_dataset`]
    /// for the DeepLabs; for DPT, UniMatch V2's recipe (`configs/*.yaml`,
    /// `unimatch_v2.py`): DINOv2-S, AdamW (0.9, 0.999) with weight decay 0.01, lr 5e-6
    /// for the encoder and 40x for the decoder and heads, poly (power 0.9) per iteration
    /// down to 0, crops of 518 (Pascal) or 798 (Cityscapes), other datasets' crops at the
    /// nearest multiple of 14. The rest of the step (mean teacher and its decay, the
    /// losses and thresholds, ClassMix, ReCo) stays ReCo's.
    pub fn for_recipe(dataset: DatasetKind, network: NetworkKind) -> Self {
        let mut cfg = Self::for_dataset(dataset);
        cfg.network = network.name().to_string();
        if network != NetworkKind::Dpt {
            return cfg;
        }
        cfg.backbone = Backbone::Dinov2Small.name().to_string();
        cfg.output_stride = reco_models::DPT_OUTPUT_STRIDE;
        cfg.optimizer = OptimizerKind::AdamW;
        let adamw = AdamWConfig::default();
        cfg.adam_betas = [adamw.beta1, adamw.beta2];
        cfg.adam_eps = adamw.eps;
        cfg.weight_decay = adamw.weight_decay;
        cfg.lr = 5e-6;
        cfg.head_lr_multiplier = 40.0;
        cfg.epoch_iters = 1;
        cfg.lr_floor = 0.0;
        cfg.crop_size = match dataset {
            DatasetKind::Pascal => 518,
            DatasetKind::Cityscapes => 798,
            _ => reco_models::dpt::nearest_patch_multiple(cfg.crop_size),
        };
        if dataset == DatasetKind::Synthetic {
            // From random weights (no pretrained DINOv2 for a dataset of squares and
            // discs), the fine-tuning rate would leave the encoder where it starts.
            cfg.lr = 1e-4;
            cfg.head_lr_multiplier = 10.0;
        }
        cfg
    }

    /// The AdamW settings of this run.
    pub fn adamw_config(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.adam_betas[0],
            beta2: self.adam_betas[1],
            eps: self.adam_eps,
            weight_decay: self.weight_decay,
        }
    }

    /// Reads a JSON file with any subset of the keys, on top of the dataset defaults
    /// (the file's `dataset`, or `dataset` when the file names none).
    /// The defaults under the file's keys follow the network: `network` when given (the
    /// flag), else the file's `network`, else DeepLabV3+ ([`TrainConfig::for_recipe`]).
    pub fn from_file(
        path: &Path,
        dataset: Option<DatasetKind>,
        network: Option<&str>,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("config file {} is not valid JSON", path.display()))?;
        let file_dataset = match value.get("dataset") {
            Some(v) => Some(
                serde_json::from_value::<DatasetKind>(v.clone())
                    .with_context(|| format!("config file {}: bad `dataset`", path.display()))?,
            ),
            None => None,
        };
        let network = match network.or(value.get("network").and_then(|v| v.as_str())) {
            Some(n) => n
                .parse::<NetworkKind>()
                .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))?,
            None => NetworkKind::DeepLabV3Plus,
        };
        let base = Self::for_recipe(
            dataset.or(file_dataset).unwrap_or(DatasetKind::Synthetic),
            network,
        );
        let mut merged = serde_json::to_value(base)?;
        if let (Some(m), Some(o)) = (merged.as_object_mut(), value.as_object()) {
            for (k, v) in o {
                m.insert(k.clone(), v.clone());
            }
        } else {
            bail!("config file {} must hold a JSON object", path.display());
        }
        serde_json::from_value(merged).with_context(|| {
            format!(
                "config file {}: unknown key or bad value (keys are those of config.json in a run folder)",
                path.display()
            )
        })
    }

    pub fn backbone(&self) -> anyhow::Result<Backbone> {
        self.backbone
            .parse::<Backbone>()
            .map_err(anyhow::Error::msg)
    }

    pub fn network(&self) -> anyhow::Result<NetworkKind> {
        self.network
            .parse::<NetworkKind>()
            .map_err(|e| anyhow::anyhow!("--network: {e}"))
    }

    /// What the run's checkpoints say about themselves (written into every export).
    pub fn checkpoint_meta(&self) -> anyhow::Result<CheckpointMeta> {
        let names = self
            .dataset
            .class_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        Ok(CheckpointMeta::new(self.network()?, &self.model_config()?)
            .with_dataset(self.dataset.name(), names))
    }

    pub fn model_config(&self) -> anyhow::Result<DeepLabConfig> {
        Ok(DeepLabConfig {
            backbone: self.backbone()?,
            output_stride: self.output_stride,
            num_classes: self.num_classes(),
            output_dim: self.output_dim,
        })
    }

    /// The network's class count: the setting, else the dataset's table (0 for the folder
    /// dataset until the run has opened it).
    pub fn num_classes(&self) -> usize {
        match self.num_classes {
            0 => self.dataset.defaults().num_classes,
            n => n,
        }
    }

    /// The ReCo settings at training step `step` (the strong threshold follows its
    /// schedule).
    pub fn reco_config_at(&self, step: usize) -> ReCoConfig {
        ReCoConfig {
            strong_threshold: self.strong_threshold.value_at(step),
            temp: self.temp,
            num_queries: self.num_queries,
            num_negatives: self.num_negatives,
            ..ReCoConfig::default()
        }
    }

    /// The augmentation of the labelled images (in the loader): the dataset's, with this
    /// run's crop, rescale range and hue jitter.
    pub fn labelled_aug_config(&self) -> AugConfig {
        AugConfig {
            crop_size: (self.crop_size, self.crop_size),
            scale_range: (self.scale_min, self.scale_max),
            hue: (-self.hue_jitter, self.hue_jitter),
            ..AugConfig::labelled(self.dataset)
        }
    }

    /// The loader's crop of the unlabelled images (no rescale, no photometric change:
    /// those come after the teacher's pseudo-labels, in [`Self::unsup_aug_config`]).
    pub fn unlabelled_crop_config(&self) -> AugConfig {
        AugConfig {
            crop_size: (self.crop_size, self.crop_size),
            ..AugConfig::unlabelled(self.dataset)
        }
    }

    /// The augmentation of the unlabelled batch after pseudo-labelling (rescale + crop,
    /// mixing, photometric), with this run's crop, rescale range, mixing and hue jitter.
    pub fn unsup_aug_config(&self) -> UnsupAugConfig {
        let mut cfg = UnsupAugConfig::new(self.dataset, self.mix);
        cfg.crop_size = (self.crop_size, self.crop_size);
        cfg.scale_range = (self.scale_min, self.scale_max);
        cfg.photometric.hue = (-self.hue_jitter, self.hue_jitter);
        cfg
    }

    /// Checks what flags alone cannot, naming the setting and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let network = self.network()?;
        let backbone = self.backbone()?;
        if network.takes_vit() != backbone.is_vit() {
            bail!(
                "--network {network} cannot take --backbone {backbone}: dpt takes dinov2-s, dinov2-b or dinov2-l, deeplabv3p and deeplabv2 a resnet"
            );
        }
        if network.takes_vit() {
            let patch = reco_models::DPT_OUTPUT_STRIDE;
            if self.output_stride != patch {
                bail!(
                    "--output-stride must be {patch} with --network dpt (DINOv2's patch size), got {}",
                    self.output_stride
                );
            }
            if !self.crop_size.is_multiple_of(patch) {
                let below = self.crop_size / patch * patch;
                bail!(
                    "--crop-size must be a multiple of {patch} (DINOv2's patch size) with --network dpt, got {}: use {} or {}",
                    self.crop_size,
                    below.max(patch),
                    below + patch
                );
            }
        } else if !network.accepts_output_stride(self.output_stride) {
            bail!(
                "--output-stride must be 8, 16 or 32, got {}",
                self.output_stride
            );
        }
        if !(self.head_lr_multiplier > 0.0 && self.head_lr_multiplier.is_finite()) {
            bail!(
                "--head-lr-multiplier must be a positive number, got {}",
                self.head_lr_multiplier
            );
        }
        if !(self.lr_floor >= 0.0 && self.lr_floor.is_finite()) {
            bail!("lr_floor must be a number >= 0, got {}", self.lr_floor);
        }
        let [b1, b2] = self.adam_betas;
        let betas_ok = (0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2);
        if !betas_ok || self.adam_eps.is_nan() || self.adam_eps <= 0.0 {
            bail!(
                "adam_betas must lie in [0, 1) and adam_eps be positive, got {:?} and {}",
                self.adam_betas,
                self.adam_eps
            );
        }
        if self.iters == 0 {
            bail!("--iters must be at least 1");
        }
        if self.eval_every == 0 || self.log_every == 0 || self.epoch_iters == 0 {
            bail!("--eval-every, --log-every and epoch_iters must be at least 1");
        }
        if self.save_every == 0 {
            bail!("--save-every must be at least 1 (steps between state writes; the state is also written at every evaluation and when a signal stops the run)");
        }
        if self.batch_size < 2 && self.mode == TrainMode::Semi {
            bail!("--batch-size must be at least 2 in semi-supervised mode (mixing pairs images; batch norm needs 2)");
        }
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.crop_size < reco_models::MIN_INPUT_SIZE {
            bail!(
                "crop_size must be at least {}, got {}",
                reco_models::MIN_INPUT_SIZE,
                self.crop_size
            );
        }
        if !(self.scale_min > 0.0 && self.scale_min <= self.scale_max) {
            bail!(
                "scale range must satisfy 0 < scale_min <= scale_max, got {}..{}",
                self.scale_min,
                self.scale_max
            );
        }
        if !(0.0..=0.5).contains(&self.hue_jitter) {
            bail!("hue_jitter must lie in [0, 0.5], got {}", self.hue_jitter);
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            bail!("--lr must be a positive number, got {}", self.lr);
        }
        if !(0.0..=1.0).contains(&self.weak_threshold) {
            bail!("--weak-threshold must lie in [0, 1]");
        }
        self.strong_threshold
            .validate()
            .map_err(|e| anyhow::anyhow!("--strong-threshold: {e}"))?;
        if self.unlabelled_root.is_some() && self.mode == TrainMode::Sup {
            bail!("--unlabelled-root replaces the unlabelled images of semi-supervised training: drop it or use --mode semi");
        }
        if self.temp.is_nan() || self.temp <= 0.0 {
            bail!("--temp must be positive, got {}", self.temp);
        }
        if self.reco && (self.num_queries == 0 || self.num_negatives == 0) {
            bail!("--num-queries and --num-negatives must be at least 1 with --reco");
        }
        if self.output_dim == 0 {
            bail!("--output-dim must be at least 1");
        }
        self.reco_config_at(0).validate().context("ReCo settings")?;
        Ok(())
    }
}

/// The strong-threshold schedule in config files: its text form (`0.97`,
/// `0.9..0.99@0..20000`); a bare number or the tagged object are read too.
mod schedule_text {
    use reco_loss::ThresholdSchedule;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(s: &ThresholdSchedule, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&s.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<ThresholdSchedule, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(f64),
            Text(String),
            Tagged(ThresholdSchedule),
        }
        match Repr::deserialize(de)? {
            Repr::Number(v) => Ok(ThresholdSchedule::constant(v)),
            Repr::Text(s) => s.parse().map_err(D::Error::custom),
            Repr::Tagged(s) => Ok(s),
        }
    }
}

/// `cpu`, `cuda` or `cuda:N`, with an error that says how to get CUDA.
pub fn parse_device(s: &str) -> anyhow::Result<candle_core::Device> {
    let s = s.trim().to_ascii_lowercase();
    let ordinal = match s.as_str() {
        "cpu" => return Ok(candle_core::Device::Cpu),
        "cuda" | "gpu" => 0,
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => n,
            _ => bail!("unknown device {s:?}: expected cpu, cuda or cuda:N"),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        bail!(
            "device {s} asked, but this trainer was built without CUDA: rebuild with `cargo build --release -p trainer --features cuda` (see README), or use --device cpu"
        );
    }
    candle_core::Device::new_cuda(ordinal)
        .with_context(|| format!("cannot open CUDA device {ordinal}"))
}
