//! DeepLabV3+ speed and memory on this machine: a train-mode forward+backward and an
//! eval forward (no graph), median of several runs; peak resident memory of each in a
//! process of its own; images/s, and GFLOP/s against this CPU's measured multiply-add
//! peak (`reco_util::bench::fma_peak` on as many threads as candle uses).
//!
//! `cargo bench -p reco-models --bench deeplab [-- --backbone resnet101 --batch 2 --size 321 --runs 5 --pytorch PYTHON]`
//! (`--backbone dinov2-s` measures DPT on DINOv2; its "folded" row is the Segmenter's
//! logits, which for DPT are the network itself: nothing to fold).
//!
//! The PyTorch counterpart is `benches/pytorch_deeplab.py` (same arguments). With
//! `--pytorch PYTHON` (an interpreter with torch and torchvision) each measurement runs
//! there too, right after ours, with the same batch, heads, mode and thread count, and the
//! table sets them side by side: train against train, eval against eval (both heads, no
//! graph), the folded Segmenter against PyTorch's `deploy` (eval mode, class head only).
//! The FLOPs are counted, not assumed: ours by the convolution kernels themselves
//! (`reco_models::ops::flops`), PyTorch's by `FlopCounterMode`; both count 2 FLOP per
//! multiply-add of the convolutions (DeepLab has no other counted op), so the two columns
//! must agree, and the GFLOP/s of each side is its own count over its own time. DPT's
//! matmuls are not counted, so its GFLOP columns are left empty.
//!
//! `--profile` adds the train step's wall time by op (`reco_models::ops::timing`): each of
//! our CPU kernels (the convolution's three passes, batch norm forward and backward, ...)
//! and, as the rest, candle's own ops and its backward bookkeeping.

use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use reco_models::{Backbone, DeepLabConfig, Network, NetworkKind};
use reco_util::bench::{median, peak_rss_mb};

