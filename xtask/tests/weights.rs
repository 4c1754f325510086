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

#[test]
fn weights_through_hf_endpoint_env() {
    let body = tiny_resnet();
    let server = hub(body.clone());
    let work = tempfile::tempdir().unwrap();
    let models = work.path().join("models");
    let cache = work.path().join("hf-cache");
    let (ok, out) = xtask(
        &[
            "fetch-weights",
            "--backbone",
            "resnet18",
            "--out-dir",
            models.to_str().unwrap(),
        ],
        &[
            ("HF_ENDPOINT", server.base.as_str()),
            ("HF_HUB_CACHE", cache.to_str().unwrap()),
            ("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1"),
        ],
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
