//! What candle 0.11 lacks for training DeepLabV3+, each with a gradient test
//! (finite differences in f64): convolution with fast and shape-robust gradients,
//! the padded stem max-pool, differentiable bilinear resizing; and fused ops where
//! candle's composition costs many full-size passes (the residual join).

mod add_relu;
mod batch_norm;
mod bias;
mod conv;
pub(crate) mod cpu;
pub mod flops;
mod gelu;
mod layer_norm;
mod pool;
mod resize;
mod softmax;
pub mod timing;

pub use add_relu::add_relu;
pub(crate) use batch_norm::check_affine;
pub use batch_norm::{batch_norm, ChannelStats, Normalize};
pub use bias::add_channel_bias;
pub use conv::{conv2d, conv2d_generic, conv2d_input_grad, conv2d_weight_grad, ConvParams};
pub use gelu::gelu_erf;
pub use layer_norm::layer_norm;
pub use pool::{max_pool_3x3_s2, max_pool_3x3_s2_composed};
pub(crate) use resize::linear_taps;
pub use resize::{bicubic_matrix, interpolation_matrix, resize_bilinear};
pub use softmax::softmax_last_dim;

/// True when tensors on `device` take the device-generic path (candle's conv2d and its
/// backward, the composed max-pool and batch norm): always off the CPU, and on the CPU
/// when `RECO_OPS=generic` (so that the code a GPU runs is tested here; see
/// `reco_util::ops_path`).
pub fn use_generic_path(device: &candle_core::Device) -> bool {
    !device.is_cpu() || reco_util::ops_path::generic_forced()
}

/// True when `x` goes to this crate's CPU kernels: the kernel path and f32 or f64 (for
/// the ops with a composed fallback for every other case).
pub(crate) fn takes_cpu_kernel(x: &candle_core::Tensor) -> bool {
    !use_generic_path(x.device())
        && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// The float types the CPU kernels are written for.
pub(crate) trait Real:
    candle_core::WithDType
    + num_traits::Float
    + std::ops::AddAssign
    + std::ops::MulAssign
    + Send
    + Sync
    + 'static
{
}
impl Real for f32 {}
impl Real for f64 {}
