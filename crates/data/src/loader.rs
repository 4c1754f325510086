//! The batch loader: a background thread prepares batches on a rayon pool and keeps
//! `prefetch` of them ready in a bounded channel, so the trainer does not wait.
//!
//! Determinism: which ids a training batch holds and every random decision of a sample's
//! augmentation come from RNGs seeded by `(seed, batch index, position)`, never from a
//! shared RNG, so the batches are the same whatever the number of threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::Rng;
use rayon::prelude::*;

use crate::augment::{augment_sample, eval_sample, AugConfig};
use crate::dataset::SegDataset;
use crate::error::{DataError, Result};
use crate::partial::{partial_label, Partial};
use crate::rng::{hash_str, rng_for};

// Stream tags, so that the different random streams never share seeds.
const TAG_PICK: u64 = 0x9C1C;
const TAG_AUG: u64 = 0xA06;
const TAG_PARTIAL: u64 = 0x9A27;

/// One batch, on the CPU.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, 3, H, W]` f32, ImageNet-normalised.
    pub images: Tensor,
    /// `[B, H, W]` i64 class ids, -1 = ignore.
    pub labels: Tensor,
    /// The dataset id of each image.
    pub ids: Vec<String>,
}

/// Partial labels applied to the labelled images before augmentation; the same image
/// always gets the same partial label for a given seed (like the original's
/// precomputed `SegmentationClassAug_p*_<seed>` folders).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PartialLabels {
    pub mode: Partial,
    pub seed: u64,
}

/// Settings of a training loader.
#[derive(Clone, Debug)]
pub struct TrainLoaderConfig {
    pub batch_size: usize,
    pub aug: AugConfig,
    pub seed: u64,
    /// Worker threads; 0 = one per core.
    pub num_threads: usize,
    /// Batches prepared ahead of the consumer (at least 1).
    pub prefetch: usize,
    pub partial: Option<PartialLabels>,
    /// Index of the first batch to produce. Batch `k` depends only on `(seed, k)`, so a
    /// resumed run starting at `k` sees exactly the batches an uninterrupted run would.
    pub start_batch: usize,
}

impl TrainLoaderConfig {
    /// Defaults for the labelled branch of `kind` (its batch size and augmentation).
    pub fn labelled(kind: crate::DatasetKind, seed: u64) -> Self {
        Self {
            batch_size: kind.defaults().batch_size,
            aug: AugConfig::labelled(kind),
            seed,
            num_threads: 0,
            prefetch: 2,
            partial: None,
            start_batch: 0,
        }
    }

    /// Defaults for the unlabelled branch of `kind` (crop only, as the original).
    pub fn unlabelled(kind: crate::DatasetKind, seed: u64) -> Self {
        Self {
            aug: AugConfig::unlabelled(kind),
            ..Self::labelled(kind, seed)
        }
    }
}

/// Settings of a validation loader.
#[derive(Clone, Debug)]
pub struct ValLoaderConfig {
    pub batch_size: usize,
    /// Images are padded (reflect; labels ignore) to this `(height, width)`.
    pub eval_size: (usize, usize),
    pub num_threads: usize,
    pub prefetch: usize,
}

impl ValLoaderConfig {
    /// Batch 4 (as the original's test loader) and the dataset's evaluation size.
    pub fn new(kind: crate::DatasetKind) -> Self {
        Self {
            batch_size: 4,
            eval_size: kind.defaults().eval_size,
            num_threads: 0,
            prefetch: 2,
        }
    }

    /// [`ValLoaderConfig::new`] with the evaluation size the opened dataset asks for
    /// ([`SegDataset::eval_size`]: a folder dataset's largest validation image).
    pub fn for_dataset(ds: &dyn SegDataset) -> Self {
        Self {
            eval_size: ds.eval_size(),
            ..Self::new(ds.kind())
        }
    }
}

enum Plan {
    Train(TrainLoaderConfig),
    Val(ValLoaderConfig),
}

/// An iterator of batches prepared in the background. Training loaders never end;
/// validation loaders end after the last id. After an error the loader ends.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<()>>,
    num_batches: Option<usize>,
    delivered: usize,
    done: bool,
}

impl Loader {
    /// Random batches of `ids` with replacement, forever (the original's
    /// `RandomSampler(replacement=True)`), augmented with `cfg.aug`.
    pub fn train(
        ds: Arc<dyn SegDataset>,
        ids: Vec<String>,
        cfg: TrainLoaderConfig,
    ) -> Result<Self> {
        cfg.aug.validate()?;
        check_common(&ids, cfg.batch_size, cfg.prefetch)?;
        Self::spawn(ds, ids, Plan::Train(cfg))
    }

    /// Batches of `ids` in order, padded to `cfg.eval_size`; the last batch may be smaller.
    pub fn val(ds: Arc<dyn SegDataset>, ids: Vec<String>, cfg: ValLoaderConfig) -> Result<Self> {
        check_common(&ids, cfg.batch_size, cfg.prefetch)?;
        if cfg.eval_size.0 == 0 || cfg.eval_size.1 == 0 {
            return Err(DataError::Config("evaluation size must be positive".into()));
        }
        Self::spawn(ds, ids, Plan::Val(cfg))
    }

