//! ReCo loss benchmark: forward and forward+backward time and peak memory at the
//! Pascal VOC and Cityscapes training shapes, each shape in a fresh process.
//!
//! ```text
//! cargo bench -p reco-loss --bench reco_bench                  # table of all shapes
//! cargo bench -p reco-loss --bench reco_bench -- --dump voc /tmp/voc.safetensors
//! ```
//! `RECO_BENCH_KERNEL=portable` times the tensor-op path (the one CUDA takes) instead of
//! the fused CPU kernel. `--dump` writes the exact inputs, so that `benches/reco_original.py` can time the
//! original PyTorch implementation on the same tensors.

use std::collections::HashMap;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reco_loss::{reco_loss, ReCoConfig};
use reco_util::bench::{median, peak_rss_mb};

struct Shape {
    name: &'static str,
    batch: usize,
    dim: usize,
    height: usize,
    width: usize,
    classes: usize,
    /// Classes per image, class 0 (background) included.
    per_image: usize,
}

const SHAPES: [Shape; 2] = [
    Shape {
        name: "voc",
        batch: 20,
        dim: 256,
        height: 81,
        width: 81,
        classes: 21,
        per_image: 6,
    },
    Shape {
        name: "cityscapes",
        batch: 4,
        dim: 256,
        height: 128,
        width: 128,
        classes: 19,
        per_image: 12,
    },
];

fn normal(rng: &mut ChaCha8Rng) -> f32 {
    // Box–Muller; precision is irrelevant here.
    let u1: f32 = rng.gen_range(1e-7..1.0);
    let u2: f32 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Synthetic but training-like inputs: every image is a Voronoi partition into
/// `per_image` class blobs, features cluster around a per-class mean, 5 % of pixels are
/// masked out, and about a third of the blobs are predicted confidently (easy pixels).
fn inputs(s: &Shape, seed: u64) -> candle_core::Result<[Tensor; 4]> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (b, d, c, p) = (s.batch, s.dim, s.classes, s.height * s.width);
    let means: Vec<f32> = (0..c * d).map(|_| normal(&mut rng)).collect();
    let mut label_of = vec![0usize; b * p];
    let mut confident = vec![false; b * p];
    for bi in 0..b {
        let mut classes = vec![0usize];
        while classes.len() < s.per_image {
            let k = rng.gen_range(1..c);
            if !classes.contains(&k) {
                classes.push(k);
            }
        }
        let seeds: Vec<(f32, f32, bool)> = classes
            .iter()
            .map(|_| {
                (
                    rng.gen_range(0.0..s.height as f32),
                    rng.gen_range(0.0..s.width as f32),
                    rng.gen_bool(0.33),
                )
            })
            .collect();
        for y in 0..s.height {
            for x in 0..s.width {
                let (best, _) =
                    seeds
                        .iter()
                        .enumerate()
                        .fold((0, f32::MAX), |acc, (i, &(sy, sx, _))| {
                            let dist = (sy - y as f32).powi(2) + (sx - x as f32).powi(2);
                            if dist < acc.1 {
                                (i, dist)
                            } else {
                                acc
                            }
                        });
                label_of[bi * p + y * s.width + x] = classes[best];
                confident[bi * p + y * s.width + x] = seeds[best].2;
            }
        }
    }
    let mut rep = vec![0f32; b * d * p];
    let mut label = vec![0f32; b * c * p];
    let mut prob = vec![0f32; b * c * p];
    let mut mask = vec![0f32; b * p];
    let mut logits = vec![0f32; c];
    for bi in 0..b {
        for pi in 0..p {
            let k = label_of[bi * p + pi];
            for di in 0..d {
                rep[(bi * d + di) * p + pi] = 0.7 * means[k * d + di] + normal(&mut rng);
            }
            label[(bi * c + k) * p + pi] = 1.0;
            mask[bi * p + pi] = if rng.gen_bool(0.95) { 1.0 } else { 0.0 };
            for (j, l) in logits.iter_mut().enumerate() {
                *l = normal(&mut rng)
                    + if j == k {
                        if confident[bi * p + pi] {
                            9.0
                        } else {
                            2.0
                        }
                    } else {
                        0.0
                    };
            }
            let max = logits.iter().copied().fold(f32::MIN, f32::max);
            let z: f32 = logits.iter().map(|l| (l - max).exp()).sum();
            for (j, l) in logits.iter().enumerate() {
                prob[(bi * c + j) * p + pi] = (l - max).exp() / z;
            }
        }
    }
    let dev = Device::Cpu;
    Ok([
        Tensor::from_vec(rep, (b, d, s.height, s.width), &dev)?,
        Tensor::from_vec(label, (b, c, s.height, s.width), &dev)?,
        Tensor::from_vec(mask, (b, 1, s.height, s.width), &dev)?,
        Tensor::from_vec(prob, (b, c, s.height, s.width), &dev)?,
    ])
}

