//! CPU thread pools: one set of workers, not two competing for the same cores.
//!
//! candle 0.11 runs its element-wise CPU ops (add, mul, the gradient sums of its
//! backward pass, the optimiser's updates) on a pool of its own, `CANDLE_NUM_THREADS − 1`
//! spinning workers (default: one per core), while our convolution, batch-norm and ReCo
//! kernels, and candle's own matmul, run on rayon's global pool. On a machine where both
//! pools have a thread per core, a worker of one pool spins (25 000 iterations after each
//! op) while the other pool's workers wait for a core, so every element-wise op slows the
//! gemm that follows it. An A/B on 2 cores while other work ran (issue 15, 2026-11-29; not a
//! benchmark): the ResNet-18 default-run step ~15 % faster and the ResNet-101 step ~5 %
//! faster with candle's element-wise ops on the calling thread. The binaries call [`single_candle_elementwise_pool`]
//! first thing; a user who sets `CANDLE_NUM_THREADS` keeps their choice.

/// Makes candle run its element-wise ops on the calling thread (`CANDLE_NUM_THREADS=1`)
/// unless the user chose otherwise. Call it at the start of `main`, before any tensor
/// op and before any thread exists (it sets a process environment variable, which
/// candle reads once when its pool is first used).
pub fn single_candle_elementwise_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}
