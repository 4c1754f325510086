//! Weights in and out: checkpoints of the original code (safetensors, or `.pth` read
//! directly), ImageNet backbones in torchvision naming, and export under the original
//! `state_dict` names so that PyTorch's `load_state_dict(..., strict=True)` accepts it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::vars::named_vars;

/// Suffix of the batch-norm step counters PyTorch keeps in every `state_dict`.
const NUM_BATCHES_TRACKED: &str = "num_batches_tracked";
/// Prefix the original network puts on every backbone parameter.
const BACKBONE_PREFIX: &str = "resnet_";
/// DPT's encoder variables (UniMatch V2's `backbone` module).
const VIT_PREFIX: &str = "backbone.";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: candle_core::Error,
    },
    #[error(
        "checkpoint {path} lacks {count} tensor(s) the model needs: {keys} (is it a checkpoint of another backbone or output stride?)"
    )]
    Missing {
        path: PathBuf,
        count: usize,
        keys: String,
    },
    #[error(
        "checkpoint {path} has {count} tensor(s) of the wrong shape: {details} (is it a checkpoint of another backbone, class count or output dimension?)"
    )]
    Shape {
        path: PathBuf,
        count: usize,
        details: String,
    },
    #[error("checkpoint {path} has {count} tensor(s) the model does not know: {keys}")]
    Unexpected {
        path: PathBuf,
        count: usize,
        keys: String,
    },
    #[error("cannot write checkpoint {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Reads every tensor of a safetensors file or a PyTorch `.pth`/`.pt` state_dict onto the CPU.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>, CheckpointError> {
    let read_err = |source| CheckpointError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !path.is_file() {
        return Err(read_err(candle_core::Error::Msg(
            "no such file".to_string(),
        )));
    }
    let is_pickle = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pth" | "pt" | "bin" | "ckpt")
    );
    let tensors: HashMap<String, Tensor> = if is_pickle {
        candle_core::pickle::read_all(path)
            .map_err(read_err)?
            .into_iter()
            .collect()
    } else {
        candle_core::safetensors::load(path, &Device::Cpu).map_err(read_err)?
    };
    if tensors.is_empty() {
        return Err(read_err(candle_core::Error::Msg(
            "the file holds no tensors".to_string(),
        )));
    }
    // Checkpoints saved from nn.DataParallel prefix every key with "module.".
    Ok(tensors
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .collect())
}

fn list(keys: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", keys.len() - SHOWN));
    }
    s
}

