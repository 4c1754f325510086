//! The one reader of file datasets ([`FileDataset`]): lists the ids, finds an id's image
//! and label, decodes them, maps and checks the label values, checks the sizes and
//! resizes — for every dataset, from its [`Description`]. Errors name the file and what
//! to do, the same way for all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

use super::description::{Description, IdSource, LabelMap, Place};
use crate::dataset::{Sample, SegDataset, Subset};
use crate::error::{DataError, Result};
use crate::io::{check_same_size, map_label, read_id_list, read_label_png, read_rgb};
use crate::kind::DatasetKind;

/// A built-in file dataset: a type whose only content is its description.
pub trait Layout: Default + Send + Sync + 'static {
    const DESCRIPTION: &'static Description;
}

/// A dataset read from files by the one reader. `D` is what belongs to the dataset alone:
/// a [`Layout`] marker for the built-in datasets (e.g. [`super::PascalVoc`] =
/// `FileDataset<PascalLayout>`), where a folder's ids came from for
/// [`super::FolderDataset`].
pub struct FileDataset<D> {
    pub(super) reader: Reader,
    pub(super) own: D,
}

impl<L: Layout> FileDataset<L> {
    /// Opens `root` as `L` describes it: reads (or walks) the lists of ids. Images and
    /// labels are read on `load`.
    pub fn open(root: &Path) -> Result<Self> {
        Ok(Self {
            reader: Reader::open(root, L::DESCRIPTION)?,
            own: L::default(),
        })
    }
}

/// Where the images of the ids are.
pub(super) enum Images {
    /// Every image at one [`Place`].
    At(Place),
    /// Found by scanning a folder (the extension varies): id -> file.
    Found(HashMap<String, PathBuf>),
}

/// Everything the reader needs, whether it came from a [`Description`] or from a
/// folder's own files (classes.txt).
pub(super) struct Reader {
    pub(super) kind: DatasetKind,
    pub(super) root: PathBuf,
    /// What to do when a file is missing or broken.
    pub(super) hint: String,
    /// How errors name the dataset (e.g. `pascal`, `folder data/mine`).
    pub(super) name: String,
    /// How label errors name whose labels they are.
    pub(super) label_owner: String,
    pub(super) images: Images,
    pub(super) label: &'static [Place],
    pub(super) values: LabelMap,
    pub(super) resize: Option<(u32, u32)>,
    /// For walked ids: how many `/`-separated parts an id has, and its shape.
    pub(super) id_form: Option<(usize, &'static str)>,
    pub(super) train: Vec<String>,
    pub(super) val: Vec<String>,
    pub(super) classes: Vec<String>,
    pub(super) palette: Vec<[u8; 3]>,
    pub(super) min_classes: usize,
    pub(super) eval_size: (usize, usize),
}

impl Reader {
    fn open(root: &Path, d: &'static Description) -> Result<Self> {
        let hint = d.kind.fetch_hint();
        let (train, val, id_form) = match d.ids {
            IdSource::Lists { train, val } => (
                read_id_list(&root.join(train), "training", &hint)?,
                read_id_list(&root.join(val), "validation", &hint)?,
                None,
            ),
            IdSource::Walk {
                dir,
                splits,
                depth,
                suffix,
                form,
            } => {
                let walk = |split: &str| walk(&root.join(dir), split, depth, suffix, &hint);
                (walk(splits[0])?, walk(splits[1])?, Some((depth + 2, form)))
            }
        };
        let info = &d.info;
        Ok(Self {
            kind: d.kind,
            root: root.to_path_buf(),
            name: d.kind.name().to_string(),
            label_owner: d.kind.name().to_string(),
            hint,
            images: Images::At(d.image),
            label: d.label,
            values: LabelMap::new(d.values, info.class_names.len()),
            resize: d.resize,
            id_form,
            train,
            val,
            classes: info.class_names.iter().map(|s| s.to_string()).collect(),
            palette: info.palette.to_vec(),
            min_classes: info.defaults.min_classes,
            eval_size: info.defaults.eval_size,
        })
    }

    fn unknown(&self, id: &str, reason: String) -> DataError {
        DataError::UnknownId {
            id: id.to_string(),
            dataset: self.name.clone(),
            reason,
        }
    }

    /// Refuses ids that cannot name a file of this dataset (before building a path).
    fn check_form(&self, id: &str) -> Result<()> {
        match self.id_form {
            Some((parts, form)) if id.split('/').count() != parts => {
                Err(self.unknown(id, format!("expected `{form}`")))
            }
            _ => Ok(()),
        }
    }

    /// The image of `id`; the error for an id that cannot be one of this dataset's.
    fn image_path(&self, id: &str) -> Result<PathBuf> {
        self.check_form(id)?;
        match &self.images {
            Images::At(place) => Ok(place.path(&self.root, id)),
            Images::Found(files) => files.get(id).cloned().ok_or_else(|| {
                self.unknown(id, "there is no images/<id>.jpg, .jpeg or .png".into())
            }),
        }
    }

