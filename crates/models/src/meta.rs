//! Self-describing checkpoints: what network a safetensors file holds, stored in the
//! file's `__metadata__` (a string-to-string map) beside the weights.
//!
//! The map holds the whole [`CheckpointMeta`] as JSON under the key `"reco"`, a few flat
//! copies (`network`, `backbone`, `output_stride`, `num_classes`, `output_dim`, as the
//! reference fixtures use) for tools that read only flat keys, and `"format": "pt"` as
//! PyTorch's own `safetensors.torch.save_file` writes. Safetensors loaders ignore the
//! metadata (`safetensors.torch.load_file` returns tensors only), so the original PyTorch
//! code still loads these files with `load_state_dict(..., strict=True)`.
//!
//! Files without metadata (older runs, converted originals) are described from their
//! tensor shapes, with the output stride (which leaves no trace in the weights) from the
//! caller; see [`resolve_meta`].
//!
//! Each value is either known (read from the weights, or stated by whoever wrote the file:
//! the training run, or `xtask convert --output-stride`) or assumed (a default written
//! down because nobody said, e.g. the original's output stride for a converted
//! checkpoint). [`CheckpointMeta::assumed`] names the assumed fields, so a reader may let
//! a flag replace an assumption while a known value stays the truth about training.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::deeplab::DeepLabConfig;
use crate::deeplabv2::DEEPLABV2_OUTPUT_STRIDE;
use crate::network::NetworkKind;
use crate::resnet::Backbone;

/// Version of the metadata layout; bumped when a field changes meaning.
pub const META_FORMAT_VERSION: u32 = 1;
/// The `__metadata__` key holding the JSON of [`CheckpointMeta`].
pub const META_KEY: &str = "reco";
/// Largest safetensors header this reader accepts (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Per-channel input normalisation applied to RGB values in 0..1: `(x - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// torchvision's ImageNet statistics, which the original code and this project use.
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
}

impl Default for Normalization {
    fn default() -> Self {
        Self::IMAGENET
    }
}

/// Everything needed to rebuild and use a checkpoint's network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// [`META_FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    #[serde(with = "as_string")]
    pub network: NetworkKind,
    #[serde(with = "as_string")]
    pub backbone: Backbone,
    pub output_stride: usize,
    pub num_classes: usize,
    pub output_dim: usize,
    /// The dataset trained on (e.g. "pascal", "cityscapes", "synthetic"), when known.
    #[serde(default)]
    pub dataset: Option<String>,
    /// One name per class, in class-index order; empty when unknown.
    #[serde(default)]
    pub class_names: Vec<String>,
    #[serde(default)]
    pub normalization: Normalization,
    /// The fields whose values are assumptions, not facts (names as in this struct, e.g.
    /// [`ASSUMED_OUTPUT_STRIDE`]); empty when every value is known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assumed: Vec<String>,
}

/// The name in [`CheckpointMeta::assumed`] of an output stride nobody stated.
pub const ASSUMED_OUTPUT_STRIDE: &str = "output_stride";

impl CheckpointMeta {
    /// Metadata for a network built with `cfg`; no dataset, ImageNet normalisation.
    pub fn new(network: NetworkKind, cfg: &DeepLabConfig) -> Self {
        Self {
            format_version: META_FORMAT_VERSION,
            network,
            backbone: cfg.backbone,
            output_stride: cfg.output_stride,
            num_classes: cfg.num_classes,
            output_dim: cfg.output_dim,
            dataset: None,
            class_names: Vec::new(),
            normalization: Normalization::IMAGENET,
            assumed: Vec::new(),
        }
    }

    /// Marks `field` as an assumption (see [`CheckpointMeta::assumed`]).
    pub fn assuming(mut self, field: &str) -> Self {
        if !self.is_assumed(field) {
            self.assumed.push(field.to_string());
        }
        self
    }

    /// Whether `field`'s value is an assumption rather than a fact.
    pub fn is_assumed(&self, field: &str) -> bool {
        self.assumed.iter().any(|f| f == field)
    }

    pub fn with_dataset(mut self, dataset: impl Into<String>, class_names: Vec<String>) -> Self {
        self.dataset = Some(dataset.into());
        self.class_names = class_names;
        self
    }

    pub fn config(&self) -> DeepLabConfig {
        DeepLabConfig {
            backbone: self.backbone,
            output_stride: self.output_stride,
            num_classes: self.num_classes,
            output_dim: self.output_dim,
        }
    }

