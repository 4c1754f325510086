//! State-dict naming, export/load round trips and the errors for bad checkpoints.

mod common;

use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use reco_models::checkpoint::{state_dict, write_safetensors_atomic};
use reco_models::{
    export_state_dict, load_backbone, load_checkpoint, Backbone, CheckpointError, DeepLabConfig,
    DeepLabV3Plus,
};

fn build(cfg: &DeepLabConfig) -> (VarMap, DeepLabV3Plus) {
    let varmap = VarMap::new();
    let model = DeepLabV3Plus::new(
        cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    (varmap, model)
}

/// `Σ |a − b|` in f64.
fn abs_diff_sum(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_dtype(DType::F64).unwrap() - b.to_dtype(DType::F64).unwrap())
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap()
}

fn small() -> DeepLabConfig {
    small_config(5, 8)
}

/// The error of loading a checkpoint of a network built with `cfg` into [`small`].
fn load_error_into_small(cfg: &DeepLabConfig) -> CheckpointError {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = build(cfg);
    let path = write(dir.path(), state_dict(&a, 0).unwrap());
    let (b, _) = build(&small());
    load_checkpoint(&b, &path).unwrap_err()
}

#[test]
fn state_dict_has_exactly_the_original_keys() {
    let json: HashMap<String, Vec<(String, Vec<usize>, String)>> =
        serde_json::from_str(&std::fs::read_to_string(fixture("state_dict_keys.json")).unwrap())
            .unwrap();
    for (name, cfg) in [
        ("resnet50_os16_c21_d256", config_of("resnet50", 16)),
        ("resnet101_os8_c21_d256", config_of("resnet101", 8)),
    ] {
        let (varmap, _) = build(&cfg);
        let ours: BTreeMap<String, (Vec<usize>, DType)> = state_dict(&varmap, 0)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, (t.dims().to_vec(), t.dtype())))
            .collect();
        let reference: BTreeMap<String, (Vec<usize>, DType)> = json[name]
            .iter()
            .map(|(k, s, d)| {
                (
                    k.clone(),
                    (
                        s.clone(),
                        if d == "int64" { DType::I64 } else { DType::F32 },
                    ),
                )
            })
            .collect();
        assert_eq!(ours, reference, "{name}");
    }
}

#[test]
fn export_then_load_is_identical_and_keeps_the_batch_counter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let (a, _) = build(&small());
    export_state_dict(&a, &path, 123).unwrap();
    let (b, _) = build(&small());
    assert_eq!(load_checkpoint(&b, &path).unwrap(), 123);
    let (sa, sb) = (state_dict(&a, 0).unwrap(), state_dict(&b, 0).unwrap());
    assert_eq!(sa.len(), sb.len());
    for (k, t) in &sa {
        let d = (t.to_dtype(DType::F64).unwrap() - sb[k].to_dtype(DType::F64).unwrap()).unwrap();
        assert_eq!(
            d.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap(),
            0.0,
            "{k}"
        );
    }
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

fn write(dir: &std::path::Path, tensors: BTreeMap<String, Tensor>) -> std::path::PathBuf {
    let path = dir.join("bad.safetensors");
    write_safetensors_atomic(&tensors, &path).unwrap();
    path
}

#[test]
fn missing_tensor_is_named_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = build(&small());
    let mut sd = state_dict(&a, 0).unwrap();
    sd.remove("classifier.3.weight");
    let path = write(dir.path(), sd);
    let (b, _) = build(&small());
    let before = state_dict(&b, 0).unwrap();
    let err = load_checkpoint(&b, &path).unwrap_err();
    assert!(matches!(err, CheckpointError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("classifier.3.weight"), "{err}");
    let after = state_dict(&b, 0).unwrap();
    let same = |k: &str| abs_diff_sum(&before[k], &after[k]) == 0.0;
    assert!(
        same("resnet_conv1.weight"),
        "a failed load must not modify the model"
    );
}

