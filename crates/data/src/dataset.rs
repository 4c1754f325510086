//! The dataset reader interface shared by every dataset: the bottom of the crate's
//! dataset layers (the readers in [`crate::datasets`] implement it; `open` is above them).

use std::path::Path;

use image::{GrayImage, RgbImage};

use crate::error::Result;
use crate::kind::DatasetKind;

/// One decoded training or validation pair.
#[derive(Clone, Debug)]
pub struct Sample {
    pub id: String,
    /// 8-bit RGB image.
    pub image: RgbImage,
    /// Class id per pixel (`0..num_classes`), [`crate::IGNORE`] (255) where unlabelled.
    /// Same size as `image`.
    pub label: GrayImage,
}

/// Which list of ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subset {
    Train,
    Val,
}

/// A segmentation dataset: lists of ids and a loader by id. Readers are cheap to share
/// between threads (`Arc<dyn SegDataset>`); `load` may be called concurrently.
pub trait SegDataset: Send + Sync {
    fn kind(&self) -> DatasetKind;

    /// The folder the dataset is read from (empty for the synthetic dataset).
    fn root(&self) -> &Path;

    /// Ids of a subset, in list-file order (Cityscapes: sorted folder walk).
    fn ids(&self, subset: Subset) -> &[String];

    /// Decodes the image and label of `id`, with labels mapped to class ids
    /// (255 = ignore) and validated.
    fn load(&self, id: &str) -> Result<Sample>;

    /// The label alone (for the split sampler); same values as `load(id)?.label`.
    fn load_label(&self, id: &str) -> Result<GrayImage> {
        Ok(self.load(id)?.label)
    }

    /// Checks cheaply (no decoding) that `id`'s image and label exist.
    fn check_id(&self, id: &str) -> Result<()>;

    // What follows is the dataset's own (a folder's classes come from its classes.txt),
    // so every reader answers it rather than the trait guessing from `kind()`.

    fn num_classes(&self) -> usize;

    /// Class names, index = class id.
    fn class_names(&self) -> Vec<String>;

    /// Colour of each class for prediction images, index = class id.
    fn palette(&self) -> Vec<[u8; 3]>;

    /// The class-balanced sampler accepts only images with at least this many classes.
    fn min_classes(&self) -> usize;

    /// Evaluation images are padded to this `(height, width)`.
    fn eval_size(&self) -> (usize, usize);
}
