//! Inference API: folded batch norm against the unfolded network, both loaders
//! (the project's VarMap loader and candle's `from_mmaped_safetensors`), checkpoint
//! metadata and its errors, sliding windows, max size and test-time augmentation.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::*;
use reco_models::meta::{read_header, MetaFallback};
use reco_models::{
    export_with_meta, read_meta, Backbone, CheckpointMeta, DeepLabConfig, MetaError, Network,
    NetworkKind, PredictOptions, RgbImage, SegmentError, Segmenter, SlidingWindow,
};

fn small_cfg() -> DeepLabConfig {
    small_config(4, 8)
}

/// [`small_cfg`] for the DeepLabs; DINOv2-S (the smallest) for DPT.
fn cfg_for(kind: NetworkKind) -> DeepLabConfig {
    match kind {
        NetworkKind::Dpt => DeepLabConfig {
            backbone: reco_models::Backbone::Dinov2Small,
            output_stride: reco_models::DPT_OUTPUT_STRIDE,
            ..small_cfg()
        },
        _ => small_cfg(),
    }
}

fn export(dir: &Path, kind: NetworkKind, cfg: &DeepLabConfig) -> (PathBuf, Network) {
    let (varmap, net) = formula_network(kind, cfg, DType::F32);
    let path = dir.join(format!("{kind}.safetensors"));
    let meta = CheckpointMeta::new(kind, cfg).with_dataset(
        "synthetic",
        (0..cfg.num_classes).map(|c| format!("class{c}")).collect(),
    );
    export_with_meta(&varmap, &meta, &path, 3).unwrap();
    (path, net)
}

/// A smooth RGB test image (values in 0..1) as [1, 3, h, w].
fn image(h: usize, w: usize) -> Tensor {
    let v: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, p) = (i / (h * w), i % (h * w));
            let (y, x) = ((p / w) as f32, (p % w) as f32);
            0.5 + 0.45 * ((x * 0.11 + c as f32).sin() * (y * 0.07 - c as f32).cos())
        })
        .collect();
    Tensor::from_vec(v, (1, 3, h, w), &Device::Cpu).unwrap()
}

fn folded_vs_unfolded(kind: NetworkKind, cfg: &DeepLabConfig, input: &Tensor) -> f64 {
    let (varmap, net) = formula_network(kind, cfg, DType::F32);
    let (unfolded, _) = net.forward_no_grad(input, false).unwrap();
    let seg = Segmenter::from_varmap(&varmap, CheckpointMeta::new(kind, cfg)).unwrap();
    let folded = seg.logits(input).unwrap();
    rel_err(&folded, &unfolded)
}

#[test]
fn folded_batch_norm_matches_the_unfolded_network() {
    // The reference fixtures' inputs and configurations (formula weights).
    for (kind, file, backbone, os, label) in [
        (
            NetworkKind::DeepLabV3Plus,
            "deeplabv3p_resnet50_os16.safetensors",
            "resnet50",
            16,
            "deeplabv3p",
        ),
        (
            NetworkKind::DeepLabV2,
            "deeplabv2_resnet101.safetensors",
            "resnet101",
            8,
            "deeplabv2",
        ),
    ] {
        let fx = load_fixture(file);
        let e = folded_vs_unfolded(kind, &config_of(backbone, os), &fx["input"]);
        println!("{label} {backbone} os{os}: folded vs unfolded {e:.2e}");
        assert!(e < 1e-5, "{label}: {e:e}");
    }
    let x = imagenet_normalize(&image(45, 61));
    let e = folded_vs_unfolded(NetworkKind::DeepLabV3Plus, &small_cfg(), &x);
    println!("deeplabv3p resnet18 os16: folded vs unfolded {e:.2e}");
    assert!(e < 1e-5, "resnet18: {e:e}");
}

/// The trainer's evaluation: logits upsampled (align_corners) then softmax.
fn reference_probabilities(net: &Network, x: &Tensor) -> Tensor {
    let (_, _, h, w) = x.dims4().unwrap();
    // DPT evaluates an image off the patch grid resized to the nearest multiples of 14.
    let x = net.fit_input(&imagenet_normalize(x)).unwrap();
    let (pred, _) = net.forward_no_grad(&x, false).unwrap();
    let up = reco_models::ops::resize_bilinear(&pred, h, w, true).unwrap();
    candle_nn::ops::softmax(&up, 1).unwrap()
}

