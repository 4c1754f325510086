//! What candle 0.11 lacks for training DeepLabV3+, each with a gradient test
//! (finite differences in f64): convolution with fast and shape-robust gradients,
//! the padded stem max-pool, differentiable bilinear resizing.

mod batch_norm;
mod conv;
mod pool;
mod resize;

pub use batch_norm::{batch_norm, ChannelStats, Normalize};
pub use conv::{conv2d, ConvParams};
pub use pool::{max_pool_3x3_s2, max_pool_3x3_s2_composed};
pub use resize::{interpolation_matrix, resize_bilinear};

/// The float types the CPU kernels are written for.
pub(crate) trait Real:
    candle_core::WithDType + num_traits::Float + std::ops::AddAssign + Send + Sync + 'static
{
}
impl Real for f32 {}
impl Real for f64 {}
