//! Active sampling of ReCo: which hard queries and which negative keys each class gets.
//!
//! Everything here works on host index lists (built from one small device-to-host copy of
//! per-pixel class codes) and a seeded ChaCha generator, because candle's own generator
//! cannot be seeded (docs/design.md, candle gap 8). The output is plain indices, so the distribution
//! of the draws can be tested without any tensor code.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::config::ReCoConfig;

/// Sentinel class code of a pixel that is not valid for any class.
pub const NO_CLASS: u32 = u32::MAX;

/// Valid and hard pixels of each class, as flat pixel indices `b*h*w + y*w + x`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassPixels {
    /// `valid[c]`: the pixels whose (masked) label is class `c`, ascending.
    pub valid: Vec<Vec<u32>>,
    /// `hard[c]`: the subset of `valid[c]` whose probability for `c` is below δs.
    pub hard: Vec<Vec<u32>>,
}

impl ClassPixels {
    /// Builds the lists from per-pixel codes: `class[p]` is the pixel's class or
    /// [`NO_CLASS`], `hard[p]` whether it is a hard query for that class.
    pub fn from_codes(
        class: &[u32],
        hard: &[bool],
        num_classes: usize,
    ) -> candle_core::Result<Self> {
        if class.len() != hard.len() {
            candle_core::bail!(
                "ClassPixels: {} class codes but {} hard flags",
                class.len(),
                hard.len()
            );
        }
        if class.len() > u32::MAX as usize {
            candle_core::bail!("ClassPixels: more than 2^32 pixels are not supported");
        }
        let mut out = Self {
            valid: vec![Vec::new(); num_classes],
            hard: vec![Vec::new(); num_classes],
        };
        for (p, (&c, &h)) in class.iter().zip(hard).enumerate() {
            if c == NO_CLASS {
                continue;
            }
            let c = c as usize;
            if c >= num_classes {
                candle_core::bail!(
                    "ClassPixels: pixel {p} has class {c}, expected < {num_classes}"
                );
            }
            out.valid[c].push(p as u32);
            if h {
                out.hard[c].push(p as u32);
            }
        }
        Ok(out)
    }

    /// Classes with at least one valid pixel, ascending: the loss's divisor.
    pub fn present(&self) -> Vec<usize> {
        (0..self.valid.len())
            .filter(|&c| !self.valid[c].is_empty())
            .collect()
    }
}

/// The class-relation distribution of query class `c`: softmax over the other present
/// classes `k` of `cos(prototype_c, prototype_k) / temp`. `proto_cos` is the row-major
/// `C x C` cosine matrix. Returns `(class, probability)` pairs in ascending class order.
pub fn class_relation(
    proto_cos: &[f32],
    num_classes: usize,
    present: &[usize],
    c: usize,
    temp: f64,
) -> Vec<(usize, f64)> {
    let logits: Vec<(usize, f64)> = present
        .iter()
        .filter(|&&k| k != c)
        .map(|&k| (k, f64::from(proto_cos[c * num_classes + k]) / temp))
        .collect();
    let max = logits
        .iter()
        .map(|&(_, l)| l)
        .fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<(usize, f64)> = logits.iter().map(|&(k, l)| (k, (l - max).exp())).collect();
    let total: f64 = exps.iter().map(|&(_, e)| e).sum();
    exps.into_iter().map(|(k, e)| (k, e / total)).collect()
}

/// The indices drawn for one evaluation of the loss.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Draws {
    /// Classes present (at least one valid pixel), ascending.
    pub present: Vec<usize>,
    /// Classes that get queries (present and at least one hard pixel), ascending; row
    /// block `i` (rows `i*num_queries..(i+1)*num_queries`) belongs to `query_classes[i]`.
    pub query_classes: Vec<usize>,
    /// Query pixel of every row.
    pub queries: Vec<u32>,
    /// Negative key pixels, row-major `[rows, num_negatives]`.
    pub negatives: Vec<u32>,
}

impl Draws {
    /// Number of query rows.
    pub fn rows(&self) -> usize {
        self.queries.len()
    }
}

/// Draws queries and negatives like the original `compute_reco_loss`: for each present
/// class with hard pixels, `num_queries` hard pixels uniformly with replacement; for each
/// query `num_negatives` keys, each a class from [`class_relation`] and then a uniform
/// valid pixel of that class. Nothing is drawn when fewer than two classes are present.
///
/// Every query class uses its own ChaCha8 stream (`seed`, stream = class id), so the
/// result depends on the seed only, not on the thread count.
pub fn draw(
    pixels: &ClassPixels,
    proto_cos: &[f32],
    cfg: &ReCoConfig,
    seed: u64,
) -> candle_core::Result<Draws> {
    cfg.validate()?;
    let num_classes = pixels.valid.len();
    if pixels.hard.len() != num_classes || proto_cos.len() != num_classes * num_classes {
        candle_core::bail!(
            "sampler::draw: {} valid lists, {} hard lists and {} cosines do not describe the same {num_classes} classes",
            pixels.valid.len(),
            pixels.hard.len(),
            proto_cos.len()
        );
    }
    let present = pixels.present();
    if present.len() < 2 {
        return Ok(Draws {
            present,
            ..Draws::default()
        });
    }
    let query_classes: Vec<usize> = present
        .iter()
        .copied()
        .filter(|&c| !pixels.hard[c].is_empty())
        .collect();
    let (nq, nn) = (cfg.num_queries, cfg.num_negatives);
    let mut queries = vec![0u32; query_classes.len() * nq];
    let mut negatives = vec![0u32; query_classes.len() * nq * nn];
    queries
        .par_chunks_mut(nq)
        .zip(negatives.par_chunks_mut(nq * nn))
        .zip(query_classes.par_iter())
        .for_each(|((q_out, n_out), &c)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(c as u64);
            let hard = &pixels.hard[c];
            for q in q_out.iter_mut() {
                *q = hard[rng.gen_range(0..hard.len())];
            }
            let relation = class_relation(proto_cos, num_classes, &present, c, cfg.temp);
            // Cumulative weights; the last is forced to 1 so a draw can never fall past it.
            let mut cumulative: Vec<f64> = relation
                .iter()
                .scan(0.0, |acc, &(_, p)| {
                    *acc += p;
                    Some(*acc)
                })
                .collect();
            if let Some(last) = cumulative.last_mut() {
                *last = 1.0;
            }
            let pools: Vec<&[u32]> = relation
                .iter()
                .map(|&(k, _)| pixels.valid[k].as_slice())
                .collect();
            for key in n_out.iter_mut() {
                let u: f64 = rng.gen();
                let slot = cumulative
                    .partition_point(|&cum| cum <= u)
                    .min(pools.len() - 1);
                let pool = pools[slot];
                *key = pool[rng.gen_range(0..pool.len())];
            }
        });
    Ok(Draws {
        present,
        query_classes,
        queries,
        negatives,
    })
}
