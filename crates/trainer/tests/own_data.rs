//! "Your own data" end to end, on folders the test writes: a labelled folder
//! (`--dataset folder`) plus a folder of unlabelled photos with one corrupt file
//! (`--unlabelled-root`) train for a few steps with evaluation; the run writes
//! relation.png and the relation matrix; `eval` and `predict --explain` work on the
//! checkpoint; bad folders end in errors that name the problem.

use std::path::Path;

use image::{GrayImage, Luma, Rgb, RgbImage};

mod common;

use common::{fails, run_ok};

const SIZE: u32 = 40;
const CLASSES: [(&str, [u8; 3]); 3] = [
    ("background", [20, 20, 20]),
    ("red square", [220, 30, 30]),
    ("green square", [30, 200, 60]),
];

/// Image `i`: background with a square of class 1 or 2 (both in every third image), the
/// label beside it.
fn sample(i: u32) -> (RgbImage, GrayImage) {
    let mut img = RgbImage::from_pixel(SIZE, SIZE, Rgb(CLASSES[0].1));
    let mut label = GrayImage::from_pixel(SIZE, SIZE, Luma([0]));
    let mut square = |class: u8, x0: u32, y0: u32| {
        for y in y0..y0 + 14 {
            for x in x0..x0 + 14 {
                img.put_pixel(x, y, Rgb(CLASSES[class as usize].1));
                label.put_pixel(x, y, Luma([class]));
            }
        }
    };
    let class = 1 + (i % 2) as u8;
    square(class, 3 + (i * 5) % 20, 4 + (i * 3) % 20);
    if i.is_multiple_of(3) {
        square(3 - class, 22, 22);
    }
    // One ignore pixel row: 255 must stay ignore.
    for x in 0..SIZE {
        label.put_pixel(x, SIZE - 1, Luma([255]));
    }
    (img, label)
}

fn labelled_folder(root: &Path) {
    std::fs::create_dir_all(root.join("images")).unwrap();
    std::fs::create_dir_all(root.join("labels")).unwrap();
    let classes: Vec<String> = CLASSES
        .iter()
        .map(|(n, [r, g, b])| format!("{n} {r} {g} {b}"))
        .collect();
    std::fs::write(root.join("classes.txt"), classes.join("\n") + "\n").unwrap();
    let mut train = String::new();
    let mut val = String::new();
    for i in 0..12 {
        let (img, label) = sample(i);
        let id = format!("img{i:02}");
        img.save(root.join("images").join(format!("{id}.png")))
            .unwrap();
        label
            .save(root.join("labels").join(format!("{id}.png")))
            .unwrap();
        let list = if i < 9 { &mut train } else { &mut val };
        list.push_str(&id);
        list.push('\n');
    }
    std::fs::write(root.join("train.txt"), train).unwrap();
    std::fs::write(root.join("val.txt"), val).unwrap();
}

/// Four photos of other sizes (one smaller than the crop, one in a sub-folder, one jpg)
/// and a corrupt one.
fn unlabelled_folder(root: &Path) {
    std::fs::create_dir_all(root.join("holiday")).unwrap();
    for (i, (w, h)) in [(50u32, 36u32), (28, 30), (64, 48)].iter().enumerate() {
        let (img, _) = sample(20 + i as u32);
        let img = image::imageops::resize(&img, *w, *h, image::imageops::FilterType::Nearest);
        img.save(root.join(format!("photo{i}.png"))).unwrap();
    }
    let (img, _) = sample(30);
    img.save(root.join("holiday").join("beach.jpg")).unwrap();
    std::fs::write(
        root.join("holiday").join("broken.jpg"),
        b"\xff\xd8 not a photo",
    )
    .unwrap();
}

