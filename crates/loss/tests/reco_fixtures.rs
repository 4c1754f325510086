//! ReCo loss against the original's distribution: mean loss and mean gradient over many
//! seeds, with the criteria of docs/design.md#reference-fixtures.

mod common;

use std::collections::HashMap;

use candle_core::{Tensor, Var};
use common::{fixtures, get, scalar_f64, vec_f64};
use reco_loss::{reco_loss, ContrastKernel, ReCoConfig};
use reco_util::ops_path::{with_ops_path, OpsPath};

const SEEDS: u64 = 320;

struct Case {
    rep: Tensor,
    label: Tensor,
    mask: Tensor,
    prob: Tensor,
    cfg: ReCoConfig,
}

fn case(f: &HashMap<String, Tensor>, name: &str) -> Case {
    let k = |s: &str| format!("reco.{name}.{s}");
    let cfg = ReCoConfig {
        strong_threshold: scalar_f64(f, &k("cfg.strong_threshold")),
        temp: scalar_f64(f, &k("cfg.temp")),
        num_queries: scalar_f64(f, &k("cfg.num_queries")) as usize,
        num_negatives: scalar_f64(f, &k("cfg.num_negatives")) as usize,
        ..ReCoConfig::default()
    };
    Case {
        rep: get(f, &k("rep")).clone(),
        label: get(f, &k("label_onehot")).clone(),
        mask: get(f, &k("mask")).clone(),
        prob: get(f, &k("prob")).clone(),
        cfg,
    }
}

/// Loss and gradient for one seed.
fn run(c: &Case, seed: u64) -> (f64, Vec<f64>) {
    let rep = Var::from_tensor(&c.rep).unwrap();
    let loss = reco_loss(rep.as_tensor(), &c.label, &c.mask, &c.prob, &c.cfg, seed).unwrap();
    assert_eq!(loss.rank(), 0);
    let value = vec_f64(&loss)[0];
    let grads = loss.backward().unwrap();
    let grad = match grads.get(rep.as_tensor()) {
        Some(g) => vec_f64(g),
        None => vec![0.0; c.rep.elem_count()],
    };
    (value, grad)
}

/// Mean and (unbiased) variance of the loss and of every gradient element over `SEEDS` seeds.
fn statistics(c: &Case) -> (f64, f64, Vec<f64>, Vec<f64>) {
    let n = c.rep.elem_count();
    let (mut s, mut s2) = (0.0, 0.0);
    let (mut g, mut g2) = (vec![0.0; n], vec![0.0; n]);
    for seed in 0..SEEDS {
        let (l, grad) = run(c, 1000 + seed);
        s += l;
        s2 += l * l;
        for ((a, b), x) in g.iter_mut().zip(g2.iter_mut()).zip(&grad) {
            *a += x;
            *b += x * x;
        }
    }
    let k = SEEDS as f64;
    let var = |sum: f64, sum2: f64| ((sum2 - sum * sum / k) / (k - 1.0)).max(0.0);
    let gm: Vec<f64> = g.iter().map(|x| x / k).collect();
    let gv: Vec<f64> = g.iter().zip(&g2).map(|(&a, &b)| var(a, b)).collect();
    (s / k, var(s, s2), gm, gv)
}

fn check_case(name: &str) {
    let f = fixtures();
    let c = case(&f, name);
    let (mean, var, gmean, gvar) = statistics(&c);
    let k = |s: &str| format!("reco.{name}.{s}");
    let ref_mean = scalar_f64(&f, &k("loss.mean"));
    let ref_std = scalar_f64(&f, &k("loss.std"));
    let ref_n = scalar_f64(&f, &k("samples"));
    let se = (ref_std * ref_std / ref_n + var / SEEDS as f64).sqrt();
    assert!(
        (mean - ref_mean).abs() <= 4.0 * se,
        "{name}: mean loss {mean} vs reference {ref_mean} (4 s.e. = {})",
        4.0 * se
    );
    let ref_gmean = vec_f64(get(&f, &k("grad.mean")));
    let ref_gstd = vec_f64(get(&f, &k("grad.std")));
    let num: f64 = gmean
        .iter()
        .zip(&ref_gmean)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    let den: f64 = ref_gstd
        .iter()
        .zip(&gvar)
        .map(|(s, v)| s * s / ref_n + v / SEEDS as f64)
        .sum();
    let stat = num / den;
    assert!(
        stat < 2.5,
        "{name}: gradient statistic {stat} (must be < 2.5)"
    );
    // The statistic is about 1 for matching distributions; near 0 would mean the test is
    // blind (e.g. no gradient variance at all).
    assert!(
        stat > 0.2,
        "{name}: gradient statistic {stat} is suspiciously small"
    );
    eprintln!(
        "{name}: mean loss {mean:.5} (ref {ref_mean:.5}, 4se {:.5}), gradient statistic {stat:.3}",
        4.0 * se
    );
}

#[test]
fn stripes_matches_original_distribution() {
    check_case("stripes");
}

#[test]
fn imbalanced_matches_original_distribution() {
    check_case("imbalanced");
}

#[test]
fn easyclass_matches_original_distribution() {
    check_case("easyclass");
}

#[test]
fn single_class_gives_exactly_zero() {
    let f = fixtures();
    let c = case(&f, "single");
    assert_eq!(scalar_f64(&f, "reco.single.loss.mean"), 0.0);
    for seed in 0..5 {
        let (loss, grad) = run(&c, seed);
        assert_eq!(loss, 0.0);
        assert!(grad.iter().all(|&g| g == 0.0));
    }
}