#[test]
fn both_loaders_predict_like_the_network() {
    let dir = tempfile::tempdir().unwrap();
    for kind in NetworkKind::all() {
        let (path, net) = export(dir.path(), kind, &cfg_for(kind));
        let x = image(50, 70);
        let reference = reference_probabilities(&net, &x);
        // The project's loader: metadata, then a strict VarMap load.
        let seg = Segmenter::load(&path, &Device::Cpu, &MetaFallback::default()).unwrap();
        assert_eq!(seg.meta().network, kind);
        assert_eq!(seg.meta().class_names.len(), 4);
        let p = seg.predict_tensor(&x, &PredictOptions::default()).unwrap();
        let e = rel_err(p.probabilities.as_ref().unwrap(), &reference);
        assert!(e < 1e-5, "{kind} load: {e:e}");
        let classes = reference.argmax(1).unwrap().to_dtype(DType::U32).unwrap();
        assert_eq!(
            p.classes.flatten_all().unwrap().to_vec1::<u32>().unwrap(),
            classes.flatten_all().unwrap().to_vec1::<u32>().unwrap()
        );
        // candle's own loader, as a candle app would use it.
        let meta = read_meta(&path).unwrap().expect("metadata written");
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &Device::Cpu).unwrap()
        };
        let seg2 = Segmenter::from_varbuilder(&vb, meta).unwrap();
        let p2 = seg2.predict_tensor(&x, &PredictOptions::default()).unwrap();
        let e = rel_err(p2.probabilities.as_ref().unwrap(), &reference);
        assert!(e < 1e-5, "{kind} mmaped: {e:e}");
    }
}

#[test]
fn u8_images_are_normalised_inside() {
    let dir = tempfile::tempdir().unwrap();
    let (path, net) = export(dir.path(), NetworkKind::DeepLabV3Plus, &small_cfg());
    let (h, w) = (40, 33);
    let bytes: Vec<u8> = (0..h * w * 3).map(|i| ((i * 29) % 256) as u8).collect();
    // The same image as a [1, 3, H, W] tensor in 0..1.
    let chw: Vec<f32> = (0..3 * h * w)
        .map(|i| bytes[(i % (h * w)) * 3 + i / (h * w)] as f32 / 255.0)
        .collect();
    let x = Tensor::from_vec(chw, (1, 3, h, w), &Device::Cpu).unwrap();
    let seg = Segmenter::load(&path, &Device::Cpu, &MetaFallback::default()).unwrap();
    let img = RgbImage {
        data: &bytes,
        width: w,
        height: h,
    };
    let p = seg.predict_image(img, &PredictOptions::default()).unwrap();
    let e = rel_err(
        p.probabilities.as_ref().unwrap(),
        &reference_probabilities(&net, &x),
    );
    assert!(e < 1e-5, "{e:e}");
    assert_eq!(p.classes.dims(), [1, h, w]);
}

#[test]
fn metadata_round_trips_and_the_file_keeps_the_original_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = export(dir.path(), NetworkKind::DeepLabV2, &small_cfg());
    let meta = read_meta(&path).unwrap().unwrap();
    assert_eq!(meta.network, NetworkKind::DeepLabV2);
    assert_eq!(meta.config(), small_cfg());
    assert_eq!(meta.dataset.as_deref(), Some("synthetic"));
    let (shapes, map) = read_header(&path).unwrap();
    let map = map.unwrap();
    assert_eq!(map["network"], "deeplabv2");
    assert_eq!(map["format"], "pt");
    // Tensors are exactly the state_dict (metadata is not a tensor).
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    assert_eq!(tensors.len(), shapes.len());
    assert!(tensors.contains_key("classifier.conv2d_list.3.bias"));
    assert!(tensors.contains_key("resnet_bn1.num_batches_tracked"));
}

/// Rewrites `path`'s metadata with `edit` (tensors unchanged).
fn rewrite_metadata(path: &Path, edit: impl FnOnce(&mut HashMap<String, String>)) -> PathBuf {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let (_, map) = read_header(path).unwrap();
    let mut map = map.unwrap_or_default();
    edit(&mut map);
    let out = path.with_extension("edited.safetensors");
    let sorted: std::collections::BTreeMap<_, _> = tensors.into_iter().collect();
    safetensors::tensor::serialize_to_file(sorted.iter(), Some(map), &out).unwrap();
    out
}