/// Peak resident set size of this process so far, in MB (NaN off Linux).
fn vm_hwm_mb() -> f64 {
    peak_rss_mb().unwrap_or(f64::NAN)
}

/// User + system CPU time of this process so far, in seconds (all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // Clock ticks are 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

fn shape(name: &str) -> &'static Shape {
    SHAPES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("unknown shape {name}: use voc or cityscapes"))
}

/// One shape, in this (fresh) process; prints one `RESULT` line for the parent.
fn child(name: &str, runs: usize) -> candle_core::Result<()> {
    let s = shape(name);
    let [rep, label, mask, prob] = inputs(s, 0)?;
    let base = vm_hwm_mb();
    let mut cfg = ReCoConfig::default();
    if std::env::var("RECO_BENCH_KERNEL").as_deref() == Ok("portable") {
        // The tensor-op path that CUDA would take, for comparison on the CPU.
        cfg.kernel = reco_loss::ContrastKernel::Portable;
    }
    let rep = Var::from_tensor(&rep)?;
    let mut fwd = Vec::new();
    let mut total = Vec::new();
    let mut losses = Vec::new();
    let mut cpu_start = 0.0;
    for run in 0..runs + 1 {
        if run == 1 {
            cpu_start = cpu_seconds();
        }
        let t = Instant::now();
        let loss = reco_loss(rep.as_tensor(), &label, &mask, &prob, &cfg, run as u64)?;
        let value = loss.to_scalar::<f32>()?;
        let t_fwd = t.elapsed().as_secs_f64();
        let grads = loss.backward()?;
        let g = grads.get(rep.as_tensor()).expect("gradient reaches rep");
        assert_eq!(g.dims(), rep.dims());
        let t_all = t.elapsed().as_secs_f64();
        drop(grads);
        if run > 0 {
            // run 0 is a warm-up (page faults of first-touch buffers, rayon start-up)
            fwd.push(t_fwd);
            total.push(t_all);
            losses.push(f64::from(value));
        }
    }
    let cpu_ms = 1e3 * (cpu_seconds() - cpu_start) / runs as f64;
    let mean_loss = losses.iter().sum::<f64>() / losses.len() as f64;
    println!(
        "RESULT {name} {:.1} {:.1} {:.0} {:.0} {:.0} {:.4} {}",
        1e3 * median(fwd),
        1e3 * median(total),
        cpu_ms,
        vm_hwm_mb(),
        base,
        mean_loss,
        runs
    );
    Ok(())
}

fn dump(name: &str, path: &str) -> candle_core::Result<()> {
    let s = shape(name);
    let [rep, label, mask, prob] = inputs(s, 0)?;
    let map: HashMap<String, Tensor> = [
        ("rep", rep),
        ("label", label),
        ("mask", mask),
        ("prob", prob),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    candle_core::safetensors::save(&map, path)?;
    println!("wrote {path}");
    Ok(())
}

/// Large buffers on transparent huge pages (`reco_util::alloc`; measured in
/// docs/benchmarks.md, issue 15).
#[global_allocator]
static ALLOCATOR: reco_util::alloc::HugePageAlloc = reco_util::alloc::HugePageAlloc;

fn main() -> candle_core::Result<()> {
    // As the trainer: candle's element-wise ops on the calling thread (reco_util::threads).
    reco_util::threads::single_candle_elementwise_pool();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runs: usize = std::env::var("RECO_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    match args.first().map(String::as_str) {
        Some("--child") => return child(&args[1], runs),
        Some("--dump") => return dump(&args[1], &args[2]),
        _ => {}
    }
    let exe = std::env::current_exe()?;
    println!(
        "| shape | forward (ms) | forward+backward (ms) | CPU time per fwd+bwd (ms, all threads) | peak RSS (MB) | inputs only (MB) | mean loss | runs |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in &SHAPES {
        let out = Command::new(&exe).args(["--child", s.name]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(line) = text.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
            eprintln!(
                "{} failed:\n{}{}",
                s.name,
                text,
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            eprintln!("{}: malformed result line {line:?}", s.name);
            continue;
        }
        let label = format!(
            "{} ({}x{}x{}x{}, {} classes)",
            f[0], s.batch, s.dim, s.height, s.width, s.classes
        );
        println!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            f[1], f[2], f[3], f[4], f[5], f[6], f[7]
        );
    }
    Ok(())
}
