//! SUN RGB-D, 37 classes, as prepared by `cargo xtask fetch-data --dataset sun`.

use super::description::{Description, IdSource, LabelValues, Place};
use super::reader::{FileDataset, Layout};
use crate::kind::{DatasetDefaults, DatasetKind, KindInfo};

/// `(width, height)` every SUN image and label is resized to, as the original's
/// `sun_preprocess.py` (bilinear for images, nearest for labels; a no-op when the files
/// already have this size).
pub const SUN_SIZE: (u32, u32) = (512, 384);

/// Reader of `<root>/{train.txt,val.txt,images/<id>.jpg,labels/<id>.png}`.
/// Raw labels: 0 = unlabelled (-> ignore), 1..=37 = classes (-> 0..=36), 255 = ignore.
pub type SunRgbd = FileDataset<SunLayout>;

#[derive(Default)]
pub struct SunLayout;

impl Layout for SunLayout {
    const DESCRIPTION: &'static Description = &Description {
        kind: DatasetKind::Sun,
        info: KindInfo {
            defaults: DatasetDefaults {
                num_classes: 37,
                crop_size: (321, 321),
                scale_range: (0.5, 1.5),
                batch_size: 5,
                eval_size: (385, 513),
                // SUN uses the per-class sampler of the original, which has no minimum.
                min_classes: 1,
                default_root: "data/sun",
            },
            class_names: &CLASSES,
            palette: &PALETTE,
        },
        ids: IdSource::Lists {
            train: "train.txt",
            val: "val.txt",
        },
        image: Place::new("images", ".jpg"),
        label: &[Place::new("labels", ".png")],
        values: LabelValues::MinusOne,
        resize: Some(SUN_SIZE),
    };
}

const CLASSES: [&str; 37] = [
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

const PALETTE: [[u8; 3]; 37] = [
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
