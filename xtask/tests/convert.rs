//! `convert` on zip-format .pth files written the way `torch.save(state_dict)` writes them
//! (pickle protocol 2: OrderedDict of `torch._utils._rebuild_tensor_v2` calls whose storages
//! are persistent ids pointing at `archive/data/<key>`).

mod common;

use std::io::Write;
use std::path::Path;

use common::xtask;

enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

fn unicode(out: &mut Vec<u8>, s: &str) {
    out.push(b'X');
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn global(out: &mut Vec<u8>, module: &str, name: &str) {
    out.push(b'c');
    out.extend_from_slice(format!("{module}\n{name}\n").as_bytes());
}

fn int(out: &mut Vec<u8>, v: usize) {
    out.push(b'J');
    out.extend_from_slice(&(v as i32).to_le_bytes());
}

fn tuple(out: &mut Vec<u8>, vals: &[usize]) {
    out.push(b'(');
    for &v in vals {
        int(out, v);
    }
    out.push(b't');
}

/// Writes a state_dict the way PyTorch's zip serialisation does.
fn write_pth(path: &Path, tensors: &[(&str, Vec<usize>, Data)], wrap_key: Option<&str>) {
    let mut pkl = vec![0x80, 2];
    if let Some(k) = wrap_key {
        pkl.push(b'}'); // EMPTY_DICT
        unicode(&mut pkl, k);
    }
    global(&mut pkl, "collections", "OrderedDict");
    pkl.extend_from_slice(b")R");
    pkl.push(b'(');
    let mut blobs = Vec::new();
    for (i, (name, shape, data)) in tensors.iter().enumerate() {
        unicode(&mut pkl, name);
        global(&mut pkl, "torch._utils", "_rebuild_tensor_v2");
        pkl.push(b'(');
        // persistent id: ('storage', StorageType, key, location, numel)
        pkl.push(b'(');
        unicode(&mut pkl, "storage");
        let (storage, bytes, numel) = match data {
            Data::F32(v) => (
                "FloatStorage",
                v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                v.len(),
            ),
            Data::I64(v) => (
                "LongStorage",
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                v.len(),
            ),
        };
        global(&mut pkl, "torch", storage);
        unicode(&mut pkl, &i.to_string());
        unicode(&mut pkl, "cpu");
        int(&mut pkl, numel);
        pkl.push(b't');
        pkl.push(b'Q'); // BINPERSID
        int(&mut pkl, 0); // storage offset
        tuple(&mut pkl, shape);
        let mut stride = vec![1usize; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1];
        }
        tuple(&mut pkl, &stride);
        pkl.push(0x89); // NEWFALSE: requires_grad
        global(&mut pkl, "collections", "OrderedDict");
        pkl.extend_from_slice(b")R");
        pkl.push(b't');
        pkl.push(b'R');
        blobs.push((i.to_string(), bytes));
    }
    pkl.push(b'u'); // SETITEMS
    if wrap_key.is_some() {
        pkl.push(b's'); // SETITEM on the outer dict
    }
    pkl.push(b'.');

    let file = std::fs::File::create(path).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", opts).unwrap();
    zip.write_all(&pkl).unwrap();
    for (key, bytes) in blobs {
        zip.start_file(format!("archive/data/{key}"), opts).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("archive/version", opts).unwrap();
    zip.write_all(b"3\n").unwrap();
    zip.finish().unwrap();
}

fn read_back(path: &Path) -> std::collections::HashMap<String, candle_core::Tensor> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap()
}

#[test]
fn reco_checkpoint_keeps_names_and_dtypes() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("reco.pth");
    let w: Vec<f32> = (0..2 * 3 * 2 * 2).map(|i| i as f32 * 0.5 - 3.0).collect();
    write_pth(
        &pth,
        &[
            (
                "resnet_conv1.weight",
                vec![2, 3, 2, 2],
                Data::F32(w.clone()),
            ),
            ("resnet_bn1.num_batches_tracked", vec![], Data::I64(vec![7])),
            (
                "resnet_layer1.0.conv1.weight",
                vec![1, 2],
                Data::F32(vec![1., 2.]),
            ),
            ("ASPP.project.0.weight", vec![1], Data::F32(vec![3.])),
            ("classifier.3.weight", vec![2], Data::F32(vec![4., 5.])),
            ("classifier.3.bias", vec![2], Data::F32(vec![-1., 1.])),
        ],
        None,
    );
    let out = dir.path().join("out/reco.safetensors");
    let (ok, text) = xtask(
        &[
            "convert",
            "--input",
            pth.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("RecoDeepLab") && text.contains("6 tensors"),
        "{text}"
    );
    let t = read_back(&out);
    assert_eq!(t.len(), 6);
    let conv = &t["resnet_conv1.weight"];
    assert_eq!(conv.dims(), &[2, 3, 2, 2]);
    assert_eq!(conv.flatten_all().unwrap().to_vec1::<f32>().unwrap(), w);
    let nbt = &t["resnet_bn1.num_batches_tracked"];
    assert_eq!(nbt.dtype(), candle_core::DType::I64);
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 7);
}

