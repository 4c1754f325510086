//! `trainer train` (and the bare `trainer`): flags → [`TrainConfig`], trained by
//! [`crate::train::driver`] as one process or as one rank of a data-parallel run
//! (`mpirun -np N trainer train ...`, docs/distributed.md); the run's header and summary
//! printed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use reco_data::{DatasetKind, MixMode, Partial};
use reco_loss::ThresholdSchedule;

use super::args::{DataArgs, DeviceArgs, ValArgs};
use crate::distributed::{self, Backend, Launch, ProcessGroup};
use crate::train::config::{TrainConfig, TrainMode};
use crate::train::{train_in_group, Interrupted, Resume};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrainArgs {
    /// JSON file with any of the keys of a run's config.json; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
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
    /// deeplabv3p (the paper's), deeplabv2 (the original's ResNet-101 at output stride 8;
    /// set --output-stride 8 for that, any backbone and stride are allowed) or dpt (DPT on
    /// DINOv2 as UniMatch V2; its defaults become UniMatch V2's recipe: dinov2-s, AdamW,
    /// lr 5e-6 with the head at 40x, crops of 518 on Pascal).
    #[arg(long)]
    pub network: Option<String>,
    /// resnet18, resnet34, resnet50, resnet101 or resnet152 (DeepLab); dinov2-s, dinov2-b
    /// or dinov2-l (DPT).
    #[arg(long)]
    pub backbone: Option<String>,
    /// 8, 16 or 32 (DPT: 14, the patch size).
    #[arg(long)]
    pub output_stride: Option<usize>,
    /// Pretrained encoder weights from `cargo xtask fetch-weights --backbone NAME`:
    /// ImageNet ResNets (torchvision names) or DINOv2 (timm names, or the hub's).
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// Training steps.
    #[arg(long)]
    pub iters: Option<usize>,
    /// Steps between evaluations of the teacher on the validation set (and at the end).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Steps between lines of metrics.jsonl, TensorBoard scalars and the log.
    #[arg(long)]
    pub log_every: Option<usize>,
    /// Steps between writes of the run state (state.safetensors, last.safetensors)
    /// besides those at evaluations; a signal (SIGTERM, SIGINT, SIGUSR1) also writes it.
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Labelled batch size (= unlabelled batch size; doubled in sup mode).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Side of the square training crops, pixels.
    #[arg(long)]
    pub crop_size: Option<usize>,
    /// Initial learning rate (then the poly schedule); of the encoder when
    /// --head-lr-multiplier is not 1.
    #[arg(long)]
    pub lr: Option<f64>,
    /// sgd (nesterov, the original's) or adamw (UniMatch V2's, DPT's default).
    #[arg(long, value_enum)]
    pub optimizer: Option<crate::optim::OptimizerKind>,
    /// Weight decay: SGD's L2 term (default 5e-4) or AdamW's decoupled one (0.01).
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Learning rate of the decoder and heads as a multiple of --lr (default 1; 40 for DPT
    /// on a pretrained DINOv2, as UniMatch V2).
    #[arg(long)]
    pub head_lr_multiplier: Option<f64>,
    /// Steps of linear warmup from 0 to the scheduled learning rate (default 0).
    #[arg(long)]
    pub warmup_iters: Option<usize>,
    /// Largest hue shift of the colour jitter (original 0.25; synthetic default 0.05).
    #[arg(long)]
    pub hue_jitter: Option<f32>,
    /// Iterations per epoch of the poly schedule (the original: 200).
    #[arg(long)]
    pub epoch_iters: Option<usize>,
    /// Seed of the split, the initial weights and every random stream of the run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run folder (default runs/<dataset>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Continue the run in --out from its saved state (an error when there is none);
    /// `--resume auto` starts a new run when there is none, so that one command line
    /// serves a job's first start and every requeue.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "required", value_name = "auto")]
    pub resume: Option<Resume>,
    /// Temperature of the ReCo loss.
    #[arg(long)]
    pub temp: Option<f64>,
    /// ReCo hard queries sampled per class present in the batch.
    #[arg(long)]
    pub num_queries: Option<usize>,
    /// ReCo negative keys per query.
    #[arg(long)]
    pub num_negatives: Option<usize>,
    /// δw: pseudo-labels below this confidence are ignored by the unsupervised and ReCo
    /// losses.
    #[arg(long)]
    pub weak_threshold: Option<f64>,
    /// δs: a constant (default 0.97, the original's) or a ramp START..END@FROM..TO
    /// raising it over steps FROM..TO, e.g. 0.9..0.99@0..20000.
    #[arg(long)]
    pub strong_threshold: Option<ThresholdSchedule>,
    /// A folder of your own photos (jpg/png, any sizes, searched recursively) used as the
    /// unlabelled images instead of the dataset's (semi mode); unreadable files are skipped.
    #[arg(long)]
    pub unlabelled_root: Option<PathBuf>,
    /// Channels of the representation head (ReCo's features).
    #[arg(long)]
    pub output_dim: Option<usize>,
    #[command(flatten)]
    pub val: ValArgs,
    /// Process group of a data-parallel run: single, mpi or nccl (default single; under
    /// mpirun, srun or torchrun-style RANK/WORLD_SIZE: mpi on the CPU, nccl on CUDA). The
    /// batch size is per rank. See docs/distributed.md.
    #[arg(long)]
    pub dist_backend: Option<Backend>,
    /// Synchronized batch norm: statistics of the batch over all ranks (needs several).
    #[arg(long)]
    pub sync_bn: bool,
    /// Mixed precision: f32, bf16 or f16 convolutions (batch norm, losses, SGD, EMA and
    /// checkpoints stay f32; f16 adds dynamic loss scaling). On the CPU, bf16/f16 need
    /// RECO_OPS=generic (slow: for tests); bf16 needs a GPU of compute capability >= 8.0.
    #[arg(long)]
    pub precision: Option<reco_models::Precision>,
    /// f32 matmuls and convolutions in TF32 on CUDA (as PyTorch's
    /// torch.backends.cuda.matmul.allow_tf32; off by default in both).
    #[arg(long)]
    pub tf32: bool,
}

impl TrainArgs {
    pub fn resolve(&self) -> anyhow::Result<TrainConfig> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::from_file(path, self.data.dataset, self.network.as_deref())?,
            None => {
                let network = match &self.network {
                    Some(n) => n
                        .parse::<reco_models::NetworkKind>()
                        .map_err(|e| anyhow::anyhow!("--network: {e}"))?,
                    None => reco_models::NetworkKind::default(),
                };
                TrainConfig::for_recipe(
                    self.data.dataset.unwrap_or(DatasetKind::Synthetic),
                    network,
                )
            }
        };
        // Every flag of a setting overrides it when given (the test below checks that
        // none is left out).
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
            network,
            backbone,
            output_stride,
            iters,
            eval_every,
            log_every,
            save_every,
            batch_size,
            crop_size,
            lr,
            optimizer,
            weight_decay,
            head_lr_multiplier,
            warmup_iters,
            hue_jitter,
            epoch_iters,
            seed,
            out,
            temp,
            num_queries,
            num_negatives,
            weak_threshold,
            strong_threshold,
            output_dim
        );
        if let Some(p) = self.precision {
            c.precision = p;
        }
        if self.tf32 {
            c.tf32 = true;
        }
        if let Some(device) = &self.device.device {
            c.device = device.clone();
        }
        if let Some(n) = self.val.val_limit {
            c.val_limit = n;
        }
        if let Some(n) = self.val.num_threads {
            c.num_threads = n;
        }
        if self.data.data_root.is_some() {
            c.data_root = self.data.data_root.clone();
        }
        if self.partial.is_some() {
            c.partial = self.partial;
        }
        if self.split.is_some() {
            c.split = self.split.clone();
        }
        if self.unlabelled_root.is_some() {
            c.unlabelled_root = self.unlabelled_root.clone();
        }
        if self.pretrained.is_some() {
            c.pretrained = self.pretrained.clone();
        }
        if self.sync_bn {
            c.sync_bn = true;
        }
        c.validate()?;
        Ok(c)
    }
}

pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let mut cfg = args.resolve()?;
    let launch = Launch::from_env()?;
    let group = distributed::open_group(&launch, args.dist_backend, &cfg.device)?;
    // From here an error on one rank must end every rank (no peer left waiting). A
    // signal is not such an error: every rank stopped after the same step, and each
    // returns it to end its process group in order and exit with 128 + signal.
    distributed::run_or_abort(group.as_ref(), || {
        distributed::check_sync_bn(cfg.sync_bn, group.world_size())?;
        cfg.device = launch.device_name(&cfg.device);
        let out = cfg.out.clone();
        match run_in_group(cfg, args.resume.unwrap_or_default(), group.clone()) {
            Err(e) if e.downcast_ref::<Interrupted>().is_some() => {
                if group.rank() == 0 {
                    eprintln!("resume with:\n  {}", resume_command(&out));
                }
                Ok(Err(e))
            }
            other => other.map(Ok),
        }
    })?
}

/// This process's command line with `--resume` (the bare `trainer` becomes `trainer
/// train --out <its folder> --resume`), quoted for a POSIX shell.
fn resume_command(out: &std::path::Path) -> String {
    let mut argv: Vec<String> = std::env::args().collect();
    if argv.len() == 1 {
        argv.extend(["train".into(), "--out".into(), out.display().to_string()]);
    }
    if !argv
        .iter()
        .any(|a| a == "--resume" || a.starts_with("--resume="))
    {
        argv.push("--resume".into());
    }
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

fn run_in_group(
    cfg: TrainConfig,
    resume: Resume,
    group: Arc<dyn ProcessGroup>,
) -> anyhow::Result<()> {
    if group.rank() != 0 {
        train_in_group(cfg, resume, group)?;
        return Ok(());
    }
    if group.world_size() > 1 {
        eprintln!(
            "data-parallel training on {} ranks ({}{}): batch {} per rank, {} in all",
            group.world_size(),
            group.backend().name(),
            if cfg.sync_bn {
                ", synchronized batch norm"
            } else {
                ""
            },
            cfg.batch_size,
            cfg.batch_size * group.world_size()
        );
    }
    eprintln!(
        "training {} on {} ({}{}), {} {} OS{}{}, {} iterations, output in {}",
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
        cfg.network,
        cfg.backbone,
        cfg.output_stride,
        match (cfg.precision, cfg.tf32) {
            (reco_models::Precision::F32, false) => String::new(),
            (reco_models::Precision::F32, true) => ", TF32".to_string(),
            (p, _) => format!(", {p} convolutions"),
        },
        cfg.iters,
        cfg.out.display()
    );
    let dataset = cfg.dataset;
    let data_root = cfg
        .data_root
        .as_ref()
        .map(|root| format!(" --data-root {}", root.display()))
        .unwrap_or_default();
    let s = train_in_group(cfg, resume, group)?.context("rank 0 ends with a summary")?;
    let names: Vec<&str> = s.class_names.iter().map(String::as_str).collect();
    println!("\n{}", s.last.table(&names));
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
    println!("  cargo run --release -p trainer -- eval --checkpoint {out}/best.safetensors --dataset {dataset}{data_root}");
    println!("  cargo run --release -p trainer -- predict --checkpoint {out}/best.safetensors --dataset {dataset} --input IMAGE_OR_DIR --output predictions");
    println!(
        "  cargo run --release -p trainer -- ablate   (supervised vs ClassMix vs ClassMix + ReCo)"
    );
    Ok(())
}

/// Adds to the help of every flag of `cmd` that sets a [`TrainConfig`] key its default,
/// read from [`TrainConfig::for_dataset`] (so the help cannot drift from the code): one
/// value when every dataset has the same, else the value of each dataset, e.g.
/// `[default: 500 for synthetic; 40000 for pascal, cityscapes, sun, folder]`. Flags whose
/// own text already names a default are left alone.
pub fn with_defaults_in_help(cmd: clap::Command) -> clap::Command {
    let per_kind: Vec<(DatasetKind, serde_json::Value)> = [DatasetKind::Synthetic]
        .into_iter()
        .chain(
            DatasetKind::ALL
                .into_iter()
                .filter(|k| *k != DatasetKind::Synthetic),
        )
        .filter_map(|k| {
            serde_json::to_value(TrainConfig::for_dataset(k))
                .ok()
                .map(|v| (k, v))
        })
        .collect();
    cmd.mut_args(|arg| {
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        if help.to_ascii_lowercase().contains("default") {
            return arg;
        }
        let key = arg.get_id().as_str().to_string();
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for (kind, cfg) in &per_kind {
            let text = match cfg.get(&key) {
                None | Some(serde_json::Value::Null) => return arg,
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            match groups.iter_mut().find(|(t, _)| *t == text) {
                Some((_, kinds)) => kinds.push(kind.name()),
                None => groups.push((text, vec![kind.name()])),
            }
        }
        let default = match groups.as_slice() {
            [] => return arg,
            [(only, _)] => only.clone(),
            several => several
                .iter()
                .map(|(v, kinds)| format!("{v} for {}", kinds.join(", ")))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let sep = if help.is_empty() { "" } else { " " };
        arg.help(format!("{help}{sep}[default: {default}]"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};
    use reco_data::Partial;

    type Wrapper = crate::commands::Wrapper<TrainArgs>;

    type Check = fn(&TrainArgs, &TrainConfig) -> bool;

    /// Every flag of `trainer train` with a value that differs from the default, and the
    /// check that the value reached the resolved settings.
    fn table(config_file: &str) -> Vec<(&'static str, String, Check)> {
        let v = |s: &str| s.to_string();
        // A function, so that each closure becomes a `Check`.
        fn e(flag: &'static str, value: String, check: Check) -> (&'static str, String, Check) {
            (flag, value, check)
        }
        vec![
            e("config", v(config_file), |_, c| c.iters == 7),
            e("dataset", v("pascal"), |_, c| {
                c.dataset == DatasetKind::Pascal
            }),
            e("data-root", v("/d/voc"), |_, c| {
                c.data_root == Some(PathBuf::from("/d/voc"))
            }),
            e("num-labels", v("3"), |_, c| c.num_labels == 3),
            e("partial", v("p5"), |_, c| c.partial == Some(Partial::P5)),
            e("split", v("s.json"), |_, c| {
                c.split == Some(PathBuf::from("s.json"))
            }),
            e("mode", v("sup"), |_, c| c.mode == TrainMode::Sup),
            e("mix", v("cutmix"), |_, c| c.mix == MixMode::CutMix),
            e("reco", v("false"), |_, c| !c.reco),
            e("network", v("deeplabv2"), |_, c| c.network == "deeplabv2"),
            e("backbone", v("resnet34"), |_, c| c.backbone == "resnet34"),
            e("output-stride", v("8"), |_, c| c.output_stride == 8),
            e("pretrained", v("w.safetensors"), |_, c| {
                c.pretrained == Some(PathBuf::from("w.safetensors"))
            }),
            e("iters", v("9"), |_, c| c.iters == 9),
            e("eval-every", v("3"), |_, c| c.eval_every == 3),
            e("log-every", v("2"), |_, c| c.log_every == 2),
            e("save-every", v("7"), |_, c| c.save_every == 7),
            e("batch-size", v("3"), |_, c| c.batch_size == 3),
            e("crop-size", v("97"), |_, c| c.crop_size == 97),
            e("lr", v("0.5"), |_, c| c.lr == 0.5),
            e("optimizer", v("adamw"), |_, c| {
                c.optimizer == crate::optim::OptimizerKind::AdamW
            }),
            e("weight-decay", v("0.03"), |_, c| c.weight_decay == 0.03),
            e("head-lr-multiplier", v("4"), |_, c| {
                c.head_lr_multiplier == 4.0
            }),
            e("warmup-iters", v("5"), |_, c| c.warmup_iters == 5),
            e("hue-jitter", v("0.125"), |_, c| c.hue_jitter == 0.125),
            e("epoch-iters", v("7"), |_, c| c.epoch_iters == 7),
            e("seed", v("5"), |_, c| c.seed == 5),
            e("out", v("elsewhere"), |_, c| {
                c.out.as_path() == std::path::Path::new("elsewhere")
            }),
            e("device", v("cuda:1"), |_, c| c.device == "cuda:1"),
            // Not a setting of the run: `train` hands it to the trainer beside the config.
            e("resume", String::new(), |a, _| {
                a.resume == Some(Resume::Required)
            }),
            e("temp", v("0.25"), |_, c| c.temp == 0.25),
            e("num-queries", v("7"), |_, c| c.num_queries == 7),
            e("num-negatives", v("9"), |_, c| c.num_negatives == 9),
            e("weak-threshold", v("0.5"), |_, c| c.weak_threshold == 0.5),
            e("strong-threshold", v("0.75"), |_, c| {
                c.strong_threshold == ThresholdSchedule::constant(0.75)
            }),
            e("unlabelled-root", v("/photos"), |_, c| {
                c.unlabelled_root == Some(PathBuf::from("/photos"))
            }),
            e("output-dim", v("12"), |_, c| c.output_dim == 12),
            e("val-limit", v("4"), |_, c| c.val_limit == 4),
            e("num-threads", v("3"), |_, c| c.num_threads == 3),
            // Not a setting of the run (like --device, it may change on resume).
            e("dist-backend", v("mpi"), |a, _| {
                a.dist_backend == Some(Backend::Mpi)
            }),
            e("sync-bn", String::new(), |_, c| c.sync_bn),
            e("precision", v("f16"), |_, c| {
                c.precision == reco_models::Precision::F16
            }),
            e("tf32", String::new(), |_, c| c.tf32),
        ]
    }

    #[test]
    fn the_help_names_each_default_and_where_it_differs_by_dataset() {
        let cmd = with_defaults_in_help(Wrapper::command());
        let help = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default()
        };
        let synthetic = TrainConfig::for_dataset(DatasetKind::Synthetic);
        let pascal = TrainConfig::for_dataset(DatasetKind::Pascal);
        let iters = help("iters");
        assert!(
            iters.contains(&format!("{} for synthetic", synthetic.iters))
                && iters.contains(&format!("{} for pascal", pascal.iters)),
            "{iters}"
        );
        assert!(help("temp").contains(&format!("[default: {}]", pascal.temp)));
        assert!(help("save_every").contains(&format!("[default: {}]", synthetic.save_every)));
        // Options that are absent by default get no value; texts that name one keep theirs.
        assert!(!help("pretrained").contains("[default"));
        assert_eq!(help("strong_threshold").matches("default").count(), 1);
    }

    #[test]
    fn a_strong_threshold_ramp_reaches_the_config_and_the_reco_loss() {
        let args = parse("strong-threshold", "0.9..0.99@0..100");
        let cfg = args.resolve().unwrap();
        assert_eq!(
            cfg.strong_threshold,
            ThresholdSchedule::linear(0.9, 0.99, 0, 100)
        );
        assert!((cfg.reco_config_at(50).strong_threshold - 0.945).abs() < 1e-12);
        // config.json holds the text form and reads back the same.
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["strong_threshold"], "0.9..0.99@0..100");
        let back: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
        // A bad ramp is a parse error naming the syntax, not a panic.
        let e = Wrapper::try_parse_from(["train", "--strong-threshold", "0.99..0.9@5..1"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("strong threshold"), "{e}");
        // Older config files hold a number.
        let old: TrainConfig = serde_json::from_str(r#"{"strong_threshold": 0.8}"#).unwrap();
        assert_eq!(old.strong_threshold, ThresholdSchedule::constant(0.8));
    }

    fn parse(flag: &str, value: &str) -> TrainArgs {
        let mut argv = vec!["train".to_string(), format!("--{flag}")];
        if !value.is_empty() {
            argv.push(value.to_string());
        }
        Wrapper::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("--{flag} {value}: {e}"))
            .args
    }

    #[test]
    fn every_train_flag_reaches_the_resolved_config() {
        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("c.json");
        std::fs::write(&config_file, r#"{"iters": 7}"#).unwrap();
        let table = table(config_file.to_str().unwrap());
        // The flags come from clap's definition, so a new flag without an entry fails.
        let flags: Vec<String> = Wrapper::command()
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| l != "help" && l != "version")
            .collect();
        for flag in &flags {
            assert!(
                table.iter().any(|(f, ..)| f == flag),
                "--{flag} has no entry in the table of this test: add one that checks it reaches TrainConfig"
            );
        }
        let defaults = TrainArgs::default();
        let default_cfg = defaults.resolve().unwrap();
        for (flag, value, check) in &table {
            assert!(
                flags.iter().any(|f| f == flag),
                "the table lists --{flag}, which `trainer train` no longer has"
            );
            assert!(
                !check(&defaults, &default_cfg),
                "--{flag} {value} is the default: pick another value"
            );
            let args = parse(flag, value);
            let cfg = args
                .resolve()
                .unwrap_or_else(|e| panic!("--{flag} {value}: {e:#}"));
            assert!(
                check(&args, &cfg),
                "--{flag} {value} did not reach the resolved config"
            );
        }
    }
}
