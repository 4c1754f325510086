//! `fetch-weights` against a hub-like loopback endpoint (HEAD with ETag, X-Repo-Commit and
//! Content-Length, then GET), through a private hf cache.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn tiny_resnet() -> Vec<u8> {
    let d = Device::Cpu;
    let mut m = HashMap::new();
    m.insert(
        "conv1.weight".to_string(),
        Tensor::arange(0f32, 64. * 3. * 49., &d)
            .unwrap()
            .reshape((64, 3, 7, 7))
            .unwrap(),
    );
    for (k, n) in [
        ("bn1.running_mean", 64),
        ("layer1.0.conv1.weight", 8),
        ("layer4.0.conv1.weight", 8),
    ] {
        m.insert(k.to_string(), Tensor::ones(n, DType::F32, &d).unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    candle_core::safetensors::save(&m, &p).unwrap();
    std::fs::read(p).unwrap()
}

fn hub(body: Vec<u8>) -> Server {
    let server = Server::start();
    server.route(
        "/timm/resnet18.tv_in1k/resolve/main/model.safetensors",
        Route {
            headers: vec![
                ("ETag".into(), format!("\"{}\"", sha256_hex(&body))),
                ("X-Repo-Commit".into(), COMMIT.into()),
            ],
            body,
            ..Default::default()
        },
    );
    server
}

/// `cargo xtask fetch-weights --backbone B --out-dir MODELS` against the hub at `base`,
/// with `cache` as the hf cache: whether it succeeded, and its output.
fn fetch_weights(backbone: &str, models: &str, cache: &str, base: &str) -> (bool, String) {
    xtask(
        &["fetch-weights", "--backbone", backbone, "--out-dir", models],
        &[
            ("HF_ENDPOINT", base),
            ("HF_HUB_CACHE", cache),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
        ],
    )
}

#[test]
fn weights_through_hf_endpoint_env() {
    let body = tiny_resnet();
    let server = hub(body.clone());
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("models");
    let cache = work.path().join("hf-cache");
    let (ok, out) = fetch_weights(
        "resnet18",
        models.to_str().unwrap(),
        cache.to_str().unwrap(),
        server.base.as_str(),
    );
    assert!(ok, "{out}");
    let dest = models.join("resnet18.tv_in1k.safetensors");
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert!(
        out.contains(&format!("--pretrained {}", dest.display())),
        "{out}"
    );
    // It went through the hf cache.
    assert!(cache.join("models--timm--resnet18.tv_in1k").is_dir());
    assert!(server
        .log()
        .iter()
        .any(|s| s.method == "GET" && s.path.ends_with("/model.safetensors")));
}

#[test]
fn weights_through_endpoint_option_and_bad_files() {
    let server = hub(tiny_resnet());
    let work = tempfile::tempdir().unwrap();
    let opts = |backbone: &str| xtask::weights::WeightsOptions {
        backbone: backbone.into(),
        endpoint: Some(server.base.clone()),
        cache_dir: Some(work.path().join("cache")),
        out_dir: work.path().join("models"),
    };
    let path = xtask::weights::fetch_weights(&opts("resnet18")).unwrap();
    assert!(path.ends_with("resnet18.tv_in1k.safetensors"));

    let err = xtask::weights::fetch_weights(&opts("resnet152")).unwrap_err();
    assert!(format!("{err:#}").contains("resnet101"), "{err:#}");
    // Not served: a clear error, no file.
    let err = xtask::weights::fetch_weights(&opts("resnet50")).unwrap_err();
    assert!(
        format!("{err:#}").contains("timm/resnet50.tv_in1k"),
        "{err:#}"
    );
    assert!(!work
        .path()
        .join("models/resnet50.tv_in1k.safetensors")
        .exists());

    // A file that is not a ResNet is refused.
    let bad = hub(b"not safetensors".to_vec());
    let err = xtask::weights::fetch_weights(&xtask::weights::WeightsOptions {
        endpoint: Some(bad.base.clone()),
        cache_dir: Some(work.path().join("cache2")),
        ..opts("resnet18")
    })
    .unwrap_err();
    assert!(format!("{err:#}").contains("safetensors"), "{err:#}");
}

// ---------------------------------------------------------------------------------------
// DINOv2: facebook/dinov2-small in the hub's (transformers') layout, converted to timm's
// ---------------------------------------------------------------------------------------

const DINOV2_S: &str = "/facebook/dinov2-small/resolve/main/model.safetensors";
const DINOV2_B: &str = "/facebook/dinov2-base/resolve/main/model.safetensors";

/// The tensors of `fixtures/dinov2_small_header.json` (the header transformers'
/// `save_pretrained` writes for facebook/dinov2-small's config) in file order:
/// (name, shape).
fn dinov2_small_header() -> (serde_json::Value, Vec<(String, Vec<usize>)>) {
    let header: serde_json::Value = serde_json::from_slice(&fixture("dinov2_small_header.json"))
        .expect("dinov2_small_header.json is JSON");
    let mut entries: Vec<(u64, String, Vec<usize>)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(k, v)| {
            assert_eq!(v["dtype"], "F32", "{k}");
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (v["data_offsets"][0].as_u64().unwrap(), k.clone(), shape)
        })
        .collect();
    entries.sort();
    let meta = header["__metadata__"].clone();
    (meta, entries.into_iter().map(|(_, k, s)| (k, s)).collect())
}

