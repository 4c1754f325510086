//! Any labelled folder, laid out like MMSegmentation's custom datasets:
//!
//! ```text
//! classes.txt          one class per line, line i = class id i-1:
//!                      `name` or `name r g b` (colour for prediction images)
//! images/<id>.jpg|png  (also .jpeg; extensions case-insensitive)
//! labels/<id>.png      8-bit class ids (grayscale, or palette PNG: the palette index is
//!                      the class id), 255 = ignore; same size as the image
//! train.txt, val.txt   optional lists of ids. Without both, the ids missing from the
//!                      given list (or all images, with neither) are split with a seed.
//! ```
//!
//! The class count comes from `classes.txt`; the evaluation size is the largest
//! validation image.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::description::{LabelMap, LabelValues, Place};
use super::reader::{FileDataset, Images, Reader};
use crate::error::{DataError, Result};
use crate::io::read_id_list;
use crate::kind::{DatasetDefaults, DatasetKind, KindInfo, IGNORE};

const HINT: &str = "A labelled folder holds images/<id>.jpg|png, labels/<id>.png (class ids, \
                    255 = ignore) and classes.txt (one class name per line, optionally \
                    followed by `r g b`), plus optional train.txt / val.txt lists of ids";

/// Stream tag of the seeded train / validation split.
const TAG_FOLDER_SPLIT: u64 = 0x0F01_DE25;

/// How to open a labelled folder.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderConfig {
    pub root: PathBuf,
    /// Share of the ids that become validation images when the folder has no list for
    /// them (`0 < f < 1`).
    pub val_fraction: f64,
    /// Seed of that split.
    pub split_seed: u64,
}

impl FolderConfig {
    /// 10 % validation, split seed 0.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            val_fraction: 0.1,
            split_seed: 0,
        }
    }
}

/// Where the training and validation ids of a folder came from (for config.json).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum FolderSplit {
    /// `train.txt` and `val.txt`.
    ListFiles,
    /// Only `train.txt`: the other images are validation images.
    TrainList,
    /// Only `val.txt`: the other images are training images.
    ValList,
    /// No list: `val_fraction` of the sorted, seeded-shuffled ids are validation images.
    Seeded {
        seed: u64,
        val_fraction: f64,
        train: usize,
        val: usize,
    },
}

/// A labelled folder (see the module docs for the layout): the one file reader, with
/// where its ids came from.
pub type FolderDataset = FileDataset<FolderSplit>;

/// Where a folder's labels are (its images are found by scanning `images/`).
const LABELS: &[Place] = &[Place::new("labels", ".png")];

/// The Pascal training settings, as placeholders: the classes and evaluation size are the
/// opened folder's ([`crate::SegDataset::num_classes`], [`crate::SegDataset::eval_size`]).
pub(crate) const INFO: KindInfo = KindInfo {
    defaults: DatasetDefaults {
        num_classes: 0,
        crop_size: (321, 321),
        scale_range: (0.5, 1.5),
        batch_size: 10,
        eval_size: (513, 513),
        // Background plus one object: the usual content of a photo of one's own.
        min_classes: 2,
        default_root: "",
    },
    class_names: &[],
    palette: &[],
};

/// The colour of class `c` when `classes.txt` gives none: the Pascal VOC colour map
/// (bit-interleaved class id), which is the Pascal palette for the first 21 classes.
pub fn default_class_color(c: usize) -> [u8; 3] {
    let mut rgb = [0u8; 3];
    let mut id = c;
    for bit in (0..8).rev() {
        for (ch, v) in rgb.iter_mut().enumerate() {
            *v |= (((id >> ch) & 1) as u8) << bit;
        }
        id >>= 3;
    }
    rgb
}

