//! The generic labelled folder and the unlabelled photo folder, on small folders written
//! to a temp dir: loading, the split, the sampler, batches, and every bad input reported
//! with the file named (never a panic).

use std::path::Path;
use std::sync::Arc;

use reco_data::datasets::*;
use reco_data::*;

mod common;
use common::*;

const CLASSES: &str = "background 10 20 30\nred car\ntree 0 200 0\n\n";

/// 20 images `img-00`..`img-19` (even: png, odd: jpg), 24x20 (the last 30x28); image i
/// holds background, class 1 + i % 2 in a block, and class 2 for i % 3 == 0; an ignore
/// row at the bottom.
fn make_folder(root: &Path) -> Vec<String> {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("classes.txt"), CLASSES).unwrap();
    (0..20u32)
        .map(|i| {
            let id = format!("img-{i:02}");
            let (w, h) = if i == 19 { (30, 28) } else { (24, 20) };
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            write_rgb(&root.join(format!("images/{id}.{ext}")), w, h, i);
            write_palette_label(&root.join(format!("labels/{id}.png")), w, h, |x, y| {
                if y == h - 1 {
                    255
                } else if x < 8 && y < 8 {
                    1 + (i % 2) as u8
                } else if i % 3 == 0 && x > 16 {
                    2
                } else {
                    0
                }
            });
            id
        })
        .collect()
}

