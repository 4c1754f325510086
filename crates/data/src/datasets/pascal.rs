//! Pascal VOC 2012 with SBD-augmented labels.

use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::dataset::{fetch_hint, Sample, SegDataset, Subset};
use crate::error::{DataError, Result};
use crate::io::{check_same_size, map_label, read_id_list, read_label_png, read_rgb};
use crate::kind::{DatasetKind, IGNORE};

const NUM_CLASSES: u8 = 21;

/// Reader of `<root>/{train_aug.txt,val.txt,JPEGImages,SegmentationClassAug}`.
pub struct PascalVoc {
    root: PathBuf,
    train: Vec<String>,
    val: Vec<String>,
}

impl PascalVoc {
    pub fn open(root: &Path) -> Result<Self> {
        let hint = fetch_hint(DatasetKind::Pascal);
        let train = read_id_list(&root.join("train_aug.txt"), "training", &hint)?;
        let val = read_id_list(&root.join("val.txt"), "validation", &hint)?;
        Ok(Self {
            root: root.to_path_buf(),
            train,
            val,
        })
    }

    fn image_path(&self, id: &str) -> PathBuf {
        self.root.join("JPEGImages").join(format!("{id}.jpg"))
    }

    /// `SegmentationClassAug/<id>.png`, or `SegmentationClass/<id>.png` when only that exists.
    fn label_path(&self, id: &str) -> PathBuf {
        let aug = self
            .root
            .join("SegmentationClassAug")
            .join(format!("{id}.png"));
        if aug.exists() {
            return aug;
        }
        let plain = self
            .root
            .join("SegmentationClass")
            .join(format!("{id}.png"));
        if plain.exists() {
            plain
        } else {
            aug
        }
    }

    fn read_label(&self, path: &Path) -> Result<GrayImage> {
        let mut label = read_label_png(path, &fetch_hint(DatasetKind::Pascal))?;
        map_label(&mut label, path, "pascal", "0..=20 or 255", |v| {
            (v < NUM_CLASSES || v == IGNORE).then_some(v)
        })?;
        Ok(label)
    }
}

impl SegDataset for PascalVoc {
    fn kind(&self) -> DatasetKind {
        DatasetKind::Pascal
    }
    fn root(&self) -> &Path {
        &self.root
    }
    fn ids(&self, subset: Subset) -> &[String] {
        match subset {
            Subset::Train => &self.train,
            Subset::Val => &self.val,
        }
    }
    fn load(&self, id: &str) -> Result<Sample> {
        let image_path = self.image_path(id);
        let label_path = self.label_path(id);
        let image = read_rgb(&image_path, &fetch_hint(DatasetKind::Pascal))?;
        let label = self.read_label(&label_path)?;
        check_same_size(&label, &image, &label_path, &image_path)?;
        Ok(Sample {
            id: id.to_string(),
            image,
            label,
        })
    }
    fn load_label(&self, id: &str) -> Result<GrayImage> {
        self.read_label(&self.label_path(id))
    }
    fn check_id(&self, id: &str) -> Result<()> {
        let hint = fetch_hint(DatasetKind::Pascal);
        for (p, what) in [
            (self.image_path(id), "image"),
            (self.label_path(id), "label"),
        ] {
            if !p.is_file() {
                return Err(DataError::missing(p, what, &hint));
            }
        }
        Ok(())
    }
}
