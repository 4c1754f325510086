//! Hyper-parameters of the ReCo loss.

/// How the per-query contrastive cross-entropy is evaluated.
///
/// Both kernels compute the same numbers from the same draws; `Auto` picks the fused
/// CPU kernel for contiguous `f32` CPU tensors and the portable tensor-op path otherwise
/// (always the portable path under `RECO_OPS=generic`, see [`use_generic_path`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContrastKernel {
    /// Fused gather-dot-softmax loop on the host for CPU `f32` tensors, portable path elsewhere.
    #[default]
    Auto,
    /// Chunked `index_select` + batched matmul on the tensors' device (any device, any float dtype).
    Portable,
}

/// True when tensors on `device` take the portable path (`index_select` + matmul, and
/// the query gather as `index_select`), which is what CUDA runs: always off the CPU, and
/// on the CPU under `RECO_OPS=generic` (see `reco_util::ops_path`), so that the device
/// path is tested on any machine.
pub fn use_generic_path(device: &candle_core::Device) -> bool {
    !device.is_cpu() || reco_util::ops_path::generic_forced()
}

/// Configuration of [`crate::reco_loss`]; the defaults are the original's training settings.
#[derive(Clone, Debug)]
pub struct ReCoConfig {
    /// δs: a valid pixel is a hard query for its class when the student's probability
    /// for that class is below this value.
    pub strong_threshold: f64,
    /// τ: temperature of both the class-relation softmax and the contrastive logits.
    pub temp: f64,
    /// Hard queries drawn (with replacement) per class present.
    pub num_queries: usize,
    /// Negative keys drawn (with replacement) per query.
    pub num_negatives: usize,
    /// Evaluation strategy; does not change the result.
    pub kernel: ContrastKernel,
    /// Query rows per chunk of the portable path: bounds the gathered keys to
    /// `chunk_rows * num_negatives * D` elements at a time.
    pub chunk_rows: usize,
}

impl Default for ReCoConfig {
    fn default() -> Self {
        Self {
            strong_threshold: 0.97,
            temp: 0.5,
            num_queries: 256,
            num_negatives: 512,
            kernel: ContrastKernel::Auto,
            chunk_rows: 64,
        }
    }
}

impl ReCoConfig {
    /// Rejects settings the loss cannot use, naming the field.
    pub fn validate(&self) -> candle_core::Result<()> {
        if !(self.temp.is_finite() && self.temp > 0.0) {
            candle_core::bail!(
                "ReCoConfig.temp must be a positive finite number, got {}",
                self.temp
            );
        }
        if !self.strong_threshold.is_finite() {
            candle_core::bail!(
                "ReCoConfig.strong_threshold must be finite, got {}",
                self.strong_threshold
            );
        }
        if self.num_queries == 0 || self.num_negatives == 0 {
            candle_core::bail!(
                "ReCoConfig.num_queries and num_negatives must be at least 1, got {} and {}",
                self.num_queries,
                self.num_negatives
            );
        }
        // The fused kernel numbers (query, key) pairs of a 512-query chunk with u32.
        if self.num_negatives > 1 << 22 {
            candle_core::bail!(
                "ReCoConfig.num_negatives must be at most {}, got {}",
                1usize << 22,
                self.num_negatives
            );
        }
        if self.chunk_rows == 0 {
            candle_core::bail!("ReCoConfig.chunk_rows must be at least 1");
        }
        Ok(())
    }
}