/// A `model.safetensors` in the hub's format: the fixture's header (its metadata, names,
/// dtypes, shapes, and the data in its order, with offsets recomputed when `drop` leaves
/// tensors out), formula values by hub name, the header padded with spaces to 8 bytes
/// as safetensors' writers do.
fn dinov2_small_file(drop: &[&str]) -> Vec<u8> {
    let (meta, tensors) = dinov2_small_header();
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), meta);
    let mut data = Vec::new();
    for (name, shape) in &tensors {
        if drop.contains(&name.as_str()) {
            continue;
        }
        let start = data.len();
        for v in reco_models::reference::formula_weight(name, shape, false) {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut json = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&data);
    out
}

/// The complete file, built once per test binary (88 MB).
fn dinov2_small_body() -> &'static [u8] {
    static BODY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BODY.get_or_init(|| dinov2_small_file(&[]))
}

fn serve(server: &Server, path: &str, body: Vec<u8>, cut_next: usize) {
    server.route(
        path,
        Route {
            headers: vec![
                ("ETag".into(), format!("\"{}\"", sha256_hex(&body))),
                ("X-Repo-Commit".into(), COMMIT.into()),
            ],
            body,
            cut_next,
            ..Default::default()
        },
    );
}

fn formula(name: &str, shape: &[usize]) -> Tensor {
    Tensor::from_vec(
        reco_models::reference::formula_weight(name, shape, false),
        shape,
        &Device::Cpu,
    )
    .unwrap()
}

fn assert_same(what: &str, ours: &Tensor, expected: &Tensor) {
    assert_eq!(ours.dims(), expected.dims(), "{what}");
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = expected.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(a == b, "{what}: values differ");
}

#[test]
fn the_header_fixture_is_the_hub_layout_of_dinov2_small() {
    let (meta, tensors) = dinov2_small_header();
    assert_eq!(meta, serde_json::json!({"format": "pt"}));
    // 5 embedding tensors, 18 per block, the final layer norm; 22,056,576 parameters.
    assert_eq!(tensors.len(), 5 + 12 * 18 + 2);
    let params: usize = tensors
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert_eq!(params, 22_056_576);
    // The rebuilt file keeps the fixture's offsets.
    let header: serde_json::Value =
        serde_json::from_slice(&fixture("dinov2_small_header.json")).unwrap();
    let body = dinov2_small_body();
    let (_, meta) = safetensors::SafeTensors::read_metadata(body).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .and_then(|m| m.get("format"))
            .map(String::as_str),
        Some("pt")
    );
    for (name, _) in &tensors {
        let info = meta.info(name).unwrap();
        assert_eq!(
            [info.data_offsets.0 as u64, info.data_offsets.1 as u64],
            [
                header[name]["data_offsets"][0].as_u64().unwrap(),
                header[name]["data_offsets"][1].as_u64().unwrap()
            ],
            "{name}"
        );
    }
}

#[test]
fn dinov2_layout_is_what_the_encoder_creates() {
    // The no-storage layout the check uses equals a real VarMap of Dinov2::new.
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg =
        reco_models::vit::VitConfig::for_backbone(reco_models::Backbone::Dinov2Small).unwrap();
    reco_models::vit::Dinov2::new(&cfg, vb).unwrap();
    let mut from_varmap: Vec<(String, Vec<usize>)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    from_varmap.sort();
    let mut layout = xtask::weights::dinov2_layout(reco_models::Backbone::Dinov2Small).unwrap();
    layout.sort();
    assert_eq!(layout, from_varmap);
    // cls, pos, mask, patch embedding (2); 14 per block; the final norm (2).
    assert_eq!(layout.len(), 5 + 12 * 14 + 2);
    let large = xtask::weights::dinov2_layout(reco_models::Backbone::Dinov2Large).unwrap();
    assert!(large
        .iter()
        .any(|(n, s)| n == "blocks.23.attn.qkv.weight" && s == &[3072, 1024]));
}

