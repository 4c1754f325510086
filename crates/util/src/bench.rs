//! What every benchmark table reports: the median of repeated timings, the process's
//! peak resident memory, and this CPU's measured multiply-add peak (to state GFLOP/s as
//! a fraction of what the machine can do).

/// Median of `values` (mean of the two middle ones for an even count; NaN when empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// Peak resident set size of this process in MB (`VmHWM` of /proc/self/status); `None`
/// where that file does not exist (not Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The f32 multiply-add throughput this CPU sustains, measured: what a benchmark's
/// GFLOP/s are set against, instead of a nominal peak that the host's clock, SMT
/// siblings or a double-pumped vector unit may not deliver.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FmaPeak {
    /// GFLOP/s of all `threads` together (a fused multiply-add counts as 2 FLOP).
    pub gflops: f64,
    pub threads: usize,
    /// The vector instructions used: "avx512f", "avx2+fma" or "portable".
    pub isa: &'static str,
}

/// Multiply-adds per accumulator per timed call: long enough (about 10 ms) that the
/// timer and thread start-up vanish, short enough to repeat.
const FMA_ITERS: usize = 1 << 22;

/// Independent accumulators per thread: more than latency x pipes (4 cycles x 2 on
/// current cores), fewer than the 16 (AVX2) or 32 (AVX-512) vector registers.
const FMA_CHAINS: usize = 12;

/// Runs [`FMA_CHAINS`] independent FMA chains on each of `threads` threads at once,
/// `repeats` times after one untimed round (which brings the cores to their working
/// clock), and keeps the fastest round (the least disturbed by the host).
pub fn fma_peak(threads: usize, repeats: usize) -> FmaPeak {
    let threads = threads.max(1);
    let (isa, flops_per_call) = fma_kernel_info();
    let mut best = 0f64;
    for round in 0..=repeats.max(1) {
        // Each worker times itself: a main thread timing the workers would compete with
        // them for the cores and read its clock late.
        let barrier = std::sync::Barrier::new(threads);
        let spans: Vec<_> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|i| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let start = std::time::Instant::now();
                        // Both black boxes pin the pure computation after the clock is
                        // read, where the compiler could otherwise move it.
                        let seed = std::hint::black_box(1.0 + i as f32 * 1e-7);
                        std::hint::black_box(fma_kernel(seed));
                        (start, std::time::Instant::now())
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("FMA worker"))
                .collect()
        });
        let first = spans.iter().map(|s| s.0).min().expect("one worker");
        let last = spans.iter().map(|s| s.1).max().expect("one worker");
        let elapsed = (last - first).as_secs_f64();
        if round > 0 {
            best = best.max(threads as f64 * flops_per_call / elapsed / 1e9);
        }
    }
    FmaPeak {
        gflops: best,
        threads,
        isa,
    }
}

fn fma_kernel_info() -> (&'static str, f64) {
    let lanes = |isa| match isa {
        "avx512f" => 16.0,
        "avx2+fma" => 8.0,
        _ => PORTABLE_LANES as f64,
    };
    let isa = fma_isa();
    (isa, 2.0 * lanes(isa) * (FMA_CHAINS * FMA_ITERS) as f64)
}

fn fma_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "avx512f";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "avx2+fma";
        }
    }
    "portable"
}

/// One timed call of the widest kernel this CPU has; returns a sum so that nothing is
/// optimised away.
fn fma_kernel(seed: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        match fma_isa() {
            // SAFETY: the features were detected at run time just above.
            "avx512f" => return unsafe { fma_avx512(seed) },
            "avx2+fma" => return unsafe { fma_avx2(seed) },
            _ => {}
        }
    }
    fma_portable(seed)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    // Multiplier just below 1 and addend tiny: the values stay finite and normal.
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(seed); FMA_CHAINS];
    for _ in 0..FMA_ITERS {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(seed: f32) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(seed); FMA_CHAINS];
    for _ in 0..FMA_ITERS {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut lanes = [0f32; 8];
    let mut total = 0.0;
    for v in acc {
        // SAFETY: `lanes` holds exactly one 256-bit vector.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        total += lanes.iter().sum::<f32>();
    }
    total
}

/// Lanes of the portable kernel's accumulators (what the compiler vectorises).
const PORTABLE_LANES: usize = 8;

fn fma_portable(seed: f32) -> f32 {
    let mut acc = [[seed; PORTABLE_LANES]; FMA_CHAINS];
    for _ in 0..FMA_ITERS {
        for chain in acc.iter_mut() {
            for v in chain.iter_mut() {
                *v = *v * 0.999_999 + 1e-7;
            }
        }
    }
    acc.iter().flatten().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn fma_peak_is_positive_and_does_not_fall_with_threads() {
        let one = fma_peak(1, 2);
        assert!(one.gflops > 0.1, "{one:?}");
        // The kernel does no memory traffic: two threads do at least as much as one
        // (up to the host's noise), even where both run on one core's SMT siblings.
        let two = fma_peak(2, 2);
        assert!(two.gflops > 0.7 * one.gflops, "{one:?} {two:?}");
        assert_eq!(two.threads, 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_is_positive_on_linux() {
        assert!(peak_rss_mb().unwrap() > 0.0);
    }
}
