//! The pair-wise class-relation graph of ReCo, as a picture-ready matrix: for every class
//! `c`, the softmax over the *other* classes `k` of `cos(mean_c, mean_k) / temp`, the
//! distribution the active key sampler draws negative classes from (see
//! docs/design.md#losses-and-sampling). The diagonal is unused by the method and left out.
//!
//! [`ClassMeanAccumulator`] gathers the class-mean representations over a validation set
//! (sum and pixel count per class, labels brought to representation resolution with the
//! same nearest rule as [`crate::reco_targets`]); [`class_relation_matrix`] turns given
//! means into the matrix.

use candle_core::{DType, Tensor};

use crate::check;
use crate::reco::prototypes;
use crate::sampler::class_relation;
use crate::targets::{one_hot, resize_nearest};

/// A row-major `[C, C]` class-relation matrix.
///
/// Row `c` is a probability distribution over the present classes other than `c`. Entries
/// with no meaning are NaN: the diagonal (masked, as in the method), every entry of a row
/// whose class is absent (no pixel seen), every column of an absent class, and the whole
/// row of the only present class (no other class to relate to).
#[derive(Clone, Debug, PartialEq)]
pub struct ClassRelation {
    pub num_classes: usize,
    /// Which classes had at least one pixel (their mean exists).
    pub present: Vec<bool>,
    /// `num_classes * num_classes` values, row-major.
    pub matrix: Vec<f32>,
}

impl ClassRelation {
    /// Entry `(c, k)`: the probability that a query of class `c` draws negatives of `k`.
    pub fn get(&self, c: usize, k: usize) -> f32 {
        self.matrix[c * self.num_classes + k]
    }

    /// Row `c` as a slice.
    pub fn row(&self, c: usize) -> &[f32] {
        &self.matrix[c * self.num_classes..(c + 1) * self.num_classes]
    }

    /// The matrix as nested rows with `None` for the NaN entries, ready for JSON (where
    /// NaN does not exist; serde writes `None` as `null`).
    pub fn rows_json(&self) -> Vec<Vec<Option<f32>>> {
        (0..self.num_classes)
            .map(|c| {
                self.row(c)
                    .iter()
                    .map(|&v| if v.is_nan() { None } else { Some(v) })
                    .collect()
            })
            .collect()
    }
}

/// Builds the matrix from prototype sums and pixel counts (f64 sums, as the loss).
fn relation_from_sums(sums: &[f64], counts: &[usize], dim: usize, temp: f64) -> ClassRelation {
    let c = counts.len();
    let (_, cos) = prototypes(sums, counts, dim);
    let present: Vec<usize> = (0..c).filter(|&k| counts[k] > 0).collect();
    let mut matrix = vec![f32::NAN; c * c];
    if present.len() >= 2 {
        for &q in &present {
            for (k, p) in class_relation(&cos, c, &present, q, temp) {
                matrix[q * c + k] = p as f32;
            }
        }
    }
    ClassRelation {
        num_classes: c,
        present: counts.iter().map(|&n| n > 0).collect(),
        matrix,
    }
}

fn check_temp(temp: f64) -> candle_core::Result<()> {
    if !(temp.is_finite() && temp > 0.0) {
        candle_core::bail!("class relation: temp must be a positive finite number, got {temp}");
    }
    Ok(())
}

/// The relation matrix of given class means `means` `[C, D]` (any float dtype, any
/// device): softmax over the other present classes of `cos(mean_c, mean_k) / temp`,
/// diagonal masked. `present[c] == false` marks a class without a mean (its row and column
/// are NaN; the values in its row of `means` are not used).
pub fn class_relation_matrix(
    means: &Tensor,
    present: &[bool],
    temp: f64,
) -> candle_core::Result<ClassRelation> {
    check_temp(temp)?;
    let [c, d] = check::dims::<2>(means, "class_relation_matrix: means", "[C,D]")?;
    check::float(means, "class_relation_matrix: means")?;
    if present.len() != c {
        candle_core::bail!(
            "class_relation_matrix: {} presence flags for {c} classes",
            present.len()
        );
    }
    let sums: Vec<f64> = means
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    if let Some(i) = sums.iter().position(|v| !v.is_finite()) {
        if present[i / d.max(1)] {
            candle_core::bail!(
                "class_relation_matrix: means[{}, {}] is not finite",
                i / d,
                i % d
            );
        }
    }
    let sums: Vec<f64> = sums
        .iter()
        .enumerate()
        .map(|(i, &v)| if present[i / d.max(1)] { v } else { 0.0 })
        .collect();
    let counts: Vec<usize> = present.iter().map(|&p| usize::from(p)).collect();
    Ok(relation_from_sums(&sums, &counts, d, temp))
}