#[test]
fn torchvision_resnet_wrapped_and_prefixed() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("tv.pth");
    write_pth(
        &pth,
        &[
            (
                "module.conv1.weight",
                vec![1, 3, 1, 1],
                Data::F32(vec![1., 2., 3.]),
            ),
            ("module.bn1.weight", vec![1], Data::F32(vec![1.])),
            ("module.layer1.0.conv1.weight", vec![1], Data::F32(vec![1.])),
            ("module.layer4.0.conv1.weight", vec![1], Data::F32(vec![1.])),
            ("module.fc.weight", vec![2, 1], Data::F32(vec![1., 2.])),
        ],
        Some("state_dict"),
    );
    let out = dir.path().join("tv.safetensors");
    let (kind, n) = xtask::convert::convert(&pth, &out).unwrap();
    assert_eq!(kind, xtask::convert::Kind::TorchvisionResnet);
    assert_eq!(n, 5);
    let t = read_back(&out);
    assert!(t.contains_key("fc.weight") && t.contains_key("conv1.weight"));
}

#[test]
fn anything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("other.pth");
    write_pth(
        &pth,
        &[("encoder.weight", vec![2], Data::F32(vec![1., 2.]))],
        None,
    );
    let out = dir.path().join("o.safetensors");
    let err = format!("{:#}", xtask::convert::convert(&pth, &out).unwrap_err());
    assert!(
        err.contains("neither") && err.contains("encoder.weight"),
        "{err}"
    );
    assert!(!out.exists());

    let legacy = dir.path().join("legacy.pth");
    std::fs::write(&legacy, [0x80, 0x02, 0x8a, 0x0a, 0, 0]).unwrap();
    let err = format!("{:#}", xtask::convert::convert(&legacy, &out).unwrap_err());
    assert!(err.contains("not a zip-format"), "{err}");

    let missing = dir.path().join("nope.pth");
    let err = format!("{:#}", xtask::convert::convert(&missing, &out).unwrap_err());
    assert!(err.contains("nope.pth"), "{err}");
}

/// The keys that decide a DeepLabV2's architecture: a basic-block ResNet with two layer3
/// blocks (ResNet-18), 3 classes, a 4-channel representation (8 tensors).
fn write_tiny_deeplabv2(pth: &Path, wrap_key: Option<&str>) {
    let w = |n: usize| Data::F32((0..n).map(|i| i as f32).collect());
    write_pth(
        pth,
        &[
            ("resnet_conv1.weight", vec![2, 3, 1, 1], w(6)),
            ("resnet_layer1.0.conv1.weight", vec![2, 2, 1, 1], w(4)),
            ("resnet_layer3.0.conv1.weight", vec![2, 2, 1, 1], w(4)),
            ("resnet_layer3.1.conv1.weight", vec![2, 2, 1, 1], w(4)),
            ("resnet_bn1.num_batches_tracked", vec![], Data::I64(vec![3])),
            ("classifier.conv2d_list.0.weight", vec![3, 2, 3, 3], w(54)),
            ("classifier.conv2d_list.0.bias", vec![3], w(3)),
            ("representation.0.weight", vec![4, 2, 1, 1], w(8)),
        ],
        wrap_key,
    );
}

#[test]
fn deeplabv2_is_recognised_from_its_keys_and_written_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("v2.pth");
    let w = |n: usize| Data::F32((0..n).map(|i| i as f32).collect());
    write_tiny_deeplabv2(&pth, Some("model"));
    let out = dir.path().join("v2.safetensors");
    let (kind, n) = xtask::convert::convert(&pth, &out).unwrap();
    assert_eq!(kind, xtask::convert::Kind::RecoDeepLabV2);
    assert_eq!(n, 8);
    let meta = reco_models::read_meta(&out)
        .unwrap()
        .expect("metadata in a converted DeepLabV2");
    assert_eq!(meta.network, reco_models::NetworkKind::DeepLabV2);
    assert_eq!(meta.backbone, reco_models::Backbone::ResNet18);
    assert_eq!(meta.output_stride, reco_models::DEEPLABV2_OUTPUT_STRIDE);
    assert_eq!((meta.num_classes, meta.output_dim), (3, 4));
    // Names and dtypes unchanged; metadata adds no tensor.
    let t = read_back(&out);
    assert_eq!(t.len(), 8);
    assert_eq!(
        t["resnet_bn1.num_batches_tracked"].dtype(),
        candle_core::DType::I64
    );

    // A DeepLabV3+ state_dict too partial to tell its backbone converts without metadata.
    let partial = dir.path().join("partial.pth");
    write_pth(
        &partial,
        &[
            ("resnet_conv1.weight", vec![2, 3, 1, 1], w(6)),
            ("resnet_layer1.0.conv1.weight", vec![2, 2, 1, 1], w(4)),
            ("ASPP.project.0.weight", vec![1], w(1)),
            ("classifier.3.weight", vec![2], w(2)),
        ],
        None,
    );
    let out = dir.path().join("partial.safetensors");
    xtask::convert::convert(&partial, &out).unwrap();
    assert_eq!(reco_models::read_meta(&out).unwrap(), None);
}