#[test]
fn misshaped_tensor_is_named() {
    // Same network with 7 classes instead of 5.
    let err = load_error_into_small(&DeepLabConfig {
        num_classes: 7,
        ..small()
    });
    assert!(matches!(err, CheckpointError::Shape { .. }), "{err}");
    assert!(err.to_string().contains("classifier.3.weight"), "{err}");
}

#[test]
fn checkpoint_of_another_backbone_is_rejected() {
    let err = load_error_into_small(&DeepLabConfig {
        backbone: Backbone::ResNet34,
        ..small()
    });
    assert!(matches!(err, CheckpointError::Unexpected { .. }), "{err}");
    assert!(err.to_string().contains("resnet_layer1.2"), "{err}");
}

#[test]
fn corrupt_or_absent_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (b, _) = build(&small());
    let bad = dir.path().join("corrupt.safetensors");
    std::fs::write(&bad, b"not a safetensors file").unwrap();
    let err = load_checkpoint(&b, &bad).unwrap_err();
    assert!(err.to_string().contains("corrupt.safetensors"), "{err}");
    let err = load_checkpoint(&b, &dir.path().join("absent.safetensors")).unwrap_err();
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
}

#[test]
fn backbone_loads_from_torchvision_names() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = build(&small());
    // A torchvision checkpoint: no "resnet_" prefix, an fc layer, no heads.
    let mut tv: BTreeMap<String, Tensor> = state_dict(&a, 0)
        .unwrap()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix("resnet_").map(|k| (k.to_string(), t)))
        .collect();
    tv.insert(
        "fc.weight".into(),
        Tensor::zeros((1000, 512), DType::F32, &Device::Cpu).unwrap(),
    );
    tv.insert(
        "fc.bias".into(),
        Tensor::zeros(1000, DType::F32, &Device::Cpu).unwrap(),
    );
    let path = dir.path().join("resnet18.safetensors");
    write_safetensors_atomic(&tv, &path).unwrap();
    let (b, _) = build(&small());
    load_backbone(&b, &path).unwrap();
    let (sa, sb) = (state_dict(&a, 0).unwrap(), state_dict(&b, 0).unwrap());
    let diff = |k: &str| abs_diff_sum(&sa[k], &sb[k]);
    assert_eq!(diff("resnet_layer4.1.conv2.weight"), 0.0);
    assert_eq!(diff("resnet_bn1.running_var"), 0.0);
    assert!(
        diff("classifier.0.weight") > 0.0,
        "heads keep their own initialisation"
    );

    // A missing backbone tensor is named.
    tv.remove("layer2.0.downsample.0.weight");
    write_safetensors_atomic(&tv, &path).unwrap();
    let err = load_backbone(&b, &path).unwrap_err();
    assert!(
        err.to_string().contains("layer2.0.downsample.0.weight"),
        "{err}"
    );
}

#[test]
fn any_input_size_from_32_trains_and_predicts() {
    let (varmap, model) = build(&small());
    for (h, w) in [(32, 32), (33, 47), (64, 40), (45, 32)] {
        let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
        let (p, r) = model.forward_t(&x, true).unwrap();
        // Stride 2 twice, rounding up (conv1 with padding 3, then the padded max-pool).
        let (eh, ew) = (h.div_ceil(2).div_ceil(2), w.div_ceil(2).div_ceil(2));
        assert_eq!(p.dims(), &[2, 5, eh, ew]);
        assert_eq!(r.dims(), &[2, 8, eh, ew]);
        let grads = (p.sum_all().unwrap() + r.sqr().unwrap().sum_all().unwrap())
            .unwrap()
            .backward()
            .unwrap();
        // Every trainable variable receives a gradient (running statistics are not trained).
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if !name.contains("running_") {
                assert!(
                    grads.get(var.as_tensor()).is_some(),
                    "no gradient for {name} at {h}x{w}"
                );
            }
        }
        let (pe, _) = model
            .forward_no_grad(&x.narrow(0, 0, 1).unwrap(), false)
            .unwrap();
        assert_eq!(pe.dims(), &[1, 5, eh, ew]);
    }
    let tiny = Tensor::zeros((1, 3, 31, 64), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward_no_grad(&tiny, false).unwrap_err();
    assert!(err.to_string().contains(">= 32"), "{err}");
}

