//! Pascal VOC 2012 with the SBD-augmented labels, in the layout `crates/data` reads:
//!
//! ```text
//! <root>/train_aug.txt                  10,582 ids
//! <root>/val.txt                        1,449 ids
//! <root>/JPEGImages/<id>.jpg
//! <root>/SegmentationClassAug/<id>.png  8-bit grayscale, class ids 0..20, 255 = void
//! ```
//!
//! Sources: `VOCtrainval_11-May-2012.tar` and SBD's `benchmark.tgz` (see `sources.rs` for
//! why SBD and not `SegmentationClassAug.zip`).
//!
//! Splits, exactly: `train_aug = sort((SBD train ∪ SBD val ∪ VOC train) \ VOC val)` where
//! SBD train/val are `benchmark_RELEASE/dataset/{train,val}.txt` (8,498 + 2,857 ids) and VOC
//! train/val are `VOC2012/ImageSets/Segmentation/{train,val}.txt` (1,464 + 1,449); the
//! result has the standard 10,582 ids. `val` is VOC val in its file order.
//!
//! Labels: an id annotated by VOC (`SegmentationClass/<id>.png`, i.e. every VOC train and
//! val id) keeps VOC's annotation, decoded as palette indices (finer, with the 255 void
//! border; for val it is the official ground truth). Every other id takes SBD's
//! `cls/<id>.mat` `GTcls.Segmentation` (uint8 class ids 0..20, no void). Both are written as
//! 8-bit grayscale PNGs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::download::Downloader;
use crate::extract::extract_once;
use crate::fetch::obtain;
use crate::labels::{looks_like_jpeg, read_label_png, write_label_png};
use crate::prepare::{move_into, read_list, report, write_list, DatasetOptions};
use crate::sources::{PASCAL_TRAIN_AUG_COUNT, PASCAL_VAL_COUNT, SBD_BENCHMARK, VOC2012_TRAINVAL};
use crate::{mat5, progress};

/// The four id lists the splits are computed from.
#[derive(Debug, Clone, Default)]
pub struct SourceLists {
    pub voc_train: Vec<String>,
    pub voc_val: Vec<String>,
    pub sbd_train: Vec<String>,
    pub sbd_val: Vec<String>,
}

/// `(train_aug, val)`: see the module docs.
pub fn splits(lists: &SourceLists) -> (Vec<String>, Vec<String>) {
    let val: BTreeSet<&str> = lists.voc_val.iter().map(String::as_str).collect();
    let train: BTreeSet<&str> = lists
        .sbd_train
        .iter()
        .chain(&lists.sbd_val)
        .chain(&lists.voc_train)
        .map(String::as_str)
        .filter(|id| !val.contains(id))
        .collect();
    (
        train.into_iter().map(str::to_string).collect(),
        lists.voc_val.clone(),
    )
}

fn keep_voc(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s.contains("/JPEGImages/")
        || s.contains("/SegmentationClass/")
        || s.contains("/ImageSets/Segmentation/")
}

fn keep_sbd(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s.contains("/dataset/cls/")
        || s.ends_with("/dataset/train.txt")
        || s.ends_with("/dataset/val.txt")
}

fn find_dir(base: &Path, rel: &str, archive: &str) -> Result<PathBuf> {
    let dir = base.join(rel);
    if !dir.is_dir() {
        bail!("{archive} has no {rel}/ folder: not the expected archive");
    }
    Ok(dir)
}

