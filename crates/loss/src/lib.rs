//! Losses of ReCo (semi-supervised semantic segmentation with regional contrast, ICLR 2022):
//! the supervised cross-entropy, the confidence-weighted unsupervised loss, and the ReCo
//! loss with active query and key sampling, plus the tensor helpers that prepare the ReCo
//! inputs (one-hot labels, nearest resizing, labelled + unlabelled assembly).
//!
//! Everything runs on the tensors' device; the ReCo loss copies per-pixel class codes to
//! the host once per call to draw its samples with a seeded generator.

mod ce;
mod check;
mod config;
mod contrast;
mod gather;
mod reco;
pub mod sampler;
mod simd;
mod targets;

pub use ce::{supervised_loss, unsupervised_loss};
pub use config::{ContrastKernel, ReCoConfig};
pub use reco::{reco_loss, reco_loss_parts, ReCoParts};
pub use targets::{
    nearest_source_indices, one_hot, reco_targets, reco_targets_labelled, resize_nearest,
    ReCoTargets,
};
