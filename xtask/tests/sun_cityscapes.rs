//! `fetch-data` for SUN RGB-D and Cityscapes from loopback mirrors, and the Cityscapes
//! login flow (form post, session cookie, redirect = not logged in).

mod common;

use std::path::Path;

use common::*;

fn gray_png(w: u32, h: u32, v: u8) -> Vec<u8> {
    png_bytes(w, h, &vec![v; (w * h) as usize], false)
}

/// Train images numbered `train_first..`, 3 test images, labels 1..5 of distinct sizes
/// (label n is (4+n) x 3), so a wrong pairing fails the size check.
fn sun_archives(train_first: u32) -> [(String, Vec<u8>); 3] {
    let train: Vec<(String, Vec<u8>)> = (0..2)
        .map(|k| {
            let n = train_first + k;
            let label_n = 4 + k;
            (
                format!("SUNRGBD-train_images/img-{n:06}.jpg"),
                jpeg(4 + label_n, 3, n as u8),
            )
        })
        .collect();
    let test: Vec<(String, Vec<u8>)> = (1..=3)
        .map(|n| (format!("img-{n:06}.jpg"), jpeg(4 + n, 3, n as u8)))
        .collect();
    let labels: Vec<(String, Vec<u8>)> = (1..=5u32)
        .map(|n| (format!("img-{n:06}.png"), gray_png(4 + n, 3, (n * 7) as u8)))
        .collect();
    [
        ("SUNRGBD-train_images.tgz".into(), tgz_bytes(&train)),
        ("SUNRGBD-test_images.tgz".into(), tgz_bytes(&test)),
        (
            "sunrgbd_train_test_labels.tar.gz".into(),
            tgz_bytes(&labels),
        ),
    ]
}

fn serve_all(files: &[(String, Vec<u8>)], dir: &Path) -> (Server, std::path::PathBuf) {
    let server = Server::start();
    let mut sums = serde_json::Map::new();
    for (name, body) in files {
        server.serve(&format!("/{name}"), body.clone());
        sums.insert(
            name.clone(),
            serde_json::json!({"sha256": sha256_hex(body)}),
        );
    }
    let p = dir.join("sums.json");
    std::fs::write(&p, serde_json::Value::Object(sums).to_string()).unwrap();
    (server, p)
}

fn fetch(dataset: &str, root: &Path, server: &Server, sums: &Path) -> (bool, String) {
    xtask(
        &[
            "fetch-data",
            "--dataset",
            dataset,
            "--root",
            root.to_str().unwrap(),
            "--mirror",
            &server.base,
            "--checksums",
            sums.to_str().unwrap(),
            "--skip-count-check",
        ],
        &[],
    )
}

#[test]
fn sun_layout_and_pairing() {
    for train_first in [4, 1] {
        let work = tempfile::tempdir().unwrap();
        let (server, sums) = serve_all(&sun_archives(train_first), work.path());
        let root = work.path().join("sun");
        let (ok, out) = fetch("sun", &root, &server, &sums);
        assert!(ok, "{out}");
        assert_eq!(
            std::fs::read_to_string(root.join("train.txt")).unwrap(),
            "train-000001\ntrain-000002\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("val.txt")).unwrap(),
            "test-000001\ntest-000002\ntest-000003\n"
        );
        let check = |id: &str, label_n: u32| {
            let img = image::open(root.join(format!("images/{id}.jpg"))).unwrap();
            let lab = image::open(root.join(format!("labels/{id}.png"))).unwrap();
            assert!(matches!(lab, image::DynamicImage::ImageLuma8(_)));
            assert_eq!((img.width(), img.height()), (4 + label_n, 3), "{id}");
            assert_eq!((lab.width(), lab.height()), (4 + label_n, 3), "{id}");
            assert_eq!(
                lab.to_luma8().get_pixel(0, 0).0[0],
                (label_n * 7) as u8,
                "{id}"
            );
        };
        check("test-000002", 2);
        check("train-000001", 4);
        check("train-000002", 5);
        let (train, val) = read_with_data_crate(reco_data::DatasetKind::Sun, &root);
        assert_eq!((train.len(), val.len()), (2, 3));
        assert!(root.join(".ready").is_file());
    }
}

#[test]
fn sun_label_out_of_range_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let mut files = sun_archives(4);
    let labels: Vec<(String, Vec<u8>)> = (1..=5u32)
        .map(|n| (format!("img-{n:06}.png"), gray_png(4 + n, 3, 40)))
        .collect();
    files[2].1 = tgz_bytes(&labels);
    let (server, sums) = serve_all(&files, work.path());
    let root = work.path().join("sun");
    let (ok, out) = fetch("sun", &root, &server, &sums);
    assert!(!ok);
    assert!(out.contains("class 40"), "{out}");
    assert!(!root.join(".ready").exists());
}

