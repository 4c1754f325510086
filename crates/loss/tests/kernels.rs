//! The fused host kernel against the portable tensor-op path on an input large enough
//! for several row chunks (the fixtures fit in one).

mod common;

use candle_core::{Device, Tensor, Var};
use reco_loss::{reco_loss, ContrastKernel, ReCoConfig};
use reco_util::ops_path::{with_ops_path, OpsPath};

/// 2 images of 12x12, 6 classes in vertical bands, D = 24; deterministic pseudo-random
/// features and probabilities.
fn synthetic() -> [Tensor; 4] {
    let (b, d, c, h, w) = (2usize, 24usize, 6usize, 12usize, 12usize);
    let p = h * w;
    let hash = |i: usize| ((i as u64).wrapping_mul(2654435761) % 1000) as f32 / 1000.0;
    let class_of = |bi: usize, s: usize| ((s % w) / 2 + bi) % c;
    let mut rep = vec![0f32; b * d * p];
    let mut label = vec![0f32; b * c * p];
    let mut prob = vec![0f32; b * c * p];
    let mut mask = vec![1f32; b * p];
    for bi in 0..b {
        for s in 0..p {
            let k = class_of(bi, s);
            for di in 0..d {
                rep[(bi * d + di) * p + s] =
                    hash((bi * d + di) * p + s) - 0.5 + if di == k { 1.0 } else { 0.0 };
            }
            label[(bi * c + k) * p + s] = 1.0;
            // about a third of the pixels are easy
            let conf = if hash(7 * (bi * p + s)) < 0.33 {
                0.99
            } else {
                0.5
            };
            for j in 0..c {
                prob[(bi * c + j) * p + s] = if j == k {
                    conf
                } else {
                    (1.0 - conf) / (c - 1) as f32
                };
            }
            if s % 17 == 0 {
                mask[bi * p + s] = 0.0;
            }
        }
    }
    let dev = Device::Cpu;
    [
        Tensor::from_vec(rep, (b, d, h, w), &dev).unwrap(),
        Tensor::from_vec(label, (b, c, h, w), &dev).unwrap(),
        Tensor::from_vec(mask, (b, 1, h, w), &dev).unwrap(),
        Tensor::from_vec(prob, (b, c, h, w), &dev).unwrap(),
    ]
}

fn loss_and_grad(inputs: &[Tensor; 4], cfg: &ReCoConfig, seed: u64) -> (f64, Vec<f64>) {
    let rep = Var::from_tensor(&inputs[0]).unwrap();
    let loss = reco_loss(
        rep.as_tensor(),
        &inputs[1],
        &inputs[2],
        &inputs[3],
        cfg,
        seed,
    )
    .unwrap();
    let grads = loss.backward().unwrap();
    (
        common::vec_f64(&loss)[0],
        common::vec_f64(grads.get(rep.as_tensor()).unwrap()),
    )
}

#[test]
fn fused_kernel_matches_portable_path_across_chunks() {
    let inputs = synthetic();
    // 6 classes x 200 queries = 1200 rows: three chunks of the fused kernel, the last partial.
    let mut cfg = ReCoConfig {
        num_queries: 200,
        num_negatives: 96,
        temp: 0.3,
        ..ReCoConfig::default()
    };
    let parts = reco_loss::reco_loss_parts(&inputs[0], &inputs[1], &inputs[2], &inputs[3], &cfg, 0)
        .unwrap();
    assert_eq!(parts.draws.rows(), 1200, "all six classes must get queries");
    // τ = 0.3 takes the single-pass kernel, τ = 0.02 the two-pass one.
    for (seed, temp) in [(0u64, 0.3), (1, 0.3), (2, 0.02)] {
        cfg.temp = temp;
        // The fused kernel on the CPU path; the portable one on the generic (device) path,
        // whatever RECO_OPS says.
        cfg.kernel = ContrastKernel::Auto;
        let (l1, g1) = with_ops_path(OpsPath::Cpu, || loss_and_grad(&inputs, &cfg, seed));
        cfg.kernel = ContrastKernel::Portable;
        let (l2, g2) = with_ops_path(OpsPath::Generic, || loss_and_grad(&inputs, &cfg, seed));
        assert!(l1 > 0.0);
        common::assert_same_loss_and_grad(
            &format!("τ {temp}"),
            ("fused", "portable"),
            (l1, &g1),
            (l2, &g2),
            1e-5,
        );
    }
}

#[test]
fn result_does_not_depend_on_the_thread_count() {
    let inputs = synthetic();
    let cfg = ReCoConfig {
        num_queries: 200,
        num_negatives: 96,
        ..ReCoConfig::default()
    };
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let three = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let (l1, g1) = one.install(|| loss_and_grad(&inputs, &cfg, 4));
    let (l3, g3) = three.install(|| loss_and_grad(&inputs, &cfg, 4));
    assert_eq!(l1.to_bits(), l3.to_bits());
    assert_eq!(g1, g3);
}
