//! Readers on tiny VOC-, Cityscapes- and SUN-shaped folders written to a temp dir, and
//! one test for each kind of bad input the readers must report (never panic).

use std::path::Path;

use image::{Rgb, RgbImage};
use reco_data::*;

mod common;
use common::*;

fn write_png_rgb(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, 0]))
        .save(path)
        .unwrap();
}

/// VOC-shaped folder: 6 train ids, 2 val ids, 24x20 images; id i has classes
/// {0, 1 + i % 20, 2 + i % 19} and an ignore border.
fn make_voc(root: &Path) -> Vec<String> {
    let ids: Vec<String> = (0..8).map(|i| format!("2007_{i:06}")).collect();
    std::fs::write(root.join("train_aug.txt"), ids[..6].join("\n") + "\n").unwrap();
    std::fs::write(root.join("val.txt"), ids[6..].join("\n")).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let i = i as u8;
        write_rgb(&root.join(format!("JPEGImages/{id}.jpg")), 24, 20, i as u32);
        write_label(
            &root.join(format!("SegmentationClassAug/{id}.png")),
            24,
            20,
            |x, y| {
                if y == 0 {
                    255
                } else if x < 8 {
                    0
                } else if x < 16 {
                    1 + i % 20
                } else {
                    2 + i % 19
                }
            },
        );
    }
    ids
}

fn make_cityscapes(root: &Path) {
    for (split, city, n) in [
        ("train", "aachen", 3),
        ("train", "bochum", 2),
        ("val", "lindau", 2),
    ] {
        for k in 0..n {
            let base = format!("{city}_{k:06}_000019");
            write_png_rgb(
                &root.join(format!("leftImg8bit/{split}/{city}/{base}_leftImg8bit.png")),
                32,
                16,
            );
            // labelIds: 7 (road), 26 (car), 0 (unlabeled), 33 (bicycle) in quarters.
            write_label(
                &root.join(format!("gtFine/{split}/{city}/{base}_gtFine_labelIds.png")),
                32,
                16,
                |x, _| [7, 26, 0, 33][(x / 8) as usize],
            );
        }
    }
}

fn make_sun(root: &Path) {
    let train: Vec<String> = (1..=4).map(|i| format!("train-{i:06}")).collect();
    let val: Vec<String> = (1..=2).map(|i| format!("test-{i:06}")).collect();
    std::fs::write(root.join("train.txt"), train.join("\n")).unwrap();
    std::fs::write(root.join("val.txt"), val.join("\n")).unwrap();
    for (i, id) in train.iter().chain(&val).enumerate() {
        write_rgb(&root.join(format!("images/{id}.jpg")), 20, 15, i as u32);
        write_label(&root.join(format!("labels/{id}.png")), 20, 15, |x, _| {
            if x < 5 {
                0
            } else if x < 10 {
                1
            } else {
                37 - i as u8
            }
        });
    }
}

#[test]
fn pascal_reads_images_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    assert_eq!(ds.ids(Subset::Train), &ids[..6]);
    assert_eq!(ds.ids(Subset::Val), &ids[6..]);
    let s = ds.load(&ids[3]).unwrap();
    assert_eq!(s.image.dimensions(), (24, 20));
    assert_eq!(s.label.get_pixel(2, 0)[0], 255);
    assert_eq!(s.label.get_pixel(2, 5)[0], 0);
    assert_eq!(s.label.get_pixel(10, 5)[0], 4);
    assert_eq!(s.label.get_pixel(20, 5)[0], 5);
    assert_eq!(classes_present(&s.label), vec![0, 4, 5]);
}

#[test]
fn pascal_palette_labels_and_segmentation_class_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    // Replace one label by a palette PNG in SegmentationClass/ only.
    std::fs::remove_file(
        dir.path()
            .join(format!("SegmentationClassAug/{}.png", ids[7])),
    )
    .unwrap();
    write_palette_label(
        &dir.path().join(format!("SegmentationClass/{}.png", ids[7])),
        24,
        20,
        |x, _| if x < 12 { 15 } else { 255 },
    );
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let s = ds.load(&ids[7]).unwrap();
    assert_eq!(s.label.get_pixel(3, 3)[0], 15);
    assert_eq!(s.label.get_pixel(20, 3)[0], 255);
    ds.check_id(&ids[7]).unwrap();
}

