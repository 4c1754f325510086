//! Readers of the prepared dataset folders, and the synthetic dataset.

mod cityscapes;
mod folder;
mod pascal;
mod sun;

pub use crate::synthetic::{Synthetic, SyntheticConfig};
pub use cityscapes::{Cityscapes, CITYSCAPES_SIZE};
pub use folder::{default_class_color, FolderConfig, FolderDataset, FolderSplit};
pub use pascal::PascalVoc;
pub use sun::{SunRgbd, SUN_SIZE};
