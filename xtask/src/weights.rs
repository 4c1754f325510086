//! `fetch-weights`: pretrained backbones from the Hugging Face Hub (hf-hub 1.x, blocking
//! API) into `models/`, through the standard hf cache (`HF_HUB_CACHE` / `HF_HOME`), from
//! `HF_ENDPOINT` or `--endpoint` when given.
//!
//! - ImageNet ResNets (`timm/<backbone>.tv_in1k`): checked and copied as they are, to
//!   `models/<backbone>.tv_in1k.safetensors`.
//! - DINOv2 ViTs (`facebook/dinov2-{small,base,large}`, transformers' names): converted
//!   to timm's names with [`reco_models::vit::timm_from_hf`], checked name by name and
//!   shape by shape against what [`reco_models::vit::Dinov2::new`] creates for that size,
//!   and written to `models/dinov2-{s,b,l}.safetensors`, f32, timm names without prefix.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Shape, Tensor};
use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use indicatif::ProgressBar;
use reco_models::vit::{timm_from_hf, Dinov2, VitConfig};
use reco_models::Backbone;

use crate::progress;
use crate::sources::{
    hf_dinov2_repo_for, hf_repo_for, BACKBONES, DINOV2_BACKBONES, HF_WEIGHTS_FILE,
};

#[derive(Clone, Debug)]
pub struct WeightsOptions {
    /// resnet18 | resnet34 | resnet50 | resnet101 | dinov2-s | dinov2-b | dinov2-l (and the
    /// DINOv2 aliases of `Backbone::from_str`: dinov2-small, dinov2_vits14, ...)
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

/// Downloads (or finds in the hf cache) the weights and writes them to `out_dir`:
/// `<backbone>.tv_in1k.safetensors` for a ResNet (the hub's file as it is),
/// `dinov2-{s,b,l}.safetensors` for DINOv2 (converted to timm's names). Returns that path.
pub fn fetch_weights(opts: &WeightsOptions) -> Result<PathBuf> {
    if let Some(repo) = hf_repo_for(&opts.backbone) {
        return fetch_resnet(opts, repo);
    }
    match opts.backbone.parse::<Backbone>() {
        Ok(backbone) if backbone.is_vit() => fetch_dinov2(opts, backbone),
        _ => bail!(
            "unknown backbone {:?}: choose one of {}, {}",
            opts.backbone,
            BACKBONES.join(", "),
            DINOV2_BACKBONES.join(", ")
        ),
    }
}

/// `model.safetensors` of `repo`, from the hf cache or downloaded into it (with a progress
/// bar). Returns the cached file.
fn download(opts: &WeightsOptions, repo: &str) -> Result<PathBuf> {
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
    client
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
        })
}

fn fetch_resnet(opts: &WeightsOptions, repo: &str) -> Result<PathBuf> {
    let cached = download(opts, repo)?;
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

fn fetch_dinov2(opts: &WeightsOptions, backbone: Backbone) -> Result<PathBuf> {
    let Some(repo) = hf_dinov2_repo_for(backbone) else {
        bail!("no hub repository known for {backbone}");
    };
    let cached = download(opts, repo)?;
    let tensors = dinov2_from_hub_file(&cached, backbone, repo)?;

    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create {}", opts.out_dir.display()))?;
    let dest = opts
        .out_dir
        .join(format!("{}.safetensors", backbone.name()));
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "source".to_string(),
            format!("{repo} {HF_WEIGHTS_FILE}, transformers names converted to timm's"),
        ),
    ]);
    // Written atomically: an interrupted run never leaves a truncated file in models/.
    reco_models::checkpoint::write_safetensors_atomic_with(&tensors, Some(meta), &dest)
        .with_context(|| format!("cannot write the converted weights of {repo}"))?;
    println!(
        "{repo}: {} tensors, converted to timm names (hf cache: {})",
        tensors.len(),
        cached.display()
    );
    println!("weights: {}", dest.display());
    println!("trainer flag: --pretrained {}", dest.display());
    Ok(dest)
}

/// Every variable `Dinov2::new` creates for `backbone`, with its shape, in creation order:
/// the names the converted file must hold exactly. Built without allocating the weights.
pub fn dinov2_layout(backbone: Backbone) -> Result<Vec<(String, Vec<usize>)>> {
    let cfg = VitConfig::for_backbone(backbone)?;
    let seen = Mutex::new(Vec::new());
    let vb = candle_nn::VarBuilder::from_backend(
        Box::new(LayoutRecorder(&seen)),
        DType::F32,
        Device::Cpu,
    );
    Dinov2::new(&cfg, vb)?;
    Ok(seen.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// A VarBuilder backend that records each requested name and shape and hands out a
/// broadcast zero (no storage).
struct LayoutRecorder<'a>(&'a Mutex<Vec<(String, Vec<usize>)>>);

impl candle_nn::var_builder::SimpleBackend for LayoutRecorder<'_> {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((name.to_string(), s.dims().to_vec()));
        }
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("layout recorder: {name} requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// The hf cache folder of the repository a cached file belongs to
/// (`<cache>/models--owner--name/snapshots/<commit>/file`), else the file itself.
fn cache_entry(cached: &Path) -> PathBuf {
    cached
        .ancestors()
        .nth(3)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("models--"))
        })
        .unwrap_or(cached)
        .to_path_buf()
}

