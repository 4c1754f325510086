//! The crate's error type: every variant names the file or thing at fault, the problem,
//! and what the user can do about it.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, DataError>;

/// Errors from reading datasets, split files and building batches.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or folder the dataset needs does not exist.
    #[error("{}: {what} not found. {hint}", path.display())]
    Missing {
        path: PathBuf,
        what: String,
        hint: String,
    },

    /// A file exists but could not be read or decoded.
    #[error("{}: cannot read {what}: {reason}. {hint}", path.display())]
    Corrupt {
        path: PathBuf,
        what: String,
        reason: String,
        hint: String,
    },

    /// A label map whose size differs from its image.
    #[error(
        "{}: label is {label_w}x{label_h} but its image {} is {image_w}x{image_h}; \
         the pair must have the same size (re-create the label or the image)",
        label.display(),
        image.display()
    )]
    SizeMismatch {
        label: PathBuf,
        image: PathBuf,
        label_w: u32,
        label_h: u32,
        image_w: u32,
        image_h: u32,
    },

    /// A label pixel with a value that is neither a class of the dataset nor the ignore value.
    #[error(
        "{}: pixel (x={x}, y={y}) has label value {value}, but {dataset} labels must be {allowed}; \
         the label file is corrupt or belongs to another dataset",
        path.display()
    )]
    ClassOutOfRange {
        path: PathBuf,
        x: u32,
        y: u32,
        value: u32,
        dataset: String,
        allowed: String,
    },

    /// A list of ids (list file or folder walk) that holds no id.
    #[error("{}: the list of {what} ids is empty. {hint}", path.display())]
    EmptyList {
        path: PathBuf,
        what: String,
        hint: String,
    },

    /// A split file naming ids that the dataset does not have (or whose image is missing).
    #[error(
        "{}: the split names {count} image(s) that are not in the dataset at {} (first: {first}); \
         re-create the split with `trainer split` for this data root",
        path.display(),
        root.display()
    )]
    SplitMissingIds {
        path: PathBuf,
        root: PathBuf,
        count: usize,
        first: String,
    },

    /// A split file that is not valid split JSON, or that belongs to another dataset.
    #[error("{}: invalid split file: {reason}", path.display())]
    BadSplit { path: PathBuf, reason: String },

    /// The class-balanced sampler cannot reach the requested number of labelled images.
    #[error("cannot pick {requested} labelled images: {reason}")]
    Sampler { requested: usize, reason: String },

    /// An unknown id (e.g. a synthetic id of the wrong form).
    #[error("unknown id `{id}` for dataset {dataset}: {reason}")]
    UnknownId {
        id: String,
        dataset: String,
        reason: String,
    },

    /// A configuration value that cannot work (e.g. a crop of size 0).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// A tensor operation failed (wrong shape or dtype given to a batch transform).
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),

    /// The loader's worker stopped (it panicked, or the loader was used after an error).
    #[error("data loader worker stopped: {0}")]
    Worker(String),
}

impl DataError {
    pub(crate) fn missing(path: impl Into<PathBuf>, what: &str, hint: &str) -> Self {
        DataError::Missing {
            path: path.into(),
            what: what.to_string(),
            hint: hint.to_string(),
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        what: &str,
        reason: impl std::fmt::Display,
        hint: &str,
    ) -> Self {
        DataError::Corrupt {
            path: path.into(),
            what: what.to_string(),
            reason: reason.to_string(),
            hint: hint.to_string(),
        }
    }
}
