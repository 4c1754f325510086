//! `cargo xtask ...` (alias in .cargo/config.toml). See `lib.rs` for the commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use xtask::cityscapes::{self, Credentials};
use xtask::download::Downloader;
use xtask::fetch::SourceOptions;
use xtask::prepare::DatasetOptions;
use xtask::weights::{fetch_weights, WeightsOptions};
use xtask::{checksum, convert, pascal, sun};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Data, weights and checkpoint conversion for ReCo"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Dataset {
    Pascal,
    Cityscapes,
    Sun,
}

#[derive(Subcommand)]
enum Command {
    /// Download, verify and prepare a dataset in the layout crates/data reads.
    FetchData {
        #[arg(long, value_enum)]
        dataset: Dataset,
        /// Dataset folder [default: data/<dataset>].
        #[arg(long)]
        root: Option<PathBuf>,
        /// Use the archives in DIR instead of downloading them.
        #[arg(long, value_name = "DIR")]
        from: Option<PathBuf>,
        /// Download `URL/<archive file name>` instead of the official hosts.
        #[arg(long, value_name = "URL", conflicts_with = "from")]
        mirror: Option<String>,
        /// JSON: archive file name -> {"md5": "..."} or {"sha256": "..."}; replaces the
        /// pinned checksums (for mirrors that repackage).
        #[arg(long, value_name = "FILE")]
        checksums: Option<PathBuf>,
        /// Use archives that have no known checksum (SUN RGB-D) without verification.
        #[arg(long)]
        accept_unpinned: bool,
        /// Don't require the official image counts (small test mirrors).
        #[arg(long)]
        skip_count_check: bool,
        /// Cityscapes account [env: CITYSCAPES_USERNAME].
        #[arg(long)]
        username: Option<String>,
        /// Cityscapes password [env: CITYSCAPES_PASSWORD].
        #[arg(long)]
        password: Option<String>,
    },
    /// Download ImageNet ResNet weights (timm/<backbone>.tv_in1k) into models/.
    FetchWeights {
        #[arg(long, default_value = "resnet101")]
        backbone: String,
        /// Hugging Face endpoint [default: $HF_ENDPOINT or https://huggingface.co].
        #[arg(long)]
        endpoint: Option<String>,
        /// Output folder.
        #[arg(long, default_value = "models")]
        out_dir: PathBuf,
    },
    /// Convert a PyTorch .pth (original ReCo checkpoint or torchvision ResNet) to safetensors.
    Convert {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
}

/// An environment variable, treating an empty value as unset.
fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::FetchData {
            dataset,
            root,
            from,
            mirror,
            checksums,
            accept_unpinned,
            skip_count_check,
            username,
            password,
        } => {
            let name = match dataset {
                Dataset::Pascal => "pascal",
                Dataset::Cityscapes => "cityscapes",
                Dataset::Sun => "sun",
            };
            let checksums = match checksums {
                Some(p) => checksum::load_overrides(&p)?,
                None => Default::default(),
            };
            let opts = DatasetOptions {
                root: root.unwrap_or_else(|| PathBuf::from("data").join(name)),
                sources: SourceOptions {
                    from,
                    mirror,
                    checksums,
                    accept_unpinned,
                },
                check_counts: !skip_count_check,
            };
            let result = match dataset {
                Dataset::Pascal => pascal::fetch(&opts, &Downloader::new(true)),
                Dataset::Sun => sun::fetch(&opts, &Downloader::new(true)),
                Dataset::Cityscapes => {
                    let creds = Credentials {
                        username: username.or_else(|| env_nonempty("CITYSCAPES_USERNAME")),
                        password: password.or_else(|| env_nonempty("CITYSCAPES_PASSWORD")),
                    };
                    cityscapes::fetch(&opts, &creds)
                }
            };
            result.with_context(|| {
                format!(
                    "fetch-data --dataset {name} failed; {} is not marked ready. Fix the cause \
                     and run the same command again (finished downloads and extractions are kept)",
                    opts.root.display()
                )
            })
        }
        Command::FetchWeights {
            backbone,
            endpoint,
            out_dir,
        } => fetch_weights(&WeightsOptions {
            backbone,
            endpoint,
            cache_dir: None,
            out_dir,
        })
        .map(|_| ()),
        Command::Convert { input, output } => {
            let (kind, n) = convert::convert(&input, &output)?;
            println!(
                "{}: {kind:?}, {n} tensors -> {}",
                input.display(),
                output.display()
            );
            Ok(())
        }
    }
}