/// Reads a DINOv2 checkpoint in the hub's (transformers') layout, converts it to timm's
/// names in f32 and checks that it holds exactly the tensors, with their shapes, of
/// `backbone`'s encoder. `repo` names the source in the errors.
pub fn dinov2_from_hub_file(
    path: &Path,
    backbone: Backbone,
    repo: &str,
) -> Result<BTreeMap<String, Tensor>> {
    let advice = format!(
        "the download is damaged or is not {repo}'s {HF_WEIGHTS_FILE}: delete {} and run \
         `cargo xtask fetch-weights --backbone {backbone}` again",
        cache_entry(path).display()
    );
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Err(e) = safetensors::SafeTensors::deserialize(&bytes) {
        bail!(
            "{} is not a valid safetensors file ({e}); {advice}",
            path.display()
        );
    }
    let hub = match candle_core::safetensors::load_buffer(&bytes, &Device::Cpu) {
        Ok(hub) => hub,
        Err(e) => bail!(
            "cannot read the tensors of {} ({}); {advice}",
            path.display(),
            message(e)
        ),
    };
    drop(bytes);
    let converted = match timm_from_hf(hub) {
        Ok(converted) => converted,
        Err(e) => bail!(
            "{} is not a DINOv2 checkpoint in the hub's layout ({}); {advice}",
            path.display(),
            message(e)
        ),
    };
    let mut tensors = BTreeMap::new();
    for (name, t) in converted {
        if !t.dtype().is_float() {
            bail!(
                "{}: tensor {name} is {:?}, DINOv2's weights are floating point; {advice}",
                path.display(),
                t.dtype()
            );
        }
        tensors.insert(name, t.to_dtype(DType::F32)?);
    }

    let expected = dinov2_layout(backbone)?;
    let problems = layout_problems(&tensors, &expected, backbone);
    if !problems.is_empty() {
        // Name the size the file has, when it is one of the others.
        let actual = [
            Backbone::Dinov2Small,
            Backbone::Dinov2Base,
            Backbone::Dinov2Large,
        ]
        .into_iter()
        .filter(|&b| b != backbone)
        .find(|&b| dinov2_layout(b).is_ok_and(|l| layout_problems(&tensors, &l, b).is_empty()));
        const SHOWN: usize = 8;
        let mut list = problems
            .iter()
            .take(SHOWN)
            .map(|p| format!("  {p}"))
            .collect::<Vec<_>>()
            .join("\n");
        if problems.len() > SHOWN {
            list.push_str(&format!("\n  ... and {} more", problems.len() - SHOWN));
        }
        let what = match actual.and_then(hf_dinov2_repo_for) {
            Some(other) => format!(
                "it holds {other}'s encoder ({}), not {backbone}'s: check that the endpoint \
                 serves {repo} under that name, or fetch it with --backbone {}",
                actual.map(|b| b.name()).unwrap_or_default(),
                actual.map(|b| b.name()).unwrap_or_default()
            ),
            None => advice.clone(),
        };
        bail!(
            "{} does not hold the DINOv2 encoder of {backbone} ({} problem{} after converting \
             the hub's names to timm's):\n{list}\n{what}",
            path.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        );
    }
    Ok(tensors)
}

/// A candle error's message without the backtrace candle attaches when `RUST_BACKTRACE`
/// is set.
fn message(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => message(*inner),
        e => e.to_string(),
    }
}

/// Missing tensors, tensors of another shape and unexpected tensors, one line each.
fn layout_problems(
    tensors: &BTreeMap<String, Tensor>,
    expected: &[(String, Vec<usize>)],
    backbone: Backbone,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, shape) in expected {
        match tensors.get(name) {
            None => problems.push(format!("missing tensor {name} (shape {shape:?})")),
            Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                "tensor {name} has shape {:?}, {backbone} needs {shape:?}",
                t.dims()
            )),
            Some(_) => {}
        }
    }
    for name in tensors.keys() {
        if !expected.iter().any(|(n, _)| n == name) {
            problems.push(format!("unexpected tensor {name}"));
        }
    }
    problems
}
