//! `cargo xtask ...` (alias in .cargo/config.toml). See `lib.rs` for the commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use xtask::cityscapes::{self, Credentials};
use xtask::download::{Downloader, RetryPolicy};
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Dataset {
    Pascal,
    Cityscapes,
    Sun,
}

#[derive(Subcommand)]
enum Command {
    /// Download, verify and prepare a dataset in the layout crates/data reads.
    FetchData {
        /// Which dataset; Pascal VOC 2012 + SBD (the paper's main benchmark) by default.
        #[arg(long, value_enum, default_value_t = Dataset::Pascal)]
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
        /// Tries per archive when a transfer is cut (each retry resumes where it stopped).
        #[arg(long, default_value_t = RetryPolicy::default().tries, value_parser = clap::value_parser!(u32).range(1..))]
        retries: u32,
        /// Wait before the first retry in milliseconds; doubled before each further one.
        #[arg(long, value_name = "MS", default_value_t = RetryPolicy::default().base_delay.as_millis() as u64)]
        retry_delay_ms: u64,
        /// Cityscapes account [env: CITYSCAPES_USERNAME].
        #[arg(long)]
        username: Option<String>,
        /// Cityscapes password [env: CITYSCAPES_PASSWORD].
        #[arg(long)]
        password: Option<String>,
    },
    /// Download pretrained backbone weights from the Hugging Face Hub into models/.
    ///
    /// ResNets: timm/<backbone>.tv_in1k (torchvision's ImageNet weights), copied as they
    /// are to models/<backbone>.tv_in1k.safetensors. DINOv2: facebook/dinov2-small, -base or
    /// -large, converted from transformers' names to timm's (the names the DPT encoder
    /// loads), checked tensor by tensor against that size, and written to
    /// models/dinov2-s.safetensors (-b, -l). Prints the trainer's --pretrained flag.
    FetchWeights {
        /// resnet18, resnet34, resnet50, resnet101, or dinov2-s, dinov2-b, dinov2-l (also
        /// dinov2-small / dinov2-base / dinov2-large, dinov2_vits14 / _vitb14 / _vitl14).
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
    ///
    /// The weights say the network, backbone, class count and representation size; the
    /// flags say what they cannot. An output stride not given is recorded as the
    /// original's default and marked as assumed.
    Convert {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
        /// The output stride it was trained at: 8, 16 or 32 (default: the original's, 16
        /// for DeepLabV3+ and 8 for DeepLabV2, recorded as an assumption).
        #[arg(long)]
        output_stride: Option<usize>,
        /// The dataset it was trained on: pascal, cityscapes, sun, synthetic or folder
        /// (gives the class names; folder needs --classes).
        #[arg(long)]
        dataset: Option<reco_data::DatasetKind>,
        /// Class names: a file with one per line (as a labelled folder's classes.txt) or
        /// a comma-separated list.
        #[arg(long)]
        classes: Option<String>,
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
            retries,
            retry_delay_ms,
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
                    retry: RetryPolicy {
                        tries: retries,
                        base_delay: std::time::Duration::from_millis(retry_delay_ms),
                        ..RetryPolicy::default()
                    },
                },
                check_counts: !skip_count_check,
            };
            let result = match dataset {
                Dataset::Pascal => {
                    pascal::fetch(&opts, &Downloader::new(true).with_retry(opts.sources.retry))
                }
                Dataset::Sun => {
                    sun::fetch(&opts, &Downloader::new(true).with_retry(opts.sources.retry))
                }
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
        Command::Convert {
            input,
            output,
            output_stride,
            dataset,
            classes,
        } => {
            let opts = convert::ConvertOptions {
                output_stride,
                dataset,
                classes: classes.as_deref().map(convert::parse_classes).transpose()?,
            };
            let (kind, n) = convert::convert_with(&input, &output, &opts)?;
            println!(
                "{}: {kind:?}, {n} tensors -> {}",
                input.display(),
                output.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fetch_data_without_flags_means_pascal_with_five_tries() {
        let cli = Cli::try_parse_from(["xtask", "fetch-data"]).unwrap();
        let Command::FetchData {
            dataset,
            root,
            retries,
            ..
        } = cli.command
        else {
            panic!("fetch-data parsed as another command");
        };
        assert_eq!(dataset, Dataset::Pascal);
        assert_eq!(root, None);
        assert_eq!(retries, 5);
        let cli = Cli::try_parse_from(["xtask", "fetch-data", "--dataset", "sun"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::FetchData {
                dataset: Dataset::Sun,
                ..
            }
        ));
        assert!(Cli::try_parse_from(["xtask", "fetch-data", "--retries", "0"]).is_err());
    }

    #[test]
    fn fetch_weights_help_names_both_families() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("fetch-weights")
            .unwrap()
            .render_long_help()
            .to_string();
        for needle in [
            "[default: resnet101]",
            "dinov2-s",
            "facebook/dinov2-small",
            "timm",
        ] {
            assert!(help.contains(needle), "{needle}: {help}");
        }
    }

    #[test]
    fn help_names_the_default_dataset() {
        let mut cmd = Cli::command();
        let help = cmd
            .find_subcommand_mut("fetch-data")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("[default: pascal]"), "{help}");
        assert!(help.contains("Pascal VOC"), "{help}");
    }
}
