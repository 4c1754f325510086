//! Every dataset by kind: the one table from [`DatasetKind`] to what its file in
//! [`crate::datasets`] declares (defaults, class names, palette), and [`open`]. It sits
//! above the readers, which therefore never ask a kind for its defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dataset::SegDataset;
use crate::datasets::{
    Cityscapes, CityscapesLayout, FolderConfig, FolderDataset, Layout, PascalLayout, PascalVoc,
    SunLayout, SunRgbd, Synthetic, SyntheticConfig, FOLDER_INFO, SYNTHETIC_INFO,
};
use crate::error::{DataError, Result};
use crate::kind::{DatasetDefaults, DatasetKind, KindInfo};

impl DatasetKind {
    /// What this kind's file declares.
    pub fn info(self) -> &'static KindInfo {
        match self {
            DatasetKind::Pascal => &PascalLayout::DESCRIPTION.info,
            DatasetKind::Cityscapes => &CityscapesLayout::DESCRIPTION.info,
            DatasetKind::Sun => &SunLayout::DESCRIPTION.info,
            DatasetKind::Synthetic => &SYNTHETIC_INFO,
            DatasetKind::Folder => &FOLDER_INFO,
        }
    }

    /// The original code's settings for this dataset. For [`DatasetKind::Folder`]: the
    /// Pascal training settings, `num_classes` 0 and `min_classes` 2 as placeholders (the
    /// opened dataset knows its classes: [`SegDataset::num_classes`],
    /// [`SegDataset::min_classes`], [`SegDataset::eval_size`]).
    pub fn defaults(self) -> DatasetDefaults {
        self.info().defaults.clone()
    }

    /// Class names, index = class id (empty for [`DatasetKind::Folder`]: use
    /// [`SegDataset::class_names`]).
    pub fn class_names(self) -> &'static [&'static str] {
        self.info().class_names
    }

    /// Colour of each class for prediction images, index = class id (as the original's
    /// colour maps). Empty for [`DatasetKind::Folder`]: use [`SegDataset::palette`].
    pub fn palette(self) -> &'static [[u8; 3]] {
        self.info().palette
    }
}

/// Opens a dataset. `root` defaults to [`DatasetDefaults::default_root`]; it is
/// ignored for [`DatasetKind::Synthetic`] (which uses [`SyntheticConfig::default`]).
/// [`DatasetKind::Folder`] needs `root` and opens it with [`FolderConfig::new`] (use
/// [`FolderDataset::open`] for another validation fraction or split seed).
pub fn open(kind: DatasetKind, root: Option<&Path>) -> Result<Arc<dyn SegDataset>> {
    let root_or_default = || {
        root.map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(kind.defaults().default_root))
    };
    Ok(match kind {
        DatasetKind::Pascal => Arc::new(PascalVoc::open(&root_or_default())?),
        DatasetKind::Cityscapes => Arc::new(Cityscapes::open(&root_or_default())?),
        DatasetKind::Sun => Arc::new(SunRgbd::open(&root_or_default())?),
        DatasetKind::Synthetic => Arc::new(Synthetic::new(SyntheticConfig::default())?),
        DatasetKind::Folder => {
            let root = root.ok_or_else(|| {
                DataError::Config(
                    "the folder dataset needs its folder: pass --data-root DIR (DIR holding \
                     images/, labels/ and classes.txt)"
                        .into(),
                )
            })?;
            Arc::new(FolderDataset::open(&FolderConfig::new(root))?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_palettes_and_class_counts_agree() {
        for k in DatasetKind::ALL {
            let d = k.defaults();
            assert_eq!(k.class_names().len(), d.num_classes, "{k}");
            assert_eq!(k.palette().len(), d.num_classes, "{k}");
        }
    }
}