/// Sums representations per class over many batches (e.g. a validation set), to get the
/// class means the relation graph is drawn from.
#[derive(Clone, Debug)]
pub struct ClassMeanAccumulator {
    num_classes: usize,
    dim: usize,
    /// `[C, D]` sums, f64 so that a whole validation set adds up without drift.
    sums: Vec<f64>,
    /// Pixels per class at representation resolution.
    counts: Vec<usize>,
}

impl ClassMeanAccumulator {
    pub fn new(num_classes: usize, dim: usize) -> Self {
        Self {
            num_classes,
            dim,
            sums: vec![0.0; num_classes * dim],
            counts: vec![0; num_classes],
        }
    }

    /// Adds a batch: `rep` `[B,D,h,w]` representations, `labels` `[B,H,W]` integer class
    /// ids (-1 = ignore) at any resolution; the labels are resized to `h x w` with the
    /// nearest rule of [`crate::reco_targets`]. Runs on `rep`'s device; two small host
    /// copies per batch (`[C, D]` sums and `[C]` counts).
    pub fn add(&mut self, rep: &Tensor, labels: &Tensor) -> candle_core::Result<()> {
        let [b, d, h, w] = check::dims::<4>(rep, "ClassMeanAccumulator::add: rep", "[B,D,h,w]")?;
        check::float(rep, "ClassMeanAccumulator::add: rep")?;
        let [lb, _, _] = check::dims::<3>(labels, "ClassMeanAccumulator::add: labels", "[B,H,W]")?;
        if lb != b || d != self.dim {
            candle_core::bail!(
                "ClassMeanAccumulator::add: rep {:?} and labels {:?} must share the batch \
                 size, and rep must have {} channels",
                rep.dims(),
                labels.dims(),
                self.dim
            );
        }
        if b * h * w == 0 {
            return Ok(());
        }
        let labels = labels.to_device(rep.device())?;
        let labels = check::labels(
            &labels,
            self.num_classes,
            "ClassMeanAccumulator::add: labels",
        )?;
        let labels = resize_nearest(&labels, h, w)?;
        let c = self.num_classes;
        // [B,C,P] x [B,P,D] -> [B,C,D]: per-class sums without a host round trip per pixel.
        let onehot = one_hot(&labels, c)?.reshape((b, c, h * w))?;
        let rep = rep.to_dtype(DType::F32)?.reshape((b, d, h * w))?;
        let sums = onehot
            .matmul(&rep.transpose(1, 2)?.contiguous()?)?
            .sum(0)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let counts = onehot.sum((0, 2))?.to_vec1::<f32>()?;
        for (s, v) in self.sums.iter_mut().zip(sums) {
            *s += v;
        }
        for (n, v) in self.counts.iter_mut().zip(counts) {
            *n += v.round() as usize;
        }
        Ok(())
    }

    /// Pixels seen per class.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// Row-major `[C, D]` class means; NaN rows for classes never seen.
    pub fn means(&self) -> Vec<f32> {
        let d = self.dim;
        let mut out = vec![f32::NAN; self.num_classes * d];
        for (c, &n) in self.counts.iter().enumerate() {
            if n > 0 {
                for j in 0..d {
                    out[c * d + j] = (self.sums[c * d + j] / n as f64) as f32;
                }
            }
        }
        out
    }

    /// The relation matrix of the accumulated means (see [`ClassRelation`]).
    pub fn relation(&self, temp: f64) -> candle_core::Result<ClassRelation> {
        check_temp(temp)?;
        Ok(relation_from_sums(&self.sums, &self.counts, self.dim, temp))
    }
}