/// Sets every variable of `varmap` whose name `source_name` maps to a key from `tensors`;
/// all names are checked before anything is written, so a bad file changes nothing.
fn assign(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
    source_name: impl Fn(&str) -> Option<String>,
) -> Result<(), CheckpointError> {
    let vars = named_vars(varmap)?;
    let mut missing = Vec::new();
    let mut misshaped = Vec::new();
    let mut plan = Vec::new();
    for (name, var) in vars.iter() {
        let Some(key) = source_name(name) else {
            continue;
        };
        match tensors.get(&key) {
            None => missing.push(key),
            Some(t) if t.dims() != var.dims() => misshaped.push(format!(
                "{key}: file {:?}, model {:?}",
                t.dims(),
                var.dims()
            )),
            Some(t) => plan.push((var, t)),
        }
    }
    missing.sort();
    misshaped.sort();
    if !missing.is_empty() {
        return Err(CheckpointError::Missing {
            path: path.to_path_buf(),
            count: missing.len(),
            keys: list(&missing),
        });
    }
    if !misshaped.is_empty() {
        return Err(CheckpointError::Shape {
            path: path.to_path_buf(),
            count: misshaped.len(),
            details: list(&misshaped),
        });
    }
    for (var, t) in plan {
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// The network a checkpoint was saved from: backbone (from the depth of `layer3` and the
/// block type), class count (`classifier.3`) and representation size (`representation.3`).
/// The output stride leaves no trace in the weights, so the caller supplies it.
pub fn infer_config(
    tensors: &HashMap<String, Tensor>,
    output_stride: usize,
    path: &Path,
) -> Result<crate::DeepLabConfig, CheckpointError> {
    let missing = |key: &str| CheckpointError::Missing {
        path: path.to_path_buf(),
        count: 1,
        keys: format!(
            "{key} (not a DeepLabV3+ checkpoint of the original code or of this project)"
        ),
    };
    let rows = |key: &str| -> Result<usize, CheckpointError> {
        let t = tensors.get(key).ok_or_else(|| missing(key))?;
        Ok(t.dims().first().copied().unwrap_or(0))
    };
    let num_classes = rows("classifier.3.weight")?;
    let output_dim = rows("representation.3.weight")?;
    let bottleneck = tensors.contains_key("resnet_layer1.0.conv3.weight");
    let layer3_blocks = (0..)
        .take_while(|i| tensors.contains_key(&format!("resnet_layer3.{i}.conv1.weight")))
        .count();
    let backbone = crate::Backbone::resnets()
        .find(|b| b.is_bottleneck() == bottleneck && b.layers()[2] == layer3_blocks)
        .ok_or_else(|| CheckpointError::Shape {
            path: path.to_path_buf(),
            count: 1,
            details: format!(
                "resnet_layer3 has {layer3_blocks} {} blocks, which is no ResNet-18/34/50/101/152",
                if bottleneck { "bottleneck" } else { "basic" }
            ),
        })?;
    Ok(crate::DeepLabConfig {
        backbone,
        output_stride,
        num_classes,
        output_dim,
    })
}

/// Loads a full checkpoint of the network (this project's export or the original
/// code's `state_dict`, as safetensors or `.pth`), strictly: every variable must be
/// present with its shape, and no unknown tensor may be left over
/// (`num_batches_tracked` counters are accepted and ignored). Returns the largest
/// `num_batches_tracked` found (0 when absent), to carry it into a later export.
pub fn load_checkpoint(varmap: &VarMap, path: &Path) -> Result<i64, CheckpointError> {
    load_checkpoint_tensors(varmap, &read_tensors(path)?, path)
}

/// [`load_checkpoint`] on tensors already read from `path` (named in errors), for callers
/// that inspect the file first (e.g. with [`infer_config`]) and should not read it twice.
pub fn load_checkpoint_tensors(
    varmap: &VarMap,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<i64, CheckpointError> {
    let known = named_vars(varmap)?;
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !known.contains_key(*k) && !k.ends_with(NUM_BATCHES_TRACKED))
        .cloned()
        .collect();
    unexpected.sort();
    assign(varmap, tensors, path, |name| Some(name.to_string()))?;
    if !unexpected.is_empty() {
        return Err(CheckpointError::Unexpected {
            path: path.to_path_buf(),
            count: unexpected.len(),
            keys: list(&unexpected),
        });
    }
    let mut tracked = 0i64;
    for (k, t) in tensors {
        if k.ends_with(NUM_BATCHES_TRACKED) {
            let v = t.to_dtype(DType::I64)?.flatten_all()?.to_vec1::<i64>()?;
            tracked = tracked.max(v.first().copied().unwrap_or(0));
        }
    }
    Ok(tracked)
}

/// Initialises the backbone from ImageNet ResNet weights in torchvision naming
/// (`conv1.*`, `bn1.*`, `layerN.i.*`; `fc.*` ignored), such as timm's
/// `resnet101.tv_in1k` safetensors. The heads keep their initialisation.
///
/// For DPT (variables under `backbone.`) the file holds DINOv2's encoder, as
/// `cargo xtask fetch-weights --backbone dinov2-s` writes it (timm names) or as the hub
/// stores it (transformers' names, mapped by [`crate::vit::timm_from_hf`]).
pub fn load_backbone(varmap: &VarMap, path: &Path) -> Result<(), CheckpointError> {
    let tensors = read_tensors(path)?;
    let known = named_vars(varmap)?;
    // (the prefix of the encoder's variables, tensors the file may hold besides, what a
    // file should be)
    let (prefix, tensors, ignored, expected): (_, _, fn(&str) -> bool, _) = if known
        .keys()
        .any(|k| k.starts_with(VIT_PREFIX))
    {
        (
                VIT_PREFIX,
                crate::vit::timm_from_hf(tensors)?,
                |_| false,
                "a DINOv2 encoder of the configured size, from `cargo xtask fetch-weights --backbone dinov2-s|dinov2-b|dinov2-l`",
            )
    } else {
        (
            BACKBONE_PREFIX,
            tensors,
            |k| k.starts_with("fc.") || k.ends_with(NUM_BATCHES_TRACKED),
            "a torchvision-named ResNet of the configured depth",
        )
    };
    let mut unexpected: Vec<String> = tensors
        .keys()
        .filter(|k| !ignored(k) && !known.contains_key(&format!("{prefix}{k}")))
        .cloned()
        .collect();
    unexpected.sort();
    if !unexpected.is_empty() {
        return Err(CheckpointError::Unexpected {
            path: path.to_path_buf(),
            count: unexpected.len(),
            keys: format!("{} (expected {expected})", list(&unexpected)),
        });
    }
    assign(varmap, &tensors, path, |name| {
        name.strip_prefix(prefix).map(str::to_string)
    })
}

/// The state_dict of the original code for this model: every variable in float32 plus
/// an int64 `num_batches_tracked` beside each batch norm, sorted by name.
pub fn state_dict(
    varmap: &VarMap,
    num_batches_tracked: i64,
) -> Result<BTreeMap<String, Tensor>, CheckpointError> {
    let vars = named_vars(varmap)?;
    let mut out = BTreeMap::new();
    for (name, var) in vars.iter() {
        let t = var
            .as_detached_tensor()
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        if let Some(bn) = name.strip_suffix(".running_mean") {
            out.insert(
                format!("{bn}.{NUM_BATCHES_TRACKED}"),
                Tensor::new(num_batches_tracked, &Device::Cpu)?,
            );
        }
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// Writes [`state_dict`] as safetensors, atomically (a temporary file in the same
/// folder, then a rename), so an interrupted export never leaves a truncated file.
pub fn export_state_dict(
    varmap: &VarMap,
    path: &Path,
    num_batches_tracked: i64,
) -> Result<(), CheckpointError> {
    let tensors = state_dict(varmap, num_batches_tracked)?;
    write_safetensors_atomic(&tensors, path)
}

/// Serialises tensors to `path` atomically (`reco_util::fs::write_atomic`: a synced
/// temporary sibling, then a rename). safetensors 0.8 writes only to a path or to bytes,
/// so the file is built in memory first (one copy of the weights, ~200 MB for ResNet-101).
pub fn write_safetensors_atomic(
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
) -> Result<(), CheckpointError> {
    write_safetensors_atomic_with(tensors, None, path)
}

/// [`write_safetensors_atomic`] with a `__metadata__` map.
pub fn write_safetensors_atomic_with(
    tensors: &BTreeMap<String, Tensor>,
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<(), CheckpointError> {
    let write_err = |source| CheckpointError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = safetensors::tensor::serialize(tensors.iter(), metadata)
        .map_err(|e| write_err(std::io::Error::other(e.to_string())))?;
    reco_util::fs::write_atomic(path, &bytes).map_err(write_err)
}