#[test]
fn dinov2_small_through_the_hub_in_timm_names() {
    let server = Server::start();
    serve(&server, DINOV2_S, dinov2_small_body().to_vec(), 0);
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("models");
    let cache = work.path().join("hf-cache");
    let (ok, out) = fetch_weights(
        "dinov2-s",
        models.to_str().unwrap(),
        cache.to_str().unwrap(),
        server.base.as_str(),
    );
    assert!(ok, "{out}");
    let dest = models.join("dinov2-s.safetensors");
    assert!(
        out.contains(&format!("--pretrained {}", dest.display())),
        "{out}"
    );
    assert!(out.contains("facebook/dinov2-small"), "{out}");
    assert!(cache.join("models--facebook--dinov2-small").is_dir());
    // Nothing but the file in models/ (no temporary left behind).
    assert_eq!(std::fs::read_dir(&models).unwrap().count(), 1);

    // Exactly the names and shapes of Dinov2::new for ViT-S, all f32.
    let written = candle_core::safetensors::load(&dest, &Device::Cpu).unwrap();
    let mut names: Vec<(String, Vec<usize>)> = written
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    names.sort();
    let mut layout = xtask::weights::dinov2_layout(reco_models::Backbone::Dinov2Small).unwrap();
    layout.sort();
    assert_eq!(names, layout);
    assert!(written.values().all(|t| t.dtype() == DType::F32));
    assert!(written.contains_key("mask_token"));

    // Values: q, k, v stacked in that order; every other tensor moved unchanged.
    for block in [0, 7, 11] {
        let hf = format!("encoder.layer.{block}.attention.attention");
        let qkv_w = &written[&format!("blocks.{block}.attn.qkv.weight")];
        let qkv_b = &written[&format!("blocks.{block}.attn.qkv.bias")];
        for (i, part) in ["query", "key", "value"].into_iter().enumerate() {
            assert_same(
                &format!("block {block} {part} weight"),
                &qkv_w.narrow(0, 384 * i, 384).unwrap(),
                &formula(&format!("{hf}.{part}.weight"), &[384, 384]),
            );
            assert_same(
                &format!("block {block} {part} bias"),
                &qkv_b.narrow(0, 384 * i, 384).unwrap(),
                &formula(&format!("{hf}.{part}.bias"), &[384]),
            );
        }
        for (timm, hf_field, shape) in [
            (
                "attn.proj.weight",
                "attention.output.dense.weight",
                vec![384, 384],
            ),
            ("ls1.gamma", "layer_scale1.lambda1", vec![384]),
            ("ls2.gamma", "layer_scale2.lambda1", vec![384]),
            ("norm1.weight", "norm1.weight", vec![384]),
            ("mlp.fc1.weight", "mlp.fc1.weight", vec![1536, 384]),
            ("mlp.fc2.bias", "mlp.fc2.bias", vec![384]),
        ] {
            assert_same(
                timm,
                &written[&format!("blocks.{block}.{timm}")],
                &formula(&format!("encoder.layer.{block}.{hf_field}"), &shape),
            );
        }
    }
    for (timm, hf, shape) in [
        (
            "pos_embed",
            "embeddings.position_embeddings",
            vec![1, 1370, 384],
        ),
        ("cls_token", "embeddings.cls_token", vec![1, 1, 384]),
        ("mask_token", "embeddings.mask_token", vec![1, 384]),
        (
            "patch_embed.proj.weight",
            "embeddings.patch_embeddings.projection.weight",
            vec![384, 3, 14, 14],
        ),
        (
            "patch_embed.proj.bias",
            "embeddings.patch_embeddings.projection.bias",
            vec![384],
        ),
        ("norm.weight", "layernorm.weight", vec![384]),
        ("norm.bias", "layernorm.bias", vec![384]),
    ] {
        assert_same(timm, &written[timm], &formula(hf, &shape));
    }

    // An alias of the same backbone finds it in the cache: no second GET, same file.
    let gets = |s: &Server| {
        s.log()
            .iter()
            .filter(|s| s.method == "GET" && s.path == DINOV2_S)
            .count()
    };
    assert_eq!(gets(&server), 1);
    let again = xtask::weights::fetch_weights(&xtask::weights::WeightsOptions {
        backbone: "dinov2_vits14".into(),
        endpoint: Some(server.base.clone()),
        cache_dir: Some(cache.clone()),
        out_dir: models.clone(),
    })
    .unwrap();
    assert_eq!(again, dest);
    assert_eq!(gets(&server), 1);
}

