//! Losses of ReCo (semi-supervised semantic segmentation with regional contrast, ICLR 2022):
//! the supervised cross-entropy, the confidence-weighted unsupervised loss, and the ReCo
//! loss with active query and key sampling, plus the tensor helpers that prepare the ReCo
//! inputs (one-hot labels, nearest resizing, labelled + unlabelled assembly).
//!
//! Everything runs on the tensors' device; the ReCo loss copies per-pixel class codes to
//! the host once per call to draw its samples with a seeded generator.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use reco_loss::{reco_loss, reco_targets, ReCoConfig};
//!
//! # fn main() -> candle_core::Result<()> {
//! let dev = Device::Cpu;
//! // Student outputs at representation resolution (2 labelled + 2 unlabelled crops).
//! let (c, d) = (3, 8);
//! let pred_l = Tensor::randn(0f32, 1.0, (2, c, 4, 4), &dev)?;
//! let pred_u = Tensor::randn(0f32, 1.0, (2, c, 4, 4), &dev)?;
//! let rep = Tensor::randn(0f32, 1.0, (4, d, 4, 4), &dev)?;
//! // Labels at crop resolution: ground truth (-1 = ignore) and pseudo-labels with confidences.
//! let labels_l = Tensor::arange(0i64, 2 * 8 * 8, &dev)?.reshape((2, 8, 8))?.broadcast_div(&Tensor::new(43i64, &dev)?)?;
//! let pseudo_u = labels_l.clone();
//! let confidence_u = Tensor::full(0.9f32, (2, 8, 8), &dev)?;
//! let t = reco_targets(&labels_l, &pseudo_u, &confidence_u, &pred_l, &pred_u, 0.7)?;
//! let cfg = ReCoConfig { num_queries: 16, num_negatives: 32, ..ReCoConfig::default() };
//! let loss = reco_loss(&rep, &t.label, &t.mask, &t.prob, &cfg, 42)?;
//! assert_eq!(loss.dtype(), DType::F32);
//! assert!(loss.to_scalar::<f32>()? > 0.0);
//! # Ok(())
//! # }
//! ```

mod buffers;
mod ce;
mod check;
mod config;
mod contrast;
mod gather;
mod queries;
mod reco;
mod relation;
pub mod sampler;
mod schedule;
mod simd;
mod targets;

pub use ce::{supervised_loss, unsupervised_loss};
pub use config::{use_generic_path, ContrastKernel, ReCoConfig};
pub use queries::{query_map, QueryMap};
pub use reco::{reco_loss, reco_loss_parts, ReCoParts};
pub use relation::{class_relation_matrix, ClassMeanAccumulator, ClassRelation};
pub use schedule::ThresholdSchedule;
pub use targets::{
    nearest_source_indices, one_hot, reco_targets, reco_targets_labelled, resize_nearest,
    ReCoTargets,
};
