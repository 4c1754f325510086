//! SUN RGB-D, 37 classes, from Ankur Handa's repackaging (github.com/ankurhanda/sunrgbd-meta-data):
//!
//! ```text
//! <root>/train.txt, val.txt     ids, one per line: train-000001.., test-000001..
//! <root>/images/<id>.jpg
//! <root>/labels/<id>.png        8-bit grayscale, 0 = unlabelled, 1..37 = classes
//! ```
//!
//! val is the official 5,050-image test split (as in the original ReCo code). Pairing: the
//! label archive numbers test labels `img-000001..005050` and training labels from
//! `img-005051` on (its README). Test image `img-<n>` takes label `<n>`; training images take
//! label `<n>` when they are numbered after the test images (the original ReCo loader reads
//! `sunrgbd_train_test_labels/img-<n>.png` for a training image `img-<n>.jpg`), and
//! `<n + number of test images>` when they are numbered from 1. The ids are the 1-based ranks
//! within each split, so that they are unique across splits.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::download::Downloader;
use crate::extract::extract_once;
use crate::fetch::obtain;
use crate::labels::{looks_like_jpeg, read_label_png, write_label_png};
use crate::prepare::{link_or_copy, report, write_list, DatasetOptions};
use crate::progress;
use crate::sources::{
    SUN_LABELS, SUN_TEST_COUNT, SUN_TEST_IMAGES, SUN_TRAIN_COUNT, SUN_TRAIN_IMAGES,
};

/// Files under `dir` (recursively) with extension `ext`, keyed by the number after the last
/// `-` of their stem (`img-000123.jpg` → 123), sorted by that number.
pub fn numbered_files(dir: &Path, ext: &str) -> Result<Vec<(u32, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some(ext) {
                continue;
            }
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            let Some(n) = stem.rsplit('-').next().and_then(|n| n.parse::<u32>().ok()) else {
                bail!("{}: expected a name like img-000123.{ext}", path.display());
            };
            out.push((n, path));
        }
    }
    out.sort();
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        bail!(
            "two files numbered {}: {} and {}",
            w[0].0,
            w[0].1.display(),
            w[1].1.display()
        );
    }
    Ok(out)
}

struct Item {
    id: String,
    image: PathBuf,
    label: PathBuf,
}

fn pair(
    split: &str,
    images: &[(u32, PathBuf)],
    labels: &std::collections::HashMap<u32, PathBuf>,
    offset: u32,
) -> Result<Vec<Item>> {
    images
        .iter()
        .enumerate()
        .map(|(rank, (n, image))| {
            let key = n + offset;
            let label = labels.get(&key).with_context(|| {
                format!(
                    "{} has no label img-{key:06}.png in {}",
                    image.display(),
                    SUN_LABELS.file_name
                )
            })?;
            Ok(Item {
                id: format!("{split}-{:06}", rank + 1),
                image: image.clone(),
                label: label.clone(),
            })
        })
        .collect()
}

pub fn fetch(opts: &DatasetOptions, downloader: &Downloader) -> Result<()> {
    if !opts.begin()? {
        return Ok(());
    }
    let downloads = opts.downloads();
    let train_tgz = obtain(&SUN_TRAIN_IMAGES, &opts.sources, &downloads, downloader)?;
    let test_tgz = obtain(&SUN_TEST_IMAGES, &opts.sources, &downloads, downloader)?;
    let labels_tgz = obtain(&SUN_LABELS, &opts.sources, &downloads, downloader)?;

    let staging = opts.staging();
    let train_dir = extract_once(&train_tgz, &staging, &|_| true)?;
    let test_dir = extract_once(&test_tgz, &staging, &|_| true)?;
    let labels_dir = extract_once(&labels_tgz, &staging, &|_| true)?;

    let images_out = opts.root.join("images");
    let labels_out = opts.root.join("labels");
    // The staging folder is never modified, so ranks (ids) are stable across reruns.
    let train = numbered_files(&train_dir, "jpg")?;
    let test = numbered_files(&test_dir, "jpg")?;
    let labels: std::collections::HashMap<u32, PathBuf> =
        numbered_files(&labels_dir, "png")?.into_iter().collect();
    if train.is_empty() || test.is_empty() {
        bail!(
            "no images found in {} / {}: not the expected archives",
            SUN_TRAIN_IMAGES.file_name,
            SUN_TEST_IMAGES.file_name
        );
    }
    opts.check_count("SUN RGB-D train images", train.len(), SUN_TRAIN_COUNT)?;
    opts.check_count("SUN RGB-D test images", test.len(), SUN_TEST_COUNT)?;
    let test_count = test.len() as u32;
    let max_test = test.last().map(|t| t.0).unwrap_or(0);
    let train_offset = if train[0].0 > max_test { 0 } else { test_count };
    let test_items = pair("test", &test, &labels, 0)?;
    let train_items = pair("train", &train, &labels, train_offset)?;

    for dir in [&images_out, &labels_out] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let all: Vec<&Item> = train_items.iter().chain(&test_items).collect();
    let bar = progress::items_bar(all.len() as u64, "writing SUN RGB-D images and labels");
    all.par_iter().try_for_each(|item| -> Result<()> {
        let label_out = labels_out.join(format!("{}.png", item.id));
        let labels = read_label_png(&item.label)?;
        if let Some(bad) = labels.data.iter().find(|&&v| v > 37) {
            bail!(
                "{} holds class {bad}: SUN RGB-D has 0..37",
                item.label.display()
            );
        }
        let image_out = images_out.join(format!("{}.jpg", item.id));
        link_or_copy(&item.image, &image_out)?;
        if !looks_like_jpeg(&image_out)? {
            bail!("{} is not a JPEG file", image_out.display());
        }
        let (w, h) = image::image_dimensions(&image_out)
            .with_context(|| format!("cannot read the size of {}", image_out.display()))?;
        if (w, h) != (labels.width, labels.height) {
            bail!(
                "{} is {w}x{h} but its label {} is {}x{}: wrong pairing",
                image_out.display(),
                item.label.display(),
                labels.width,
                labels.height
            );
        }
        write_label_png(&label_out, &labels)?;
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();

    let train_ids: Vec<String> = train_items.iter().map(|i| i.id.clone()).collect();
    let val_ids: Vec<String> = test_items.iter().map(|i| i.id.clone()).collect();
    write_list(&opts.root.join("train.txt"), &train_ids)?;
    write_list(&opts.root.join("val.txt"), &val_ids)?;
    opts.mark_ready(&format!(
        "sun: {} train, {} val (test) images; label offset for train images {train_offset}\n\
         sources (unpinned unless --checksums was given): {}, {}, {}\n",
        train_ids.len(),
        val_ids.len(),
        SUN_TRAIN_IMAGES.file_name,
        SUN_TEST_IMAGES.file_name,
        SUN_LABELS.file_name
    ))?;
    report(opts, "sun");
    println!(
        "train: {} images, val: {} images",
        train_ids.len(),
        val_ids.len()
    );
    Ok(())
}
