//! Loader and batch-transform tests on the synthetic dataset (no files needed).

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use reco_data::datasets::{Synthetic, SyntheticConfig};
use reco_data::transforms::{cutout_box, mix, rescale_crop};
use reco_data::*;

mod common;
use common::*;

fn synthetic(train: usize, val: usize) -> Arc<dyn SegDataset> {
    Arc::new(
        Synthetic::new(SyntheticConfig {
            train_size: train,
            val_size: val,
            ..SyntheticConfig::default()
        })
        .unwrap(),
    )
}

fn take(loader: &mut Loader, n: usize) -> Vec<Batch> {
    (0..n).map(|_| loader.next().unwrap().unwrap()).collect()
}

#[test]
fn train_batches_have_the_contract_shapes_and_values() {
    let ds = synthetic(50, 10);
    let ids = ds.ids(Subset::Train).to_vec();
    let cfg = TrainLoaderConfig::labelled(DatasetKind::Synthetic, 3);
    let mut loader = Loader::train(ds, ids, cfg).unwrap();
    assert_eq!(loader.num_batches(), None);
    for b in take(&mut loader, 3) {
        assert_eq!(b.images.dims(), &[8, 3, 64, 64]);
        assert_eq!(b.images.dtype(), DType::F32);
        assert_eq!(b.labels.dims(), &[8, 64, 64]);
        assert_eq!(b.labels.dtype(), DType::I64);
        assert_eq!(b.ids.len(), 8);
        let labels = b.labels.flatten_all().unwrap().to_vec1::<i64>().unwrap();
        assert!(labels.iter().all(|&v| (-1..7).contains(&v)));
        assert!(labels.iter().any(|&v| v > 0));
        // Normalised: roughly zero mean, within the normalised range of [0, 1] inputs.
        let img = b.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let mean = img.iter().sum::<f32>() / img.len() as f32;
        assert!(mean.abs() < 1.0, "mean {mean}");
        assert!(img.iter().all(|v| (-2.2..=2.7).contains(v)));
    }
}

#[test]
fn same_seed_same_batches_whatever_the_thread_count() {
    let ds = synthetic(40, 10);
    let ids = ds.ids(Subset::Train).to_vec();
    let run = |threads: usize, seed: u64| {
        let mut cfg = TrainLoaderConfig::labelled(DatasetKind::Synthetic, seed);
        cfg.batch_size = 3;
        cfg.num_threads = threads;
        let mut l = Loader::train(ds.clone(), ids.clone(), cfg).unwrap();
        take(&mut l, 4)
    };
    let a = run(1, 5);
    let b = run(3, 5);
    let c = run(2, 6);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.ids, y.ids);
        assert_same_images(&x.images, &y.images);
        let xl = x.labels.flatten_all().unwrap().to_vec1::<i64>().unwrap();
        let yl = y.labels.flatten_all().unwrap().to_vec1::<i64>().unwrap();
        assert_eq!(xl, yl);
    }
    let ids_a: Vec<_> = a.iter().flat_map(|b| b.ids.clone()).collect();
    let ids_c: Vec<_> = c.iter().flat_map(|b| b.ids.clone()).collect();
    assert_ne!(ids_a, ids_c, "another seed should pick other images");
}

#[test]
fn a_resumed_loader_continues_with_the_same_batches() {
    let ds = synthetic(40, 10);
    let ids = ds.ids(Subset::Train).to_vec();
    let mut cfg = TrainLoaderConfig::labelled(DatasetKind::Synthetic, 4);
    cfg.batch_size = 2;
    let full = take(
        &mut Loader::train(ds.clone(), ids.clone(), cfg.clone()).unwrap(),
        5,
    );
    cfg.start_batch = 3;
    let resumed = take(&mut Loader::train(ds, ids, cfg).unwrap(), 2);
    for (a, b) in full[3..].iter().zip(&resumed) {
        assert_eq!(a.ids, b.ids);
        assert_same_images(&a.images, &b.images);
    }
}