#[test]
fn labelled_folder_loads_with_a_seeded_split_and_the_sampler_picks_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mydata");
    let all = make_folder(&root);
    let ds = FolderDataset::open(&FolderConfig::new(&root)).unwrap();
    assert_eq!(ds.kind(), DatasetKind::Folder);
    assert_eq!(ds.num_classes(), 3);
    assert_eq!(ds.class_names(), vec!["background", "red car", "tree"]);
    assert_eq!(
        ds.palette(),
        vec![[10, 20, 30], default_class_color(1), [0, 200, 0]]
    );
    // 10 % of 20 ids are validation ids; train and val partition the folder.
    let (train, val) = (ds.ids(Subset::Train).to_vec(), ds.ids(Subset::Val).to_vec());
    assert_eq!((train.len(), val.len()), (18, 2));
    let mut both: Vec<String> = train.iter().chain(&val).cloned().collect();
    both.sort();
    assert_eq!(both, all);
    assert_eq!(
        ds.split_source(),
        &FolderSplit::Seeded {
            seed: 0,
            val_fraction: 0.1,
            train: 18,
            val: 2
        }
    );
    let json = serde_json::to_string(ds.split_source()).unwrap();
    assert!(
        json.contains("\"source\":\"seeded\"") && json.contains("\"val_fraction\":0.1"),
        "{json}"
    );
    // The split is a function of the seed.
    let again = FolderDataset::open(&FolderConfig::new(&root)).unwrap();
    assert_eq!(again.ids(Subset::Val), val);
    let other_val: Vec<Vec<String>> = (1..6)
        .map(|seed| {
            let cfg = FolderConfig {
                split_seed: seed,
                ..FolderConfig::new(&root)
            };
            FolderDataset::open(&cfg).unwrap().ids(Subset::Val).to_vec()
        })
        .collect();
    assert!(
        other_val.iter().any(|v| *v != val),
        "the split ignores its seed"
    );
    let quarter = FolderConfig {
        val_fraction: 0.25,
        ..FolderConfig::new(&root)
    };
    assert_eq!(
        FolderDataset::open(&quarter)
            .unwrap()
            .ids(Subset::Val)
            .len(),
        5
    );

    // Palette labels read as class ids; jpg and png images both load.
    for id in ["img-03", "img-04"] {
        let s = ds.load(id).unwrap();
        assert_eq!(s.image.dimensions(), (24, 20));
        let want_block = if id == "img-03" { 2 } else { 1 };
        assert_eq!(s.label.get_pixel(0, 0).0[0], want_block);
        assert_eq!(
            s.label.get_pixel(20, 5).0[0],
            if id == "img-03" { 2 } else { 0 }
        );
        assert_eq!(s.label.get_pixel(3, 19).0[0], IGNORE);
        assert_eq!(ds.load_label(id).unwrap(), s.label);
    }
    // The evaluation size covers the largest validation image.
    let eval = ds.eval_size();
    let want = if val.iter().any(|v| v == "img-19") {
        (28, 30)
    } else {
        (20, 24)
    };
    assert_eq!(eval, want);
    assert_eq!(ValLoaderConfig::for_dataset(&ds).eval_size, want);

    // The class-balanced sampler works on the folder's classes.
    let ds: Arc<dyn SegDataset> = Arc::new(ds);
    let split = Split::sample(ds.as_ref(), 4, 0, None).unwrap();
    assert_eq!(split.dataset, DatasetKind::Folder);
    assert_eq!(split.labelled.len(), 4);
    assert!(split.labelled.iter().all(|id| train.contains(id)));
    let counts = split.class_counts(ds.as_ref()).unwrap();
    assert_eq!(counts.len(), 3);
    assert!(
        counts.iter().all(|&n| n > 0),
        "every class picked: {counts:?}"
    );
    let table = class_table_named(&ds.class_names(), &counts);
    assert!(table.contains("red car"), "{table}");
    // A saved split reloads against the folder.
    let path = tmp.path().join("split.json");
    split.save(&path).unwrap();
    assert_eq!(Split::load(&path, ds.as_ref()).unwrap(), split);

    // Batches of the labelled branch and of the evaluation.
    let mut cfg = TrainLoaderConfig::labelled(DatasetKind::Folder, 1);
    cfg.batch_size = 3;
    cfg.aug.crop_size = (16, 16);
    cfg.num_threads = 2;
    let b = Loader::train(ds.clone(), split.labelled.clone(), cfg)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(b.images.dims(), &[3, 3, 16, 16]);
    let labels: Vec<i64> = b.labels.flatten_all().unwrap().to_vec1().unwrap();
    assert!(labels.iter().all(|&v| (-1..3).contains(&v)));
    let mut vcfg = ValLoaderConfig::for_dataset(ds.as_ref());
    vcfg.num_threads = 2;
    let vb: Vec<Batch> = Loader::val(ds.clone(), val.to_vec(), vcfg)
        .unwrap()
        .collect::<Result<_>>()
        .unwrap();
    assert_eq!(vb[0].images.dims()[2..], [want.0, want.1]);

    // open() by kind needs the root.
    assert!(open(DatasetKind::Folder, Some(&root)).is_ok());
    assert!(err_text(open(DatasetKind::Folder, None)).contains("--data-root"));
}

#[test]
fn list_files_decide_the_split() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_folder(root);
    std::fs::write(root.join("train.txt"), "img-00\nimg-01\nimg-02\n").unwrap();
    std::fs::write(root.join("val.txt"), "img-05\n\nimg-06\n").unwrap();
    let ds = FolderDataset::open(&FolderConfig::new(root)).unwrap();
    assert_eq!(ds.ids(Subset::Train), ["img-00", "img-01", "img-02"]);
    assert_eq!(ds.ids(Subset::Val), ["img-05", "img-06"]);
    assert_eq!(ds.split_source(), &FolderSplit::ListFiles);
    // Only train.txt: the other images validate.
    std::fs::remove_file(root.join("val.txt")).unwrap();
    let ds = FolderDataset::open(&FolderConfig::new(root)).unwrap();
    assert_eq!(ds.ids(Subset::Val).len(), 17);
    assert_eq!(ds.split_source(), &FolderSplit::TrainList);
    // A listed id without files names the list and the id.
    std::fs::write(root.join("train.txt"), "img-00\nholiday-42\n").unwrap();
    let e = err_text(FolderDataset::open(&FolderConfig::new(root)));
    assert!(e.contains("train.txt") && e.contains("holiday-42"), "{e}");
    // A listed id whose label is missing.
    std::fs::write(root.join("train.txt"), "img-00\nimg-01\n").unwrap();
    std::fs::remove_file(root.join("labels/img-01.png")).unwrap();
    let e = err_text(FolderDataset::open(&FolderConfig::new(root)));
    assert!(
        e.contains("train.txt") && e.contains("labels/img-01.png"),
        "{e}"
    );
}

