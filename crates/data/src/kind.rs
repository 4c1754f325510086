//! Which dataset: the kinds, their names, and the shape of what each kind knows about
//! itself ([`KindInfo`]). The values live with each dataset's description in
//! [`crate::datasets`]; [`DatasetKind::defaults`], [`DatasetKind::class_names`] and
//! [`DatasetKind::palette`] look them up (in `catalog`), so this module depends on nothing.

use serde::{Deserialize, Serialize};

/// Label value that marks pixels without a class in every `u8` label map of this crate.
/// In the batch tensors it becomes `-1`.
pub const IGNORE: u8 = 255;

/// The datasets this crate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// Pascal VOC 2012 with the SBD-augmented labels (21 classes).
    Pascal,
    /// Cityscapes fine annotations (19 train classes), resized to 1024x512.
    Cityscapes,
    /// SUN RGB-D, 37 classes.
    Sun,
    /// The built-in synthetic dataset (7 classes, generated from a seed, no files).
    Synthetic,
    /// Any labelled folder (`images/`, `labels/`, `classes.txt`; see
    /// [`crate::datasets::FolderDataset`]). Its classes, palette and evaluation size come
    /// from the folder: ask the opened [`crate::SegDataset`], not [`DatasetKind::defaults`].
    Folder,
}

/// Per-dataset defaults, as in the original `BuildDataLoader` (synthetic: our own choice).
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetDefaults {
    pub num_classes: usize,
    /// Training crop `(height, width)`.
    pub crop_size: (usize, usize),
    /// Random rescale range of the labelled augmentation.
    pub scale_range: (f32, f32),
    /// Labelled batch size (the unlabelled batch has the same size; supervised-only runs
    /// double it, as the original does).
    pub batch_size: usize,
    /// Evaluation images are padded to this `(height, width)`.
    pub eval_size: (usize, usize),
    /// The class-balanced sampler accepts only images with at least this many classes.
    pub min_classes: usize,
    /// Where `cargo xtask fetch-data` puts the dataset (unused for synthetic).
    pub default_root: &'static str,
}

/// What a kind knows before any file is opened: its defaults, class names and colours
/// (index = class id). Each dataset's file declares one.
#[derive(Clone, Debug, PartialEq)]
pub struct KindInfo {
    pub defaults: DatasetDefaults,
    pub class_names: &'static [&'static str],
    /// Colour of each class for prediction images (as the original's colour maps).
    pub palette: &'static [[u8; 3]],
}

impl DatasetKind {
    /// All kinds, in the order used by help texts.
    pub const ALL: [DatasetKind; 5] = [
        DatasetKind::Pascal,
        DatasetKind::Cityscapes,
        DatasetKind::Sun,
        DatasetKind::Synthetic,
        DatasetKind::Folder,
    ];

    /// Lower-case name, as on the command line and in split files.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Pascal => "pascal",
            DatasetKind::Cityscapes => "cityscapes",
            DatasetKind::Sun => "sun",
            DatasetKind::Synthetic => "synthetic",
            DatasetKind::Folder => "folder",
        }
    }

    /// Parses `pascal`, `cityscapes`, `sun`, `synthetic` or `folder` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
    }

    /// The hint printed when a dataset folder is incomplete.
    pub(crate) fn fetch_hint(self) -> String {
        format!(
            "Download and prepare it with `cargo xtask fetch-data --dataset {}`, or point \
             --data-root at a prepared folder (layout in the reco-data docs)",
            self.name()
        )
    }
}

impl std::fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s).ok_or_else(|| {
            format!(
                "unknown dataset `{s}`: expected one of pascal, cityscapes, sun, synthetic, folder"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for k in DatasetKind::ALL {
            assert_eq!(DatasetKind::parse(k.name()), Some(k));
            assert_eq!(k.name().parse::<DatasetKind>(), Ok(k));
        }
        assert!(DatasetKind::parse("voc").is_none());
        assert_eq!(DatasetKind::parse("Folder"), Some(DatasetKind::Folder));
    }
}
