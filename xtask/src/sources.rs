//! Every URL and every pinned checksum the xtask uses, in one place.
//!
//! Each constant says where its value comes from, so that a reviewer can check it against
//! the source without running anything. Values that could not be checked against a
//! published source are marked `Pin::Unpinned` and say so; the downloader refuses them
//! unless the user passes `--checksums` or `--accept-unpinned` (see `fetch.rs`).

use crate::checksum::Checksum;

/// How much we know about an archive's content before downloading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// MD5 published by the dataset's host (or by the widely used loaders cited beside it).
    Md5(&'static str),
    /// SHA-256 computed by us from the official file.
    Sha256(&'static str),
    /// No published checksum and none computed yet: content cannot be verified.
    Unpinned,
}

impl Pin {
    pub fn checksum(self) -> Option<Checksum> {
        match self {
            Pin::Md5(h) => Some(Checksum::Md5(h.to_string())),
            Pin::Sha256(h) => Some(Checksum::Sha256(h.to_string())),
            Pin::Unpinned => None,
        }
    }
}

/// One downloadable archive.
#[derive(Clone, Copy, Debug)]
pub struct Archive {
    /// File name on disk; with `--mirror URL` the archive is fetched from `URL/<file_name>`,
    /// with `--from DIR` it is read from `DIR/<file_name>`, and `--checksums` keys use it.
    pub file_name: &'static str,
    /// Official download URL.
    pub url: &'static str,
    /// Exact size in bytes when published; a finished transfer of another size is an error
    /// (a truncated file) before the checksum is even computed.
    pub size: Option<u64>,
    pub pin: Pin,
}

// ---------------------------------------------------------------------------------------
// PASCAL VOC 2012
// ---------------------------------------------------------------------------------------

/// VOC2012 train/val (images, SegmentationClass, ImageSets).
/// URL and MD5: torchvision `torchvision/datasets/voc.py` (`DATASET_YEAR_DICT["2012"]`),
/// which mirrors the official page http://host.robots.ox.ac.uk/pascal/VOC/voc2012/
/// ("Download the training/validation data (2GB tar file)").
/// Size 1,999,639,040 bytes: the size the issue states for this file (Content-Length of the
/// official host); the MD5 is the real check.
pub const VOC2012_TRAINVAL: Archive = Archive {
    file_name: "VOCtrainval_11-May-2012.tar",
    url: "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
    size: Some(1_999_639_040),
    pin: Pin::Md5("6cd6e144f989b92b3379bac3b3de84fd"),
};

/// Semantic Boundaries Dataset (Hariharan et al. 2011), the source of the "aug" labels.
/// URL (www2 host: the www host now redirects there) and MD5: torchvision
/// `torchvision/datasets/sbd.py` (`SBDataset.url`, `SBDataset.md5`); the SBD page is
/// http://home.bharathh.info/pubs/codes/SBD/download.html. Size not published: unchecked.
///
/// Why SBD rather than the popular `SegmentationClassAug.zip`: that zip has no published
/// checksum (its hosts are Dropbox links and personal pages), so a pinned hash could not be
/// traced to any source nor computed here (no internet when this was written). benchmark.tgz
/// has a checksum everyone agrees on, and its `.mat` labels convert deterministically (see
/// `pascal.rs` and `mat5.rs`).
pub const SBD_BENCHMARK: Archive = Archive {
    file_name: "benchmark.tgz",
    url: "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
    size: None,
    pin: Pin::Md5("82b4d87ceb2ed10f6038a1cba92111cb"),
};

/// Id counts of the standard splits: 10,582 = |(SBD train ∪ SBD val ∪ VOC train) \ VOC val|,
/// 1,449 = |VOC2012 segmentation val|.
pub const PASCAL_TRAIN_AUG_COUNT: usize = 10_582;
pub const PASCAL_VAL_COUNT: usize = 1_449;

// ---------------------------------------------------------------------------------------
// Cityscapes
// ---------------------------------------------------------------------------------------

/// Login form; success is a 302 redirect, as in the official downloader
/// (mcordts/cityscapesScripts `cityscapesscripts/download/downloader.py`, `login()`), which
/// posts `username`, `password` and `submit=Login` with redirects disabled.
pub const CITYSCAPES_LOGIN_URL: &str = "https://www.cityscapes-dataset.com/login/";

/// Fine annotations, package id 1. MD5 as listed on https://www.cityscapes-dataset.com/downloads/
/// and reproduced by many loaders (e.g. the Cityscapes download scripts of mmsegmentation
/// users and the `zip_list` of several PyTorch dataset classes). It could not be fetched from the
/// site itself here (login required, no internet); the site serves it at
/// `https://www.cityscapes-dataset.com/md5-sum/?packageID=1` to logged-in users.
pub const CITYSCAPES_GTFINE: Archive = Archive {
    file_name: "gtFine_trainvaltest.zip",
    url: "https://www.cityscapes-dataset.com/file-handling/?packageID=1",
    size: None,
    pin: Pin::Md5("4237c19de34c8a376e9ba46b495d6f66"),
};

/// Left 8-bit images, package id 3 (11 GB). MD5: same sources as `CITYSCAPES_GTFINE`.
pub const CITYSCAPES_LEFTIMG8BIT: Archive = Archive {
    file_name: "leftImg8bit_trainvaltest.zip",
    url: "https://www.cityscapes-dataset.com/file-handling/?packageID=3",
    size: None,
    pin: Pin::Md5("0a6e97e94b616a514066c9e2adb0c97f"),
};

/// Image counts of the fine train / val splits (Cordts et al. 2016, Table 1).
pub const CITYSCAPES_TRAIN_COUNT: usize = 2_975;
pub const CITYSCAPES_VAL_COUNT: usize = 500;

// ---------------------------------------------------------------------------------------
// SUN RGB-D (37 classes), as repackaged by Ankur Handa: github.com/ankurhanda/sunrgbd-meta-data
// ---------------------------------------------------------------------------------------

/// 5,285 training images. URL from the repository's README. No checksum is published
/// anywhere we could find: unpinned.
pub const SUN_TRAIN_IMAGES: Archive = Archive {
    file_name: "SUNRGBD-train_images.tgz",
    url: "http://www.doc.ic.ac.uk/~ahanda/SUNRGBD-train_images.tgz",
    size: None,
    pin: Pin::Unpinned,
};

/// 5,050 test images (used as val, as in the original ReCo code). URL from the README. Unpinned.
pub const SUN_TEST_IMAGES: Archive = Archive {
    file_name: "SUNRGBD-test_images.tgz",
    url: "http://www.doc.ic.ac.uk/~ahanda/SUNRGBD-test_images.tgz",
    size: None,
    pin: Pin::Unpinned,
};

/// 37-class labels for both splits: `img-000001.png`..`img-005050.png` label the test images,
/// `img-005051.png`..`img-010335.png` the training images (README: "The first 5050 images ...
/// contain labels for test dataset while training set labels begin from 5051 and end at
/// 10335"). Served from the repository itself. Unpinned.
pub const SUN_LABELS: Archive = Archive {
    file_name: "sunrgbd_train_test_labels.tar.gz",
    url: "https://github.com/ankurhanda/sunrgbd-meta-data/raw/master/sunrgbd_train_test_labels.tar.gz",
    size: None,
    pin: Pin::Unpinned,
};

pub const SUN_TRAIN_COUNT: usize = 5_285;
pub const SUN_TEST_COUNT: usize = 5_050;

// ---------------------------------------------------------------------------------------
// ImageNet ResNet weights on the Hugging Face Hub
// ---------------------------------------------------------------------------------------

/// timm's ports of the torchvision ImageNet weights ("tv_in1k" = torchvision's original
/// `IMAGENET1K_V1` weights), stored as safetensors with torchvision's parameter names
/// (conv1, bn1, layer1.0.conv1, ..., fc). https://huggingface.co/timm/resnet101.tv_in1k
pub const HF_DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const HF_WEIGHTS_FILE: &str = "model.safetensors";

pub fn hf_repo_for(backbone: &str) -> Option<&'static str> {
    match backbone {
        "resnet18" => Some("timm/resnet18.tv_in1k"),
        "resnet34" => Some("timm/resnet34.tv_in1k"),
        "resnet50" => Some("timm/resnet50.tv_in1k"),
        "resnet101" => Some("timm/resnet101.tv_in1k"),
        _ => None,
    }
}