#[test]
fn same_seed_same_loss_other_seed_other_draws() {
    let f = fixtures();
    let c = case(&f, "imbalanced");
    let (a, ga) = run(&c, 7);
    let (b, gb) = run(&c, 7);
    assert_eq!(a.to_bits(), b.to_bits());
    assert_eq!(ga, gb);
    let (other, _) = run(&c, 8);
    assert_ne!(a, other);
}

#[test]
fn portable_kernel_matches_fused_kernel() {
    let f = fixtures();
    for name in ["stripes", "imbalanced", "easyclass"] {
        let mut c = case(&f, name);
        for seed in [3u64, 4] {
            // Fused kernel on the CPU path, portable one on the generic (device) path,
            // whatever RECO_OPS says.
            c.cfg.kernel = ContrastKernel::Auto;
            let (l1, g1) = with_ops_path(OpsPath::Cpu, || run(&c, seed));
            c.cfg.kernel = ContrastKernel::Portable;
            c.cfg.chunk_rows = 5; // several chunks, the last one partial
            let (l2, g2) = with_ops_path(OpsPath::Generic, || run(&c, seed));
            common::assert_same_loss_and_grad(
                name,
                ("fused", "portable"),
                (l1, &g1),
                (l2, &g2),
                1e-5,
            );
        }
    }
}

#[test]
fn gradient_reaches_exactly_the_query_pixels() {
    let f = fixtures();
    let c = case(&f, "imbalanced");
    let rep = Var::from_tensor(&c.rep).unwrap();
    let parts = reco_loss::reco_loss_parts(rep.as_tensor(), &c.label, &c.mask, &c.prob, &c.cfg, 21)
        .unwrap();
    let grads = parts.loss.backward().unwrap();
    let g = grads.get(rep.as_tensor()).expect("gradient reaches rep");
    let (b, d, h, w) = g.dims4().unwrap();
    let p = h * w;
    let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let queried: std::collections::HashSet<u32> = parts.draws.queries.iter().copied().collect();
    for pix in 0..(b * p) as u32 {
        let (bi, s) = (pix as usize / p, pix as usize % p);
        let norm: f32 = (0..d).map(|k| g[(bi * d + k) * p + s].abs()).sum();
        if queried.contains(&pix) {
            assert!(norm > 0.0, "query pixel {pix} got no gradient");
        } else {
            assert_eq!(
                norm, 0.0,
                "pixel {pix} is not a query but got gradient (keys must be detached)"
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let f = fixtures();
    let c = case(&f, "stripes");
    let cfg = &c.cfg;
    // Mismatched shapes.
    let short = c.label.narrow(2, 0, 5).unwrap();
    assert!(reco_loss(&c.rep, &short, &c.mask, &c.prob, cfg, 0).is_err());
    assert!(reco_loss(&c.rep, &c.label, &c.label, &c.prob, cfg, 0).is_err());
    assert!(reco_loss(
        &c.rep.flatten_all().unwrap(),
        &c.label,
        &c.mask,
        &c.prob,
        cfg,
        0
    )
    .is_err());
    // A pixel valid for two classes is not one-hot.
    let doubled = (&c.label + c.label.roll(1, 1).unwrap()).unwrap();
    let err = reco_loss(&c.rep, &doubled, &c.mask, &c.prob, cfg, 0).unwrap_err();
    assert!(err.to_string().contains("one-hot"), "{err}");
    // The same on the generic (tensor-op) path.
    let to64 = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
    let err = reco_loss(
        &to64(&c.rep),
        &to64(&doubled),
        &to64(&c.mask),
        &to64(&c.prob),
        cfg,
        0,
    )
    .unwrap_err();
    assert!(err.to_string().contains("one-hot"), "{err}");
    // Bad configuration.
    for bad in [
        ReCoConfig {
            temp: 0.0,
            ..cfg.clone()
        },
        ReCoConfig {
            num_queries: 0,
            ..cfg.clone()
        },
        ReCoConfig {
            num_negatives: 0,
            ..cfg.clone()
        },
        ReCoConfig {
            strong_threshold: f64::NAN,
            ..cfg.clone()
        },
    ] {
        assert!(reco_loss(&c.rep, &c.label, &c.mask, &c.prob, &bad, 0).is_err());
    }
}

#[test]
fn default_config_is_the_original_training_setting() {
    let cfg = ReCoConfig::default();
    assert_eq!(
        (
            cfg.strong_threshold,
            cfg.temp,
            cfg.num_queries,
            cfg.num_negatives
        ),
        (0.97, 0.5, 256, 512)
    );
}

/// f64 inputs take the fully generic path (tensor-op masks and prototypes, index_select
/// gather, chunked keys); it must agree with the fused f32 path on the same draws.
#[test]
fn generic_f64_path_matches_fused_f32_path() {
    let f = fixtures();
    for name in ["imbalanced", "easyclass"] {
        let c = case(&f, name);
        let (l32, g32) = run(&c, 5);
        let to64 = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap();
        let c64 = Case {
            rep: to64(&c.rep),
            label: to64(&c.label),
            mask: to64(&c.mask),
            prob: to64(&c.prob),
            cfg: c.cfg.clone(),
        };
        let (l64, g64) = run(&c64, 5);
        common::assert_same_loss_and_grad(name, ("f32", "f64"), (l32, &g32), (l64, &g64), 1e-5);
    }
}

#[test]
fn reco_ops_env_selects_the_path_these_tests_take() {
    // CI runs these tests once as they are and once with RECO_OPS=generic: this proves
    // the second run really takes the portable (device) path on CPU tensors.
    let forced = std::env::var("RECO_OPS").is_ok_and(|v| v.trim() == "generic");
    assert_eq!(
        reco_loss::use_generic_path(&candle_core::Device::Cpu),
        forced
    );
}