    /// The `__metadata__` map written into safetensors files.
    pub fn to_metadata(&self) -> Result<HashMap<String, String>, serde_json::Error> {
        let mut map = HashMap::from([
            (META_KEY.to_string(), serde_json::to_string(self)?),
            ("format".to_string(), "pt".to_string()),
            ("network".to_string(), self.network.name().to_string()),
            ("backbone".to_string(), self.backbone.name().to_string()),
            ("output_stride".to_string(), self.output_stride.to_string()),
            ("num_classes".to_string(), self.num_classes.to_string()),
            ("output_dim".to_string(), self.output_dim.to_string()),
        ]);
        if !self.assumed.is_empty() {
            map.insert("assumed".to_string(), self.assumed.join(","));
        }
        Ok(map)
    }

    /// Parses a `__metadata__` map (`path` names the file in errors); [`read_meta`] and
    /// [`resolve_meta`] also check it against the weights. `Ok(None)` when the
    /// map describes no network. The JSON under [`META_KEY`] wins; without it, the flat
    /// keys are read when `network` and `backbone` are present (the reference fixtures'
    /// layout).
    pub fn from_metadata(
        map: &HashMap<String, String>,
        path: &Path,
    ) -> Result<Option<Self>, MetaError> {
        if let Some(json) = map.get(META_KEY) {
            let value: serde_json::Value =
                serde_json::from_str(json).map_err(|source| MetaError::BadJson {
                    path: path.to_path_buf(),
                    source,
                })?;
            // Name an unknown network plainly rather than as a serde message.
            if let Some(name) = value.get("network").and_then(|n| n.as_str()) {
                parse_network(name, path)?;
            }
            let meta: CheckpointMeta =
                serde_json::from_value(value).map_err(|source| MetaError::BadJson {
                    path: path.to_path_buf(),
                    source,
                })?;
            if meta.format_version > META_FORMAT_VERSION {
                return Err(MetaError::NewerFormat {
                    path: path.to_path_buf(),
                    version: meta.format_version,
                });
            }
            return Ok(Some(meta));
        }
        let (Some(network), Some(backbone)) = (map.get("network"), map.get("backbone")) else {
            return Ok(None);
        };
        let field = |key: &str| -> Result<usize, MetaError> {
            let raw = map.get(key).ok_or_else(|| MetaError::Invalid {
                path: path.to_path_buf(),
                reason: format!("metadata names network {network:?} but has no {key:?}"),
            })?;
            raw.parse().map_err(|_| MetaError::Invalid {
                path: path.to_path_buf(),
                reason: format!("metadata {key:?} is {raw:?}, not a positive integer"),
            })
        };
        let meta = CheckpointMeta {
            format_version: META_FORMAT_VERSION,
            network: parse_network(network, path)?,
            backbone: backbone.parse().map_err(|reason| MetaError::Invalid {
                path: path.to_path_buf(),
                reason,
            })?,
            output_stride: field("output_stride")?,
            num_classes: field("num_classes")?,
            output_dim: field("output_dim")?,
            dataset: None,
            class_names: Vec::new(),
            normalization: Normalization::IMAGENET,
            assumed: map
                .get("assumed")
                .map(|a| {
                    a.split(',')
                        .filter(|f| !f.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        };
        Ok(Some(meta))
    }

    /// Errors for values no network has (output stride, zero sizes, class-name count).
    pub fn check_values(&self, path: &Path) -> Result<(), MetaError> {
        let invalid = |reason: String| {
            Err(MetaError::Invalid {
                path: path.to_path_buf(),
                reason,
            })
        };
        if self.network.takes_vit() != self.backbone.is_vit() {
            return invalid(format!(
                "network {} cannot have backbone {} (DPT takes dinov2-s/b/l, the DeepLabs a ResNet)",
                self.network, self.backbone
            ));
        }
        if !self.network.accepts_output_stride(self.output_stride) {
            let expected = match self.network.takes_vit() {
                true => format!(
                    "DPT on DINOv2 has {}, the patch size",
                    crate::dpt::DPT_OUTPUT_STRIDE
                ),
                false => "expected 8, 16 or 32".to_string(),
            };
            return invalid(format!("output stride {} ({expected})", self.output_stride));
        }
        if self.num_classes == 0 || self.output_dim == 0 {
            return invalid("num_classes and output_dim must be positive".to_string());
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.num_classes {
            return invalid(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            ));
        }
        if self
            .normalization
            .std
            .iter()
            .any(|s| !s.is_finite() || *s <= 0.0)
        {
            return invalid(format!(
                "normalisation std {:?} must be positive",
                self.normalization.std
            ));
        }
        Ok(())
    }

    /// Errors when the metadata disagrees with the architecture the tensors describe.
    pub fn check_against(&self, arch: &ShapeArchitecture, path: &Path) -> Result<(), MetaError> {
        // Compared as their display forms, which name each value uniquely.
        macro_rules! field {
            ($meta:ident, $arch:ident, $name:ident) => {
                (
                    stringify!($name),
                    $meta.$name.to_string(),
                    $arch.$name.to_string(),
                )
            };
        }
        let fields = [
            field!(self, arch, network),
            field!(self, arch, backbone),
            field!(self, arch, num_classes),
            field!(self, arch, output_dim),
        ];
        if let Some((field, metadata, weights)) = fields.into_iter().find(|(_, m, w)| m != w) {
            return Err(MetaError::Contradiction {
                path: path.to_path_buf(),
                field,
                metadata,
                weights,
            });
        }
        Ok(())
    }
}

fn parse_network(name: &str, path: &Path) -> Result<NetworkKind, MetaError> {
    name.parse().map_err(|_| MetaError::UnknownNetwork {
        path: path.to_path_buf(),
        name: name.to_string(),
    })
}

/// Serde through `Display` / `FromStr`, for the name enums.
mod as_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: std::str::FromStr<Err = String>,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors file: {reason}")]
    NotSafetensors { path: PathBuf, reason: String },
    #[error(
        "{path}: the checkpoint metadata {META_KEY:?} is not valid JSON for this version: {source}"
    )]
    BadJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: unknown network {name:?} in the checkpoint metadata (expected deeplabv3p or deeplabv2)")]
    UnknownNetwork { path: PathBuf, name: String },
    #[error("{path}: invalid checkpoint metadata: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: the metadata says {field} = {metadata} but the weights are those of {field} = {weights}; the file was edited or mislabelled")]
    Contradiction {
        path: PathBuf,
        field: &'static str,
        metadata: String,
        weights: String,
    },
    #[error("{path}: metadata format version {version} is newer than this reader ({META_FORMAT_VERSION}); update reco-models")]
    NewerFormat { path: PathBuf, version: u32 },
    #[error("{path}: {reason}")]
    Unrecognised { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// The architecture that tensor shapes determine (everything but the output stride).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeArchitecture {
    pub network: NetworkKind,
    pub backbone: Backbone,
    pub num_classes: usize,
    pub output_dim: usize,
}

/// Recognises the network from tensor names and shapes: DeepLabV2 by
/// `classifier.conv2d_list.0.weight`, DeepLabV3+ by `classifier.3.weight`; the backbone
/// by the block type and the depth of layer3.
pub fn architecture_from_shapes(
    shapes: &HashMap<String, Vec<usize>>,
    path: &Path,
) -> Result<ShapeArchitecture, MetaError> {
    let rows = |key: &str| shapes.get(key).and_then(|s| s.first().copied());
    if let (Some(c), Some(d)) = (
        rows(crate::dpt::CLASSIFIER_WEIGHT),
        rows(crate::dpt::REPRESENTATION_WEIGHT),
    ) {
        let backbone =
            crate::dpt::backbone_from_shapes(shapes).map_err(|reason| MetaError::Unrecognised {
                path: path.to_path_buf(),
                reason,
            })?;
        return Ok(ShapeArchitecture {
            network: NetworkKind::Dpt,
            backbone,
            num_classes: c,
            output_dim: d,
        });
    }
    let (network, num_classes, output_dim) = if let (Some(c), Some(d)) = (
        rows("classifier.conv2d_list.0.weight"),
        rows("representation.0.weight"),
    ) {
        (NetworkKind::DeepLabV2, c, d)
    } else if let (Some(c), Some(d)) =
        (rows("classifier.3.weight"), rows("representation.3.weight"))
    {
        (NetworkKind::DeepLabV3Plus, c, d)
    } else {
        return Err(MetaError::Unrecognised {
            path: path.to_path_buf(),
            reason: "neither a DeepLabV3+ (classifier.3.weight, representation.3.weight), a DeepLabV2 (classifier.conv2d_list.0.weight, representation.0.weight) nor a DPT (head.scratch.output_conv.2.weight, representation.2.weight) checkpoint of the original code or of this project".to_string(),
        });
    };
    let bottleneck = shapes.contains_key("resnet_layer1.0.conv3.weight");
    let layer3_blocks = (0..)
        .take_while(|i| shapes.contains_key(&format!("resnet_layer3.{i}.conv1.weight")))
        .count();
    let backbone = Backbone::resnets()
        .find(|b| b.is_bottleneck() == bottleneck && b.layers()[2] == layer3_blocks)
        .ok_or_else(|| MetaError::Unrecognised {
            path: path.to_path_buf(),
            reason: format!(
                "resnet_layer3 has {layer3_blocks} {} blocks, which is no ResNet-18/34/50/101/152",
                if bottleneck { "bottleneck" } else { "basic" }
            ),
        })?;
    Ok(ShapeArchitecture {
        network,
        backbone,
        num_classes,
        output_dim,
    })
}

/// Tensor shapes by name, and the `__metadata__` map when the file has one.
pub type Header = (HashMap<String, Vec<usize>>, Option<HashMap<String, String>>);

/// Tensor names and shapes plus the `__metadata__` map of a safetensors file, from its
/// header alone (the weights are not read).
pub fn read_header(path: &Path) -> Result<Header, MetaError> {
    let read_err = |source| MetaError::Read {
        path: path.to_path_buf(),
        source,
    };
    let not_st = |reason: String| MetaError::NotSafetensors {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let file_len = file.metadata().map_err(read_err)?.len();
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|_| not_st("shorter than the 8-byte header length".to_string()))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES || len + 8 > file_len {
        return Err(not_st(format!(
            "header length {len} does not fit the file ({file_len} bytes)"
        )));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).map_err(read_err)?;
    let value: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| not_st(format!("header is not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| not_st("header is not a JSON object".to_string()))?;
    let mut shapes = HashMap::new();
    let mut metadata = None;
    for (name, entry) in obj {
        if name == "__metadata__" {
            let map: HashMap<String, String> = serde_json::from_value(entry.clone())
                .map_err(|e| not_st(format!("__metadata__ is not a string map: {e}")))?;
            metadata = Some(map);
            continue;
        }
        let shape: Vec<usize> = entry
            .get("shape")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .ok_or_else(|| not_st(format!("tensor {name:?} has no valid shape")))?;
        // DataParallel checkpoints prefix every key with "module." (as read_tensors strips).
        let name = name.strip_prefix("module.").unwrap_or(name).to_string();
        shapes.insert(name, shape);
    }
    Ok((shapes, metadata))
}

/// The metadata of a safetensors file, if it has any, checked against its tensors.
pub fn read_meta(path: &Path) -> Result<Option<CheckpointMeta>, MetaError> {
    let (shapes, metadata) = read_header(path)?;
    let Some(map) = metadata else {
        return Ok(None);
    };
    let Some(meta) = CheckpointMeta::from_metadata(&map, path)? else {
        return Ok(None);
    };
    meta.check_against(&architecture_from_shapes(&shapes, path)?, path)?;
    meta.check_values(path)?;
    Ok(Some(meta))
}

/// What to assume for a checkpoint without metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetaFallback {
    /// The output stride the network was trained with; `None`: the original's default
    /// for the network (16 for DeepLabV3+, 8 for DeepLabV2).
    pub output_stride: Option<usize>,
    pub dataset: Option<String>,
    pub class_names: Vec<String>,
    /// `None`: ImageNet statistics.
    pub normalization: Option<Normalization>,
}

/// The checkpoint's description: its metadata when present (checked against the shapes),
/// else the architecture from the shapes and the rest from `fallback`. Reads only the
/// header of safetensors files; `.pth`/`.pt` state_dicts (no metadata) are read whole.
pub fn resolve_meta(path: &Path, fallback: &MetaFallback) -> Result<CheckpointMeta, MetaError> {
    let is_safetensors = !matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pth" | "pt" | "bin" | "ckpt")
    );
    let shapes = if is_safetensors {
        let (shapes, metadata) = read_header(path)?;
        if let Some(map) = metadata {
            if let Some(meta) = CheckpointMeta::from_metadata(&map, path)? {
                meta.check_against(&architecture_from_shapes(&shapes, path)?, path)?;
                meta.check_values(path)?;
                return Ok(meta);
            }
        }
        shapes
    } else {
        crate::checkpoint::read_tensors(path)?
            .into_iter()
            .map(|(k, t)| (k, t.dims().to_vec()))
            .collect()
    };
    let arch = architecture_from_shapes(&shapes, path)?;
    let output_stride = fallback
        .output_stride
        .unwrap_or(default_output_stride(arch.network));
    let meta = CheckpointMeta {
        format_version: META_FORMAT_VERSION,
        network: arch.network,
        backbone: arch.backbone,
        output_stride,
        num_classes: arch.num_classes,
        output_dim: arch.output_dim,
        dataset: fallback.dataset.clone(),
        class_names: fallback.class_names.clone(),
        normalization: fallback.normalization.unwrap_or_default(),
        // DPT's stride is its patch size, a fact of the weights, never an assumption.
        assumed: match fallback.output_stride.is_some() || arch.network.takes_vit() {
            true => Vec::new(),
            false => vec![ASSUMED_OUTPUT_STRIDE.to_string()],
        },
    };
    meta.check_values(path)?;
    Ok(meta)
}

/// The original code's output stride for `network` (16 for DeepLabV3+, 8 for DeepLabV2):
/// what a checkpoint that does not say is assumed to have been trained at.
pub fn default_output_stride(network: NetworkKind) -> usize {
    match network {
        NetworkKind::DeepLabV3Plus => DeepLabConfig::default().output_stride,
        NetworkKind::DeepLabV2 => DEEPLABV2_OUTPUT_STRIDE,
        NetworkKind::Dpt => crate::dpt::DPT_OUTPUT_STRIDE,
    }
}

/// Writes the model's state_dict (the original's names, f32, `num_batches_tracked`
/// beside each batch norm: see [`crate::checkpoint::state_dict`]) with `meta` in the
/// safetensors metadata, atomically. The metadata is checked against the weights first.
pub fn export_with_meta(
    varmap: &VarMap,
    meta: &CheckpointMeta,
    path: &Path,
    num_batches_tracked: i64,
) -> Result<(), MetaError> {
    let tensors = crate::checkpoint::state_dict(varmap, num_batches_tracked)?;
    write_with_meta(&tensors, meta, path)
}

/// Writes named tensors (e.g. a converted original checkpoint) with `meta`, atomically,
/// after checking the metadata against their shapes.
pub fn write_with_meta(
    tensors: &BTreeMap<String, Tensor>,
    meta: &CheckpointMeta,
    path: &Path,
) -> Result<(), MetaError> {
    let shapes: HashMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    meta.check_values(path)?;
    meta.check_against(&architecture_from_shapes(&shapes, path)?, path)?;
    let metadata = meta.to_metadata().map_err(|source| MetaError::BadJson {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = safetensors::tensor::serialize(tensors.iter(), Some(metadata)).map_err(|e| {
        MetaError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let bytes = sort_header_metadata(bytes);
    reco_util::fs::write_atomic(path, &bytes).map_err(|source| MetaError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// The same file with its `__metadata__` entries in sorted order. safetensors writes the
/// map in `HashMap` order, which differs between processes; sorted, the same weights and
/// metadata always give the same bytes (runs resumed after a kill compare bit for bit).
/// The header keeps its length (the same entries, reordered), so offsets are unchanged.
fn sort_header_metadata(mut bytes: Vec<u8>) -> Vec<u8> {
    const PREFIX: &[u8] = b"{\"__metadata__\":";
    let Some(len) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return bytes;
    };
    let header_end = 8 + u64::from_le_bytes(len) as usize;
    if header_end > bytes.len() || !bytes[8..].starts_with(PREFIX) {
        return bytes;
    }
    let start = 8 + PREFIX.len();
    let mut stream = serde_json::Deserializer::from_slice(&bytes[start..header_end])
        .into_iter::<BTreeMap<String, String>>();
    let Some(Ok(map)) = stream.next() else {
        return bytes;
    };
    let end = start + stream.byte_offset();
    match serde_json::to_vec(&map) {
        Ok(sorted) if sorted.len() == end - start => {
            bytes[start..end].copy_from_slice(&sorted);
            bytes
        }
        _ => bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_weights_and_metadata_always_give_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DeepLabConfig {
            backbone: Backbone::ResNet18,
            num_classes: 3,
            output_dim: 4,
            ..DeepLabConfig::default()
        };
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(
            &varmap,
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        );
        crate::network::Network::new(NetworkKind::DeepLabV2, &cfg, vb).unwrap();
        let meta = CheckpointMeta::new(NetworkKind::DeepLabV2, &cfg)
            .with_dataset("synthetic", vec!["a".into(), "b".into(), "c".into()]);
        // Each write builds a new HashMap (a new random order) for the metadata.
        let files: Vec<Vec<u8>> = (0..4)
            .map(|i| {
                let path = dir.path().join(format!("{i}.safetensors"));
                export_with_meta(&varmap, &meta, &path, 0).unwrap();
                assert_eq!(read_meta(&path).unwrap(), Some(meta.clone()));
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.iter().all(|f| f == &files[0]));
    }
}