#[test]
fn sampling_is_with_replacement_over_the_given_ids_only() {
    let ds = synthetic(30, 10);
    let ids: Vec<String> = ds.ids(Subset::Train)[..3].to_vec();
    let mut cfg = TrainLoaderConfig::labelled(DatasetKind::Synthetic, 0);
    cfg.batch_size = 8;
    let mut l = Loader::train(ds, ids.clone(), cfg).unwrap();
    let b = l.next().unwrap().unwrap();
    // 8 draws from 3 ids: repeats are certain.
    assert!(b.ids.iter().all(|i| ids.contains(i)));
    let mut uniq = b.ids.clone();
    uniq.sort();
    uniq.dedup();
    assert!(uniq.len() < 8);
}

#[test]
fn validation_is_in_order_padded_and_ends() {
    let ds = synthetic(10, 10);
    let ids = ds.ids(Subset::Val).to_vec();
    let mut cfg = ValLoaderConfig::new(DatasetKind::Synthetic);
    cfg.batch_size = 4;
    cfg.eval_size = (100, 104);
    let loader = Loader::val(ds.clone(), ids.clone(), cfg).unwrap();
    assert_eq!(loader.num_batches(), Some(3));
    let batches: Vec<Batch> = loader.map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 3);
    assert_eq!(batches[2].images.dims(), &[2, 3, 100, 104]);
    let seen: Vec<String> = batches.iter().flat_map(|b| b.ids.clone()).collect();
    assert_eq!(seen, ids);
    // Pixels beyond the 96x96 image are ignore; inside they are the true labels.
    let first = ds.load(&ids[0]).unwrap();
    let l = batches[0].labels.get(0).unwrap().to_vec2::<i64>().unwrap();
    assert_eq!(l[10][20], first.label.get_pixel(20, 10)[0] as i64);
    assert!(l[99].iter().all(|&v| v == -1));
    assert!(l[0][96..].iter().all(|&v| v == -1));
}

#[test]
fn loader_errors_end_the_stream_and_bad_configs_are_rejected() {
    let ds = synthetic(10, 10);
    let cfg = TrainLoaderConfig::labelled(DatasetKind::Synthetic, 0);
    assert!(Loader::train(ds.clone(), vec![], cfg.clone()).is_err());
    let mut bad = cfg.clone();
    bad.batch_size = 0;
    assert!(Loader::train(ds.clone(), vec!["train-00000".into()], bad).is_err());
    let mut l = Loader::train(ds, vec!["nope".into()], cfg).unwrap();
    let e = l.next().unwrap().unwrap_err().to_string();
    assert!(e.contains("nope"), "{e}");
    assert!(l.next().is_none());
}

fn unsup_inputs(b: usize, h: usize, w: usize) -> (Tensor, Tensor, Tensor) {
    // Image i has constant value i (normalised space) so origins are traceable; labels are
    // 4 vertical bands per image (classes 0..4 + i), confidence 0.5 + i/10.
    let dev = Device::Cpu;
    let mut img = vec![0f32; b * 3 * h * w];
    let mut lab = vec![0i64; b * h * w];
    let mut conf = vec![0f32; b * h * w];
    for i in 0..b {
        for p in 0..h * w {
            for c in 0..3 {
                img[(i * 3 + c) * h * w + p] = i as f32 * 0.25;
            }
            lab[i * h * w + p] = ((p % w) * 4 / w + i) as i64;
            conf[i * h * w + p] = 0.5 + i as f32 / 10.0;
        }
    }
    (
        Tensor::from_vec(img, (b, 3, h, w), &dev).unwrap(),
        Tensor::from_vec(lab, (b, h, w), &dev).unwrap(),
        Tensor::from_vec(conf, (b, h, w), &dev).unwrap(),
    )
}

#[test]
fn classmix_takes_half_the_classes_from_the_next_image() {
    let (img, lab, conf) = unsup_inputs(3, 16, 16);
    let host = HostBatch::from_tensors(&img, &lab, &conf).unwrap();
    let out = mix(&host, MixMode::ClassMix, 11);
    let plane = 16 * 16;
    for i in 0..3 {
        let j = (i + 1) % 3;
        let mut kept = std::collections::BTreeSet::new();
        for p in 0..plane {
            let own = host.labels[i * plane + p];
            let got = out.labels[i * plane + p];
            let conf = out.confidence[i * plane + p];
            if got == own && (conf - host.confidence[i * plane + p]).abs() < 1e-6 {
                kept.insert(own);
                assert_eq!(
                    out.images[(i * 3) * plane + p],
                    host.images[(i * 3) * plane + p]
                );
            } else {
                // Pixel from image j: label, confidence and colour all from j.
                assert_eq!(got, host.labels[j * plane + p]);
                assert!((conf - host.confidence[j * plane + p]).abs() < 1e-6);
                assert_eq!(
                    out.images[(i * 3) * plane + p],
                    host.images[(j * 3) * plane + p]
                );
            }
        }
        assert_eq!(
            kept.len(),
            2,
            "image {i}: half of its 4 classes kept: {kept:?}"
        );
    }
}

