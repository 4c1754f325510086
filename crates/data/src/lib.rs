//! # reco-data: datasets, label splits, augmentation, mixing and a threaded batch loader
//!
//! Everything the ReCo trainer feeds on, handed out as CPU tensors:
//! `images [B,3,H,W] f32` (ImageNet-normalised) and `labels [B,H,W] i64` (-1 = ignore).
//!
//! ## Public API (what the trainer uses)
//!
//! ```no_run
//! use std::sync::Arc;
//! use reco_data::*;
//!
//! # fn main() -> reco_data::Result<()> {
//! let kind = DatasetKind::Synthetic; // or Pascal / Cityscapes / Sun
//! let ds: Arc<dyn SegDataset> = open(kind, None)?; // root defaults to data/<kind>
//!
//! // Labelled / unlabelled split: sample once, save, reload later (reproducible runs).
//! let split = Split::sample(ds.as_ref(), 10, 0, None)?;
//! split.save(std::path::Path::new("split.json"))?;
//! let split = Split::load(std::path::Path::new("split.json"), ds.as_ref())?;
//!
//! // Endless random batches (with replacement), augmented as the original.
//! let mut lab = Loader::train(ds.clone(), split.labelled.clone(),
//!                             TrainLoaderConfig::labelled(kind, 0))?;
//! let mut unl = Loader::train(ds.clone(), split.unlabelled.clone(),
//!                             TrainLoaderConfig::unlabelled(kind, 1))?;
//! let batch: Batch = lab.next().unwrap()?; // batch.images, batch.labels, batch.ids
//!
//! // Unlabelled branch, after the teacher gave pseudo-labels and confidences [B,H,W]:
//! let u = unl.next().unwrap()?;
//! # let (pseudo, conf) = (u.labels.clamp(0i64, 6i64)?, u.labels.ones_like()?.to_dtype(candle_core::DType::F32)?);
//! let mixed: UnsupBatch = unsup_transform(&u.images, &pseudo, &conf,
//!     &UnsupAugConfig::new(kind, MixMode::ClassMix), /*seed=*/ 7)?;
//!
//! // Validation in order, padded to the dataset's evaluation size.
//! for b in Loader::val(ds.clone(), ds.ids(Subset::Val).to_vec(), ValLoaderConfig::new(kind))? {
//!     let b = b?;
//! }
//! # Ok(()) }
//! ```
//!
//! - [`DatasetKind`]: `Pascal | Cityscapes | Sun | Synthetic`, with
//!   [`DatasetKind::defaults`] (classes, crop, scale range, batch size, evaluation size,
//!   sampler minimum, default root), [`DatasetKind::class_names`] and
//!   [`DatasetKind::palette`] (colours for prediction images).
//! - [`SegDataset`] (`ids(Subset)`, `load(id) -> Sample { image: RgbImage, label:
//!   GrayImage }` with 255 = ignore) and [`open`]. The readers are in [`datasets`]: the
//!   file datasets [`datasets::PascalVoc`], [`datasets::Cityscapes`],
//!   [`datasets::SunRgbd`] and [`datasets::FolderDataset`] are one reader,
//!   [`datasets::FileDataset`], each with a [`datasets::Description`] (ids from list
//!   files or a tree walk, where an id's image and label are, how raw label values map
//!   to classes, an optional fixed size, class names and colours); the synthetic
//!   dataset ([`datasets::Synthetic`]) has its own generator. Adding a dataset is one
//!   short file: see "Adding a dataset" in docs/design.md.
//! - [`Split`]: `sample`, `save`, `load`, `class_counts`; [`Partial`] labels (p0/p1/p5/p25).
//! - [`AugConfig`] (the labelled transform), [`Loader`] with [`TrainLoaderConfig`] /
//!   [`ValLoaderConfig`] producing [`Batch`].
//! - [`unsup_transform`] with [`UnsupAugConfig`] and [`MixMode`]
//!   (ClassMix / CutMix / CutOut / None); its steps, and the labelled transform's, are
//!   in [`transforms`].
//! - Helpers for `predict`: [`image_to_tensor`] (normalised `[1,3,H,W]`) and
//!   [`colorize`] (class map -> palette image); [`io::read_rgb`] decodes any image file.
//! - Resuming: [`TrainLoaderConfig::start_batch`] starts at batch `k`; batch `k` depends
//!   only on `(seed, k)`, so a resumed run sees the batches an uninterrupted run would.
//! - Errors: [`DataError`] names the file, the problem and what to do.
//!
//! ## Determinism
//!
//! Nothing uses a global RNG. The loader derives a seed for each random decision from
//! `(seed, batch index, position in batch)`, so a seed gives the same batches whatever
//! `num_threads` is. [`unsup_transform`] takes an explicit seed (e.g. derive it from the
//! run seed and the iteration).
//!
//! ## Folder layouts
//!
//! `cargo xtask fetch-data --dataset <name>` produces exactly these. An *id* is what list
//! files and split files name. A folder is "ready" when xtask wrote `<root>/.ready`; the
//! readers do not require it, but name `cargo xtask fetch-data --dataset <name>` in their
//! error when a list file or folder is missing.
//!
//! ### pascal (default root `data/pascal`)
//! ```text
//! train_aug.txt                  10,582 ids, one per line (e.g. 2007_000032)
//! val.txt                        1,449 ids
//! JPEGImages/<id>.jpg
//! SegmentationClassAug/<id>.png  8-bit class ids 0..=20, 255 = ignore; grayscale or
//!                                palette PNG (palette index = class id, as VOC2012's
//!                                SegmentationClass)
//! SegmentationClass/<id>.png     optional: used when SegmentationClassAug/<id>.png is absent
//! ```
//!
//! ### cityscapes (default root `data/cityscapes`): the official trees, untouched
//! ```text
//! leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
//! gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
//! ```
//! id = `<split>/<city>/<city>_<seq>_<frame>`. Ids are listed by walking the trees
//! (sorted). `labelIds` are mapped to the 19 train ids (all other ids -> ignore); images
//! (bilinear) and labels (nearest) are resized to 1024x512 ([`datasets::CITYSCAPES_SIZE`]).
//!
//! ### sun (default root `data/sun`): SUN RGB-D 37 classes, as prepared by xtask
//! ```text
//! train.txt, val.txt             ids, one per line (train-000001..., test-000001...)
//! images/<id>.jpg
//! labels/<id>.png                8-bit: 0 = unlabelled (-> ignore), 1..=37 = classes
//!                                (the reader uses label - 1); 255 is also read as ignore
//! ```
//! Images (bilinear) and labels (nearest) are resized to 512x384 ([`datasets::SUN_SIZE`]) on load,
//! as the original's `sun_preprocess.py` did on disk (a no-op for files of that size).
//!
//! ### synthetic (no files)
//! Generated from a seed on each `load` ([`datasets::SyntheticConfig`]: seed 0, 2000 train and 200
//! val images of 96x96 px, ids `train-00000`, `val-00000`). Seven classes: background and
//! {disc, square, triangle} x {stripes, checkerboard}, with random colours and cluttered
//! backgrounds whose distractors share one cue but never both (see [`datasets::Synthetic`]).
//! Defaults: crop 64, scale 0.75-1.25, batch 8, evaluation 96x96.
//!
//! ## Augmentation (as the original `build_data.transform`)
//! Labelled: random rescale (bilinear image / nearest label, `int(size * s)`), pad
//! right/bottom to the crop (reflect image, ignore label), random crop, then colour jitter
//! with p 0.8 (brightness, contrast, saturation in 0.75-1.25, hue ±0.25, random order as
//! torchvision's ColorJitter), Gaussian blur with p 0.5 (sigma 0.15-1.15), horizontal flip
//! with p 0.5, ImageNet normalisation. Unlabelled loader: crop only (scale 1, no
//! photometric), the rest happens on the batch in [`unsup_transform`]. Evaluation: no
//! rescale, pad to the evaluation size. Decoding uses the `image` (and `png`) crates,
//! resizing `fast_image_resize` (Pillow's convolution scheme, SIMD).