#[test]
fn dinov2_backbone_loads_from_timm_or_hub_names() {
    use reco_models::{Network, NetworkKind};
    let dir = tempfile::tempdir().unwrap();
    let cfg = DeepLabConfig {
        backbone: Backbone::Dinov2Small,
        output_stride: reco_models::DPT_OUTPUT_STRIDE,
        num_classes: 5,
        output_dim: 8,
    };
    let build_dpt = |seed: u64| {
        let vars = VarMap::new();
        Network::new(
            NetworkKind::Dpt,
            &cfg,
            VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu),
        )
        .unwrap();
        reco_models::init_seeded(&vars, seed).unwrap();
        vars
    };
    let a = build_dpt(1);
    // What `cargo xtask fetch-weights --backbone dinov2-s` writes: the encoder in timm's
    // names, no prefix.
    let timm: BTreeMap<String, Tensor> = state_dict(&a, 0)
        .unwrap()
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix("backbone.").map(|k| (k.to_string(), t)))
        .collect();
    let path = dir.path().join("dinov2-s.safetensors");
    write_safetensors_atomic(&timm, &path).unwrap();
    let b = build_dpt(2);
    load_backbone(&b, &path).unwrap();
    let (sa, sb) = (state_dict(&a, 0).unwrap(), state_dict(&b, 0).unwrap());
    for k in sa.keys() {
        let d = abs_diff_sum(&sa[k], &sb[k]);
        if k.starts_with("backbone.") {
            assert_eq!(d, 0.0, "{k}");
        }
    }
    assert!(
        abs_diff_sum(
            &sa["head.scratch.output_conv.2.weight"],
            &sb["head.scratch.output_conv.2.weight"]
        ) > 0.0
    );

    // The hub's layout (transformers' names, q/k/v apart) loads the same.
    let mut hub: BTreeMap<String, Tensor> = BTreeMap::new();
    for (k, t) in &timm {
        if let Some(rest) = k.strip_prefix("blocks.") {
            let (n, field) = rest.split_once('.').unwrap();
            let layer = format!("encoder.layer.{n}");
            if let Some(kind) = field.strip_prefix("attn.qkv.") {
                for (i, which) in ["query", "key", "value"].iter().enumerate() {
                    hub.insert(
                        format!("{layer}.attention.attention.{which}.{kind}"),
                        t.narrow(0, i * 384, 384).unwrap().contiguous().unwrap(),
                    );
                }
                continue;
            }
            let field = field
                .replace("attn.proj.", "attention.output.dense.")
                .replace("ls1.gamma", "layer_scale1.lambda1")
                .replace("ls2.gamma", "layer_scale2.lambda1");
            hub.insert(format!("{layer}.{field}"), t.clone());
            continue;
        }
        let name = match k.as_str() {
            "cls_token" => "embeddings.cls_token".to_string(),
            "mask_token" => "embeddings.mask_token".to_string(),
            "pos_embed" => "embeddings.position_embeddings".to_string(),
            other => other
                .replace(
                    "patch_embed.proj.",
                    "embeddings.patch_embeddings.projection.",
                )
                .replace("norm.", "layernorm."),
        };
        hub.insert(name, t.clone());
    }
    write_safetensors_atomic(&hub, &path).unwrap();
    let c = build_dpt(3);
    load_backbone(&c, &path).unwrap();
    let sc = state_dict(&c, 0).unwrap();
    for k in sa.keys().filter(|k| k.starts_with("backbone.")) {
        assert_eq!(
            abs_diff_sum(&sa[k], &sc[k]),
            0.0,
            "{k} from the hub's names"
        );
    }

    // A ResNet file for a DPT run is refused, naming what was expected.
    let (r, _) = build(&small());
    write_safetensors_atomic(&state_dict(&r, 0).unwrap(), &path).unwrap();
    let err = load_backbone(&c, &path).unwrap_err().to_string();
    assert!(err.contains("DINOv2 encoder"), "{err}");
}