#[derive(Clone, Debug)]
struct Args {
    backbone: Backbone,
    batch: usize,
    size: usize,
    runs: usize,
    /// Set in the child processes: which measurement to run.
    only: Option<String>,
    /// A Python interpreter with torch: run `pytorch_deeplab.py` beside each measurement.
    pytorch: Option<String>,
    /// Also print the train step's wall time by op.
    profile: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        backbone: Backbone::ResNet101,
        batch: 2,
        size: 321,
        runs: 5,
        only: None,
        pytorch: None,
        profile: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--backbone" => args.backbone = value().parse().expect("backbone"),
            "--batch" => args.batch = value().parse().expect("batch"),
            "--size" => args.size = value().parse().expect("size"),
            "--runs" => args.runs = value().parse().expect("runs"),
            "--only" => args.only = Some(value()),
            "--pytorch" => args.pytorch = Some(value()),
            "--profile" => args.profile = true,
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// DeepLabV3+ OS16 on a ResNet; DPT (patch stride 14) on a DINOv2 backbone.
fn network_of(args: &Args) -> (NetworkKind, DeepLabConfig) {
    match args.backbone.is_vit() {
        true => (
            NetworkKind::Dpt,
            DeepLabConfig {
                backbone: args.backbone,
                output_stride: reco_models::DPT_OUTPUT_STRIDE,
                ..Default::default()
            },
        ),
        false => (
            NetworkKind::DeepLabV3Plus,
            DeepLabConfig {
                backbone: args.backbone,
                ..Default::default()
            },
        ),
    }
}

/// One measurement in this process: median and min seconds, peak RSS (MB), and the
/// convolution FLOPs of one iteration (counted in the warm-up run).
fn measure(args: &Args, what: &str) -> (f64, f64, f64, u64) {
    let (kind, cfg) = network_of(args);
    let varmap = VarMap::new();
    let model = Network::new(
        kind,
        &cfg,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let x = Tensor::randn(
        0f32,
        1.0,
        (args.batch, 3, args.size, args.size),
        &Device::Cpu,
    )
    .unwrap();
    let folded = (what == "folded").then(|| {
        let meta = reco_models::CheckpointMeta::new(kind, &cfg);
        reco_models::Segmenter::from_varmap(&varmap, meta).unwrap()
    });
    let mut times = Vec::new();
    let mut flops = 0;
    for i in 0..=args.runs {
        if i == 0 {
            reco_models::ops::flops::start();
        }
        let t = Instant::now();
        match what {
            "train" => {
                let (p, r) = model.forward_t(&x, true).unwrap();
                let loss = (p.mean_all().unwrap() + r.mean_all().unwrap()).unwrap();
                let grads = loss.backward().unwrap();
                drop(grads);
            }
            "eval" => {
                let (p, _) = model.forward_no_grad(&x, false).unwrap();
                drop(p);
            }
            "folded" => {
                // The inference library's network: batch norm folded into the
                // convolutions, class head only (no representation head).
                let p = folded.as_ref().expect("folded network").logits(&x).unwrap();
                drop(p);
            }
            _ => unreachable!(),
        }
        // The first run warms up allocations and caches.
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        } else {
            flops = reco_models::ops::flops::stop();
            if args.profile {
                reco_models::ops::timing::start();
            }
        }
    }
    if args.profile {
        // One line per op for the parent: seconds and calls per run; the step's mean
        // under the same name, so that the rest is mean minus means.
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        println!("OP step {mean} 1");
        for op in reco_models::ops::timing::stop() {
            let runs = args.runs as f64;
            println!(
                "OP {} {} {}",
                op.name,
                op.seconds / runs,
                op.calls as f64 / runs
            );
        }
    }
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    (median(times), min, peak_rss_mb().unwrap_or(f64::NAN), flops)
}

/// Large buffers on transparent huge pages (`reco_util::alloc`; measured in
/// docs/benchmarks.md, issue 15).
#[global_allocator]
static ALLOCATOR: reco_util::alloc::HugePageAlloc = reco_util::alloc::HugePageAlloc;

/// One row's numbers: median and min seconds, peak RSS, FLOPs of one iteration.
struct Row {
    median: f64,
    min: f64,
    rss_mb: f64,
    flops: f64,
}

/// One op of the profile: name, seconds per step, calls per step.
type OpLine = (String, f64, f64);

/// Runs `cmd` and parses the last line of its output as at least four numbers
/// (median s, min s, peak RSS MB, then FLOPs as the last one), and its `OP` lines.
fn run_child(mut cmd: Command, what: &str) -> Result<(Row, Vec<OpLine>), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot start {cmd:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ops = text
        .lines()
        .filter_map(|l| {
            let mut f = l.strip_prefix("OP ")?.split_whitespace();
            Some((
                f.next()?.to_string(),
                f.next()?.parse().ok()?,
                f.next()?.parse().ok()?,
            ))
        })
        .collect();
    let v: Vec<f64> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    if !out.status.success() || v.len() < 4 {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "{what} failed: {}",
            err.lines().last().unwrap_or("no output")
        ));
    }
    Ok((
        Row {
            median: v[0],
            min: v[1],
            rss_mb: v[2],
            flops: v[v.len() - 1],
        },
        ops,
    ))
}

/// The train step's wall time by op, and the rest (candle's ops and bookkeeping), as
/// means over the timed runs.
fn print_profile(ops: &[OpLine]) {
    let Some(step) = ops.iter().find(|o| o.0 == "step").map(|o| o.1) else {
        return;
    };
    let mut ops: Vec<OpLine> = ops.iter().filter(|o| o.0 != "step").cloned().collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!();
    println!("train step by op (wall seconds, mean over the timed runs: step {step:.3} s):");
    println!("| op | s per step | share | calls per step |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, secs, calls) in &ops {
        println!(
            "| {name} | {secs:.3} | {:.1} % | {calls:.0} |",
            100.0 * secs / step
        );
    }
    let ours: f64 = ops.iter().map(|o| o.1).sum();
    println!(
        "| rest: candle's own ops (element-wise, copies, matmuls), backward bookkeeping, allocation | {:.3} | {:.1} % | |",
        step - ours,
        100.0 * (step - ours) / step
    );
}