/// Fetches `backbone` from a loopback hub serving `path`; returns the error text, and
/// checks that nothing was written to models/.
fn dinov2_error(backbone: &str, path: &str, body: Vec<u8>, cut_next: usize) -> String {
    let server = Server::start();
    serve(&server, path, body, cut_next);
    let work = tempfile::tempdir().unwrap();
    let opts = xtask::weights::WeightsOptions {
        backbone: backbone.into(),
        endpoint: Some(server.base.clone()),
        cache_dir: Some(work.path().join("cache")),
        out_dir: work.path().join("models"),
    };
    let err = format!("{:#}", xtask::weights::fetch_weights(&opts).unwrap_err());
    println!("--- {backbone} from {path}:\n{err}");
    let models = work.path().join("models");
    assert!(
        !models.exists() || std::fs::read_dir(&models).unwrap().count() == 0,
        "something was written to models/ after: {err}"
    );
    if cut_next > 0 {
        // The transfer was cut: the next run downloads it again and succeeds.
        let dest = xtask::weights::fetch_weights(&opts).unwrap();
        assert!(dest.ends_with("dinov2-s.safetensors"));
    }
    err
}

#[test]
fn dinov2_truncated_or_cut_downloads_are_clear_errors() {
    let full = dinov2_small_body();
    // A file that is cut short at its source (served whole, as what it is).
    let err = dinov2_error("dinov2-s", DINOV2_S, full[..full.len() / 2].to_vec(), 0);
    assert!(err.contains("is not a valid safetensors file"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("models--facebook--dinov2-small"), "{err}");
    assert!(err.contains("fetch-weights --backbone dinov2-s"), "{err}");
    // Not safetensors at all.
    let err = dinov2_error(
        "dinov2-s",
        DINOV2_S,
        b"<html>502 Bad Gateway</html>".to_vec(),
        0,
    );
    assert!(err.contains("is not a valid safetensors file"), "{err}");
    // A transfer cut mid-body (Content-Length announced, half sent).
    let err = dinov2_error("dinov2-s", DINOV2_S, full.to_vec(), 1);
    assert!(
        err.contains("cannot download model.safetensors of facebook/dinov2-small"),
        "{err}"
    );
}

#[test]
fn dinov2_missing_tensors_are_named() {
    let err = dinov2_error(
        "dinov2-s",
        DINOV2_S,
        dinov2_small_file(&[
            "encoder.layer.11.layer_scale2.lambda1",
            "embeddings.mask_token",
        ]),
        0,
    );
    assert!(
        err.contains("missing tensor blocks.11.ls2.gamma (shape [384])"),
        "{err}"
    );
    assert!(
        err.contains("missing tensor mask_token (shape [1, 384])"),
        "{err}"
    );
    assert!(err.contains("2 problems"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");
    assert!(err.contains("delete"), "{err}");
    // One of query, key and value: the stacking names the block.
    let err = dinov2_error(
        "dinov2-s",
        DINOV2_S,
        dinov2_small_file(&["encoder.layer.3.attention.attention.key.bias"]),
        0,
    );
    assert!(err.contains("not a DINOv2 checkpoint"), "{err}");
    assert!(!err.contains("candle_core::error"), "no backtrace: {err}");
    assert!(err.contains("block 3"), "{err}");
    assert!(err.contains("query, key and value"), "{err}");
}

#[test]
fn dinov2_of_another_size_is_named() {
    // facebook/dinov2-small's file served as facebook/dinov2-base.
    let err = dinov2_error("dinov2-base", DINOV2_B, dinov2_small_body().to_vec(), 0);
    assert!(
        err.contains(
            "tensor blocks.0.attn.qkv.weight has shape [1152, 384], dinov2-b needs [2304, 768]"
        ),
        "{err}"
    );
    assert!(
        err.contains("does not hold the DINOv2 encoder of dinov2-b"),
        "{err}"
    );
    assert!(err.contains("facebook/dinov2-small's encoder"), "{err}");
    assert!(err.contains("--backbone dinov2-s"), "{err}");
    assert!(err.contains("... and"), "{err}");

    // Through the binary: an error exit with the message, no panic.
    let server = Server::start();
    serve(&server, DINOV2_B, dinov2_small_body().to_vec(), 0);
    let work = tempfile::tempdir().unwrap();
    let (ok, out) = xtask(
        &[
            "fetch-weights",
            "--backbone",
            "dinov2-b",
            "--endpoint",
            server.base.as_str(),
            "--out-dir",
            work.path().join("models").to_str().unwrap(),
        ],
        &[
            ("HF_HUB_CACHE", work.path().join("cache").to_str().unwrap()),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
        ],
    );
    assert!(!ok, "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(out.contains("dinov2-b needs [2304, 768]"), "{out}");
}

#[test]
fn unknown_backbones_list_both_families() {
    let work = tempfile::tempdir().unwrap();
    let err = xtask::weights::fetch_weights(&xtask::weights::WeightsOptions {
        backbone: "dinov2-g".into(),
        endpoint: Some("http://127.0.0.1:9".into()),
        cache_dir: Some(work.path().join("cache")),
        out_dir: work.path().join("models"),
    })
    .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("resnet101") && err.contains("dinov2-l"),
        "{err}"
    );
}
