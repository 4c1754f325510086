//! Cityscapes fine annotations, read from the official `leftImg8bit/` and `gtFine/` trees.

use std::path::{Path, PathBuf};

use image::GrayImage;

use crate::dataset::{fetch_hint, Sample, SegDataset, Subset};
use crate::error::{DataError, Result};
use crate::io::{check_same_size, map_label, read_label_png, read_rgb};
use crate::kind::{DatasetKind, IGNORE};

/// `(width, height)` every Cityscapes image and label is resized to (as the original's
/// preprocessing does): bilinear for images, nearest for labels.
pub const CITYSCAPES_SIZE: (u32, u32) = (1024, 512);

/// Cityscapes `labelIds` (0..=33) -> the 19 train ids; every other id is ignored.
/// Same table as the original code (`cityscapes_class_map`), from cityscapesScripts.
fn train_id(label_id: u8) -> Option<u8> {
    Some(match label_id {
        7 => 0,
        8 => 1,
        11 => 2,
        12 => 3,
        13 => 4,
        17 => 5,
        19 => 6,
        20 => 7,
        21 => 8,
        22 => 9,
        23 => 10,
        24 => 11,
        25 => 12,
        26 => 13,
        27 => 14,
        28 => 15,
        31 => 16,
        32 => 17,
        33 => 18,
        0..=33 | IGNORE => IGNORE,
        _ => return None,
    })
}

/// Reader of the Cityscapes trees. Ids are `<split>/<city>/<city>_<seq>_<frame>`.
pub struct Cityscapes {
    root: PathBuf,
    train: Vec<String>,
    val: Vec<String>,
    size: (u32, u32),
}

impl Cityscapes {
    /// Lists both splits by walking `leftImg8bit/{train,val}` (sorted).
    pub fn open(root: &Path) -> Result<Self> {
        Ok(Self {
            root: root.to_path_buf(),
            train: walk(root, "train")?,
            val: walk(root, "val")?,
            size: CITYSCAPES_SIZE,
        })
    }

    /// Splits an id into the image and label paths.
    fn paths(&self, id: &str) -> Result<(PathBuf, PathBuf)> {
        let parts: Vec<&str> = id.split('/').collect();
        let [split, city, base] = parts[..] else {
            return Err(DataError::UnknownId {
                id: id.to_string(),
                dataset: "cityscapes".into(),
                reason: "expected `<split>/<city>/<city>_<seq>_<frame>`".into(),
            });
        };
        let image = self
            .root
            .join("leftImg8bit")
            .join(split)
            .join(city)
            .join(format!("{base}_leftImg8bit.png"));
        let label = self
            .root
            .join("gtFine")
            .join(split)
            .join(city)
            .join(format!("{base}_gtFine_labelIds.png"));
        Ok((image, label))
    }

    fn read_label(&self, path: &Path) -> Result<GrayImage> {
        let mut label = read_label_png(path, &fetch_hint(DatasetKind::Cityscapes))?;
        map_label(
            &mut label,
            path,
            "cityscapes",
            "a labelId in 0..=33 or 255",
            train_id,
        )?;
        Ok(label)
    }

    fn resize_label(&self, label: GrayImage) -> GrayImage {
        if label.dimensions() == self.size {
            return label;
        }
        crate::resize::resize_label(&label, self.size.1 as usize, self.size.0 as usize)
    }
}

fn walk(root: &Path, split: &str) -> Result<Vec<String>> {
    let dir = root.join("leftImg8bit").join(split);
    let hint = fetch_hint(DatasetKind::Cityscapes);
    let cities =
        std::fs::read_dir(&dir).map_err(|_| DataError::missing(&dir, "image folder", &hint))?;
    let mut ids = Vec::new();
    for city in cities.flatten() {
        let city_path = city.path();
        if !city_path.is_dir() {
            continue;
        }
        let city_name = city.file_name().to_string_lossy().into_owned();
        let files = std::fs::read_dir(&city_path)
            .map_err(|e| DataError::corrupt(&city_path, "image folder", e, &hint))?;
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(base) = name.strip_suffix("_leftImg8bit.png") {
                ids.push(format!("{split}/{city_name}/{base}"));
            }
        }
    }
    if ids.is_empty() {
        return Err(DataError::EmptyList {
            path: dir,
            what: format!("{split} (no *_leftImg8bit.png found)"),
            hint,
        });
    }
    ids.sort();
    Ok(ids)
}

impl SegDataset for Cityscapes {
    fn kind(&self) -> DatasetKind {
        DatasetKind::Cityscapes
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
        let (image_path, label_path) = self.paths(id)?;
        let image = read_rgb(&image_path, &fetch_hint(DatasetKind::Cityscapes))?;
        let label = self.read_label(&label_path)?;
        check_same_size(&label, &image, &label_path, &image_path)?;
        let image = if image.dimensions() == self.size {
            image
        } else {
            crate::resize::resize_rgb(&image, self.size.1 as usize, self.size.0 as usize)
        };
        Ok(Sample {
            id: id.to_string(),
            image,
            label: self.resize_label(label),
        })
    }
    fn load_label(&self, id: &str) -> Result<GrayImage> {
        let (_, label_path) = self.paths(id)?;
        Ok(self.resize_label(self.read_label(&label_path)?))
    }
    fn check_id(&self, id: &str) -> Result<()> {
        let (image, label) = self.paths(id)?;
        let hint = fetch_hint(DatasetKind::Cityscapes);
        for (p, what) in [(image, "image"), (label, "label")] {
            if !p.is_file() {
                return Err(DataError::missing(p, what, &hint));
            }
        }
        Ok(())
    }
}
