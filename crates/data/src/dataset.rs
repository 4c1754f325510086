//! The dataset reader interface shared by every dataset, and `open` to get one by kind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, RgbImage};

use crate::datasets::{
    Cityscapes, FolderConfig, FolderDataset, PascalVoc, SunRgbd, Synthetic, SyntheticConfig,
};
use crate::error::DataError;
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

    fn num_classes(&self) -> usize {
        self.kind().defaults().num_classes
    }

    /// Class names, index = class id.
    fn class_names(&self) -> Vec<String> {
        self.kind()
            .class_names()
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Colour of each class for prediction images, index = class id.
    fn palette(&self) -> Vec<[u8; 3]> {
        self.kind().palette().to_vec()
    }

    /// The class-balanced sampler accepts only images with at least this many classes.
    fn min_classes(&self) -> usize {
        self.kind().defaults().min_classes
    }

    /// Evaluation images are padded to this `(height, width)`.
    fn eval_size(&self) -> (usize, usize) {
        self.kind().defaults().eval_size
    }
}

/// Opens a dataset. `root` defaults to [`crate::DatasetDefaults::default_root`]; it is
/// ignored for [`DatasetKind::Synthetic`] (which uses [`SyntheticConfig::default`]).
/// [`DatasetKind::Folder`] needs `root` and opens it with [`FolderConfig::new`] (use
/// [`FolderDataset::open`] for another validation fraction or split seed).
pub fn open(kind: DatasetKind, root: Option<&Path>) -> Result<Arc<dyn SegDataset>> {
    if kind == DatasetKind::Folder {
        let root = root.ok_or_else(|| {
            DataError::Config(
                "the folder dataset needs its folder: pass --data-root DIR (DIR holding \
                 images/, labels/ and classes.txt)"
                    .into(),
            )
        })?;
        return Ok(Arc::new(FolderDataset::open(&FolderConfig::new(root))?));
    }
    let root = root
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(kind.defaults().default_root));
    Ok(match kind {
        DatasetKind::Pascal => Arc::new(PascalVoc::open(&root)?),
        DatasetKind::Cityscapes => Arc::new(Cityscapes::open(&root)?),
        DatasetKind::Sun => Arc::new(SunRgbd::open(&root)?),
        DatasetKind::Synthetic => Arc::new(Synthetic::new(SyntheticConfig::default())?),
        DatasetKind::Folder => unreachable!("handled above"),
    })
}

/// The hint printed when a dataset folder is incomplete.
pub(crate) fn fetch_hint(kind: DatasetKind) -> String {
    format!(
        "Download and prepare it with `cargo xtask fetch-data --dataset {}`, or point \
         --data-root at a prepared folder (layout in the reco-data docs)",
        kind.name()
    )
}