/// Reads a class list in the format of a labelled folder's `classes.txt`: one class name
/// per line (line 1 = class 0), optionally followed by an `r g b` colour. Returns the names
/// and the colours (the Pascal VOC colour map where a line gives none).
pub fn read_classes(path: &Path) -> Result<(Vec<String>, Vec<[u8; 3]>)> {
    let what = "class list";
    let hint = "write classes.txt with one class name per line (line 1 = class 0), \
                optionally followed by an `r g b` colour";
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::missing(path, what, hint)
        } else {
            DataError::corrupt(path, what, e, hint)
        }
    })?;
    let lines: Vec<&str> = text.lines().collect();
    let used = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    if used == 0 {
        return Err(DataError::EmptyList {
            path: path.to_path_buf(),
            what: "class".into(),
            hint: hint.into(),
        });
    }
    if used > IGNORE as usize {
        return Err(DataError::corrupt(
            path,
            what,
            format!("it lists {used} classes, but 8-bit labels hold at most 255 (255 = ignore)"),
            hint,
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(used);
    let mut palette = Vec::with_capacity(used);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in lines[..used].iter().enumerate() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if tokens.is_empty() {
            return Err(DataError::corrupt(
                path,
                what,
                format!(
                    "line {} is empty; every line up to the last names a class",
                    i + 1
                ),
                hint,
            ));
        }
        let colour: Option<[u8; 3]> = (tokens.len() >= 4)
            .then(|| {
                let t = &tokens[tokens.len() - 3..];
                Some([t[0].parse().ok()?, t[1].parse().ok()?, t[2].parse().ok()?])
            })
            .flatten();
        let name_tokens = if colour.is_some() {
            &tokens[..tokens.len() - 3]
        } else {
            &tokens[..]
        };
        let name = name_tokens.join(" ");
        if let Some(first) = seen.insert(name.clone(), i + 1) {
            return Err(DataError::corrupt(
                path,
                what,
                format!(
                    "class `{name}` is listed twice (lines {first} and {}); class names must \
                     be unique",
                    i + 1
                ),
                hint,
            ));
        }
        palette.push(colour.unwrap_or_else(|| default_class_color(i)));
        names.push(name);
    }
    Ok((names, palette))
}

fn is_image_file(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["jpg", "jpeg", "png"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

/// id -> file of every image in `dir` (not recursive: ids are file stems).
fn scan_images(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::missing(dir, "image folder", HINT)
        } else {
            DataError::corrupt(dir, "image folder", e, HINT)
        }
    })?;
    let mut images: HashMap<String, PathBuf> = HashMap::new();
    for entry in entries {
        let path = entry
            .map_err(|e| DataError::corrupt(dir, "image folder", e, HINT))?
            .path();
        if !path.is_file() || !is_image_file(&path) {
            continue;
        }
        let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(String::from) else {
            continue;
        };
        if let Some(other) = images.insert(id.clone(), path.clone()) {
            return Err(DataError::corrupt(
                dir,
                "image folder",
                format!(
                    "two images have the id `{id}`: {} and {}",
                    other.display(),
                    path.display()
                ),
                "keep one image per id",
            ));
        }
    }
    if images.is_empty() {
        return Err(DataError::EmptyList {
            path: dir.to_path_buf(),
            what: "image (.jpg, .jpeg, .png)".into(),
            hint: HINT.into(),
        });
    }
    Ok(images)
}