#[test]
fn cityscapes_walks_maps_and_resizes() {
    let dir = tempfile::tempdir().unwrap();
    make_cityscapes(dir.path());
    let ds = open(DatasetKind::Cityscapes, Some(dir.path())).unwrap();
    let train = ds.ids(Subset::Train);
    assert_eq!(train.len(), 5);
    assert_eq!(train[0], "train/aachen/aachen_000000_000019");
    assert_eq!(train[4], "train/bochum/bochum_000001_000019");
    assert_eq!(
        ds.ids(Subset::Val),
        &[
            "val/lindau/lindau_000000_000019",
            "val/lindau/lindau_000001_000019"
        ]
    );
    let s = ds.load(&train[1]).unwrap();
    assert_eq!(s.image.dimensions(), (1024, 512));
    assert_eq!(s.label.dimensions(), (1024, 512));
    // Quarters: road -> 0, car -> 13, unlabeled -> ignore, bicycle -> 18 (nearest keeps them).
    for (x, want) in [(10, 0), (300, 13), (600, 255), (1000, 18)] {
        assert_eq!(s.label.get_pixel(x, 100)[0], want, "x={x}");
    }
    assert_eq!(
        classes_present(&ds.load_label(&train[0]).unwrap()),
        vec![0, 13, 18]
    );
}

#[test]
fn sun_maps_zero_to_ignore_and_shifts_classes() {
    let dir = tempfile::tempdir().unwrap();
    make_sun(dir.path());
    let ds = open(DatasetKind::Sun, Some(dir.path())).unwrap();
    assert_eq!(ds.ids(Subset::Train).len(), 4);
    let s = ds.load("train-000002").unwrap();
    // Resized 20x15 -> 512x384 (x scale 25.6): raw columns 0-4 -> 0..128, 5-9 -> 128..256.
    assert_eq!(s.image.dimensions(), (512, 384));
    assert_eq!(s.label.dimensions(), (512, 384));
    assert_eq!(s.label.get_pixel(30, 10)[0], 255); // raw 0: unlabelled
    assert_eq!(s.label.get_pixel(180, 10)[0], 0); // raw 1 -> class 0
    assert_eq!(s.label.get_pixel(400, 10)[0], 35); // raw 37 - 1 = 36 -> class 35
    assert_eq!(
        classes_present(&ds.load_label("train-000002").unwrap()),
        vec![0, 35]
    );
}

// ---- bad input: an error naming the file and the problem, never a panic ----

#[test]
fn missing_image_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    std::fs::remove_file(dir.path().join(format!("JPEGImages/{}.jpg", ids[0]))).unwrap();
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let e = err_text(ds.load(&ids[0]));
    assert!(
        e.contains(&format!("{}.jpg", ids[0])) && e.contains("not found"),
        "{e}"
    );
    assert!(ds.check_id(&ids[0]).is_err());
}

#[test]
fn missing_label_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    make_sun(dir.path());
    std::fs::remove_file(dir.path().join("labels/train-000001.png")).unwrap();
    let ds = open(DatasetKind::Sun, Some(dir.path())).unwrap();
    let e = err_text(ds.load("train-000001"));
    assert!(
        e.contains("train-000001.png") && e.contains("label not found"),
        "{e}"
    );
}

#[test]
fn corrupt_image_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    std::fs::write(
        dir.path().join(format!("JPEGImages/{}.jpg", ids[1])),
        b"not a jpeg at all",
    )
    .unwrap();
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let e = err_text(ds.load(&ids[1]));
    assert!(
        e.contains(&format!("{}.jpg", ids[1])) && e.contains("cannot read image"),
        "{e}"
    );
}

#[test]
fn corrupt_label_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    make_cityscapes(dir.path());
    let p = dir
        .path()
        .join("gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap(); // truncated PNG
    let ds = open(DatasetKind::Cityscapes, Some(dir.path())).unwrap();
    let e = err_text(ds.load("train/aachen/aachen_000001_000019"));
    assert!(
        e.contains("aachen_000001_000019_gtFine_labelIds.png") && e.contains("cannot read label"),
        "{e}"
    );
}

#[test]
fn colour_label_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    write_png_rgb(
        &dir.path()
            .join(format!("SegmentationClassAug/{}.png", ids[2])),
        24,
        20,
    );
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let e = err_text(ds.load(&ids[2]));
    assert!(e.contains("grayscale or palette"), "{e}");
}

#[test]
fn label_size_mismatch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    write_label(
        &dir.path()
            .join(format!("SegmentationClassAug/{}.png", ids[0])),
        23,
        20,
        |_, _| 0,
    );
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let e = err_text(ds.load(&ids[0]));
    assert!(
        e.contains("23x20") && e.contains("24x20") && e.contains(&format!("{}.png", ids[0])),
        "{e}"
    );
}

