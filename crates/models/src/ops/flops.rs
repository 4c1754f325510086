//! Nominal FLOPs of the convolutions that this crate's CPU kernels run, for benchmarks'
//! GFLOP/s columns.
//!
//! Counted as PyTorch's `torch.utils.flop_counter.FlopCounterMode` counts a convolution:
//! 2 FLOP per multiply-add of the direct formula, `2·N·O·Ho·Wo·C·k·k`, for the forward
//! pass, and as much again for each of the input and the weight gradient that is
//! computed. So a step's count is the same number on both sides of a comparison,
//! whatever shortcuts a kernel takes (skipped zero padding, per-tap gemms). Only
//! convolutions are counted: for DeepLab they are all of FlopCounterMode's count (it
//! counts no resizes, batch norms or element-wise ops); DPT's matmuls are not counted.
//!
//! The count is per thread: the convolutions that the calling thread runs (candle runs
//! each op, and the backward pass, on the thread that called it; the kernels' own worker
//! threads count nothing). So concurrent tests or networks do not mix their counts. Off
//! until [`start`]; a thread-local add per convolution otherwise.

use std::cell::Cell;

thread_local! {
    /// `Some(flops so far)` while this thread counts.
    static FLOPS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Starts counting this thread's convolutions from zero.
pub fn start() {
    FLOPS.with(|f| f.set(Some(0)));
}

/// Stops counting and returns the FLOPs counted on this thread since [`start`] (0 when
/// it was not started).
pub fn stop() -> u64 {
    FLOPS.with(|f| f.take()).unwrap_or(0)
}

/// Records one convolution pass (forward, input gradient or weight gradient) of
/// `multiply_adds` multiply-adds.
pub(crate) fn add_pass(multiply_adds: usize) {
    FLOPS.with(|f| {
        if let Some(n) = f.get() {
            f.set(Some(n + 2 * multiply_adds as u64));
        }
    });
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::ops::{conv2d, ConvParams};

    #[test]
    fn a_convolution_and_its_two_gradients_count_three_forward_passes() {
        let x = Var::randn(0f32, 1.0, (2, 3, 9, 7), &Device::Cpu).unwrap();
        let w = Var::randn(0f32, 1.0, (4, 3, 3, 3), &Device::Cpu).unwrap();
        let p = ConvParams {
            stride: 2,
            padding: 1,
            dilation: 1,
        };
        // Output 5x4: 2·N·O·Ho·Wo·C·k·k.
        let forward = 2 * 2 * 4 * (5 * 4) * 3 * 9;
        assert_eq!(super::stop(), 0, "not counting before start");
        super::start();
        let y = conv2d(x.as_tensor(), w.as_tensor(), p).unwrap();
        assert_eq!(super::stop(), forward);
        super::start();
        let loss = y.sqr().unwrap().sum_all().unwrap();
        loss.backward().unwrap();
        assert_eq!(super::stop(), 2 * forward, "input and weight gradient");
        // Without a graph on the input only the weight gradient runs.
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 7), &Device::Cpu).unwrap();
        let y = conv2d(&x, w.as_tensor(), p).unwrap();
        super::start();
        y.sum_all().unwrap().backward().unwrap();
        assert_eq!(super::stop(), forward);
    }
}
