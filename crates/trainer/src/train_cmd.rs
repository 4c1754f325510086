//! `trainer train` (and the bare `trainer`): flags → [`TrainConfig`] → [`Trainer`].

use std::path::PathBuf;

use reco_data::{DatasetKind, MixMode, Partial};

use crate::config::{TrainConfig, TrainMode};
use crate::train::{RunSummary, Trainer};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// JSON file with any of the keys of a run's config.json; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// pascal, cityscapes, sun or synthetic (default synthetic).
    #[arg(long)]
    pub dataset: Option<DatasetKind>,
    /// Prepared dataset folder (default data/<dataset>).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    /// Labelled images, picked by the class-balanced sampler (0 = all).
    #[arg(long)]
    pub num_labels: Option<usize>,
    /// Partial labels: p0, p1, p5 or p25.
    #[arg(long)]
    pub partial: Option<Partial>,
    /// A split file written by `trainer split` (overrides --num-labels).
    #[arg(long)]
    pub split: Option<PathBuf>,
    /// sup (labelled only) or semi (mean teacher + unlabelled).
    #[arg(long, value_enum)]
    pub mode: Option<TrainMode>,
    /// Mixing of the unlabelled batch: none, cutout, cutmix or classmix.
    #[arg(long)]
    pub mix: Option<MixMode>,
    /// Add the ReCo loss (`--reco false` to turn it off).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub reco: Option<bool>,
    /// resnet18, resnet34, resnet50, resnet101 or resnet152.
    #[arg(long)]
    pub backbone: Option<String>,
    /// 8, 16 or 32.
    #[arg(long)]
    pub output_stride: Option<usize>,
    /// ImageNet backbone weights (safetensors, torchvision names), from `cargo xtask fetch-weights`.
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    #[arg(long)]
    pub iters: Option<usize>,
    #[arg(long)]
    pub eval_every: Option<usize>,
    #[arg(long)]
    pub log_every: Option<usize>,
    /// Labelled batch size (= unlabelled batch size; doubled in sup mode).
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub crop_size: Option<usize>,
    #[arg(long)]
    pub lr: Option<f64>,
    /// Largest hue shift of the colour jitter (original 0.25; synthetic default 0.05).
    #[arg(long)]
    pub hue_jitter: Option<f32>,
    /// Iterations per epoch of the poly schedule (the original: 200).
    #[arg(long)]
    pub epoch_iters: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder (default runs/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    #[arg(long)]
    pub temp: Option<f64>,
    #[arg(long)]
    pub num_queries: Option<usize>,
    #[arg(long)]
    pub num_negatives: Option<usize>,
    #[arg(long)]
    pub weak_threshold: Option<f64>,
    #[arg(long)]
    pub strong_threshold: Option<f64>,
    #[arg(long)]
    pub output_dim: Option<usize>,
    /// Evaluate on the first N validation images only (0 = all).
    #[arg(long)]
    pub val_limit: Option<usize>,
    /// Data loader threads (0 = one per core).
    #[arg(long)]
    pub num_threads: Option<usize>,
}

impl TrainArgs {
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::from_file(path, self.dataset)?,
            None => TrainConfig::for_dataset(self.dataset.unwrap_or(DatasetKind::Synthetic)),
        };
        macro_rules! set {
            ($($field:ident),*) => {$(
                if let Some(v) = &self.$field { c.$field = v.clone(); }
            )*};
        }
        set!(
            num_labels,
            mode,
            mix,
            reco,
            backbone,
            output_stride,
            iters,
            eval_every,
            log_every,
            batch_size,
            crop_size,
            lr,
            epoch_iters,
            seed,
            out,
            device,
            temp,
            num_queries,
            num_negatives,
            weak_threshold,
            strong_threshold,
            output_dim,
            val_limit,
            num_threads
        );
        if self.data_root.is_some() {
            c.data_root = self.data_root.clone();
        }
        if self.partial.is_some() {
            c.partial = self.partial;
        }
        if self.split.is_some() {
            c.split = self.split.clone();
        }
        if self.pretrained.is_some() {
            c.pretrained = self.pretrained.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

pub fn train(cfg: TrainConfig, resume: bool) -> anyhow::Result<RunSummary> {
    let mut trainer = Trainer::new(cfg, resume)?;
    trainer.run(&mut |line| eprintln!("{line}"))
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    eprintln!(
        "training {} on {} ({}{}), {} OS{}, {} iterations, output in {}",
        match (cfg.mode, cfg.reco) {
            (TrainMode::Sup, false) => "supervised".to_string(),
            (TrainMode::Sup, true) => "supervised + ReCo".to_string(),
            (TrainMode::Semi, false) => format!("semi-supervised {:?}", cfg.mix),
            (TrainMode::Semi, true) => format!("semi-supervised {:?} + ReCo", cfg.mix),
        },
        cfg.dataset,
        match cfg.num_labels {
            0 => "all images labelled".to_string(),
            n => format!("{n} labelled images"),
        },
        cfg.partial
            .map(|p| format!(", partial {p:?}"))
            .unwrap_or_default(),
        cfg.backbone,
        cfg.output_stride,
        cfg.iters,
        cfg.out.display()
    );
    let dataset = cfg.dataset;
    let s = train(cfg, args.resume)?;
    println!("\n{}", s.last.table(dataset.class_names()));
    println!(
        "last evaluation (step {}): mIoU {:.2}%\nbest evaluation (step {}): mIoU {:.2}%",
        s.last_step,
        100.0 * s.last.miou,
        s.best_step,
        100.0 * s.best_miou
    );
    let out = s.out.display();
    println!(
        "\noutputs in {out}: best.safetensors, last.safetensors (teacher weights, original key names), metrics.jsonl, curves.png, config.json"
    );
    println!("next:");
    println!("  cargo run --release -p trainer -- eval --checkpoint {out}/best.safetensors --dataset {dataset}");
    println!("  cargo run --release -p trainer -- predict --checkpoint {out}/best.safetensors --dataset {dataset} --input IMAGE_OR_DIR --output predictions");
    println!(
        "  cargo run --release -p trainer -- ablate   (supervised vs ClassMix vs ClassMix + ReCo)"
    );
    Ok(())
}