#[test]
fn bad_metadata_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = export(dir.path(), NetworkKind::DeepLabV3Plus, &small_cfg());
    let fallback = MetaFallback::default();
    let load_err = |p: &Path| Segmenter::load(p, &Device::Cpu, &fallback).unwrap_err();

    let p = rewrite_metadata(&path, |m| {
        let json = m["reco"].replace("\"num_classes\":4", "\"num_classes\":7");
        m.insert("reco".into(), json);
    });
    let err = load_err(&p);
    assert!(
        matches!(
            &err,
            SegmentError::Meta(m) if matches!(**m, MetaError::Contradiction {
                field: "num_classes",
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("num_classes = 7"), "{err}");

    let p = rewrite_metadata(&path, |m| {
        let json = m["reco"].replace("deeplabv3p", "deeplabv2");
        m.insert("reco".into(), json);
    });
    let err = load_err(&p);
    assert!(err.to_string().contains("network = deeplabv2"), "{err}");

    let p = rewrite_metadata(&path, |m| {
        let json = m["reco"].replace("deeplabv3p", "unet");
        m.insert("reco".into(), json);
    });
    let err = load_err(&p);
    assert!(
        matches!(&err, SegmentError::Meta(m) if matches!(&**m, MetaError::UnknownNetwork { name, .. } if name == "unet")),
        "{err}"
    );

    let p = rewrite_metadata(&path, |m| {
        m.insert("reco".into(), "{\"network\": ".into());
    });
    let err = load_err(&p);
    assert!(
        matches!(&err, SegmentError::Meta(m) if matches!(**m, MetaError::BadJson { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("not valid JSON"), "{err}");

    let err = load_err(&dir.path().join("missing.safetensors"));
    assert!(err.to_string().contains("missing.safetensors"), "{err}");
    std::fs::write(dir.path().join("junk.safetensors"), b"not a checkpoint").unwrap();
    let err = load_err(&dir.path().join("junk.safetensors"));
    assert!(err.to_string().contains("not a safetensors file"), "{err}");
}

#[test]
fn files_without_metadata_load_from_shapes_and_the_given_output_stride() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = DeepLabConfig {
        output_stride: 8,
        ..small_cfg()
    };
    let (path, net) = export(dir.path(), NetworkKind::DeepLabV3Plus, &cfg);
    let bare = rewrite_metadata(&path, |m| m.clear());
    assert!(read_meta(&bare).unwrap().is_none());
    let fallback = MetaFallback {
        output_stride: Some(8),
        ..MetaFallback::default()
    };
    let seg = Segmenter::load(&bare, &Device::Cpu, &fallback).unwrap();
    assert_eq!(seg.meta().config(), cfg);
    let x = image(48, 40);
    let p = seg.predict_tensor(&x, &PredictOptions::default()).unwrap();
    let e = rel_err(
        p.probabilities.as_ref().unwrap(),
        &reference_probabilities(&net, &x),
    );
    assert!(e < 1e-5, "{e:e}");
    // A DPT file without metadata: network, encoder size, classes and representation
    // size from the shapes; the stride (the patch size) known, not assumed.
    let (dpt, _) = export(dir.path(), NetworkKind::Dpt, &cfg_for(NetworkKind::Dpt));
    let bare = rewrite_metadata(&dpt, |m| m.clear());
    let meta = reco_models::resolve_meta(&bare, &MetaFallback::default()).unwrap();
    assert_eq!(meta.config(), cfg_for(NetworkKind::Dpt));
    assert_eq!(meta.network, NetworkKind::Dpt);
    assert!(meta.assumed.is_empty(), "{:?}", meta.assumed);
    // The reference fixtures' flat keys describe the network too.
    let meta = reco_models::resolve_meta(
        &fixture("deeplabv2_resnet101.safetensors"),
        &MetaFallback::default(),
    );
    // (That file holds test tensors beside no weights, so it is not a checkpoint.)
    assert!(meta.is_err());
}

#[test]
fn bad_sizes_and_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = export(dir.path(), NetworkKind::DeepLabV3Plus, &small_cfg());
    let seg = Segmenter::load(&path, &Device::Cpu, &MetaFallback::default()).unwrap();
    let err = seg
        .predict_tensor(&image(20, 300), &PredictOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("300x20"), "{err}");
    assert!(err.to_string().contains("at least 32"), "{err}");
    let x = image(64, 64);
    for (window, needle) in [
        (
            SlidingWindow {
                tile: 16,
                stride: 8,
            },
            "tile size 16",
        ),
        (
            SlidingWindow {
                tile: 64,
                stride: 65,
            },
            "stride 65",
        ),
        (
            SlidingWindow {
                tile: 64,
                stride: 0,
            },
            "stride 0",
        ),
    ] {
        let opts = PredictOptions {
            sliding_window: Some(window),
            ..PredictOptions::default()
        };
        let err = seg.predict_tensor(&x, &opts).unwrap_err();
        assert!(err.to_string().contains(needle), "{err}");
    }
    for opts in [
        PredictOptions {
            scales: vec![],
            ..PredictOptions::default()
        },
        PredictOptions {
            scales: vec![1.0, -0.5],
            ..PredictOptions::default()
        },
        PredictOptions {
            max_size: Some(8),
            ..PredictOptions::default()
        },
    ] {
        assert!(matches!(
            seg.predict_tensor(&x, &opts),
            Err(SegmentError::BadOptions(_))
        ));
    }
    let bytes = vec![0u8; 10];
    let err = seg
        .predict_image(
            RgbImage {
                data: &bytes,
                width: 40,
                height: 40,
            },
            &PredictOptions::default(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("4800 bytes"), "{err}");
}

#[test]
fn tiles_cover_the_image_like_mmsegmentation() {
    let sw = SlidingWindow {
        tile: 512,
        stride: 341,
    };
    let tiles = sw.tiles(1024, 2048);
    // MMSegmentation: h_grids = ceil((1024-512)/341)+1 = 3, w_grids = ceil(1536/341)+1 = 6.
    assert_eq!(tiles.len(), 18);
    assert!(tiles.iter().all(|&(_, _, h, w)| h == 512 && w == 512));
    assert_eq!(tiles.last(), Some(&(512, 1536, 512, 512)));
    // Smaller than a tile: one tile, the whole image.
    assert_eq!(sw.tiles(100, 300), vec![(0, 0, 100, 300)]);
}

/// Indicative timing and memory of the eval forward, folded vs unfolded (run alone, one
/// mode per process so that peak RSS is the mode's own):
/// `FOLD_MODE=folded cargo test -p reco-models --release --test segmenter -- --ignored fold_timing --nocapture`
#[test]
#[ignore]
fn fold_timing() {
    let mode = std::env::var("FOLD_MODE").unwrap_or_else(|_| "folded".into());
    let size: usize = std::env::var("FOLD_SIZE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let cfg = DeepLabConfig {
        backbone: Backbone::ResNet101,
        output_stride: 16,
        num_classes: 21,
        output_dim: 256,
    };
    let (varmap, net) = formula_network(NetworkKind::DeepLabV3Plus, &cfg, DType::F32);
    let x = imagenet_normalize(&image(size, size));
    let seg = Segmenter::from_varmap(
        &varmap,
        CheckpointMeta::new(NetworkKind::DeepLabV3Plus, &cfg),
    )
    .unwrap();
    let base_rss = reco_util::bench::peak_rss_mb().unwrap_or(0.0);
    let mut times = vec![];
    for _ in 0..4 {
        let t = std::time::Instant::now();
        let out = if mode == "folded" {
            seg.logits(&x).unwrap()
        } else {
            net.forward_no_grad(&x, false).unwrap().0
        };
        out.sum_all().unwrap().to_scalar::<f32>().unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    times.remove(0);
    println!(
        "{mode} R101 OS16 1x3x{size}x{size}: median {:.3} s over 3 (after a warm-up), peak RSS {:.0} MB (before the forwards {:.0} MB)",
        reco_util::bench::median(times),
        reco_util::bench::peak_rss_mb().unwrap_or(0.0),
        base_rss
    );
}

/// Indicative time and peak memory of one large prediction (one mode per process):
/// `SEG_MODE=whole|tiled|max-size SEG_SIZE=768x1024 cargo test -p reco-models --release
/// --test segmenter -- --ignored large_image_timing --nocapture`
#[test]
#[ignore]
fn large_image_timing() {
    let mode = std::env::var("SEG_MODE").unwrap_or_else(|_| "whole".into());
    let size = std::env::var("SEG_SIZE").unwrap_or_else(|_| "768x1024".into());
    let (h, w) = size
        .split_once('x')
        .map(|(h, w)| (h.parse().unwrap(), w.parse().unwrap()))
        .expect("SEG_SIZE as HxW");
    let cfg = DeepLabConfig {
        num_classes: 21,
        ..small_cfg()
    };
    let (varmap, _) = formula_network(NetworkKind::DeepLabV3Plus, &cfg, DType::F32);
    let seg = Segmenter::from_varmap(
        &varmap,
        CheckpointMeta::new(NetworkKind::DeepLabV3Plus, &cfg),
    )
    .unwrap();
    drop(varmap);
    let x = image(h, w);
    let opts = PredictOptions {
        sliding_window: (mode == "tiled").then(|| SlidingWindow::new(512)),
        max_size: (mode == "max-size").then_some(512),
        probabilities: false,
        ..PredictOptions::default()
    };
    let before = reco_util::bench::peak_rss_mb().unwrap_or(0.0);
    let t = std::time::Instant::now();
    let p = seg.predict_tensor(&x, &opts).unwrap();
    println!(
        "{mode} ResNet-18 DeepLabV3+ 21 classes {h}x{w}: {:.2} s, peak RSS {:.0} MB (before {:.0} MB); classes {:?}",
        t.elapsed().as_secs_f64(),
        reco_util::bench::peak_rss_mb().unwrap_or(0.0),
        before,
        p.classes.dims()
    );
}