    /// The label of an id that [`Reader::image_path`] accepted.
    fn label_path(&self, id: &str) -> PathBuf {
        let mut paths = self.label.iter().map(|p| p.path(&self.root, id));
        let Some(first) = paths.next() else {
            return self.root.join(id);
        };
        if first.exists() {
            return first;
        }
        paths.find(|p| p.exists()).unwrap_or(first)
    }

    /// The raw label mapped to classes and checked, at the file's size.
    fn read_label(&self, path: &Path) -> Result<GrayImage> {
        let mut label = read_label_png(path, &self.hint)?;
        let allowed = &self.values.allowed;
        map_label(&mut label, path, &self.label_owner, allowed, |v| {
            self.values.get(v)
        })?;
        Ok(label)
    }

    fn fit_label(&self, label: GrayImage) -> GrayImage {
        match self.resize {
            Some((w, h)) if label.dimensions() != (w, h) => {
                crate::resize::resize_label(&label, h as usize, w as usize)
            }
            _ => label,
        }
    }

    fn fit_image(&self, image: RgbImage) -> RgbImage {
        match self.resize {
            Some((w, h)) if image.dimensions() != (w, h) => {
                crate::resize::resize_rgb(&image, h as usize, w as usize)
            }
            _ => image,
        }
    }

    pub(super) fn ids(&self, subset: Subset) -> &[String] {
        match subset {
            Subset::Train => &self.train,
            Subset::Val => &self.val,
        }
    }

    fn load(&self, id: &str) -> Result<Sample> {
        let image_path = self.image_path(id)?;
        let label_path = self.label_path(id);
        let image = read_rgb(&image_path, &self.hint)?;
        let label = self.read_label(&label_path)?;
        check_same_size(&label, &image, &label_path, &image_path)?;
        Ok(Sample {
            id: id.to_string(),
            image: self.fit_image(image),
            label: self.fit_label(label),
        })
    }

    fn load_label(&self, id: &str) -> Result<GrayImage> {
        self.image_path(id)?;
        Ok(self.fit_label(self.read_label(&self.label_path(id))?))
    }

    fn check_id(&self, id: &str) -> Result<()> {
        let image = self.image_path(id)?;
        for (p, what) in [(image, "image"), (self.label_path(id), "label")] {
            if !p.is_file() {
                return Err(DataError::missing(p, what, &self.hint));
            }
        }
        Ok(())
    }
}

/// The ids of `<dir>/<split>/`: files ending in `suffix`, `depth` folders down, sorted.
fn walk(dir: &Path, split: &str, depth: usize, suffix: &str, hint: &str) -> Result<Vec<String>> {
    let top = dir.join(split);
    if !top.is_dir() {
        return Err(DataError::missing(&top, "image folder", hint));
    }
    let mut ids = Vec::new();
    walk_into(&top, split, depth, suffix, hint, &mut ids)?;
    if ids.is_empty() {
        return Err(DataError::EmptyList {
            path: top,
            what: format!("{split} (no *{suffix} found)"),
            hint: hint.to_string(),
        });
    }
    ids.sort();
    Ok(ids)
}

fn walk_into(
    dir: &Path,
    prefix: &str,
    depth: usize,
    suffix: &str,
    hint: &str,
    ids: &mut Vec<String>,
) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| DataError::corrupt(dir, "image folder", e, hint))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if depth > 0 {
            if path.is_dir() {
                walk_into(
                    &path,
                    &format!("{prefix}/{name}"),
                    depth - 1,
                    suffix,
                    hint,
                    ids,
                )?;
            }
        } else if let Some(base) = name.strip_suffix(suffix) {
            ids.push(format!("{prefix}/{base}"));
        }
    }
    Ok(())
}

impl<D: Send + Sync> SegDataset for FileDataset<D> {
    fn kind(&self) -> DatasetKind {
        self.reader.kind
    }
    fn root(&self) -> &Path {
        &self.reader.root
    }
    fn ids(&self, subset: Subset) -> &[String] {
        self.reader.ids(subset)
    }
    fn load(&self, id: &str) -> Result<Sample> {
        self.reader.load(id)
    }
    fn load_label(&self, id: &str) -> Result<GrayImage> {
        self.reader.load_label(id)
    }
    fn check_id(&self, id: &str) -> Result<()> {
        self.reader.check_id(id)
    }
    fn num_classes(&self) -> usize {
        self.reader.classes.len()
    }
    fn class_names(&self) -> Vec<String> {
        self.reader.classes.clone()
    }
    fn palette(&self) -> Vec<[u8; 3]> {
        self.reader.palette.clone()
    }
    fn min_classes(&self) -> usize {
        self.reader.min_classes
    }
    fn eval_size(&self) -> (usize, usize) {
        self.reader.eval_size
    }
}