#[test]
fn a_labelled_folder_and_a_photo_folder_train_evaluate_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mydata");
    let photos = dir.path().join("photos");
    let out = dir.path().join("run");
    labelled_folder(&data);
    unlabelled_folder(&photos);
    let (data_s, photos_s, out_s) = (
        data.to_str().unwrap(),
        photos.to_str().unwrap(),
        out.to_str().unwrap(),
    );

    // `split` reads the folder's class names.
    let split = run_ok(&[
        "split",
        "--dataset",
        "folder",
        "--data-root",
        data_s,
        "--num-labels",
        "4",
    ]);
    assert!(split.contains("red square"), "{split}");

    #[rustfmt::skip]
    let log = run_ok(&[
        "train", "--dataset", "folder", "--data-root", data_s, "--unlabelled-root", photos_s,
        "--num-labels", "4", "--backbone", "resnet18", "--iters", "2", "--eval-every", "2",
        "--log-every", "1", "--batch-size", "2", "--crop-size", "32", "--val-limit", "2",
        "--num-queries", "16", "--num-negatives", "32", "--output-dim", "16",
        "--num-threads", "2", "--strong-threshold", "0.9..0.99@0..2", "--out", out_s,
    ]);
    assert!(
        log.contains("broken.jpg"),
        "the skipped file is not named:\n{log}"
    );
    assert!(
        log.contains("unlabelled images: 4 from") && log.contains("1 unreadable files skipped"),
        "{log}"
    );
    assert!(
        log.contains("green square"),
        "the final table names the classes:\n{log}"
    );

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["config"]["num_classes"], 3);
    assert_eq!(config["config"]["strong_threshold"], "0.9..0.99@0..2");
    assert_eq!(config["unlabelled"]["images"], 4);
    let skipped = config["unlabelled"]["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("broken.jpg"));
    assert_eq!(config["class_names"][2], "green square");

    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let thresholds: Vec<f64> = lines
        .iter()
        .filter(|l| l["kind"] == "train")
        .map(|l| l["strong_threshold"].as_f64().unwrap())
        .collect();
    // The ramp's value at steps 0 and 1.
    assert_eq!(thresholds.len(), 2);
    assert!((thresholds[0] - 0.9).abs() < 1e-12 && (thresholds[1] - 0.945).abs() < 1e-12);
    let eval = lines
        .iter()
        .find(|l| l["kind"] == "eval")
        .expect("an eval line");
    let rows = eval["relation"].as_array().expect("the relation matrix");
    assert_eq!(rows.len(), 3);
    for (c, row) in rows.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), 3);
        assert!(row[c].is_null(), "the diagonal is masked: {row:?}");
        // Every class is in the two validation images, so each row is a distribution
        // over the two other classes.
        let sum: f64 = row.iter().filter_map(|v| v.as_f64()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "row {c} sums to {sum}: {row:?}");
    }
    let relation = image::open(out.join("relation.png")).expect("relation.png");
    assert!(relation.width() > 100 && relation.height() > 100);

    // eval finds the folder through the run's config.json.
    let ckpt = out.join("best.safetensors");
    let ckpt_s = ckpt.to_str().unwrap();
    let table = run_ok(&["eval", "--checkpoint", ckpt_s]);
    assert!(table.contains("red square"), "{table}");

    let preds = dir.path().join("preds");
    let input = data.join("images").join("img10.png");
    #[rustfmt::skip]
    let log = run_ok(&[
        "predict", "--checkpoint", ckpt_s, "--input", input.to_str().unwrap(),
        "--output", preds.to_str().unwrap(), "--explain",
    ]);
    // The run's final strong threshold (0.99) from its config.json.
    assert!(log.contains("[0.7, 0.99)"), "{log}");
    for name in [
        "img10_mask.png",
        "img10_overlay.png",
        "img10_confidence.png",
        "img10_hard.png",
    ] {
        let img = image::open(preds.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.width(), img.height()), (SIZE, SIZE), "{name}");
    }
    // The mask uses the colours of classes.txt.
    let mask = image::open(preds.join("img10_mask.png"))
        .unwrap()
        .into_rgb8();
    assert!(mask
        .pixels()
        .all(|p| CLASSES.iter().any(|(_, c)| p.0 == *c)));
}

#[test]
fn bad_folders_end_in_errors_that_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mydata");
    labelled_folder(&data);
    std::fs::remove_file(data.join("classes.txt")).unwrap();
    let e = fails(&[
        "train",
        "--dataset",
        "folder",
        "--data-root",
        data.to_str().unwrap(),
        "--iters",
        "1",
    ]);
    assert!(e.contains("classes.txt"), "{e}");

    let e = fails(&["train", "--dataset", "folder", "--iters", "1"]);
    assert!(e.contains("--data-root"), "{e}");

    let empty = dir.path().join("nophotos");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "no photos here").unwrap();
    let e = fails(&[
        "train",
        "--unlabelled-root",
        empty.to_str().unwrap(),
        "--iters",
        "1",
    ]);
    assert!(
        e.contains("--unlabelled-root") && e.contains("is empty"),
        "{e}"
    );

    let e = fails(&["train", "--strong-threshold", "0.9..1.5@0..10"]);
    assert!(e.contains("strong threshold"), "{e}");
}
