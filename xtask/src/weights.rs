//! `fetch-weights`: ImageNet ResNet weights from the Hugging Face Hub (hf-hub 1.x, blocking
//! API) into `models/`, through the standard hf cache (`HF_HUB_CACHE` / `HF_HOME`), from
//! `HF_ENDPOINT` or `--endpoint` when given.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use indicatif::ProgressBar;

use crate::progress;
use crate::sources::{hf_repo_for, BACKBONES, HF_WEIGHTS_FILE};

#[derive(Clone, Debug)]
pub struct WeightsOptions {
    /// resnet18 | resnet34 | resnet50 | resnet101
    pub backbone: String,
    /// Hub URL; `None` = `HF_ENDPOINT` or https://huggingface.co (hf-hub's own rule).
    pub endpoint: Option<String>,
    /// hf cache folder; `None` = hf-hub's default (`HF_HUB_CACHE`, `HF_HOME/hub`, ~/.cache).
    pub cache_dir: Option<PathBuf>,
    /// Where the weights are copied (`models/`).
    pub out_dir: PathBuf,
}

/// Turns hf-hub's download events into an indicatif bar.
struct BarHandler {
    bar: Mutex<Option<ProgressBar>>,
    label: String,
}

impl ProgressHandler for BarHandler {
    fn on_progress(&self, event: &ProgressEvent) {
        let Ok(mut bar) = self.bar.lock() else {
            return;
        };
        match event {
            ProgressEvent::Download(DownloadEvent::Start { total_bytes, .. }) => {
                *bar = Some(progress::bytes_bar(*total_bytes, &self.label));
            }
            ProgressEvent::Download(DownloadEvent::Progress { files }) => {
                if let Some(b) = bar.as_ref() {
                    let done: u64 = files.iter().map(|f| f.bytes_completed).sum();
                    b.set_position(done);
                }
            }
            ProgressEvent::Download(DownloadEvent::AggregateProgress {
                bytes_completed, ..
            }) => {
                if let Some(b) = bar.as_ref() {
                    b.set_position(*bytes_completed);
                }
            }
            ProgressEvent::Download(DownloadEvent::Complete) => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}

/// Checks that a file is a torchvision-layout ResNet in safetensors format.
pub fn check_resnet_safetensors(path: &Path) -> Result<usize> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let names = st.names();
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer4.0.conv1.weight",
    ] {
        if !names.contains(&key) {
            bail!(
                "{} has no tensor {key}: not a torchvision-layout ResNet",
                path.display()
            );
        }
    }
    let conv1 = st.tensor("conv1.weight")?;
    if conv1.shape() != [64, 3, 7, 7] {
        bail!(
            "{}: conv1.weight has shape {:?}, expected [64, 3, 7, 7]",
            path.display(),
            conv1.shape()
        );
    }
    Ok(names.len())
}

/// Downloads (or finds in the hf cache) the weights and copies them to
/// `<out_dir>/<backbone>.tv_in1k.safetensors`. Returns that path.
pub fn fetch_weights(opts: &WeightsOptions) -> Result<PathBuf> {
    let Some(repo) = hf_repo_for(&opts.backbone) else {
        bail!(
            "unknown backbone {:?}: choose one of {}",
            opts.backbone,
            BACKBONES.join(", ")
        );
    };
    let mut builder = hf_hub::HFClient::builder();
    if let Some(e) = &opts.endpoint {
        builder = builder.endpoint(e.clone());
    }
    if let Some(c) = &opts.cache_dir {
        builder = builder.cache_dir(c.clone());
    }
    let client = builder.build_sync().context(
        "cannot set up the Hugging Face client (is --endpoint / HF_ENDPOINT a valid URL?)",
    )?;
    let (owner, name) = hf_hub::split_id(repo);
    let handler = BarHandler {
        bar: Mutex::new(None),
        label: format!("downloading {repo}"),
    };
    let cached = client
        .model(owner, name)
        .download_file()
        .filename(HF_WEIGHTS_FILE)
        .progress(handler)
        .send()
        .with_context(|| {
            format!(
                "cannot download {HF_WEIGHTS_FILE} of {repo} from the Hugging Face Hub (set \
                 HF_ENDPOINT or --endpoint for a mirror; HF_TOKEN if the hub needs a login)"
            )
        })?;
    let tensors = check_resnet_safetensors(&cached)?;

    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let dest = opts
        .out_dir
        .join(format!("{}.tv_in1k.safetensors", opts.backbone));
    reco_util::fs::copy_atomic(&cached, &dest)
        .with_context(|| format!("cannot copy {} to {}", cached.display(), dest.display()))?;
    println!("{repo}: {tensors} tensors (hf cache: {})", cached.display());
    println!("weights: {}", dest.display());
    println!("trainer flag: --pretrained {}", dest.display());
    Ok(dest)
}