pub const BACKBONES: [&str; 4] = ["resnet18", "resnet34", "resnet50", "resnet101"];

// ---------------------------------------------------------------------------------------
// DINOv2 weights on the Hugging Face Hub
// ---------------------------------------------------------------------------------------

/// Meta's DINOv2 ViT/14 weights as published by Meta on the hub, in transformers'
/// `Dinov2Model` layout (`embeddings.*`, `encoder.layer.N.*`, `layernorm.*`; f32,
/// `model.safetensors`): https://huggingface.co/facebook/dinov2-small (ViT-S/14, 22 M
/// parameters), facebook/dinov2-base (ViT-B/14), facebook/dinov2-large (ViT-L/14).
/// `fetch-weights` converts them to timm's names (`reco_models::vit::timm_from_hf`).
pub fn hf_dinov2_repo_for(backbone: reco_models::Backbone) -> Option<&'static str> {
    use reco_models::Backbone;
    match backbone {
        Backbone::Dinov2Small => Some("facebook/dinov2-small"),
        Backbone::Dinov2Base => Some("facebook/dinov2-base"),
        Backbone::Dinov2Large => Some("facebook/dinov2-large"),
        _ => None,
    }
}

/// The DINOv2 names `fetch-weights --backbone` takes (besides the aliases of
/// `reco_models::Backbone::from_str`: dinov2-small, dinov2_vits14, ...).
pub const DINOV2_BACKBONES: [&str; 3] = ["dinov2-s", "dinov2-b", "dinov2-l"];
