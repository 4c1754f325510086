//! Unlabelled images from any folder, to replace the unlabelled half of a split.
//!
//! The folder is walked recursively for `.jpg`, `.jpeg` and `.png` files (any case, any
//! size). A photo collection of thousands of files may hold a few broken ones, and one bad
//! photo must not end a run: files whose header cannot be read are skipped when the folder
//! is opened, and a file that fails to decode later is skipped when the loader meets it
//! (its place in the batch goes to the next readable file). Both are reported with a
//! warning on stderr naming the file, and listed by [`UnlabelledFolder::skipped`].
//!
//! Images smaller than the crop are padded like labelled ones (reflect image) by the
//! loader's augmentation; the label of every pixel is ignore.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use image::{GrayImage, ImageReader};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{Sample, SegDataset, Subset};
use crate::error::{DataError, Result};
use crate::io::read_rgb;
use crate::kind::{DatasetKind, IGNORE};
use crate::loader::{Loader, TrainLoaderConfig};

const HINT: &str = "the unlabelled folder may hold .jpg, .jpeg and .png files in any \
                    sub-folder";

/// At most this many skipped files are named one by one on stderr when a folder opens.
const WARN_LIMIT: usize = 20;

/// How to read an unlabelled folder.
#[derive(Clone, Debug, PartialEq)]
pub struct UnlabelledFolderConfig {
    pub root: PathBuf,
    /// Images whose longer side exceeds this are downscaled (bilinear, aspect kept) on
    /// load, so that a crop of a large photo shows as much of the scene as a crop of the
    /// labelled images does. `None` keeps every image as it is.
    pub max_side: Option<u32>,
}

impl UnlabelledFolderConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_side: None,
        }
    }
}

/// A file that was left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedImage {
    pub path: PathBuf,
    pub reason: String,
}

/// What a run records about its unlabelled folder (config.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnlabelledSummary {
    pub root: PathBuf,
    /// Readable images found when the folder was opened.
    pub images: usize,
    /// Files skipped so far (when opening and while loading).
    pub skipped: Vec<SkippedImage>,
}

/// Images from a folder tree, without labels. Implements [`SegDataset`] (ids =
/// paths relative to the root, with `/`; no validation ids; labels all ignore), so
/// [`Loader::train`] takes it as is; see [`Loader::unlabelled`].
pub struct UnlabelledFolder {
    cfg: UnlabelledFolderConfig,
    ids: Vec<String>,
    index: HashMap<String, usize>,
    skipped_at_open: Vec<SkippedImage>,
    /// Indices found unreadable while loading, and their reports.
    failed: Mutex<(HashSet<usize>, Vec<SkippedImage>)>,
}

/// Every image file under `dir` (directory symlinks are not followed, so a link loop
/// cannot hang the walk).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| DataError::corrupt(dir, "unlabelled folder", e, HINT))?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::corrupt(dir, "unlabelled folder", e, HINT))?;
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir {
            walk(&path, out)?;
        } else if path.is_file()
            && path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["jpg", "jpeg", "png"]
                    .iter()
                    .any(|x| e.eq_ignore_ascii_case(x))
            })
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the image header: size known and not zero.
fn probe(path: &Path) -> std::result::Result<(), String> {
    let (w, h) = ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| e.to_string())?
        .into_dimensions()
        .map_err(|e| e.to_string())?;
    if w == 0 || h == 0 {
        return Err(format!("the image is {w}x{h} pixels"));
    }
    Ok(())
}

fn warn(s: &SkippedImage) {
    eprintln!(
        "warning: skipping unlabelled image {}: {}",
        s.path.display(),
        s.reason
    );
}

impl UnlabelledFolder {
    /// [`UnlabelledFolder::with_config`] with [`UnlabelledFolderConfig::new`].
    pub fn open(root: &Path) -> Result<Self> {
        Self::with_config(UnlabelledFolderConfig::new(root))
    }

    /// Walks the folder and reads every image's header; unreadable files are skipped
    /// (warned about and listed). Errors when the folder is missing or holds no readable
    /// image.
    pub fn with_config(cfg: UnlabelledFolderConfig) -> Result<Self> {
        let root = &cfg.root;
        if !root.is_dir() {
            return Err(DataError::missing(root, "unlabelled folder", HINT));
        }
        if cfg.max_side == Some(0) {
            return Err(DataError::Config(
                "the largest side of unlabelled images must be at least 1 pixel".into(),
            ));
        }
        let mut files = Vec::new();
        walk(root, &mut files)?;
        files.sort();
        let probed: Vec<std::result::Result<(), String>> =
            files.par_iter().map(|p| probe(p)).collect();
        let mut ids = Vec::new();
        let mut skipped = Vec::new();
        for (path, r) in files.iter().zip(probed) {
            match r {
                Ok(()) => {
                    let rel = path.strip_prefix(root).unwrap_or(path);
                    let id = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    ids.push(id);
                }
                Err(reason) => skipped.push(SkippedImage {
                    path: path.clone(),
                    reason,
                }),
            }
        }
        for s in skipped.iter().take(WARN_LIMIT) {
            warn(s);
        }
        if skipped.len() > WARN_LIMIT {
            eprintln!(
                "warning: ... and {} more unreadable files skipped in {}",
                skipped.len() - WARN_LIMIT,
                root.display()
            );
        }
        if ids.is_empty() {
            let what = if skipped.is_empty() {
                "image (.jpg, .jpeg, .png)".to_string()
            } else {
                format!(
                    "readable image ({} unreadable file(s) skipped)",
                    skipped.len()
                )
            };
            return Err(DataError::EmptyList {
                path: root.clone(),
                what,
                hint: format!("point the unlabelled folder at a folder of photos; {HINT}"),
            });
        }
        let index = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Ok(Self {
            cfg,
            ids,
            index,
            skipped_at_open: skipped,
            failed: Mutex::new((HashSet::new(), Vec::new())),
        })
    }