impl FileDataset<FolderSplit> {
    /// Opens `cfg.root`: reads the class list and the lists of ids, checks that every id
    /// has an image and a label file, and reads the validation images' sizes (headers
    /// only). Label values and sizes are checked when a label is read.
    pub fn open(cfg: &FolderConfig) -> Result<Self> {
        let root = cfg.root.clone();
        if !root.is_dir() {
            return Err(DataError::missing(&root, "labelled folder", HINT));
        }
        if !(cfg.val_fraction > 0.0 && cfg.val_fraction < 1.0) {
            return Err(DataError::Config(format!(
                "the validation fraction of a labelled folder must be between 0 and 1 \
                 (exclusive), got {}",
                cfg.val_fraction
            )));
        }
        let (classes, palette) = read_classes(&root.join("classes.txt"))?;
        let images = scan_images(&root.join("images"))?;
        let label_path = |id: &str| LABELS[0].path(&root, id);

        let list = |name: &str, what: &str| -> Result<Option<Vec<String>>> {
            let path = root.join(name);
            if !path.exists() {
                return Ok(None);
            }
            let ids = read_id_list(&path, what, HINT)?;
            // Every listed id needs its two files.
            let missing: Vec<String> = ids
                .iter()
                .filter_map(|id| match images.get(id) {
                    None => Some(format!("`{id}` (no images/{id}.jpg, .jpeg or .png)")),
                    Some(_) if !label_path(id).is_file() => {
                        Some(format!("`{id}` (no labels/{id}.png)"))
                    }
                    Some(_) => None,
                })
                .collect();
            if let Some(first) = missing.first() {
                return Err(DataError::corrupt(
                    &path,
                    &format!("list of {what} ids"),
                    format!(
                        "{} listed id(s) have no files, first {first}",
                        missing.len()
                    ),
                    "add the files or remove the ids from the list",
                ));
            }
            Ok(Some(ids))
        };
        let train_list = list("train.txt", "training")?;
        let val_list = list("val.txt", "validation")?;

        // Images not named by a list, sorted so that the seeded split is reproducible.
        let rest = |taken: &[&Vec<String>]| -> Result<Vec<String>> {
            let taken: HashSet<&String> = taken.iter().flat_map(|v| v.iter()).collect();
            let mut ids: Vec<String> = images
                .keys()
                .filter(|id| !taken.contains(id))
                .cloned()
                .collect();
            ids.sort();
            if let Some(id) = ids.iter().find(|id| !label_path(id).is_file()) {
                return Err(DataError::missing(
                    label_path(id),
                    &format!("label of images/{id}"),
                    "every image of a labelled folder needs labels/<id>.png (move \
                     unlabelled photos to a separate folder and pass it as the \
                     unlabelled folder), or name the labelled ids in train.txt / val.txt",
                ));
            }
            Ok(ids)
        };
        let no_rest = |what: &str| DataError::EmptyList {
            path: root.clone(),
            what: what.into(),
            hint: "every image is named by the one list file; add the other list \
                       (train.txt or val.txt) or more images"
                .into(),
        };
        let (train, val, split) = match (train_list, val_list) {
            (Some(t), Some(v)) => (t, v, FolderSplit::ListFiles),
            (Some(t), None) => {
                let v = rest(&[&t])?;
                if v.is_empty() {
                    return Err(no_rest("validation"));
                }
                (t, v, FolderSplit::TrainList)
            }
            (None, Some(v)) => {
                let t = rest(&[&v])?;
                if t.is_empty() {
                    return Err(no_rest("training"));
                }
                (t, v, FolderSplit::ValList)
            }
            (None, None) => {
                let mut ids = rest(&[])?;
                if ids.len() < 2 {
                    return Err(DataError::corrupt(
                        &root,
                        "labelled folder",
                        "it has a single image; a training and a validation image are needed",
                        HINT,
                    ));
                }
                ids.shuffle(&mut reco_util::seed::rng_for(&[
                    cfg.split_seed,
                    TAG_FOLDER_SPLIT,
                ]));
                let n_val = ((ids.len() as f64 * cfg.val_fraction).round() as usize)
                    .clamp(1, ids.len() - 1);
                let val: Vec<String> = {
                    let mut v = ids[..n_val].to_vec();
                    v.sort();
                    v
                };
                let mut train = ids[n_val..].to_vec();
                train.sort();
                let split = FolderSplit::Seeded {
                    seed: cfg.split_seed,
                    val_fraction: cfg.val_fraction,
                    train: train.len(),
                    val: val.len(),
                };
                (train, val, split)
            }
        };
        let eval_size = largest_size(val.iter().map(|id| &images[id]))?;
        let n = classes.len();
        let reader = Reader {
            kind: DatasetKind::Folder,
            name: format!("folder {}", root.display()),
            label_owner: format!("this folder's ({n} classes in classes.txt)"),
            hint: HINT.into(),
            images: Images::Found(images),
            label: LABELS,
            values: LabelMap::new(LabelValues::Identity, n),
            resize: None,
            id_form: None,
            root,
            train,
            val,
            classes,
            palette,
            min_classes: INFO.defaults.min_classes.min(n),
            eval_size,
        };
        Ok(Self { reader, own: split })
    }

    /// Where the training and validation ids came from.
    pub fn split_source(&self) -> &FolderSplit {
        &self.own
    }
}

/// `(height, width)` covering every image, from the file headers.
fn largest_size<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Result<(usize, usize)> {
    let paths: Vec<&PathBuf> = paths.collect();
    let sizes: Vec<(u32, u32)> = paths
        .par_iter()
        .map(|p| {
            image::ImageReader::open(p)
                .and_then(|r| r.with_guessed_format())
                .map_err(|e| DataError::corrupt(*p, "image", e, HINT))?
                .into_dimensions()
                .map_err(|e| DataError::corrupt(*p, "image", e, HINT))
        })
        .collect::<Result<_>>()?;
    let h = sizes.iter().map(|s| s.1).max().unwrap_or(1);
    let w = sizes.iter().map(|s| s.0).max().unwrap_or(1);
    Ok((h.max(1) as usize, w.max(1) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_colours_are_the_pascal_palette() {
        let pascal = DatasetKind::Pascal.palette();
        for (c, &want) in pascal.iter().enumerate() {
            assert_eq!(default_class_color(c), want, "class {c}");
        }
    }
}
