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

#[test]
fn deeplabv2_is_recognised_from_its_keys_and_written_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let pth = dir.path().join("v2.pth");
    let w = |n: usize| Data::F32((0..n).map(|i| i as f32).collect());
    // The keys that decide the architecture: a basic-block ResNet with two layer3 blocks
    // (ResNet-18), 3 classes, a 4-channel representation.
    write_pth(
        &pth,
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
        Some("model"),
    );
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
