//! Labelled / unlabelled splits: the original's seeded class-balanced few-label sampler,
//! and the JSON split file that makes runs reproducible.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use image::GrayImage;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::dataset::{SegDataset, Subset};
use crate::error::{DataError, Result};
use crate::kind::DatasetKind;
use crate::partial::Partial;
use crate::rng::rng_for;

/// A labelled / unlabelled split of a dataset's training ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub dataset: DatasetKind,
    pub seed: u64,
    /// Requested number of labelled images; 0 = all training images labelled.
    pub num_labels: usize,
    /// Partial labels for the labelled images (`None`: full labels).
    #[serde(default)]
    pub partial: Option<Partial>,
    /// Labelled ids, in the order they were picked.
    pub labelled: Vec<String>,
    /// The other training ids (with `num_labels = 0`: all of them, as the original).
    pub unlabelled: Vec<String>,
}

/// The sorted classes present in a label map (ignore, 255, excluded).
pub fn classes_present(label: &GrayImage) -> Vec<u8> {
    let mut seen = [false; 256];
    label.iter().for_each(|&v| seen[v as usize] = true);
    (0..=254u8).filter(|&c| seen[c as usize]).collect()
}

impl Split {
    /// Picks `num_labels` labelled images from the training ids of `ds` with `seed`.
    ///
    /// Pascal, Cityscapes, synthetic: the original's greedy walk (`get_pascal_idx`): shuffle
    /// the ids; pop one at a time; accept it if it contains at least `min_classes` classes
    /// and (after the first) one of the currently least-picked classes; rejected ids are
    /// walked again once the list is empty. Where the original would loop forever (no
    /// remaining image holds a least-picked class), those classes are set aside and the
    /// walk continues with the next-least-picked ones; if nothing is left, an error.
    ///
    /// SUN RGB-D: the original's per-class pick (`get_sun_idx`): repeatedly take an image
    /// containing the least-picked class (lowest class id among ties), skipping classes
    /// whose images are used up.
    pub fn sample(
        ds: &dyn SegDataset,
        num_labels: usize,
        seed: u64,
        partial: Option<Partial>,
    ) -> Result<Split> {
        let ids = ds.ids(Subset::Train);
        let kind = ds.kind();
        if num_labels == 0 {
            return Ok(Split {
                dataset: kind,
                seed,
                num_labels,
                partial,
                labelled: ids.to_vec(),
                unlabelled: ids.to_vec(),
            });
        }
        if num_labels > ids.len() {
            return Err(DataError::Sampler {
                requested: num_labels,
                reason: format!("the dataset has only {} training images", ids.len()),
            });
        }
        let mut shuffled = ids.to_vec();
        shuffled.shuffle(&mut rng_for(&[seed, 0x005A_3F1E]));
        let labelled = if kind == DatasetKind::Sun {
            per_class_pick(ds, shuffled, num_labels)?
        } else {
            greedy_pick(ds, shuffled, num_labels, ds.min_classes())?
        };
        let chosen: HashSet<&String> = labelled.iter().collect();
        let unlabelled = ids
            .iter()
            .filter(|i| !chosen.contains(i))
            .cloned()
            .collect();
        Ok(Split {
            dataset: kind,
            seed,
            num_labels,
            partial,
            labelled,
            unlabelled,
        })
    }

    /// Writes the split as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| DataError::BadSplit {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| DataError::corrupt(dir, "split folder", e, "check the --out path"))?;
        }
        std::fs::write(path, text)
            .map_err(|e| DataError::corrupt(path, "split file", e, "check the --out path"))
    }

    /// Reads a split and checks it against `ds`: same dataset, every id a training id whose
    /// files exist.
    pub fn load(path: &Path, ds: &dyn SegDataset) -> Result<Split> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DataError::missing(path, "split file", "create one with `trainer split`")
            } else {
                DataError::corrupt(path, "split file", e, "create one with `trainer split`")
            }
        })?;
        let split: Split = serde_json::from_str(&text).map_err(|e| DataError::BadSplit {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if split.dataset != ds.kind() {
            return Err(DataError::BadSplit {
                path: path.to_path_buf(),
                reason: format!(
                    "it is a split of {}, but the dataset given is {}",
                    split.dataset,
                    ds.kind()
                ),
            });
        }
        if split.labelled.is_empty() {
            return Err(DataError::BadSplit {
                path: path.to_path_buf(),
                reason: "it has no labelled ids".into(),
            });
        }
        let train: HashSet<&str> = ds.ids(Subset::Train).iter().map(String::as_str).collect();
        let missing: Vec<&String> = split
            .labelled
            .iter()
            .chain(&split.unlabelled)
            .filter(|id| !train.contains(id.as_str()) || ds.check_id(id).is_err())
            .collect();
        if let Some(first) = missing.first() {
            return Err(DataError::SplitMissingIds {
                path: path.to_path_buf(),
                root: ds.root().to_path_buf(),
                count: missing.len(),
                first: first.to_string(),
            });
        }
        Ok(split)
    }

    /// For each class, how many labelled images contain it (reads the labels).
    pub fn class_counts(&self, ds: &dyn SegDataset) -> Result<Vec<usize>> {
        let sets: Vec<Vec<u8>> = self
            .labelled
            .par_iter()
            .map(|id| ds.load_label(id).map(|l| classes_present(&l)))
            .collect::<Result<_>>()?;
        let mut counts = vec![0usize; ds.num_classes()];
        for c in sets.iter().flatten() {
            if let Some(n) = counts.get_mut(*c as usize) {
                *n += 1;
            }
        }
        Ok(counts)
    }
}