/// A checkpoint of the original code with the reference fixtures' formula weights, written
/// as `torch.save(model.state_dict())` writes it; returns the fixture's input and eval
/// prediction (what the original computed at `output_stride`).
fn original_checkpoint(
    fixture: &str,
    pth: &Path,
) -> (
    reco_models::NetworkKind,
    usize,
    candle_core::Tensor,
    candle_core::Tensor,
) {
    use reco_models::meta::read_header;
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/models/tests/fixtures")
        .join(format!("{fixture}.safetensors"));
    let (_, meta) = read_header(&path).unwrap();
    let meta = meta.unwrap();
    let field = |k: &str| meta[k].parse::<usize>().unwrap();
    let network = if fixture.starts_with("deeplabv2") {
        reco_models::NetworkKind::DeepLabV2
    } else {
        reco_models::NetworkKind::DeepLabV3Plus
    };
    let cfg = reco_models::DeepLabConfig {
        backbone: meta["backbone"].parse().unwrap(),
        output_stride: field("output_stride"),
        num_classes: field("num_classes"),
        output_dim: field("output_dim"),
    };
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(
        &varmap,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    );
    reco_models::Network::new(network, &cfg, vb).unwrap();
    reco_models::reference::fill_formula(&varmap).unwrap();
    let state = reco_models::checkpoint::state_dict(&varmap, 0).unwrap();
    let entries: Vec<(&str, Vec<usize>, Data)> = state
        .iter()
        .map(|(name, t)| {
            let data = match t.dtype() {
                candle_core::DType::I64 => Data::I64(t.flatten_all().unwrap().to_vec1().unwrap()),
                _ => Data::F32(t.flatten_all().unwrap().to_vec1().unwrap()),
            };
            (name.as_str(), t.dims().to_vec(), data)
        })
        .collect();
    write_pth(pth, &entries, None);
    let t = read_back(&path);
    (
        network,
        cfg.output_stride,
        t["input"].clone(),
        t["eval.pred"].clone(),
    )
}

fn logits_error(
    seg: &reco_models::Segmenter,
    input: &candle_core::Tensor,
    want: &candle_core::Tensor,
) -> f64 {
    let got = seg.logits(input).unwrap();
    reco_models::reference::rel_err(&got, want).unwrap()
}

