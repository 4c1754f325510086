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
//! flags. What the weights cannot say comes from [`ConvertOptions`]: the output stride it
//! was trained at (`--output-stride`), the dataset and the class names. An output stride
//! nobody stated is written as the original's default (16 for DeepLabV3+, 8 for
//! DeepLabV2) *marked as assumed* in the metadata (`CheckpointMeta::assumed`), so that a
//! later `--output-stride` replaces it without a fight; a stated one is a fact.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use reco_data::DatasetKind;
use reco_models::meta::{architecture_from_shapes, write_with_meta};
use reco_models::{default_output_stride, CheckpointMeta, DeepLabConfig, ASSUMED_OUTPUT_STRIDE};

/// What the weights of a checkpoint cannot say, as its owner states it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConvertOptions {
    /// The output stride the network was trained at; `None`: the original's default,
    /// recorded as an assumption.
    pub output_stride: Option<usize>,
    /// The dataset it was trained on (its class names unless `classes` are given).
    pub dataset: Option<DatasetKind>,
    /// Class names in class-index order (e.g. from a `classes.txt`).
    pub classes: Option<Vec<String>>,
}

impl ConvertOptions {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Class names from `--classes`: a file in the `classes.txt` format (one name per line,
/// optionally followed by a colour) when `value` names a file, else a comma-separated list.
pub fn parse_classes(value: &str) -> Result<Vec<String>> {
    let path = Path::new(value);
    if path.is_file() {
        let (names, _colours) = reco_data::datasets::read_classes(path)?;
        return Ok(names);
    }
    if !value.contains(',') {
        bail!(
            "--classes {value:?}: no such file, and not a comma-separated list; give a file \
             with one class name per line (as a labelled folder's classes.txt) or names \
             separated by commas"
        );
    }
    let names: Vec<String> = value.split(',').map(|n| n.trim().to_string()).collect();
    if let Some(i) = names.iter().position(|n| n.is_empty()) {
        bail!("--classes {value:?}: name {} is empty", i + 1);
    }
    Ok(names)
}

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

/// Converts `input` (.pth) to `output` (.safetensors) with nothing stated beyond the
/// weights. Returns the kind and tensor count.
pub fn convert(input: &Path, output: &Path) -> Result<(Kind, usize)> {
    convert_with(input, output, &ConvertOptions::default())
}

/// Converts `input` (.pth) to `output` (.safetensors), recording `opts` in the metadata
/// of a ReCo network. Returns the kind and tensor count.
pub fn convert_with(input: &Path, output: &Path, opts: &ConvertOptions) -> Result<(Kind, usize)> {
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
    if kind == Kind::TorchvisionResnet && !opts.is_empty() {
        bail!(
            "{} is a torchvision ResNet (an ImageNet backbone, no segmentation network): \
             --output-stride, --dataset and --classes describe a ReCo network; drop them",
            input.display()
        );
    }
    let meta = network_meta(kind, &map, input, opts)?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    match meta {
        Some(meta) => {
            eprintln!("{}", describe(input, &meta));
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

/// The metadata of a ReCo network whose shapes determine its architecture, with what
/// `opts` states; `None` for torchvision backbones and partial state_dicts (which `opts`
/// cannot describe: an error when it says anything).
fn network_meta(
    kind: Kind,
    tensors: &BTreeMap<String, Tensor>,
    input: &Path,
    opts: &ConvertOptions,
) -> Result<Option<CheckpointMeta>> {
    if kind == Kind::TorchvisionResnet {
        return Ok(None);
    }
    let shapes: HashMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    let arch = match architecture_from_shapes(&shapes, input) {
        Ok(arch) => arch,
        // A partial state_dict: converted as plain tensors.
        Err(_) if opts.is_empty() => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "{}: the flags describe a network, but the weights are not a whole one",
                    input.display()
                )
            })
        }
    };
    let stated = opts.output_stride;
    if let Some(os) = stated.filter(|os| ![8, 16, 32].contains(os)) {
        bail!("--output-stride {os}: the networks run at output stride 8, 16 or 32");
    }
    let cfg = DeepLabConfig {
        backbone: arch.backbone,
        output_stride: stated.unwrap_or(default_output_stride(arch.network)),
        num_classes: arch.num_classes,
        output_dim: arch.output_dim,
    };
    let mut meta = CheckpointMeta::new(arch.network, &cfg);
    if stated.is_none() {
        meta = meta.assuming(ASSUMED_OUTPUT_STRIDE);
    }
    let class_names = match (&opts.classes, opts.dataset) {
        (Some(names), _) => names.clone(),
        (None, Some(DatasetKind::Folder)) => bail!(
            "--dataset folder: a labelled folder's classes are its own; pass its class list \
             with --classes <root>/classes.txt"
        ),
        (None, Some(kind)) => kind.class_names().iter().map(|n| n.to_string()).collect(),
        (None, None) => Vec::new(),
    };
    if !class_names.is_empty() && class_names.len() != arch.num_classes {
        let source = match (&opts.classes, opts.dataset) {
            (Some(_), _) => "--classes lists".to_string(),
            (None, Some(kind)) => format!("the {kind} dataset has"),
            (None, None) => unreachable!("names come from --classes or --dataset"),
        };
        bail!(
            "{}: the weights predict {} classes but {source} {}: pass the dataset or class \
             list it was trained with",
            input.display(),
            arch.num_classes,
            class_names.len()
        );
    }
    meta.class_names = class_names;
    meta.dataset = opts.dataset.map(|d| d.name().to_string());
    Ok(Some(meta))
}

/// One line per source of the metadata: what the weights say, what was stated, what is
/// assumed.
fn describe(input: &Path, meta: &CheckpointMeta) -> String {
    let mut text = format!(
        "{}: from the weights: {} {}, {} classes, representation of {}",
        input.display(),
        meta.network,
        meta.backbone,
        meta.num_classes,
        meta.output_dim
    );
    let mut stated = Vec::new();
    if !meta.is_assumed(ASSUMED_OUTPUT_STRIDE) {
        stated.push(format!("output stride {}", meta.output_stride));
    }
    if let Some(d) = &meta.dataset {
        stated.push(format!("dataset {d}"));
    }
    if !meta.class_names.is_empty() {
        stated.push(format!("{} class names", meta.class_names.len()));
    }
    if !stated.is_empty() {
        text.push_str(&format!("\n  stated: {}", stated.join(", ")));
    }
    if meta.is_assumed(ASSUMED_OUTPUT_STRIDE) {
        text.push_str(&format!(
            "\n  assumed: output stride {} (the original's default; the weights do not say). \
             If it was trained at another, convert again with --output-stride N (a later \
             `trainer --output-stride` also replaces this assumption)",
            meta.output_stride
        ));
    }
    text
}
