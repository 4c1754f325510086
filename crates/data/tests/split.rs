//! Properties of the class-balanced few-label sampler.

use std::collections::HashSet;
use std::path::Path;

use image::{GrayImage, Rgb, RgbImage};
use reco_data::*;

fn synthetic() -> std::sync::Arc<dyn SegDataset> {
    open(DatasetKind::Synthetic, None).unwrap()
}

/// Replays the picks and checks each one (after the first) contained a class that was
/// least-picked just before it was accepted.
fn assert_least_seen_class_is_picked(ds: &dyn SegDataset, labelled: &[String]) {
    let n = ds.num_classes();
    let mut counter = vec![0usize; n];
    for (k, id) in labelled.iter().enumerate() {
        let classes = classes_present(&ds.load_label(id).unwrap());
        if k > 0 {
            let min = *counter.iter().min().unwrap();
            assert!(
                classes.iter().any(|&c| counter[c as usize] == min),
                "pick {k} ({id}, classes {classes:?}) holds no least-picked class; counts {counter:?}"
            );
        }
        for c in classes {
            counter[c as usize] += 1;
        }
    }
}

#[test]
fn greedy_sampler_properties_on_synthetic() {
    let ds = synthetic();
    let min = DatasetKind::Synthetic.defaults().min_classes;
    let split = Split::sample(ds.as_ref(), 40, 3, None).unwrap();
    assert_eq!(split.labelled.len(), 40);
    // Each labelled image has the minimum number of classes.
    for id in &split.labelled {
        let classes = classes_present(&ds.load_label(id).unwrap());
        assert!(classes.len() >= min, "{id}: {classes:?}");
    }
    assert_least_seen_class_is_picked(ds.as_ref(), &split.labelled);
    // Labelled and unlabelled partition the training ids.
    let l: HashSet<_> = split.labelled.iter().collect();
    assert_eq!(l.len(), 40, "no duplicates");
    assert!(split.unlabelled.iter().all(|u| !l.contains(u)));
    assert_eq!(
        split.labelled.len() + split.unlabelled.len(),
        ds.ids(Subset::Train).len()
    );
    // Balanced: every class is in several labelled images.
    let counts = split.class_counts(ds.as_ref()).unwrap();
    assert!(counts.iter().all(|&c| c >= 5), "{counts:?}");
}

#[test]
fn same_seed_same_split_other_seed_other_split() {
    let ds = synthetic();
    let a = Split::sample(ds.as_ref(), 10, 0, None).unwrap();
    let b = Split::sample(ds.as_ref(), 10, 0, None).unwrap();
    let c = Split::sample(ds.as_ref(), 10, 1, None).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.labelled, c.labelled);
}

#[test]
fn zero_labels_means_all_labelled_and_too_many_is_an_error() {
    let ds = synthetic();
    let all = Split::sample(ds.as_ref(), 0, 0, Some(Partial::P5)).unwrap();
    assert_eq!(all.labelled, ds.ids(Subset::Train));
    assert_eq!(all.unlabelled, ds.ids(Subset::Train));
    assert_eq!(all.partial, Some(Partial::P5));
    let e = Split::sample(ds.as_ref(), 5000, 0, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("only 2000"), "{e}");
}

#[test]
fn split_json_round_trip_keeps_every_field() {
    let ds = synthetic();
    let dir = tempfile::tempdir().unwrap();
    let s = Split::sample(ds.as_ref(), 12, 9, Some(Partial::P25)).unwrap();
    let p = dir.path().join("split.json");
    s.save(&p).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    for key in [
        "\"dataset\": \"synthetic\"",
        "\"seed\": 9",
        "\"partial\": \"p25\"",
        "\"labelled\"",
        "\"unlabelled\"",
    ] {
        assert!(text.contains(key), "{key} missing in {text:.200}");
    }
    assert_eq!(Split::load(&p, ds.as_ref()).unwrap(), s);
}

fn write_pair(root: &Path, id: &str, classes: &[u8]) {
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("labels")).unwrap();
    RgbImage::from_pixel(8, 4, Rgb([1, 2, 3]))
        .save(root.join(format!("images/{id}.jpg")))
        .unwrap();
    // Raw SUN labels: class c is stored as c + 1, one column per class.
    GrayImage::from_fn(8, 4, |x, _| {
        image::Luma([classes.get(x as usize).map_or(0, |c| c + 1)])
    })
    .save(root.join(format!("labels/{id}.png")))
    .unwrap();
}

#[test]
fn sun_per_class_sampler_always_serves_the_least_picked_class() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for i in 0..60u32 {
        let id = format!("train-{i:06}");
        // A common class (0), a mid class and a rare class (only some images).
        let mut classes = vec![0u8, 1 + (i % 5) as u8];
        if i % 10 == 0 {
            classes.push(30 + (i / 10) as u8);
        }
        write_pair(dir.path(), &id, &classes);
        ids.push(id);
    }
    std::fs::write(dir.path().join("train.txt"), ids.join("\n")).unwrap();
    std::fs::write(dir.path().join("val.txt"), &ids[0]).unwrap();
    let ds = open(DatasetKind::Sun, Some(dir.path())).unwrap();
    let split = Split::sample(ds.as_ref(), 12, 4, None).unwrap();
    assert_eq!(split.labelled.len(), 12);
    let counts = split.class_counts(ds.as_ref()).unwrap();
    // All 6 rare classes (30..=35) are present in only one image each: the sampler,
    // serving the least-picked class first, must have taken every one of them.
    for c in 30..36 {
        assert_eq!(counts[c], 1, "rare class {c}: {counts:?}");
    }
    // The five mid classes are each taken at least once.
    for c in 1..6 {
        assert!(counts[c] >= 1, "class {c}: {counts:?}");
    }
    assert_eq!(split, Split::sample(ds.as_ref(), 12, 4, None).unwrap());
}

#[test]
fn greedy_sampler_sets_aside_unreachable_classes_instead_of_looping() {
    // VOC-shaped: class 20 appears only in an image with 2 classes (below the minimum of
    // 3), so it stays least-picked forever; the original would loop; we must finish.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
    std::fs::create_dir_all(root.join("SegmentationClassAug")).unwrap();
    let mut ids = Vec::new();
    for i in 0..12u8 {
        let id = format!("img_{i:02}");
        let classes: Vec<u8> = if i == 0 {
            vec![0, 20]
        } else {
            vec![0, 1 + i % 4, 5 + i % 3]
        };
        RgbImage::from_pixel(6, 4, Rgb([9, 9, 9]))
            .save(root.join(format!("JPEGImages/{id}.jpg")))
            .unwrap();
        GrayImage::from_fn(6, 4, |x, _| {
            image::Luma([classes[(x as usize) % classes.len()]])
        })
        .save(root.join(format!("SegmentationClassAug/{id}.png")))
        .unwrap();
        ids.push(id);
    }
    std::fs::write(root.join("train_aug.txt"), ids.join("\n")).unwrap();
    std::fs::write(root.join("val.txt"), &ids[0]).unwrap();
    let ds = open(DatasetKind::Pascal, Some(root)).unwrap();
    let split = Split::sample(ds.as_ref(), 6, 0, None).unwrap();
    assert_eq!(split.labelled.len(), 6);
    assert!(!split.labelled.contains(&ids[0]));
    // Asking for more images than have 3 classes is an error, not a hang.
    let e = Split::sample(ds.as_ref(), 12, 0, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least 3 classes"), "{e}");
}