/// The original's checkpoints of both networks, at output stride 8 and 16: converted with
/// the stride they were trained at, they predict what the original predicts; converted
/// with nothing stated, the stride is recorded as an assumption; converted with another
/// stride stated (a network trained at 16 and evaluated at 8, DeepLab's practice), they
/// still predict as the original at the stride asked for at load.
#[test]
fn the_originals_checkpoints_convert_and_predict_at_any_stride() {
    use reco_models::{MetaFallback, Segmenter, ASSUMED_OUTPUT_STRIDE};
    let cpu = candle_core::Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    for fixture in [
        "deeplabv3p_resnet101_os8",
        "deeplabv3p_resnet50_os16",
        "deeplabv2_resnet101",
    ] {
        let pth = dir.path().join(format!("{fixture}.pth"));
        let (network, trained, input, want) = original_checkpoint(fixture, &pth);
        let other = if trained == 8 { 16 } else { 8 };

        // Stated as trained, with the dataset: facts in the metadata, the original's output.
        let stated = dir.path().join(format!("{fixture}.safetensors"));
        let (ok, text) = xtask(
            &[
                "convert",
                "--input",
                pth.to_str().unwrap(),
                "--output",
                stated.to_str().unwrap(),
                "--output-stride",
                &trained.to_string(),
                "--dataset",
                "pascal",
            ],
            &[],
        );
        assert!(ok, "{text}");
        assert!(
            text.contains(&format!(
                "stated: output stride {trained}, dataset pascal, 21 class names"
            )),
            "{text}"
        );
        assert!(!text.contains("assumed"), "{text}");
        let meta = reco_models::read_meta(&stated).unwrap().unwrap();
        assert_eq!((meta.network, meta.output_stride), (network, trained));
        assert!(meta.assumed.is_empty());
        assert_eq!(meta.dataset.as_deref(), Some("pascal"));
        assert_eq!(meta.class_names[15], "person");
        let seg = Segmenter::load(&stated, &cpu, &MetaFallback::default()).unwrap();
        assert_eq!(seg.output_stride(), trained);
        let e = logits_error(&seg, &input, &want);
        assert!(e < 1e-4, "{fixture} stated: {e:e}");

        // Nothing stated: the original's default, marked as assumed.
        let plain = dir.path().join(format!("{fixture}.plain.safetensors"));
        xtask::convert::convert(&pth, &plain).unwrap();
        let meta = reco_models::read_meta(&plain).unwrap().unwrap();
        assert_eq!(
            meta.output_stride,
            reco_models::default_output_stride(network)
        );
        assert!(meta.is_assumed(ASSUMED_OUTPUT_STRIDE));
        assert_eq!(meta.dataset, None);

        // Trained at `trained`, recorded as `other`: run at `trained` on request. The stride
        // matters: at `other` the same weights give another network's output.
        let relabelled = dir.path().join(format!("{fixture}.other.safetensors"));
        let opts = xtask::convert::ConvertOptions {
            output_stride: Some(other),
            ..Default::default()
        };
        xtask::convert::convert_with(&pth, &relabelled, &opts).unwrap();
        let seg =
            Segmenter::load_at(&relabelled, &cpu, &MetaFallback::default(), Some(trained)).unwrap();
        assert_eq!(
            (seg.meta().output_stride, seg.output_stride()),
            (other, trained)
        );
        let e = logits_error(&seg, &input, &want);
        assert!(e < 1e-4, "{fixture} at {trained} on request: {e:e}");
        let seg = Segmenter::load(&relabelled, &cpu, &MetaFallback::default()).unwrap();
        let wrong = seg.logits(&input).unwrap();
        if wrong.dims() == want.dims() {
            let e = reco_models::reference::rel_err(&wrong, &want).unwrap();
            assert!(e > 1e-2, "{fixture}: the stride changed nothing ({e:e})");
        }
        for f in [&pth, &stated, &plain, &relabelled] {
            std::fs::remove_file(f).unwrap();
        }
    }
}

#[test]
fn what_the_weights_cannot_say_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("v2.pth");
    let w = |n: usize| Data::F32((0..n).map(|i| i as f32).collect());
    // A ResNet-18 DeepLabV2 with 3 classes.
    write_tiny_deeplabv2(&pth, None);
    let out = dir.path().join("v2.safetensors");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "convert",
            "--input",
            pth.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        xtask(&args, &[])
    };
    for (extra, want) in [
        (&["--output-stride", "4"][..], "8, 16 or 32"),
        (
            &["--dataset", "pascal"][..],
            "predict 3 classes but the pascal dataset has 21",
        ),
        (&["--classes", "a,b"][..], "--classes lists 2"),
        (&["--dataset", "folder"][..], "--classes <root>/classes.txt"),
        (&["--classes", "nosuchfile"][..], "no such file"),
        (&["--dataset", "voc"][..], "unknown dataset"),
    ] {
        let (ok, text) = run(extra);
        assert!(!ok, "{extra:?} was accepted: {text}");
        assert!(text.contains(want), "{extra:?}: {text}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    // A classes.txt (names, optional colours) names a folder dataset's classes.
    let classes = dir.path().join("classes.txt");
    std::fs::write(&classes, "sky 10 20 30\nroad\ncar\n").unwrap();
    let (ok, text) = run(&[
        "--dataset",
        "folder",
        "--classes",
        classes.to_str().unwrap(),
    ]);
    assert!(ok, "{text}");
    let meta = reco_models::read_meta(&out).unwrap().unwrap();
    assert_eq!(meta.class_names, ["sky", "road", "car"]);
    assert_eq!(meta.dataset.as_deref(), Some("folder"));
    assert!(meta.is_assumed(reco_models::ASSUMED_OUTPUT_STRIDE));
    // A torchvision ResNet takes no network description.
    let tv = dir.path().join("tv.pth");
    write_pth(
        &tv,
        &[
            ("conv1.weight", vec![1], w(1)),
            ("bn1.weight", vec![1], w(1)),
            ("layer1.0.conv1.weight", vec![1], w(1)),
            ("layer4.0.conv1.weight", vec![1], w(1)),
        ],
        None,
    );
    let opts = xtask::convert::ConvertOptions {
        output_stride: Some(8),
        ..Default::default()
    };
    let err = xtask::convert::convert_with(&tv, &dir.path().join("tv.safetensors"), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("torchvision ResNet"), "{err}");
}