#[test]
fn bad_labelled_folders_are_reported_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_folder(root);
    let open_it = || FolderDataset::open(&FolderConfig::new(root));

    // Label value above the class list (3 classes: 0..=2 and 255).
    write_palette_label(&root.join("labels/img-02.png"), 24, 20, |x, _| {
        if x == 5 {
            3
        } else {
            0
        }
    });
    let ds = open_it().unwrap();
    let e = err_text(ds.load("img-02"));
    assert!(
        e.contains("img-02.png") && e.contains("value 3") && e.contains("x=5"),
        "{e}"
    );
    // The sampler meets it too, as an error.
    if ds.ids(Subset::Train).iter().any(|i| i == "img-02") {
        assert!(Split::sample(&ds, 17, 0, None).is_err());
    }

    // Label of another size than its image.
    write_palette_label(&root.join("labels/img-02.png"), 23, 20, |_, _| 0);
    let e = err_text(open_it().unwrap().load("img-02"));
    assert!(
        e.contains("img-02.png") && e.contains("23x20") && e.contains("24x20"),
        "{e}"
    );
    write_palette_label(&root.join("labels/img-02.png"), 24, 20, |_, _| 0);

    // Duplicate class names.
    std::fs::write(
        root.join("classes.txt"),
        "background\ncar 1 2 3\ntree\ncar\n",
    )
    .unwrap();
    let e = err_text(open_it());
    assert!(
        e.contains("classes.txt") && e.contains("`car`") && e.contains("lines 2 and 4"),
        "{e}"
    );
    // An empty line between classes.
    std::fs::write(root.join("classes.txt"), "background\n\ntree\n").unwrap();
    let e = err_text(open_it());
    assert!(e.contains("classes.txt") && e.contains("line 2"), "{e}");
    // No class list at all.
    std::fs::remove_file(root.join("classes.txt")).unwrap();
    let e = err_text(open_it());
    assert!(e.contains("classes.txt") && e.contains("not found"), "{e}");
    std::fs::write(root.join("classes.txt"), CLASSES).unwrap();

    // An image without a label, when no list names the labelled ids.
    write_rgb(&root.join("images/extra.JPG"), 8, 8, 0);
    let e = err_text(open_it());
    assert!(e.contains("labels/extra.png"), "{e}");
    std::fs::remove_file(root.join("images/extra.JPG")).unwrap();

    // A corrupt image is an error naming it.
    std::fs::write(root.join("images/img-04.png"), b"not a png").unwrap();
    let ds = open_it();
    let e = match ds {
        Ok(ds) => err_text(ds.load("img-04")),
        Err(e) => e.to_string(), // a validation image: its header is read at opening
    };
    assert!(e.contains("img-04.png"), "{e}");

    // Not a folder.
    let e = err_text(FolderDataset::open(&FolderConfig::new(root.join("nope"))));
    assert!(e.contains("nope") && e.contains("not found"), "{e}");
    // A bad validation fraction.
    let cfg = FolderConfig {
        val_fraction: 1.0,
        ..FolderConfig::new(root)
    };
    assert!(err_text(FolderDataset::open(&cfg)).contains("fraction"));
}

