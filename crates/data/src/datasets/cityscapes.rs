//! Cityscapes fine annotations, read from the official `leftImg8bit/` and `gtFine/` trees.

use super::description::{Description, IdSource, LabelValues, Place};
use super::reader::{FileDataset, Layout};
use crate::kind::{DatasetDefaults, DatasetKind, KindInfo};

/// `(width, height)` every Cityscapes image and label is resized to (as the original's
/// preprocessing does): bilinear for images, nearest for labels.
pub const CITYSCAPES_SIZE: (u32, u32) = (1024, 512);

/// Reader of the Cityscapes trees. Ids are `<split>/<city>/<city>_<seq>_<frame>`, listed
/// by walking `leftImg8bit/{train,val}` (sorted).
pub type Cityscapes = FileDataset<CityscapesLayout>;

#[derive(Default)]
pub struct CityscapesLayout;

impl Layout for CityscapesLayout {
    const DESCRIPTION: &'static Description = &Description {
        kind: DatasetKind::Cityscapes,
        info: KindInfo {
            defaults: DatasetDefaults {
                num_classes: 19,
                crop_size: (512, 512),
                scale_range: (1.0, 1.0),
                batch_size: 2,
                eval_size: (512, 1024),
                min_classes: 12,
                default_root: "data/cityscapes",
            },
            class_names: &CLASSES,
            palette: &PALETTE,
        },
        ids: IdSource::Walk {
            dir: "leftImg8bit",
            splits: ["train", "val"],
            depth: 1,
            suffix: "_leftImg8bit.png",
            form: "<split>/<city>/<city>_<seq>_<frame>",
        },
        image: Place::new("leftImg8bit", "_leftImg8bit.png"),
        label: &[Place::new("gtFine", "_gtFine_labelIds.png")],
        values: LabelValues::Table {
            name: "labelId",
            max: 33,
            pairs: &TRAIN_IDS,
        },
        resize: Some(CITYSCAPES_SIZE),
    };
}

/// Cityscapes `labelIds` -> the 19 train ids; every other id in 0..=33 is ignored.
/// Same table as the original code (`cityscapes_class_map`), from cityscapesScripts.
const TRAIN_IDS: [(u8, u8); 19] = [
    (7, 0),
    (8, 1),
    (11, 2),
    (12, 3),
    (13, 4),
    (17, 5),
    (19, 6),
    (20, 7),
    (21, 8),
    (22, 9),
    (23, 10),
    (24, 11),
    (25, 12),
    (26, 13),
    (27, 14),
    (28, 15),
    (31, 16),
    (32, 17),
    (33, 18),
];

const CLASSES: [&str; 19] = [
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

const PALETTE: [[u8; 3]; 19] = [
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