fn cityscapes_archives() -> [(String, Vec<u8>); 2] {
    let frames = [
        ("train", "aachen", "aachen_000000_000019"),
        ("val", "frankfurt", "frankfurt_000000_000294"),
    ];
    let mut gt = vec![
        ("README".to_string(), b"readme".to_vec()),
        ("license.txt".to_string(), b"license".to_vec()),
    ];
    let mut img = gt.clone();
    for (split, city, stem) in frames {
        gt.push((
            format!("gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"),
            gray_png(8, 4, 7),
        ));
        gt.push((
            format!("gtFine/{split}/{city}/{stem}_gtFine_polygons.json"),
            b"{}".to_vec(),
        ));
        img.push((
            format!("leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"),
            gray_png(8, 4, 100),
        ));
    }
    [
        ("gtFine_trainvaltest.zip".into(), zip_bytes(&gt)),
        ("leftImg8bit_trainvaltest.zip".into(), zip_bytes(&img)),
    ]
}

#[test]
fn cityscapes_official_trees() {
    let work = tempfile::tempdir().unwrap();
    let (server, sums) = serve_all(&cityscapes_archives(), work.path());
    let root = work.path().join("cityscapes");
    let (ok, out) = fetch("cityscapes", &root, &server, &sums);
    assert!(ok, "{out}");
    for p in [
        "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
        "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png",
        "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png",
        "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png",
        "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_polygons.json",
        ".ready",
    ] {
        assert!(root.join(p).is_file(), "{p} missing");
    }
    assert!(!root.join("README").exists());
    let (train, val) = read_with_data_crate(reco_data::DatasetKind::Cityscapes, &root);
    assert_eq!(train, vec!["train/aachen/aachen_000000_000019".to_string()]);
    assert_eq!(
        val,
        vec!["val/frankfurt/frankfurt_000000_000294".to_string()]
    );
    assert!(out.contains("train: 1 images, val: 1 images"), "{out}");
    // No login was attempted: a mirror needs none.
    assert!(server.log().iter().all(|s| s.method == "GET"));
}

#[test]
fn cityscapes_image_without_label_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let mut files = cityscapes_archives();
    files[0].1 = zip_bytes(&[(
        "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png".to_string(),
        gray_png(8, 4, 7),
    )]);
    let (server, sums) = serve_all(&files, work.path());
    let root = work.path().join("cityscapes");
    let (ok, out) = fetch("cityscapes", &root, &server, &sums);
    assert!(!ok);
    assert!(
        out.contains("frankfurt_000000_000294_gtFine_labelIds.png"),
        "{out}"
    );
    assert!(!root.join(".ready").exists());
}

#[test]
fn cityscapes_login_sets_the_session_cookie() {
    use xtask::cityscapes::{login, Credentials};
    use xtask::download::Downloader;
    let server = Server::start();
    server.route(
        "/login/",
        Route {
            login_accepts: Some(("username=alice&password=s3cret".into(), "sid=42".into())),
            ..Default::default()
        },
    );
    server.route(
        "/file-handling/?packageID=1",
        Route {
            body: b"zip bytes".to_vec(),
            needs_cookie: Some("sid=42".into()),
            ..Default::default()
        },
    );
    let login_url = format!("{}/login/", server.base);
    let file_url = format!("{}/file-handling/?packageID=1", server.base);
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("gtFine_trainvaltest.zip");

    // Not logged in: the site redirects, which must be an error, not a saved HTML page.
    let d = Downloader::new(false);
    let err = format!("{:#}", d.fetch(&file_url, &dest, None).unwrap_err());
    assert!(err.contains("login failed"), "{err}");
    assert!(!dest.exists());

    let bad = Credentials {
        username: Some("alice".into()),
        password: Some("wrong".into()),
    };
    let err = format!("{:#}", login(&d, &login_url, &bad).unwrap_err());
    assert!(err.contains("login failed"), "{err}");

    let none = Credentials::default();
    let err = format!("{:#}", login(&d, &login_url, &none).unwrap_err());
    assert!(err.contains("CITYSCAPES_USERNAME"), "{err}");

    let good = Credentials {
        username: Some("alice".into()),
        password: Some("s3cret".into()),
    };
    login(&d, &login_url, &good).unwrap();
    d.fetch(&file_url, &dest, None).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"zip bytes");
}
