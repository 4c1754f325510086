//! What a file dataset declares about itself (as MMSegmentation's dataset classes do):
//! its classes, how its ids are listed, where an id's image and label are, how raw label
//! values become classes, and an optional fixed size. The reader in `reader` does the
//! rest, the same way for every dataset.

use std::path::{Path, PathBuf};

use crate::kind::{DatasetKind, KindInfo, IGNORE};

/// One file dataset, as its file in `datasets/` declares it (a `const`).
#[derive(Debug)]
pub struct Description {
    pub kind: DatasetKind,
    /// Defaults, class names, palette.
    pub info: KindInfo,
    /// How the training and validation ids are found.
    pub ids: IdSource,
    /// Where the image of an id is.
    pub image: Place,
    /// Where its label is: the first of these that exists (the first when none does, so
    /// that the error names the usual place).
    pub label: &'static [Place],
    /// How raw label values map to classes.
    pub values: LabelValues,
    /// `(width, height)` every image (bilinear) and label (nearest) is resized to on load;
    /// `None` keeps the files' size.
    pub resize: Option<(u32, u32)>,
}

/// How the ids of the two subsets are listed.
#[derive(Debug)]
pub enum IdSource {
    /// List files (relative to the root), one id per line, blank lines skipped.
    Lists {
        train: &'static str,
        val: &'static str,
    },
    /// A walk of `<dir>/<split>/` through `depth` levels of sub-folders, keeping files
    /// that end in `suffix`: id = `<split>/<sub-folders>/<name without suffix>`, sorted.
    /// `form` shows the id's shape in errors (e.g. `<split>/<city>/<name>`).
    Walk {
        dir: &'static str,
        /// Folder names of the training and validation subsets.
        splits: [&'static str; 2],
        depth: usize,
        suffix: &'static str,
        form: &'static str,
    },
}

/// A file of an id: `<root>/<dir>/<id><suffix>`.
#[derive(Clone, Copy, Debug)]
pub struct Place {
    pub dir: &'static str,
    pub suffix: &'static str,
}

impl Place {
    pub const fn new(dir: &'static str, suffix: &'static str) -> Self {
        Self { dir, suffix }
    }

    pub(crate) fn path(&self, root: &Path, id: &str) -> PathBuf {
        root.join(self.dir).join(format!("{id}{}", self.suffix))
    }
}

/// How raw 8-bit label values become class ids (255 is read as ignore by all).
#[derive(Clone, Copy, Debug)]
pub enum LabelValues {
    /// The value is the class id (`0..classes`).
    Identity,
    /// 0 = unlabelled (ignore), `1..=classes` = class + 1 (SUN RGB-D, ADE20K).
    MinusOne,
    /// A table of `(raw, class)` pairs; other raw values up to `max` are ignored (e.g.
    /// Cityscapes' labelIds -> trainIds). `name` names the raw values in errors.
    Table {
        name: &'static str,
        max: u8,
        pairs: &'static [(u8, u8)],
    },
}

/// [`LabelValues`] for a given class count, as a table over all 256 raw values: one
/// lookup a pixel in the loader threads, and the error text built once.
pub(crate) struct LabelMap {
    /// `None`: the raw value is invalid.
    class: [Option<u8>; 256],
    /// What the values must be, for errors (e.g. `0..=20 or 255 (ignore)`).
    pub(crate) allowed: String,
}

impl LabelMap {
    pub(crate) fn new(values: LabelValues, num_classes: usize) -> Self {
        let n = num_classes.min(IGNORE as usize);
        let mut class = [None; 256];
        class[IGNORE as usize] = Some(IGNORE);
        let allowed = match values {
            LabelValues::Identity => {
                for (v, c) in class.iter_mut().enumerate().take(n) {
                    *c = Some(v as u8);
                }
                format!("0..={} or 255 (ignore)", n.saturating_sub(1))
            }
            LabelValues::MinusOne => {
                class[0] = Some(IGNORE);
                // Raw 255 stays ignore, so at most 254 classes.
                for (v, c) in class.iter_mut().enumerate().skip(1).take(n.min(254)) {
                    *c = Some(v as u8 - 1);
                }
                format!("0 (unlabelled), 1..={n} or 255")
            }
            LabelValues::Table { name, max, pairs } => {
                for c in &mut class[..=max as usize] {
                    *c = Some(IGNORE);
                }
                for &(raw, c) in pairs {
                    class[raw as usize] = Some(c);
                }
                format!("a {name} in 0..={max} or 255")
            }
        };
        Self { class, allowed }
    }

    /// The class of raw value `v` (or [`IGNORE`]); `None` when `v` is not a valid value.
    pub(crate) fn get(&self, v: u8) -> Option<u8> {
        self.class[v as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_maps_cover_every_raw_value() {
        let m = LabelMap::new(LabelValues::Identity, 21);
        assert_eq!(
            (m.get(0), m.get(20), m.get(21), m.get(255)),
            (Some(0), Some(20), None, Some(255))
        );
        let m = LabelMap::new(LabelValues::MinusOne, 37);
        assert_eq!(
            (m.get(0), m.get(1), m.get(37), m.get(38)),
            (Some(255), Some(0), Some(36), None)
        );
        let t = LabelValues::Table {
            name: "labelId",
            max: 33,
            pairs: &[(7, 0), (33, 18)],
        };
        let m = LabelMap::new(t, 19);
        assert_eq!(
            (m.get(7), m.get(33), m.get(0), m.get(34)),
            (Some(0), Some(18), Some(255), None)
        );
        assert_eq!(m.allowed, "a labelId in 0..=33 or 255");
    }
}