    /// Readable image ids (relative paths), sorted.
    pub fn image_ids(&self) -> &[String] {
        &self.ids
    }

    /// Number of readable images found when the folder was opened.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Never true: opening an empty folder is an error.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Files skipped so far: at opening, then those that failed while loading.
    pub fn skipped(&self) -> Vec<SkippedImage> {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        self.skipped_at_open
            .iter()
            .chain(&failed.1)
            .cloned()
            .collect()
    }

    /// Number of files skipped so far.
    pub fn skipped_count(&self) -> usize {
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        self.skipped_at_open.len() + failed.1.len()
    }

    /// The folder, its image count and the skipped files, for config.json.
    pub fn summary(&self) -> UnlabelledSummary {
        UnlabelledSummary {
            root: self.cfg.root.clone(),
            images: self.ids.len(),
            skipped: self.skipped(),
        }
    }

    fn path_of(&self, i: usize) -> PathBuf {
        self.cfg.root.join(&self.ids[i])
    }

    fn decode(&self, i: usize) -> Result<image::RgbImage> {
        let img = read_rgb(&self.path_of(i), HINT)?;
        Ok(match self.cfg.max_side {
            Some(m) if img.width().max(img.height()) > m => {
                let scale = f64::from(m) / f64::from(img.width().max(img.height()));
                let nw = ((f64::from(img.width()) * scale).round() as usize).max(1);
                let nh = ((f64::from(img.height()) * scale).round() as usize).max(1);
                crate::resize::resize_rgb(&img, nh, nw)
            }
            _ => img,
        })
    }
}

impl SegDataset for UnlabelledFolder {
    /// The folder kind; unlabelled sources have no classes of their own.
    fn kind(&self) -> DatasetKind {
        DatasetKind::Folder
    }
    fn root(&self) -> &Path {
        &self.cfg.root
    }
    /// Every readable image for [`Subset::Train`]; none for [`Subset::Val`].
    fn ids(&self, subset: Subset) -> &[String] {
        match subset {
            Subset::Train => &self.ids,
            Subset::Val => &[],
        }
    }
    /// Decodes `id`; if it cannot be decoded, warns, records it, and returns the next
    /// readable image in id order instead (the returned [`Sample::id`] says which).
    fn load(&self, id: &str) -> Result<Sample> {
        let &start = self.index.get(id).ok_or_else(|| DataError::UnknownId {
            id: id.to_string(),
            dataset: format!("unlabelled folder {}", self.cfg.root.display()),
            reason: "not an image found when the folder was opened".into(),
        })?;
        let n = self.ids.len();
        for k in 0..n {
            let i = (start + k) % n;
            {
                let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
                if failed.0.contains(&i) {
                    continue;
                }
            }
            match self.decode(i) {
                Ok(image) => {
                    let label =
                        GrayImage::from_pixel(image.width(), image.height(), image::Luma([IGNORE]));
                    return Ok(Sample {
                        id: self.ids[i].clone(),
                        image,
                        label,
                    });
                }
                Err(e) => {
                    let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
                    if failed.0.insert(i) {
                        let s = SkippedImage {
                            path: self.path_of(i),
                            reason: e.to_string(),
                        };
                        warn(&s);
                        failed.1.push(s);
                    }
                }
            }
        }
        Err(DataError::EmptyList {
            path: self.cfg.root.clone(),
            what: "readable image".into(),
            hint: format!(
                "every image failed to decode ({} skipped); {HINT}",
                self.skipped_count()
            ),
        })
    }
    fn load_label(&self, id: &str) -> Result<GrayImage> {
        Ok(self.load(id)?.label)
    }
    fn check_id(&self, id: &str) -> Result<()> {
        match self.index.get(id) {
            Some(&i) if self.path_of(i).is_file() => Ok(()),
            _ => Err(DataError::missing(
                self.cfg.root.join(id),
                "unlabelled image",
                HINT,
            )),
        }
    }
    fn num_classes(&self) -> usize {
        0
    }
    fn class_names(&self) -> Vec<String> {
        Vec::new()
    }
    fn palette(&self) -> Vec<[u8; 3]> {
        Vec::new()
    }
    /// The folder kind's (an unlabelled source is never class-sampled or evaluated).
    fn min_classes(&self) -> usize {
        DatasetKind::Folder.defaults().min_classes
    }
    fn eval_size(&self) -> (usize, usize) {
        DatasetKind::Folder.defaults().eval_size
    }
}

impl Loader {
    /// Endless batches of the images of `src` (with replacement), as [`Loader::train`]
    /// with every readable image of the folder. Use it with
    /// [`TrainLoaderConfig::unlabelled`] of the labelled dataset (its crop).
    pub fn unlabelled(src: Arc<UnlabelledFolder>, cfg: TrainLoaderConfig) -> Result<Loader> {
        let ids = src.image_ids().to_vec();
        Loader::train(src, ids, cfg)
    }
}