fn main() {
    // As the trainer: candle's element-wise ops on the calling thread (reco_util::threads).
    reco_util::threads::single_candle_elementwise_pool();
    let args = parse_args();
    if let Some(what) = &args.only {
        let (med, min, mb, flops) = measure(&args, what);
        println!("{med} {min} {mb} {flops}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let (kind, cfg) = network_of(&args);
    let threads = candle_core::utils::get_num_threads();
    let peak = reco_util::bench::fma_peak(threads, 10);
    println!(
        "{kind} {} OS{}, batch {}, {}x{}, f32, CPU, {threads} threads, median of {} runs",
        args.backbone, cfg.output_stride, args.batch, args.size, args.size, args.runs
    );
    println!(
        "measured f32 FMA peak: {:.0} GFLOP/s ({}, {} threads)",
        peak.gflops, peak.isa, peak.threads
    );
    println!("| measurement | side | median (s) | min (s) | images/s | GFLOP | GFLOP/s | of peak | peak RSS (MB) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pytorch_deeplab.py");
    let counted = !args.backbone.is_vit();
    // The arguments both sides take, in the same spelling.
    let (batch, size, runs) = (
        args.batch.to_string(),
        args.size.to_string(),
        args.runs.to_string(),
    );
    let shared = [
        "--backbone",
        args.backbone.name(),
        "--batch",
        &batch,
        "--size",
        &size,
        "--runs",
        &runs,
    ];
    let mut profile = None;
    for what in ["train", "eval", "folded"] {
        let mut ours = Command::new(&exe);
        ours.args(shared).args(["--only", what]);
        if args.profile && what == "train" {
            ours.arg("--profile");
        }
        let ours = match run_child(ours, what) {
            Ok((row, ops)) => {
                if what == "train" && args.profile {
                    profile = Some(ops);
                }
                Ok(row)
            }
            Err(e) => Err(e),
        };
        let mut rows = vec![("ours", ours)];
        if let (Some(python), true) = (&args.pytorch, counted) {
            let mut pt = Command::new(python);
            let pt_what = if what == "folded" { "deploy" } else { what };
            pt.args([script, "--child"]).args(shared).args([
                "--threads",
                &threads.to_string(),
                "--only",
                pt_what,
            ]);
            rows.push(("PyTorch", run_child(pt, pt_what).map(|(row, _)| row)));
        }
        let label = match what {
            "train" => "train step (fwd+bwd, batch stats, both heads)",
            "eval" => "eval forward (no graph, both heads)",
            _ => "eval, class head only (ours: BN folded, Segmenter::logits; PyTorch: eval mode)",
        };
        let images = args.batch as f64;
        let mut first_median = None;
        for (side, row) in rows {
            match row {
                Err(e) => println!("| {label} | {side} | {e} | | | | | | |"),
                Ok(r) => {
                    let (gflop, rate, frac) = if counted && r.flops > 0.0 {
                        let rate = r.flops / 1e9 / r.median;
                        (
                            format!("{:.1}", r.flops / 1e9),
                            format!("{rate:.0}"),
                            format!("{:.0} %", 100.0 * rate / peak.gflops),
                        )
                    } else {
                        Default::default()
                    };
                    let side = match first_median {
                        None => side.to_string(),
                        Some(ours) => format!("{side} (ours / PyTorch {:.2}x)", ours / r.median),
                    };
                    first_median.get_or_insert(r.median);
                    println!(
                        "| {label} | {side} | {:.3} | {:.3} | {:.2} | {gflop} | {rate} | {frac} | {:.0} |",
                        r.median,
                        r.min,
                        images / r.median,
                        r.rss_mb
                    );
                }
            }
        }
    }
    if let Some(ops) = profile {
        print_profile(&ops);
    }
}
