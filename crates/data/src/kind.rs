//! Which dataset, and the settings of the original code for it (crop, scale, batch,
//! evaluation size, classes, palette).

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
    /// [`crate::FolderDataset`]). Its classes, palette and evaluation size come from the
    /// folder: ask the opened [`crate::SegDataset`], not [`DatasetKind::defaults`].
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

    /// The original code's settings for this dataset. For [`DatasetKind::Folder`]: the
    /// Pascal training settings, `num_classes` 0 and `min_classes` 2 as placeholders (the
    /// opened dataset knows its classes: [`crate::SegDataset::num_classes`],
    /// [`crate::SegDataset::min_classes`], [`crate::SegDataset::eval_size`]).
    pub fn defaults(self) -> DatasetDefaults {
        match self {
            DatasetKind::Pascal => DatasetDefaults {
                num_classes: 21,
                crop_size: (321, 321),
                scale_range: (0.5, 1.5),
                batch_size: 10,
                eval_size: (513, 513),
                min_classes: 3,
                default_root: "data/pascal",
            },
            DatasetKind::Cityscapes => DatasetDefaults {
                num_classes: 19,
                crop_size: (512, 512),
                scale_range: (1.0, 1.0),
                batch_size: 2,
                eval_size: (512, 1024),
                min_classes: 12,
                default_root: "data/cityscapes",
            },
            DatasetKind::Sun => DatasetDefaults {
                num_classes: 37,
                crop_size: (321, 321),
                scale_range: (0.5, 1.5),
                batch_size: 5,
                eval_size: (385, 513),
                // SUN uses the per-class sampler of the original, which has no minimum.
                min_classes: 1,
                default_root: "data/sun",
            },
            DatasetKind::Synthetic => DatasetDefaults {
                num_classes: crate::synthetic::NUM_CLASSES,
                crop_size: (64, 64),
                scale_range: (0.75, 1.25),
                batch_size: 8,
                eval_size: (crate::synthetic::IMAGE_SIZE, crate::synthetic::IMAGE_SIZE),
                min_classes: 3,
                default_root: "",
            },
            DatasetKind::Folder => DatasetDefaults {
                num_classes: 0,
                crop_size: (321, 321),
                scale_range: (0.5, 1.5),
                batch_size: 10,
                eval_size: (513, 513),
                // Background plus one object: the usual content of a photo of one's own.
                min_classes: 2,
                default_root: "",
            },
        }
    }

    /// Class names, index = class id (empty for [`DatasetKind::Folder`]: use
    /// [`crate::SegDataset::class_names`]).
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Pascal => &PASCAL_CLASSES,
            DatasetKind::Cityscapes => &CITYSCAPES_CLASSES,
            DatasetKind::Sun => &SUN_CLASSES,
            DatasetKind::Synthetic => &crate::synthetic::CLASS_NAMES,
            DatasetKind::Folder => &[],
        }
    }

    /// Colour of each class for prediction images, index = class id (as the original's
    /// colour maps). Empty for [`DatasetKind::Folder`]: use [`crate::SegDataset::palette`].
    pub fn palette(self) -> &'static [[u8; 3]] {
        match self {
            DatasetKind::Pascal => &PASCAL_PALETTE,
            DatasetKind::Cityscapes => &CITYSCAPES_PALETTE,
            DatasetKind::Sun => &SUN_PALETTE,
            DatasetKind::Synthetic => &SYNTHETIC_PALETTE,
            DatasetKind::Folder => &[],
        }
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

const PASCAL_CLASSES: [&str; 21] = [
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

const CITYSCAPES_CLASSES: [&str; 19] = [
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
];

const SUN_CLASSES: [&str; 37] = [
    "wall",
    "floor",
    "cabinet",
    "bed",
    "chair",
    "sofa",
    "table",
    "door",
    "window",
    "bookshelf",
    "picture",
    "counter",
    "blinds",
    "desk",
    "shelves",
    "curtain",
    "dresser",
    "pillow",
    "mirror",
    "floor mat",
    "clothes",
    "ceiling",
    "books",
    "fridge",
    "tv",
    "paper",
    "towel",
    "shower curtain",
    "box",
    "whiteboard",
    "person",
    "night stand",
    "toilet",
    "sink",
    "lamp",
    "bathtub",
    "bag",
];

const PASCAL_PALETTE: [[u8; 3]; 21] = [
    [0, 0, 0],
    [128, 0, 0],
    [0, 128, 0],
    [128, 128, 0],
    [0, 0, 128],
    [128, 0, 128],
    [0, 128, 128],
    [128, 128, 128],
    [64, 0, 0],
    [192, 0, 0],
    [64, 128, 0],
    [192, 128, 0],
    [64, 0, 128],
    [192, 0, 128],
    [64, 128, 128],
    [192, 128, 128],
    [0, 64, 0],
    [128, 64, 0],
    [0, 192, 0],
    [128, 192, 0],
    [0, 64, 128],
];

const CITYSCAPES_PALETTE: [[u8; 3]; 19] = [
    [128, 64, 128],
    [244, 35, 232],
    [70, 70, 70],
    [102, 102, 156],
    [190, 153, 153],
    [153, 153, 153],
    [250, 170, 30],
    [220, 220, 0],
    [107, 142, 35],
    [152, 251, 152],
    [70, 130, 180],
    [220, 20, 60],
    [255, 0, 0],
    [0, 0, 142],
    [0, 0, 70],
    [0, 60, 100],
    [0, 80, 100],
    [0, 0, 230],
    [119, 11, 32],
];

const SUN_PALETTE: [[u8; 3]; 37] = [
    [148, 65, 137],
    [255, 116, 69],
    [86, 156, 137],
    [202, 179, 158],
    [155, 99, 235],
    [161, 107, 108],
    [133, 160, 103],
    [76, 152, 126],
    [84, 62, 35],
    [44, 80, 130],
    [31, 184, 157],
    [101, 144, 77],
    [23, 197, 62],
    [141, 168, 145],
    [142, 151, 136],
    [115, 201, 77],
    [100, 216, 255],
    [57, 156, 36],
    [88, 108, 129],
    [105, 129, 112],
    [42, 137, 126],
    [155, 108, 249],
    [166, 148, 143],
    [81, 91, 87],
    [100, 124, 51],
    [73, 131, 121],
    [157, 210, 220],
    [134, 181, 60],
    [221, 223, 147],
    [123, 108, 131],
    [161, 66, 179],
    [163, 221, 160],
    [31, 146, 98],
    [99, 121, 30],
    [49, 89, 240],
    [116, 108, 9],
    [161, 176, 169],
];

const SYNTHETIC_PALETTE: [[u8; 3]; 7] = [
    [0, 0, 0],
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_palettes_and_class_counts_agree() {
        for k in DatasetKind::ALL {
            let d = k.defaults();
            assert_eq!(k.class_names().len(), d.num_classes, "{k}");
            assert_eq!(k.palette().len(), d.num_classes, "{k}");
            assert_eq!(DatasetKind::parse(k.name()), Some(k));
            assert_eq!(k.name().parse::<DatasetKind>(), Ok(k));
        }
        assert!(DatasetKind::parse("voc").is_none());
        assert_eq!(DatasetKind::parse("Folder"), Some(DatasetKind::Folder));
    }
}