#[test]
fn cutmix_and_cutout_use_a_half_area_box() {
    let mut rng = reco_data::rng::rng_for(&[1]);
    for _ in 0..50 {
        let (y0, y1, x0, x1) = cutout_box(20, 30, &mut rng);
        let area = (y1 - y0) * (x1 - x0);
        assert!(y1 <= 20 && x1 <= 30);
        assert!((area as f64 - 300.0).abs() <= 20.0, "area {area}");
    }
    let (img, lab, conf) = unsup_inputs(2, 20, 30);
    let host = HostBatch::from_tensors(&img, &lab, &conf).unwrap();
    let cut = mix(&host, MixMode::CutOut, 2);
    let plane = 600;
    let ignored = cut.labels[..plane].iter().filter(|&&v| v == IGNORE).count();
    assert!((ignored as i64 - 300).abs() <= 20, "{ignored}");
    for p in 0..plane {
        if cut.labels[p] == IGNORE {
            assert_eq!(cut.confidence[p], 0.0);
            // The ImageNet mean colour, i.e. 0 once normalised.
            assert!((cut.images[p] - IMAGENET_MEAN[0]).abs() < 1e-6);
        }
    }
    let cm = mix(&host, MixMode::CutMix, 2);
    let from_next = (0..plane)
        .filter(|&p| (cm.confidence[p] - host.confidence[plane + p]).abs() < 1e-6)
        .count();
    assert!((from_next as i64 - 300).abs() <= 20, "{from_next}");
}

#[test]
fn unsup_transform_keeps_labels_and_confidences_aligned() {
    let (img, lab, conf) = unsup_inputs(4, 24, 24);
    let mut cfg = UnsupAugConfig::new(DatasetKind::Synthetic, MixMode::ClassMix);
    cfg.crop_size = (20, 22);
    let a = unsup_transform(&img, &lab, &conf, &cfg, 9).unwrap();
    let b = unsup_transform(&img, &lab, &conf, &cfg, 9).unwrap();
    assert_eq!(a.images.dims(), &[4, 3, 20, 22]);
    assert_eq!(a.labels.dims(), &[4, 20, 22]);
    assert_eq!(a.confidence.dims(), &[4, 20, 22]);
    let d = (&a.images - &b.images)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap();
    assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0, "same seed, same output");
    // Each pixel's confidence tells which image it came from (0.5 + i/10, or 0 if padded);
    // its label must be a label that image has.
    let l = a.labels.flatten_all().unwrap().to_vec1::<i64>().unwrap();
    let c = a
        .confidence
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for (lv, cv) in l.iter().zip(&c) {
        if *cv == 0.0 {
            assert_eq!(*lv, -1);
        } else {
            let src = ((cv - 0.5) * 10.0).round() as i64;
            assert!((src..src + 4).contains(lv), "label {lv} from image {src}");
        }
    }
}

#[test]
fn rescale_crop_pads_with_ignore_and_zero_confidence() {
    let (img, lab, conf) = unsup_inputs(2, 16, 16);
    let host = HostBatch::from_tensors(&img, &lab, &conf).unwrap();
    let out = rescale_crop(&host, (16, 16), (0.5, 0.5), 0).unwrap();
    // Scaled to 8x8 and padded to 16x16: 3/4 of each map is padding.
    let pad = out.labels.iter().filter(|&&v| v == IGNORE).count();
    assert_eq!(pad, 2 * (256 - 64));
    let zero = out.confidence.iter().filter(|&&v| v == 0.0).count();
    assert_eq!(zero, pad);
}