#[test]
fn class_out_of_range_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    write_label(
        &dir.path()
            .join(format!("SegmentationClassAug/{}.png", ids[0])),
        24,
        20,
        |x, y| {
            if (x, y) == (5, 3) {
                21
            } else {
                0
            }
        },
    );
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let e = err_text(ds.load(&ids[0]));
    assert!(e.contains("x=5, y=3") && e.contains("value 21"), "{e}");
    // The sampler reads every label to pick all 6: same error, no panic.
    let e = err_text(Split::sample(ds.as_ref(), 6, 0, None));
    assert!(e.contains("value 21"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    make_sun(dir.path());
    write_label(
        &dir.path().join("labels/train-000003.png"),
        20,
        15,
        |_, _| 38,
    );
    let ds = open(DatasetKind::Sun, Some(dir.path())).unwrap();
    let e = err_text(ds.load("train-000003"));
    assert!(
        e.contains("value 38") && e.contains("train-000003.png"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    make_cityscapes(dir.path());
    write_label(
        &dir.path()
            .join("gtFine/val/lindau/lindau_000000_000019_gtFine_labelIds.png"),
        32,
        16,
        |_, _| 40,
    );
    let ds = open(DatasetKind::Cityscapes, Some(dir.path())).unwrap();
    let e = err_text(ds.load("val/lindau/lindau_000000_000019"));
    assert!(e.contains("value 40"), "{e}");
}

#[test]
fn empty_list_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    make_voc(dir.path());
    std::fs::write(dir.path().join("val.txt"), "\n\n").unwrap();
    let e = err_text(open(DatasetKind::Pascal, Some(dir.path())));
    assert!(e.contains("val.txt") && e.contains("empty"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("leftImg8bit/train/aachen")).unwrap();
    std::fs::create_dir_all(dir.path().join("leftImg8bit/val")).unwrap();
    let e = err_text(open(DatasetKind::Cityscapes, Some(dir.path())));
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn missing_dataset_names_the_xtask_command() {
    let dir = tempfile::tempdir().unwrap();
    for kind in [
        DatasetKind::Pascal,
        DatasetKind::Cityscapes,
        DatasetKind::Sun,
    ] {
        let e = err_text(open(kind, Some(&dir.path().join("nothing"))));
        assert!(
            e.contains(&format!("cargo xtask fetch-data --dataset {kind}")),
            "{e}"
        );
    }
}

#[test]
fn split_file_naming_missing_images_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let split = Split::sample(ds.as_ref(), 2, 0, None).unwrap();
    let path = dir.path().join("splits/s.json");
    split.save(&path).unwrap();
    assert_eq!(Split::load(&path, ds.as_ref()).unwrap(), split);

    // An id that the dataset does not list.
    let mut bad = split.clone();
    bad.unlabelled.push("2099_000000".into());
    bad.save(&path).unwrap();
    let e = err_text(Split::load(&path, ds.as_ref()));
    assert!(
        e.contains("s.json") && e.contains("2099_000000") && e.contains("1 image"),
        "{e}"
    );

    // A listed id whose image file is gone.
    split.save(&path).unwrap();
    std::fs::remove_file(
        dir.path()
            .join(format!("JPEGImages/{}.jpg", split.labelled[0])),
    )
    .unwrap();
    let e = err_text(Split::load(&path, ds.as_ref()));
    assert!(e.contains(&split.labelled[0]), "{e}");

    // Not JSON, wrong dataset, no file.
    std::fs::write(&path, "{ nope").unwrap();
    assert!(err_text(Split::load(&path, ds.as_ref())).contains("invalid split file"));
    let syn = open(DatasetKind::Synthetic, None).unwrap();
    split.save(&path).unwrap();
    assert!(err_text(Split::load(&path, syn.as_ref())).contains("split of pascal"));
    assert!(
        err_text(Split::load(&dir.path().join("none.json"), ds.as_ref())).contains("not found")
    );
    let _ = ids;
}

#[test]
fn loader_reads_folders_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let ids = make_voc(dir.path());
    let ds = open(DatasetKind::Pascal, Some(dir.path())).unwrap();
    let mut cfg = TrainLoaderConfig::labelled(DatasetKind::Pascal, 0);
    cfg.batch_size = 2;
    cfg.aug.crop_size = (16, 16);
    let b = Loader::train(ds.clone(), ids[..6].to_vec(), cfg)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(b.images.dims(), &[2, 3, 16, 16]);
    let mut vcfg = ValLoaderConfig::new(DatasetKind::Pascal);
    vcfg.eval_size = (24, 24);
    let v: Vec<_> = Loader::val(ds, ids[6..].to_vec(), vcfg).unwrap().collect();
    assert_eq!(v.len(), 1);
    let v = v.into_iter().next().unwrap().unwrap();
    assert_eq!(v.labels.dims(), &[2, 24, 24]);
}