// Layers, bottom up (no module imports one above it): `kind` (the enum), `dataset`
// (the trait), `datasets` (descriptions, the reader, one file a dataset), `catalog`
// (the kind -> defaults table and `open`), then the loader and transforms.
// One public path per item: what the trainer and most programs need is re-exported at
// the root (the modules holding it are private); `datasets` (the concrete readers),
// `transforms` (the individual augmentation steps), `color` (pixel kernels), `io` (file
// decoding) and `rng` are namespaces of their own, with nothing of theirs at the root.
mod augment;
mod catalog;
pub mod color;
mod dataset;
pub mod datasets;
mod error;
pub mod io;
mod kind;
mod loader;
mod mix;
mod partial;
mod resize;
pub mod rng;
mod split;
mod unlabelled;

/// The individual steps of the labelled transform ([`AugConfig`], run by the [`Loader`])
/// and of the unlabelled one ([`unsup_transform`]), for benchmarks and for programs that
/// compose their own pipeline.
pub mod transforms {
    pub use crate::augment::{augment_sample, eval_sample};
    pub use crate::mix::{cutout_box, mix, photometric, rescale_crop};
    pub use crate::resize::{resize_label, resize_rgb};
}

pub use augment::{colorize, image_to_tensor, AugConfig, Photometric, IMAGENET_MEAN, IMAGENET_STD};
pub use catalog::open;
pub use dataset::{Sample, SegDataset, Subset};
pub use error::{DataError, Result};
pub use kind::{DatasetDefaults, DatasetKind, KindInfo, IGNORE};
pub use loader::{Batch, Loader, PartialLabels, TrainLoaderConfig, ValLoaderConfig};
pub use mix::{unsup_transform, HostBatch, MixMode, UnsupAugConfig, UnsupBatch};
pub use partial::{partial_label, Partial};
pub use split::class_table_named;
pub use split::{class_table, classes_present, Split};
pub use unlabelled::{SkippedImage, UnlabelledFolder, UnlabelledFolderConfig, UnlabelledSummary};