/// Least-picked classes among those not set aside.
fn least_picked(counter: &[usize], set_aside: &[bool]) -> Vec<usize> {
    let min = (0..counter.len())
        .filter(|&c| !set_aside[c])
        .map(|c| counter[c])
        .min();
    match min {
        Some(m) => (0..counter.len())
            .filter(|&c| !set_aside[c] && counter[c] == m)
            .collect(),
        None => Vec::new(),
    }
}

fn greedy_pick(
    ds: &dyn SegDataset,
    shuffled: Vec<String>,
    num_labels: usize,
    min_classes: usize,
) -> Result<Vec<String>> {
    let num_classes = ds.num_classes();
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    let mut pool = shuffled;
    let mut saved: Vec<String> = Vec::new();
    let mut labelled: Vec<String> = Vec::new();
    let mut counter = vec![0usize; num_classes];
    let mut set_aside = vec![false; num_classes];
    let mut fill: Vec<usize> = (0..num_classes).collect();
    let mut accepted_this_pass = false;
    while labelled.len() < num_labels {
        let Some(id) = pool.pop() else {
            if !accepted_this_pass {
                // A whole pass accepted nothing: no remaining image with enough classes
                // holds a least-picked class. Set those classes aside (see `Split::sample`).
                fill.iter().for_each(|&c| set_aside[c] = true);
                fill = least_picked(&counter, &set_aside);
                if fill.is_empty() {
                    return Err(DataError::Sampler {
                        requested: num_labels,
                        reason: format!(
                            "only {} training images contain at least {min_classes} classes",
                            labelled.len()
                        ),
                    });
                }
            }
            accepted_this_pass = false;
            pool = std::mem::take(&mut saved);
            continue;
        };
        let classes = match cache.get(&id) {
            Some(c) => c.clone(),
            None => {
                let c = classes_present(&ds.load_label(&id)?);
                cache.insert(id.clone(), c.clone());
                c
            }
        };
        let enough = classes.len() >= min_classes;
        let has_least = classes.iter().any(|&c| fill.contains(&(c as usize)));
        if enough && (labelled.is_empty() || has_least) {
            for &c in &classes {
                if let Some(n) = counter.get_mut(c as usize) {
                    *n += 1;
                }
            }
            labelled.push(id);
            accepted_this_pass = true;
            fill = least_picked(&counter, &set_aside);
        } else {
            saved.push(id);
        }
    }
    Ok(labelled)
}

fn per_class_pick(
    ds: &dyn SegDataset,
    shuffled: Vec<String>,
    num_labels: usize,
) -> Result<Vec<String>> {
    let num_classes = ds.num_classes();
    let sets: Vec<Vec<u8>> = shuffled
        .par_iter()
        .map(|id| ds.load_label(id).map(|l| classes_present(&l)))
        .collect::<Result<_>>()?;
    // class -> ids containing it, in shuffled order (popped from the back).
    let mut class_list: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, set) in sets.iter().enumerate() {
        for &c in set {
            if (c as usize) < num_classes {
                class_list[c as usize].push(i);
            }
        }
    }
    let mut counter = vec![0usize; num_classes];
    let mut exhausted = vec![false; num_classes];
    let mut taken = vec![false; shuffled.len()];
    let mut labelled = Vec::new();
    while labelled.len() < num_labels {
        let Some(&c) = least_picked(&counter, &exhausted).first() else {
            return Err(DataError::Sampler {
                requested: num_labels,
                reason: format!(
                    "only {} training images contain any labelled class",
                    labelled.len()
                ),
            });
        };
        let Some(i) = class_list[c].pop() else {
            exhausted[c] = true;
            continue;
        };
        if !taken[i] {
            taken[i] = true;
            for &k in &sets[i] {
                if (k as usize) < num_classes {
                    counter[k as usize] += 1;
                }
            }
            labelled.push(shuffled[i].clone());
        }
    }
    Ok(labelled)
}

/// Per-class table lines (`class id, name, images`), for `trainer split`.
pub fn class_table(kind: DatasetKind, counts: &[usize]) -> String {
    class_table_named(kind.class_names(), counts)
}

/// [`class_table`] with the class names given (e.g. [`SegDataset::class_names`] of a
/// folder dataset).
pub fn class_table_named<S: AsRef<str>>(names: &[S], counts: &[usize]) -> String {
    let mut out = format!("{:>5}  {:<20} {:>8}\n", "class", "name", "images");
    for (c, n) in counts.iter().enumerate() {
        let name = names.get(c).map(AsRef::as_ref).unwrap_or("?");
        out.push_str(&format!("{c:>5}  {name:<20} {n:>8}\n"));
    }
    out
}
