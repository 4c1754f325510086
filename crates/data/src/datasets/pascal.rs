//! Pascal VOC 2012 with SBD-augmented labels (21 classes): `train_aug.txt` / `val.txt`,
//! `JPEGImages/<id>.jpg`, `SegmentationClassAug/<id>.png` (or `SegmentationClass/`, VOC's
//! own palette PNGs, where the augmented label is absent).

use super::description::{Description, IdSource, LabelValues, Place};
use super::reader::{FileDataset, Layout};
use crate::kind::{DatasetDefaults, DatasetKind, KindInfo};

/// Reader of `<root>/{train_aug.txt,val.txt,JPEGImages,SegmentationClassAug}`.
pub type PascalVoc = FileDataset<PascalLayout>;

#[derive(Default)]
pub struct PascalLayout;

impl Layout for PascalLayout {
    const DESCRIPTION: &'static Description = &Description {
        kind: DatasetKind::Pascal,
        info: KindInfo {
            defaults: DatasetDefaults {
                num_classes: 21,
                crop_size: (321, 321),
                scale_range: (0.5, 1.5),
                batch_size: 10,
                eval_size: (513, 513),
                min_classes: 3,
                default_root: "data/pascal",
            },
            class_names: &CLASSES,
            palette: &PALETTE,
        },
        ids: IdSource::Lists {
            train: "train_aug.txt",
            val: "val.txt",
        },
        image: Place::new("JPEGImages", ".jpg"),
        label: &[
            Place::new("SegmentationClassAug", ".png"),
            Place::new("SegmentationClass", ".png"),
        ],
        values: LabelValues::Identity,
        resize: None,
    };
}

const CLASSES: [&str; 21] = [
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

const PALETTE: [[u8; 3]; 21] = [
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
