//! DeepLabV3+ speed and memory on this machine: a train-mode forward+backward and an
//! eval forward (no graph), median of several runs; peak resident memory of each in a
//! process of its own.
//!
//! `cargo bench -p reco-models --bench deeplab [-- --backbone resnet101 --batch 2 --size 321 --runs 5]`
//! (`--backbone dinov2-s` measures DPT on DINOv2; its "folded" row is the Segmenter's
//! logits, which for DPT are the network itself: nothing to fold).
//! The PyTorch counterpart is `benches/pytorch_deeplab.py` (same arguments).

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
}

fn parse_args() -> Args {
    let mut args = Args {
        backbone: Backbone::ResNet101,
        batch: 2,
        size: 321,
        runs: 5,
        only: None,
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

fn measure(args: &Args, what: &str) -> (f64, f64, f64) {
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
    for i in 0..=args.runs {
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
        }
    }
    let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
    (median(times), min, peak_rss_mb().unwrap_or(f64::NAN))
}

/// Large buffers on transparent huge pages (`reco_util::alloc`; measured in
/// docs/benchmarks.md, issue 15).
#[global_allocator]
static ALLOCATOR: reco_util::alloc::HugePageAlloc = reco_util::alloc::HugePageAlloc;

fn main() {
    // As the trainer: candle's element-wise ops on the calling thread (reco_util::threads).
    reco_util::threads::single_candle_elementwise_pool();
    let args = parse_args();
    if let Some(what) = &args.only {
        let (med, min, mb) = measure(&args, what);
        println!("{med} {min} {mb}");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let (kind, cfg) = network_of(&args);
    println!(
        "{kind} {} OS{}, batch {}, {}x{}, f32, CPU, {} threads, median of {} runs",
        args.backbone,
        cfg.output_stride,
        args.batch,
        args.size,
        args.size,
        candle_core::utils::get_num_threads(),
        args.runs
    );
    println!("| measurement | median (s) | min (s) | peak RSS (MB) |");
    println!("| --- | --- | --- | --- |");
    for what in ["train", "eval", "folded"] {
        let out = Command::new(&exe)
            .args([
                "--backbone",
                args.backbone.name(),
                "--batch",
                &args.batch.to_string(),
                "--size",
                &args.size.to_string(),
                "--runs",
                &args.runs.to_string(),
                "--only",
                what,
            ])
            .output()
            .expect("child process");
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Vec<f64> = text
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        if v.len() != 3 {
            panic!("child failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let label = match what {
            "train" => "train step (fwd+bwd, batch stats)",
            "eval" => "eval forward (no graph)",
            _ => "eval forward, batch norm folded (Segmenter::logits)",
        };
        println!("| {label} | {:.3} | {:.3} | {:.0} |", v[0], v[1], v[2]);
    }
}
