//! The readers: the one reader of file datasets ([`FileDataset`]) with a
//! [`Description`] for each built-in dataset (Pascal VOC, Cityscapes, SUN RGB-D), the
//! user's labelled folder, and the synthetic dataset's generator.
//!
//! Layers, bottom up: `description` (what a dataset declares) and `reader` (the reading,
//! checking and errors), then one short file per dataset naming its classes, colours and
//! files. To add a dataset, see "Adding a dataset" in docs/design.md.

mod cityscapes;
mod description;
mod folder;
mod pascal;
mod reader;
mod sun;
mod synthetic;

pub use cityscapes::{Cityscapes, CityscapesLayout, CITYSCAPES_SIZE};
pub use description::{Description, IdSource, LabelValues, Place};
pub use folder::{default_class_color, read_classes, FolderConfig, FolderDataset, FolderSplit};
pub use pascal::{PascalLayout, PascalVoc};
pub use reader::{FileDataset, Layout};
pub use sun::{SunLayout, SunRgbd, SUN_SIZE};
pub use synthetic::{Synthetic, SyntheticConfig};

// For the kind table (`catalog`): what the non-file datasets know of their kind.
pub(crate) use folder::INFO as FOLDER_INFO;
pub(crate) use synthetic::INFO as SYNTHETIC_INFO;
