//! End-to-end `fetch-data --dataset pascal` against a loopback mirror serving small archives
//! with the real structure (VOC tar, SBD tgz with MATLAB 5 `.mat` labels written by scipy).

mod common;

use std::path::Path;

use common::*;

const H: u32 = 5; // size of the scipy-written SBD fixtures
const W: u32 = 7;

/// VOC ids and the palette-index labels the fake VOC archive holds for them.
fn voc_label(seed: u8) -> Vec<u8> {
    (0..(W * H) as usize)
        .map(|i| match i % 6 {
            0 => 255, // void border
            k => (seed as usize * 3 + k) as u8 % 21,
        })
        .collect()
}

fn voc_tar() -> Vec<u8> {
    let root = "VOCdevkit/VOC2012";
    let mut e: Vec<(String, Vec<u8>)> = Vec::new();
    let all = [
        "2007_000032",
        "2007_000039",
        "2007_000033",
        "2008_000001",
        "2008_000002",
        "2008_000003",
        "2009_000001",
    ];
    for (i, id) in all.iter().enumerate() {
        e.push((format!("{root}/JPEGImages/{id}.jpg"), jpeg(W, H, i as u8)));
    }
    for (i, id) in ["2007_000032", "2007_000039", "2007_000033", "2008_000001"]
        .iter()
        .enumerate()
    {
        e.push((
            format!("{root}/SegmentationClass/{id}.png"),
            png_bytes(W, H, &voc_label(i as u8), true),
        ));
    }
    e.push((
        format!("{root}/ImageSets/Segmentation/train.txt"),
        b"2007_000032\n2007_000039\n".to_vec(),
    ));
    e.push((
        format!("{root}/ImageSets/Segmentation/val.txt"),
        b"2007_000033\n2008_000001\n".to_vec(),
    ));
    e.push((
        format!("{root}/Annotations/2007_000032.xml"),
        b"<x/>".to_vec(),
    ));
    tar_bytes(&e)
}

fn sbd_tgz() -> Vec<u8> {
    let root = "benchmark_RELEASE/dataset";
    tgz_bytes(&[
        (
            format!("{root}/train.txt"),
            b"2008_000002\n2007_000033\n2007_000032\n".to_vec(),
        ),
        (
            format!("{root}/val.txt"),
            b"2008_000003\n2008_000001\n".to_vec(),
        ),
        (
            format!("{root}/cls/2008_000002.mat"),
            fixture("sbd_compressed.mat"),
        ),
        (
            format!("{root}/cls/2008_000003.mat"),
            fixture("sbd_plain.mat"),
        ),
        // Labels of VOC ids exist in SBD too; VOC's must win for them.
        (
            format!("{root}/cls/2007_000032.mat"),
            fixture("sbd_plain.mat"),
        ),
        (format!("{root}/img/2008_000002.jpg"), jpeg(W, H, 9)),
    ])
}

fn expected_sbd(name: &str) -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_slice(&fixture("sbd_expected.json")).unwrap();
    v[name]["row_major"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u8)
        .collect()
}

