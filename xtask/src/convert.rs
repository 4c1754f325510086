//! `convert`: a PyTorch `.pth` (zip format) of the original ReCo code (the `DeepLabv3Plus`
//! state_dict: `resnet_conv1.weight`, `ASPP.*`, `classifier.*`, ...; or the `DeepLabv2`
//! one: `classifier.conv2d_list.*`, `representation.0.*`) or of a torchvision ResNet
//! (`conv1.weight`, `layer1.0.*`, `fc.*`) to safetensors, names and dtypes unchanged (so
//! `num_batches_tracked` stays int64 and the file loads back with `strict=True`).
//! Read with `candle_core::pickle`. Anything else is refused with the reason.
//!
//! A ReCo network whose architecture the shapes determine (network, backbone, classes,
//! output_dim: see `reco_models::meta::architecture_from_shapes`) is written with
//! checkpoint metadata, so that `trainer eval`/`predict` and `Segmenter::load` need no
//! flags. The output stride leaves no trace in the weights: the metadata records the
//! original's default (16 for DeepLabV3+, 8 for DeepLabV2), and says so on stderr.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use reco_models::meta::{architecture_from_shapes, write_with_meta};
use reco_models::{CheckpointMeta, DeepLabConfig, NetworkKind, DEEPLABV2_OUTPUT_STRIDE};

/// What a checkpoint turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The original ReCo `DeepLabv3Plus` state_dict.
    RecoDeepLab,
    /// The original ReCo `DeepLabv2` state_dict (`--backbone deeplabv2` in its scripts).
    RecoDeepLabV2,
    /// A torchvision ResNet (ImageNet) state_dict.
    TorchvisionResnet,
}

/// Keys that identify each kind (all must be present).
const RECO_KEYS: [&str; 4] = [
    "resnet_conv1.weight",
    "resnet_layer1.0.conv1.weight",
    "ASPP.project.0.weight",
    "classifier.3.weight",
];
const RECO_V2_KEYS: [&str; 4] = [
    "resnet_conv1.weight",
    "resnet_layer1.0.conv1.weight",
    "classifier.conv2d_list.0.weight",
    "representation.0.weight",
];
const TORCHVISION_KEYS: [&str; 4] = [
    "conv1.weight",
    "bn1.weight",
    "layer1.0.conv1.weight",
    "layer4.0.conv1.weight",
];

pub fn classify(names: &[&str]) -> Option<Kind> {
    let has_all = |keys: &[&str]| keys.iter().all(|k| names.contains(k));
    if has_all(&RECO_KEYS) {
        Some(Kind::RecoDeepLab)
    } else if has_all(&RECO_V2_KEYS) {
        Some(Kind::RecoDeepLabV2)
    } else if has_all(&TORCHVISION_KEYS) {
        Some(Kind::TorchvisionResnet)
    } else {
        None
    }
}

fn read_state_dict(input: &Path) -> Result<Vec<(String, Tensor)>> {
    let mut magic = [0u8; 4];
    std::fs::File::open(input)
        .with_context(|| format!("cannot open {}", input.display()))?
        .read_exact(&mut magic)
        .with_context(|| format!("{} is too short to be a checkpoint", input.display()))?;
    if magic != *b"PK\x03\x04" {
        bail!(
            "{} is not a zip-format PyTorch checkpoint (PyTorch >= 1.6 writes that format). If it \
             is an older .pth, re-save it once with `torch.save(torch.load(p), p)`",
            input.display()
        );
    }
    // A bare state_dict, or one wrapped in a dict under a usual key.
    let mut last_error = None;
    for key in [
        None,
        Some("state_dict"),
        Some("model"),
        Some("model_state_dict"),
    ] {
        // A missing key is an error of the reader: try the next one.
        match candle_core::pickle::read_all_with_key(input, key) {
            Ok(tensors) if !tensors.is_empty() => return Ok(tensors),
            Ok(_) => {}
            Err(e) if key.is_some() => last_error = Some(e),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot read the tensors of {}", input.display()))
            }
        }
    }
    if let Some(e) = last_error.filter(|e| !e.to_string().contains("not found")) {
        return Err(e).with_context(|| format!("cannot read the tensors of {}", input.display()));
    }
    bail!("{} holds no tensors (not a state_dict)", input.display())
}

/// Converts `input` (.pth) to `output` (.safetensors). Returns the kind and tensor count.
pub fn convert(input: &Path, output: &Path) -> Result<(Kind, usize)> {
    let mut tensors = read_state_dict(input)?;
    // nn.DataParallel checkpoints prefix every name with `module.`.
    if tensors.iter().all(|(n, _)| n.starts_with("module.")) {
        for (n, _) in tensors.iter_mut() {
            *n = n["module.".len()..].to_string();
        }
    }
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let Some(kind) = classify(&names) else {
        let mut sample: Vec<&str> = names.clone();
        sample.sort();
        sample.truncate(6);
        bail!(
            "{} is neither a checkpoint of the original ReCo code (DeepLabV3+ keys like {}; \
             DeepLabV2 keys like {}) nor a torchvision ResNet (keys like {}); its first keys \
             are {:?}",
            input.display(),
            RECO_KEYS.join(", "),
            RECO_V2_KEYS.join(", "),
            TORCHVISION_KEYS.join(", "),
            sample
        );
    };
    let count = tensors.len();
    let map: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match network_meta(kind, &map, input) {
        Some(meta) => {
            eprintln!(
                "{}: {} {} with {} classes; output stride {} recorded (the original's default: \
                 the weights do not say; evaluate with `--output-stride` if it was trained otherwise)",
                input.display(),
                meta.network,
                meta.backbone,
                meta.num_classes,
                meta.output_stride
            );
            // Checked against the shapes, serialised in memory and written atomically.
            write_with_meta(&map, &meta, output)
                .with_context(|| format!("cannot write {}", output.display()))?;
        }
        None => {
            // Serialised in memory, then written atomically: an interrupted conversion never
            // leaves a truncated .safetensors that a later load would half-read.
            let bytes = safetensors::tensor::serialize(map.iter(), None)
                .with_context(|| format!("cannot serialise the tensors of {}", input.display()))?;
            reco_util::fs::write_atomic(output, &bytes)?;
        }
    }
    Ok((kind, count))
}

/// The metadata of a ReCo network whose shapes determine its architecture; `None` for
/// torchvision backbones and partial state_dicts.
fn network_meta(
    kind: Kind,
    tensors: &BTreeMap<String, Tensor>,
    input: &Path,
) -> Option<CheckpointMeta> {
    if kind == Kind::TorchvisionResnet {
        return None;
    }
    let shapes: HashMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let arch = architecture_from_shapes(&shapes, input).ok()?;
    let output_stride = match arch.network {
        NetworkKind::DeepLabV3Plus => DeepLabConfig::default().output_stride,
        NetworkKind::DeepLabV2 => DEEPLABV2_OUTPUT_STRIDE,
    };
    let cfg = DeepLabConfig {
        backbone: arch.backbone,
        output_stride,
        num_classes: arch.num_classes,
        output_dim: arch.output_dim,
    };
    Some(CheckpointMeta::new(arch.network, &cfg))
}