    /// Number of batches (validation), `None` for a training loader (endless).
    pub fn num_batches(&self) -> Option<usize> {
        self.num_batches
    }

    fn spawn(ds: Arc<dyn SegDataset>, ids: Vec<String>, plan: Plan) -> Result<Self> {
        let (threads, prefetch, batch_size) = match &plan {
            Plan::Train(c) => (c.num_threads, c.prefetch, c.batch_size),
            Plan::Val(c) => (c.num_threads, c.prefetch, c.batch_size),
        };
        let start = match &plan {
            Plan::Train(c) => c.start_batch,
            Plan::Val(_) => 0,
        };
        let num_batches = match &plan {
            Plan::Train(_) => None,
            Plan::Val(_) => Some(ids.len().div_ceil(batch_size)),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("reco-data-{i}"))
            .build()
            .map_err(|e| DataError::Worker(format!("cannot start thread pool: {e}")))?;
        // Batches computed together, so that small batches still use every thread.
        let group = pool.current_num_threads().div_ceil(batch_size).max(1);
        let (tx, rx) = sync_channel(prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_w = stop.clone();
        let worker = std::thread::Builder::new()
            .name("reco-data-loader".into())
            .spawn(move || {
                let mut next = start;
                loop {
                    let batch_ids: Vec<usize> = (next..next + group)
                        .filter(|&b| num_batches.is_none_or(|n| b < n))
                        .collect();
                    if batch_ids.is_empty() {
                        return;
                    }
                    next += group;
                    let results: Vec<Result<Batch>> = pool.install(|| {
                        batch_ids
                            .par_iter()
                            .map(|&b| make_batch(ds.as_ref(), &ids, &plan, b))
                            .collect()
                    });
                    for r in results {
                        if stop_w.load(Ordering::Relaxed) {
                            return;
                        }
                        let failed = r.is_err();
                        if tx.send(r).is_err() || failed {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| DataError::Worker(format!("cannot start loader thread: {e}")))?;
        Ok(Self {
            rx: Some(rx),
            stop,
            worker: Some(worker),
            num_batches,
            delivered: 0,
            done: false,
        })
    }
}

fn check_common(ids: &[String], batch_size: usize, prefetch: usize) -> Result<()> {
    if ids.is_empty() {
        return Err(DataError::Config(
            "the loader got an empty list of ids".into(),
        ));
    }
    if batch_size == 0 || prefetch == 0 {
        return Err(DataError::Config(format!(
            "batch size ({batch_size}) and prefetch ({prefetch}) must be at least 1"
        )));
    }
    Ok(())
}

/// Builds batch `b` of the plan: picks ids, decodes and transforms samples in parallel
/// into one buffer, then makes the two tensors once.
fn make_batch(ds: &dyn SegDataset, ids: &[String], plan: &Plan, b: usize) -> Result<Batch> {
    let (batch_ids, (h, w)): (Vec<&String>, _) = match plan {
        Plan::Train(c) => {
            let mut rng = rng_for(&[c.seed, TAG_PICK, b as u64]);
            let picked = (0..c.batch_size)
                .map(|_| &ids[rng.gen_range(0..ids.len())])
                .collect();
            (picked, c.aug.crop_size)
        }
        Plan::Val(c) => {
            let start = b * c.batch_size;
            let end = (start + c.batch_size).min(ids.len());
            (ids[start..end].iter().collect(), c.eval_size)
        }
    };
    let n = batch_ids.len();
    let mut images = vec![0f32; n * 3 * h * w];
    let mut labels = vec![0i64; n * h * w];
    images
        .par_chunks_mut(3 * h * w)
        .zip(labels.par_chunks_mut(h * w))
        .enumerate()
        .try_for_each(|(pos, (img_out, lab_out))| -> Result<()> {
            let sample = ds.load(batch_ids[pos])?;
            match plan {
                Plan::Train(c) => {
                    let label = match c.partial {
                        Some(p) => {
                            let mut rng = rng_for(&[p.seed, TAG_PARTIAL, hash_str(batch_ids[pos])]);
                            partial_label(&sample.label, p.mode, &mut rng)
                        }
                        None => sample.label,
                    };
                    let mut rng = rng_for(&[c.seed, TAG_AUG, b as u64, pos as u64]);
                    augment_sample(&sample.image, &label, &c.aug, &mut rng, img_out, lab_out);
                }
                Plan::Val(c) => {
                    eval_sample(&sample.image, &sample.label, c.eval_size, img_out, lab_out)
                }
            }
            Ok(())
        })?;
    Ok(Batch {
        images: Tensor::from_vec(images, (n, 3, h, w), &Device::Cpu)?,
        labels: Tensor::from_vec(labels, (n, h, w), &Device::Cpu)?,
        ids: batch_ids.into_iter().cloned().collect(),
    })
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.done {
            return None;
        }
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(item) => {
                self.delivered += 1;
                if item.is_err() || self.num_batches == Some(self.delivered) {
                    self.done = true;
                }
                Some(item)
            }
            Err(_) => {
                // The worker ended without sending everything: it panicked.
                self.done = true;
                Some(Err(DataError::Worker(
                    "the loader thread stopped unexpectedly (a panic while preparing a batch)"
                        .into(),
                )))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver makes a blocked `send` fail, so the worker exits.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