fn read_l8(path: &Path) -> (u32, u32, Vec<u8>) {
    let mut dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    dec.set_transformations(png::Transformations::IDENTITY);
    let mut r = dec.read_info().unwrap();
    assert_eq!(
        r.output_color_type(),
        (png::ColorType::Grayscale, png::BitDepth::Eight),
        "{}",
        path.display()
    );
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

struct Mirror {
    server: Server,
    checksums: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn mirror(voc: Vec<u8>, sbd: Vec<u8>, sums: Option<String>) -> Mirror {
    let dir = tempfile::tempdir().unwrap();
    let checksums = dir.path().join("sums.json");
    let sums = sums.unwrap_or_else(|| {
        format!(
            r#"{{"VOCtrainval_11-May-2012.tar": {{"md5": "{}"}}, "benchmark.tgz": {{"sha256": "{}"}}}}"#,
            md5_hex(&voc),
            sha256_hex(&sbd)
        )
    });
    std::fs::write(&checksums, sums).unwrap();
    let server = Server::start();
    server.serve("/VOCtrainval_11-May-2012.tar", voc);
    server.serve("/benchmark.tgz", sbd);
    Mirror {
        server,
        checksums,
        _dir: dir,
    }
}

fn run(m: &Mirror, root: &Path) -> (bool, String) {
    run_with(m, root, &["--dataset", "pascal"])
}

/// `fetch-data` against the mirror with `extra` flags.
fn run_with(m: &Mirror, root: &Path, extra: &[&str]) -> (bool, String) {
    let args = [
        "fetch-data",
        "--root",
        root.to_str().unwrap(),
        "--mirror",
        &m.server.base,
        "--checksums",
        m.checksums.to_str().unwrap(),
        "--skip-count-check",
        // Retries of cut transfers wait milliseconds, not seconds, in tests.
        "--retry-delay-ms",
        "2",
    ];
    let args: Vec<&str> = args.iter().chain(extra).copied().collect();
    xtask(&args, &[])
}

/// The GETs of `path` the server saw, as their Range headers.
fn ranges(m: &Mirror, path: &str) -> Vec<Option<String>> {
    m.server
        .log()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path == path)
        .map(|s| s.range)
        .collect()
}

#[test]
fn complete_fetch_matches_the_layout() {
    let m = mirror(voc_tar(), sbd_tgz(), None);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("pascal");
    let (ok, out) = run(&m, &root);
    assert!(ok, "{out}");

    let list = |n: &str| std::fs::read_to_string(root.join(n)).unwrap();
    assert_eq!(
        list("train_aug.txt"),
        "2007_000032\n2007_000039\n2008_000002\n2008_000003\n"
    );
    assert_eq!(list("val.txt"), "2007_000033\n2008_000001\n");
    for id in [
        "2007_000032",
        "2007_000039",
        "2008_000002",
        "2008_000003",
        "2007_000033",
        "2008_000001",
    ] {
        let img = image::open(root.join(format!("JPEGImages/{id}.jpg"))).unwrap();
        assert_eq!((img.width(), img.height()), (W, H));
        let (w, h, data) = read_l8(&root.join(format!("SegmentationClassAug/{id}.png")));
        assert_eq!((w, h), (W, H));
        assert!(data.iter().all(|&v| v <= 20 || v == 255));
    }
    // VOC labels keep their palette indices (255 border included); VOC wins over SBD.
    assert_eq!(
        read_l8(&root.join("SegmentationClassAug/2007_000032.png")).2,
        voc_label(0)
    );
    assert_eq!(
        read_l8(&root.join("SegmentationClassAug/2008_000001.png")).2,
        voc_label(3)
    );
    // SBD-only ids: GTcls.Segmentation, transposed from MATLAB's column-major order.
    assert_eq!(
        read_l8(&root.join("SegmentationClassAug/2008_000002.png")).2,
        expected_sbd("sbd_compressed")
    );
    assert_eq!(
        read_l8(&root.join("SegmentationClassAug/2008_000003.png")).2,
        expected_sbd("sbd_plain")
    );
    assert!(!root.join("JPEGImages/2009_000001.jpg").exists());
    let (train, val) = read_with_data_crate(reco_data::DatasetKind::Pascal, &root);
    assert_eq!((train.len(), val.len()), (4, 2));
    assert!(root.join(".ready").is_file());
    assert!(!root.join(".staging").exists());

    // A second run does nothing and downloads nothing.
    let before = m.server.log().len();
    let (ok, out) = run(&m, &root);
    assert!(ok && out.contains("already prepared"), "{out}");
    assert_eq!(m.server.log().len(), before);
}

const VOC_PATH: &str = "/VOCtrainval_11-May-2012.tar";
const SBD_PATH: &str = "/benchmark.tgz";

/// Serves `body` at `path`, cutting the first `cuts` transfers mid-body.
fn cut(m: &Mirror, path: &str, body: &[u8], cuts: usize, ignore_range: bool) {
    m.server.route(
        path,
        Route {
            body: body.to_vec(),
            cut_next: cuts,
            ignore_range,
            ..Default::default()
        },
    );
}

#[test]
fn cut_transfers_resume_with_range_within_one_run() {
    let (voc, sbd) = (voc_tar(), sbd_tgz());
    let m = mirror(voc.clone(), sbd.clone(), None);
    cut(&m, VOC_PATH, &voc, 1, false);
    cut(&m, SBD_PATH, &sbd, 1, false);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("pascal");
    // No --dataset: Pascal VOC is the default.
    let (ok, out) = run_with(&m, &root, &[]);
    assert!(ok, "one run must ride out one cut per archive: {out}");
    for (path, body) in [(VOC_PATH, &voc), (SBD_PATH, &sbd)] {
        let half = body.len() / 2;
        assert_eq!(
            ranges(&m, path),
            vec![None, Some(format!("bytes={half}-"))],
            "{path}"
        );
        let url = format!("{}{path}", m.server.base);
        assert!(
            out.contains(&format!(
                "try 2/5 for {url}: resuming at {half} bytes after"
            )),
            "{out}"
        );
        let file = root.join(format!("downloads{path}"));
        assert_eq!(&std::fs::read(&file).unwrap(), body, "{path}");
        assert!(!root.join(format!("downloads{path}.part")).exists());
    }
    // Both archives passed their checksums (--checksums pins them), so the folder is ready.
    assert!(root.join(".ready").is_file());
    let (train, val) = read_with_data_crate(reco_data::DatasetKind::Pascal, &root);
    assert_eq!((train.len(), val.len()), (4, 2));
}

#[test]
fn a_server_that_always_cuts_fails_after_the_tries_and_the_next_run_resumes() {
    let voc = voc_tar();
    let m = mirror(voc.clone(), sbd_tgz(), None);
    cut(&m, VOC_PATH, &voc, usize::MAX, false);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("pascal");
    let (ok, out) = run_with(&m, &root, &["--dataset", "pascal", "--retries", "3"]);
    assert!(!ok, "a transfer that never completes must fail: {out}");
    let url = format!("{}{VOC_PATH}", m.server.base);
    assert_eq!(ranges(&m, VOC_PATH).len(), 3, "exactly 3 tries: {out}");
    assert!(out.contains("try 3/3 for"), "{out}");
    assert!(!out.contains("try 4/"), "{out}");
    assert!(
        out.contains(&format!("the download of {url} failed 3 times in a row")),
        "{out}"
    );
    assert!(out.contains("run the same command again"), "{out}");
    assert!(!root.join(".ready").exists());
    let part = root.join("downloads/VOCtrainval_11-May-2012.tar.part");
    let have = std::fs::metadata(&part).unwrap().len();
    assert!(have > 0 && have < voc.len() as u64);
    assert_eq!(std::fs::read(&part).unwrap(), voc[..have as usize]);

    // The connection is fine again: the next run continues from the .part file.
    m.server.serve(VOC_PATH, voc.clone());
    let (ok, out) = run(&m, &root);
    assert!(ok, "{out}");
    assert_eq!(
        ranges(&m, VOC_PATH).last().unwrap(),
        &Some(format!("bytes={have}-"))
    );
    assert_eq!(
        std::fs::read(root.join("downloads/VOCtrainval_11-May-2012.tar")).unwrap(),
        voc
    );
    assert!(root.join(".ready").is_file());
}

#[test]
fn a_server_without_range_support_restarts_from_zero() {
    let voc = voc_tar();
    let m = mirror(voc.clone(), sbd_tgz(), None);
    cut(&m, VOC_PATH, &voc, 1, true);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("pascal");
    let (ok, out) = run(&m, &root);
    assert!(ok, "{out}");
    let half = voc.len() / 2;
    // The resume was asked for; the server sent the whole file, which replaced the part.
    assert_eq!(
        ranges(&m, VOC_PATH),
        vec![None, Some(format!("bytes={half}-"))]
    );
    assert_eq!(
        std::fs::read(root.join("downloads/VOCtrainval_11-May-2012.tar")).unwrap(),
        voc
    );
    assert!(root.join(".ready").is_file());
}

#[test]
fn wrong_checksum_marks_nothing_ready() {
    let voc = voc_tar();
    let sums = format!(
        r#"{{"VOCtrainval_11-May-2012.tar": {{"md5": "{}"}}, "benchmark.tgz": {{"md5": "00000000000000000000000000000000"}}}}"#,
        md5_hex(&voc)
    );
    let m = mirror(voc, sbd_tgz(), Some(sums));
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("pascal");
    let (ok, out) = run(&m, &root);
    assert!(!ok);
    assert!(
        out.contains("checksum mismatch") && out.contains("benchmark.tgz"),
        "{out}"
    );
    assert!(!root.join(".ready").exists());
    // Nothing was extracted: the check comes first.
    assert!(!root.join(".staging").exists());
    assert!(!root.join("train_aug.txt").exists());
    // The bad file is set aside so the next run downloads it again.
    assert!(root.join("downloads/benchmark.tgz.corrupt").exists());
    assert!(!root.join("downloads/benchmark.tgz").exists());
}

#[test]
fn malicious_entry_is_refused() {
    let mut entries = vec![(
        "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt".to_string(),
        b"x\n".to_vec(),
    )];
    entries.push(("../../escaped.txt".to_string(), b"owned".to_vec()));
    let evil = tar_bytes(&entries);
    let m = mirror(evil, sbd_tgz(), None);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("a/b/pascal");
    let (ok, out) = run(&m, &root);
    assert!(!ok);
    assert!(out.contains("..") && out.contains("refusing"), "{out}");
    assert!(!root.join(".ready").exists());
    for p in [
        work.path().join("escaped.txt"),
        work.path().join("a/escaped.txt"),
        work.path().join("a/b/escaped.txt"),
        root.join("escaped.txt"),
    ] {
        assert!(!p.exists(), "{} was written", p.display());
    }
}

#[test]
fn truncated_archive_is_a_clear_error() {
    let voc = voc_tar();
    let cut = voc[..voc.len() / 3].to_vec();
    // The checksum matches the truncated file, as a careless mirror's would.
    let m = mirror(cut, sbd_tgz(), None);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("pascal");
    let (ok, out) = run(&m, &root);
    assert!(!ok);
    assert!(out.contains("truncated"), "{out}");
    assert!(!root.join(".ready").exists());
}

#[test]
fn from_dir_and_unpinned_refusal() {
    let voc = voc_tar();
    let sbd = sbd_tgz();
    let work = tempfile::tempdir().unwrap();
    let from = work.path().join("have");
    std::fs::create_dir_all(&from).unwrap();
    std::fs::write(from.join("VOCtrainval_11-May-2012.tar"), &voc).unwrap();
    std::fs::write(from.join("benchmark.tgz"), &sbd).unwrap();
    // The pinned official checksums reject these small archives: proof they are used.
    let root = work.path().join("pascal");
    let (ok, out) = xtask(
        &[
            "fetch-data",
            "--dataset",
            "pascal",
            "--root",
            root.to_str().unwrap(),
            "--from",
            from.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.contains("1999639040"), "{out}");
    // --from never moves or deletes the user's files.
    assert!(from.join("VOCtrainval_11-May-2012.tar").exists());
    assert!(!root.join(".ready").exists());

    // SUN has no pinned checksums: refused without --checksums / --accept-unpinned.
    let sun_root = work.path().join("sun");
    let (ok, out) = xtask(
        &[
            "fetch-data",
            "--dataset",
            "sun",
            "--root",
            sun_root.to_str().unwrap(),
            "--from",
            from.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok);
    assert!(out.contains("no checksum is known"), "{out}");
}