pub fn fetch(opts: &DatasetOptions, downloader: &Downloader) -> Result<()> {
    if !opts.begin()? {
        return Ok(());
    }

    // 1. Both archives, verified, before anything is extracted.
    let downloads = opts.downloads();
    let voc_tar = obtain(&VOC2012_TRAINVAL, &opts.sources, &downloads, downloader)?;
    let sbd_tgz = obtain(&SBD_BENCHMARK, &opts.sources, &downloads, downloader)?;

    // 2. Extract what is needed (restartable).
    let staging = opts.staging();
    let voc = extract_once(&voc_tar, &staging, &keep_voc)?;
    let voc = find_dir(&voc, "VOCdevkit/VOC2012", VOC2012_TRAINVAL.file_name)?;
    let sbd = extract_once(&sbd_tgz, &staging, &keep_sbd)?;
    let sbd = find_dir(&sbd, "benchmark_RELEASE/dataset", SBD_BENCHMARK.file_name)?;

    // 3. Splits.
    let seg_sets = voc.join("ImageSets/Segmentation");
    let lists = SourceLists {
        voc_train: read_list(&seg_sets.join("train.txt"))?,
        voc_val: read_list(&seg_sets.join("val.txt"))?,
        sbd_train: read_list(&sbd.join("train.txt"))?,
        sbd_val: read_list(&sbd.join("val.txt"))?,
    };
    let (train_aug, val) = splits(&lists);
    opts.check_count("train_aug ids", train_aug.len(), PASCAL_TRAIN_AUG_COUNT)?;
    opts.check_count("val ids", val.len(), PASCAL_VAL_COUNT)?;
    for id in train_aug.iter().chain(&val) {
        // Ids become file names: refuse anything that could leave the folder.
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            bail!("unexpected id {id:?} in the split lists");
        }
    }
    let all: Vec<&String> = train_aug.iter().chain(&val).collect();

    // 4. Labels (parallel; skips labels an interrupted run already wrote).
    let label_dir = opts.root.join("SegmentationClassAug");
    std::fs::create_dir_all(&label_dir)
        .with_context(|| format!("cannot create {}", label_dir.display()))?;
    let bar = progress::items_bar(all.len() as u64, "writing SegmentationClassAug");
    all.par_iter().try_for_each(|id| -> Result<()> {
        let out = label_dir.join(format!("{id}.png"));
        if !out.exists() {
            let voc_png = voc.join("SegmentationClass").join(format!("{id}.png"));
            let labels = if voc_png.exists() {
                read_label_png(&voc_png)?
            } else {
                let mat = sbd.join("cls").join(format!("{id}.mat"));
                let bytes = std::fs::read(&mat).with_context(|| {
                    format!(
                        "{id} has no label: neither {} nor {}",
                        voc_png.display(),
                        mat.display()
                    )
                })?;
                mat5::sbd_segmentation(&bytes).with_context(|| format!("{}", mat.display()))?
            };
            if let Some(bad) = labels.data.iter().find(|&&v| v > 20 && v != 255) {
                bail!("label of {id} holds class {bad}: VOC has classes 0..20 and 255 only");
            }
            write_label_png(&out, &labels)?;
        }
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();

    // 5. Images.
    let image_dir = opts.root.join("JPEGImages");
    let bar = progress::items_bar(all.len() as u64, "moving JPEGImages");
    for id in &all {
        let name = format!("{id}.jpg");
        let dst = image_dir.join(&name);
        move_into(&voc.join("JPEGImages").join(&name), &dst)?;
        if !looks_like_jpeg(&dst)? {
            bail!("{} is not a JPEG file", dst.display());
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // 6. Lists last, then the marker.
    write_list(&opts.root.join("train_aug.txt"), &train_aug)?;
    write_list(&opts.root.join("val.txt"), &val)?;
    opts.mark_ready(&format!(
        "pascal: {} train_aug ids, {} val ids\nsources: {} ({:?}), {} ({:?})\n",
        train_aug.len(),
        val.len(),
        VOC2012_TRAINVAL.file_name,
        VOC2012_TRAINVAL.pin,
        SBD_BENCHMARK.file_name,
        SBD_BENCHMARK.pin
    ))?;
    report(opts, "pascal");
    println!("train_aug: {} ids, val: {} ids", train_aug.len(), val.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn split_rule() {
        let lists = SourceLists {
            voc_train: ids(&["2007_000032", "2007_000039"]),
            voc_val: ids(&["2007_000033", "2008_000001"]),
            sbd_train: ids(&["2008_000002", "2007_000033", "2007_000032"]),
            sbd_val: ids(&["2008_000003", "2008_000001"]),
        };
        let (train, val) = splits(&lists);
        assert_eq!(
            train,
            ids(&["2007_000032", "2007_000039", "2008_000002", "2008_000003"])
        );
        assert_eq!(val, ids(&["2007_000033", "2008_000001"]));
    }
}
