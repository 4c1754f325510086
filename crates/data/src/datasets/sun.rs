//! SUN RGB-D, 37 classes, as prepared by `cargo xtask fetch-data --dataset sun`.

use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::dataset::{fetch_hint, Sample, SegDataset, Subset};
use crate::error::{DataError, Result};
use crate::io::{check_same_size, map_label, read_id_list, read_label_png, read_rgb};
use crate::kind::{DatasetKind, IGNORE};

/// `(width, height)` every SUN image and label is resized to, as the original's
/// `sun_preprocess.py` (bilinear for images, nearest for labels; a no-op when the files
/// already have this size).
pub const SUN_SIZE: (u32, u32) = (512, 384);

/// Reader of `<root>/{train.txt,val.txt,images/<id>.jpg,labels/<id>.png}`.
/// Raw labels: 0 = unlabelled (-> ignore), 1..=37 = classes (-> 0..=36), 255 = ignore.
pub struct SunRgbd {
    root: PathBuf,
    train: Vec<String>,
    val: Vec<String>,
}

impl SunRgbd {
    pub fn open(root: &Path) -> Result<Self> {
        let hint = fetch_hint(DatasetKind::Sun);
        let train = read_id_list(&root.join("train.txt"), "training", &hint)?;
        let val = read_id_list(&root.join("val.txt"), "validation", &hint)?;
        Ok(Self {
            root: root.to_path_buf(),
            train,
            val,
        })
    }

    fn image_path(&self, id: &str) -> PathBuf {
        self.root.join("images").join(format!("{id}.jpg"))
    }

    fn label_path(&self, id: &str) -> PathBuf {
        self.root.join("labels").join(format!("{id}.png"))
    }

    fn read_label(&self, path: &Path) -> Result<GrayImage> {
        let mut label = read_label_png(path, &fetch_hint(DatasetKind::Sun))?;
        map_label(
            &mut label,
            path,
            "sun",
            "0 (unlabelled), 1..=37 or 255",
            |v| match v {
                0 | IGNORE => Some(IGNORE),
                1..=37 => Some(v - 1),
                _ => None,
            },
        )?;
        Ok(label)
    }

    fn resize_label(label: GrayImage) -> GrayImage {
        if label.dimensions() == SUN_SIZE {
            return label;
        }
        crate::resize::resize_label(&label, SUN_SIZE.1 as usize, SUN_SIZE.0 as usize)
    }
}

impl SegDataset for SunRgbd {
    fn kind(&self) -> DatasetKind {
        DatasetKind::Sun
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
        let image = read_rgb(&image_path, &fetch_hint(DatasetKind::Sun))?;
        let label = self.read_label(&label_path)?;
        check_same_size(&label, &image, &label_path, &image_path)?;
        let image = if image.dimensions() == SUN_SIZE {
            image
        } else {
            crate::resize::resize_rgb(&image, SUN_SIZE.1 as usize, SUN_SIZE.0 as usize)
        };
        Ok(Sample {
            id: id.to_string(),
            image,
            label: Self::resize_label(label),
        })
    }
    fn load_label(&self, id: &str) -> Result<GrayImage> {
        Ok(Self::resize_label(self.read_label(&self.label_path(id))?))
    }
    fn check_id(&self, id: &str) -> Result<()> {
        let hint = fetch_hint(DatasetKind::Sun);
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