#[test]
fn unlabelled_folder_skips_bad_files_pads_small_images_and_makes_batches() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    write_rgb(&root.join("a.jpg"), 40, 30, 1);
    write_rgb(&root.join("trip/day1/b.PNG"), 33, 47, 2);
    write_rgb(&root.join("trip/tiny.png"), 5, 3, 3);
    std::fs::write(root.join("trip/broken.jpg"), b"this is not a jpeg").unwrap();
    // A PNG whose header is fine but whose data is cut: found only when decoded.
    write_rgb(&root.join("cut.png"), 64, 64, 4);
    let bytes = std::fs::read(root.join("cut.png")).unwrap();
    std::fs::write(root.join("cut.png"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(root.join("notes.txt"), b"not an image, not counted").unwrap();

    let src = Arc::new(UnlabelledFolder::open(&root).unwrap());
    assert_eq!(
        src.image_ids(),
        ["a.jpg", "cut.png", "trip/day1/b.PNG", "trip/tiny.png"]
    );
    let skipped = src.skipped();
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].path.ends_with("trip/broken.jpg"));
    assert_eq!(src.skipped_count(), 1);

    // The truncated file is skipped when met, and the next readable image takes its place.
    let s = src.load("cut.png").unwrap();
    assert_eq!(s.id, "trip/day1/b.PNG");
    assert_eq!(s.image.dimensions(), (33, 47));
    assert!(s.label.iter().all(|&v| v == IGNORE));
    assert_eq!(src.skipped_count(), 2);
    assert!(src.skipped()[1].path.ends_with("cut.png"));
    let summary = src.summary();
    assert_eq!((summary.images, summary.skipped.len()), (4, 2));
    let json = serde_json::to_string(&summary).unwrap();
    assert!(
        json.contains("broken.jpg") && json.contains("cut.png"),
        "{json}"
    );

    // Batches for the unlabelled branch, whatever the image sizes.
    let mut cfg = TrainLoaderConfig::unlabelled(DatasetKind::Synthetic, 7);
    cfg.batch_size = 4;
    cfg.aug.crop_size = (16, 16);
    cfg.num_threads = 2;
    let batches: Vec<Batch> = Loader::unlabelled(src.clone(), cfg.clone())
        .unwrap()
        .take(5)
        .collect::<Result<_>>()
        .unwrap();
    for b in &batches {
        assert_eq!(b.images.dims(), &[4, 3, 16, 16]);
        let labels: Vec<i64> = b.labels.flatten_all().unwrap().to_vec1().unwrap();
        assert!(labels.iter().all(|&v| v == -1));
    }
    assert_eq!(src.skipped_count(), 2, "no file is reported twice");

    // A 5x3 image is padded to the crop by reflection, as labelled images are.
    let tiny_root = tmp.path().join("tiny");
    write_rgb(&tiny_root.join("t.png"), 5, 3, 3);
    let tiny = Arc::new(UnlabelledFolder::open(&tiny_root).unwrap());
    cfg.batch_size = 1;
    let b = Loader::unlabelled(tiny, cfg)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let img: Vec<Vec<Vec<f32>>> = b.images.get(0).unwrap().to_vec3().unwrap();
    for plane in &img {
        for row in &plane[..3] {
            // Columns 5 and 6 mirror columns 3 and 2 (reflect without edge repeat).
            assert_eq!(row[5], row[3]);
            assert_eq!(row[6], row[2]);
        }
        assert_eq!(plane[3][0], plane[1][0]);
    }

    // Large photos can be scaled down on load.
    let cfg = UnlabelledFolderConfig {
        max_side: Some(20),
        ..UnlabelledFolderConfig::new(&root)
    };
    let small = UnlabelledFolder::with_config(cfg).unwrap();
    assert_eq!(small.load("a.jpg").unwrap().image.dimensions(), (20, 15));
}

#[test]
fn empty_or_unreadable_unlabelled_folders_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    std::fs::write(empty.join("sub/readme.txt"), b"x").unwrap();
    let e = err_text(UnlabelledFolder::open(&empty));
    assert!(e.contains("empty") && e.contains("image"), "{e}");
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("x.png"), b"garbage").unwrap();
    let e = err_text(UnlabelledFolder::open(&bad));
    assert!(
        e.contains("bad") && e.contains("1 unreadable file(s) skipped"),
        "{e}"
    );
    let e = err_text(UnlabelledFolder::open(&tmp.path().join("missing")));
    assert!(e.contains("missing") && e.contains("not found"), "{e}");
}
