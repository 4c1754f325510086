//! The sampler on its own: distribution of negative classes and of pixels, and where
//! queries and keys may come from.

mod common;

use std::collections::HashMap;

use reco_loss::sampler::{class_relation, draw, ClassPixels, NO_CLASS};
use reco_loss::{reco_loss_parts, ReCoConfig};

/// Upper quantile of the chi-square distribution with `df` degrees of freedom at a
/// standard-normal quantile `z` (Wilson–Hilferty; accurate to a few percent here).
fn chi2_quantile(df: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Pearson's statistic of `observed` counts against `expected` probabilities.
fn chi2(observed: &[f64], expected_p: &[f64]) -> f64 {
    let n: f64 = observed.iter().sum();
    observed
        .iter()
        .zip(expected_p)
        .map(|(o, p)| (o - n * p).powi(2) / (n * p))
        .sum()
}

/// Five classes of different sizes on 2 images of 10x10, every other pixel hard; class 4
/// absent.
fn synthetic() -> (ClassPixels, Vec<f32>, usize) {
    let c = 6;
    let mut class = vec![NO_CLASS; 200];
    let mut hard = vec![false; 200];
    let sizes = [40usize, 7, 60, 3, 0, 50];
    let mut p = 0;
    for (k, &n) in sizes.iter().enumerate() {
        for j in 0..n {
            class[p] = k as u32;
            hard[p] = j % 2 == 0;
            p += 1;
        }
    }
    // Symmetric cosines with clearly different relations.
    let mut cos = vec![0f32; c * c];
    for i in 0..c {
        for j in 0..c {
            cos[i * c + j] = if i == j {
                1.0
            } else {
                ((i * 7 + j * 7) % 11) as f32 / 11.0 - 0.4
            };
        }
    }
    (ClassPixels::from_codes(&class, &hard, c).unwrap(), cos, c)
}

fn class_of(pixels: &ClassPixels) -> HashMap<u32, usize> {
    let mut m = HashMap::new();
    for (c, list) in pixels.valid.iter().enumerate() {
        for &p in list {
            m.insert(p, c);
        }
    }
    m
}

#[test]
fn negative_classes_follow_the_relation_softmax() {
    let (pixels, cos, c) = synthetic();
    let cfg = ReCoConfig {
        num_queries: 64,
        num_negatives: 256,
        temp: 0.5,
        ..ReCoConfig::default()
    };
    let d = draw(&pixels, &cos, &cfg, 11).unwrap();
    assert_eq!(d.present, vec![0, 1, 2, 3, 5]);
    assert_eq!(d.query_classes, vec![0, 1, 2, 3, 5]);
    let owner = class_of(&pixels);
    let per_block = cfg.num_queries * cfg.num_negatives;
    let z = 4.75; // one-sided p ≈ 1e-6: a correct sampler essentially never fails
    for (block, &qc) in d.query_classes.iter().enumerate() {
        let relation = class_relation(&cos, c, &d.present, qc, cfg.temp);
        let mut counts = vec![0f64; relation.len()];
        for &p in &d.negatives[block * per_block..(block + 1) * per_block] {
            let k = owner[&p];
            let slot = relation
                .iter()
                .position(|&(cls, _)| cls == k)
                .expect("negative from an allowed class");
            counts[slot] += 1.0;
        }
        let probs: Vec<f64> = relation.iter().map(|&(_, p)| p).collect();
        let df = (probs.len() - 1) as f64;
        let stat = chi2(&counts, &probs);
        assert!(
            stat < chi2_quantile(df, z),
            "class {qc}: chi-square {stat} against the relation softmax"
        );
        // Power: the same counts are far from a uniform choice of class.
        let uniform = vec![1.0 / probs.len() as f64; probs.len()];
        assert!(
            chi2(&counts, &uniform) > 10.0 * chi2_quantile(df, z),
            "class {qc}: relation indistinguishable from uniform"
        );
    }
}

#[test]
fn relation_is_a_softmax_over_the_other_present_classes() {
    let (pixels, cos, c) = synthetic();
    let present = pixels.present();
    let r = class_relation(&cos, c, &present, 2, 0.5);
    let classes: Vec<usize> = r.iter().map(|&(k, _)| k).collect();
    assert_eq!(classes, vec![0, 1, 3, 5]);
    let z: f64 = classes
        .iter()
        .map(|&k| (f64::from(cos[2 * c + k]) / 0.5).exp())
        .sum();
    for &(k, p) in &r {
        let want = (f64::from(cos[2 * c + k]) / 0.5).exp() / z;
        assert!((p - want).abs() < 1e-12);
    }
}

#[test]
fn queries_and_negatives_come_from_the_right_pixels_and_are_uniform() {
    let (pixels, cos, _) = synthetic();
    let cfg = ReCoConfig {
        num_queries: 600,
        num_negatives: 400,
        ..ReCoConfig::default()
    };
    let d = draw(&pixels, &cos, &cfg, 5).unwrap();
    let owner = class_of(&pixels);
    for (block, &qc) in d.query_classes.iter().enumerate() {
        let rows = block * cfg.num_queries..(block + 1) * cfg.num_queries;
        let mut counts: HashMap<u32, f64> = HashMap::new();
        for r in rows.clone() {
            let q = d.queries[r];
            assert!(
                pixels.hard[qc].contains(&q),
                "query {q} of class {qc} is not a hard pixel of it"
            );
            *counts.entry(q).or_default() += 1.0;
            for &n in &d.negatives[r * cfg.num_negatives..(r + 1) * cfg.num_negatives] {
                let k = owner.get(&n).copied().expect("negative is a valid pixel");
                assert_ne!(k, qc, "negative {n} has the query's class");
            }
        }
        // Queries: uniform over the hard pixels, with replacement.
        let hard = &pixels.hard[qc];
        if hard.len() > 1 {
            let observed: Vec<f64> = hard
                .iter()
                .map(|p| counts.get(p).copied().unwrap_or(0.0))
                .collect();
            let probs = vec![1.0 / hard.len() as f64; hard.len()];
            let df = (hard.len() - 1) as f64;
            assert!(
                chi2(&observed, &probs) < chi2_quantile(df, 4.75),
                "class {qc}: queries not uniform"
            );
        }
    }
    // Negatives within one class are uniform over its valid pixels: class 1 (7 pixels)
    // as drawn by all other query classes.
    let mut counts: HashMap<u32, f64> = HashMap::new();
    for &n in &d.negatives {
        if owner[&n] == 1 {
            *counts.entry(n).or_default() += 1.0;
        }
    }
    let valid = &pixels.valid[1];
    let observed: Vec<f64> = valid
        .iter()
        .map(|p| counts.get(p).copied().unwrap_or(0.0))
        .collect();
    assert!(observed.iter().sum::<f64>() > 1000.0);
    let probs = vec![1.0 / valid.len() as f64; valid.len()];
    assert!(chi2(&observed, &probs) < chi2_quantile((valid.len() - 1) as f64, 4.75));
}

#[test]
fn draws_depend_on_the_seed_only() {
    let (pixels, cos, _) = synthetic();
    let cfg = ReCoConfig {
        num_queries: 32,
        num_negatives: 64,
        ..ReCoConfig::default()
    };
    let a = draw(&pixels, &cos, &cfg, 1).unwrap();
    let b = draw(&pixels, &cos, &cfg, 1).unwrap();
    assert_eq!(a, b);
    let c = draw(&pixels, &cos, &cfg, 2).unwrap();
    assert_ne!(a.negatives, c.negatives);
    assert_ne!(a.queries, c.queries);
    // Seeds 1 and 2 must not give shifted copies of one stream either.
    let same = a
        .negatives
        .iter()
        .zip(&c.negatives)
        .filter(|(x, y)| x == y)
        .count();
    assert!(
        same < a.negatives.len() / 5,
        "{same} equal negatives out of {}",
        a.negatives.len()
    );
}

#[test]
fn fewer_than_two_classes_draw_nothing() {
    let class = vec![2u32, 2, NO_CLASS, 2];
    let hard = vec![true; 4];
    let pixels = ClassPixels::from_codes(&class, &hard, 3).unwrap();
    let d = draw(&pixels, &[1.0; 9], &ReCoConfig::default(), 0).unwrap();
    assert_eq!(d.present, vec![2]);
    assert!(d.queries.is_empty() && d.negatives.is_empty());
}

#[test]
fn bad_codes_are_errors() {
    assert!(ClassPixels::from_codes(&[0, 5], &[true, true], 3).is_err());
    assert!(ClassPixels::from_codes(&[0, 1], &[true], 3).is_err());
    let (pixels, _, _) = synthetic();
    assert!(draw(&pixels, &[0.0; 4], &ReCoConfig::default(), 0).is_err());
    let (pixels, cos, _) = synthetic();
    let no_queries = ReCoConfig {
        num_queries: 0,
        ..ReCoConfig::default()
    };
    assert!(draw(&pixels, &cos, &no_queries, 0).is_err());
}

/// The class lists that `reco_loss` builds from the tensors agree with a direct reading of
/// the fixture, and its draws respect them.
#[test]
fn reco_loss_draws_respect_fixture_masks() {
    let f = common::fixtures();
    for name in ["imbalanced", "easyclass", "stripes"] {
        let k = |s: &str| format!("reco.{name}.{s}");
        let label = common::get(&f, &k("label_onehot"));
        let mask = common::get(&f, &k("mask"));
        let prob = common::get(&f, &k("prob"));
        let threshold = common::scalar_f64(&f, &k("cfg.strong_threshold"));
        let cfg = ReCoConfig {
            strong_threshold: threshold,
            num_queries: 16,
            num_negatives: 32,
            ..ReCoConfig::default()
        };
        let parts =
            reco_loss_parts(common::get(&f, &k("rep")), label, mask, prob, &cfg, 9).unwrap();

        let (b, c, h, w) = label.dims4().unwrap();
        let lab = label.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let msk = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let prb = prob.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let p = h * w;
        for cls in 0..c {
            let mut valid = Vec::new();
            let mut hard = Vec::new();
            for bi in 0..b {
                for s in 0..p {
                    let i = (bi * c + cls) * p + s;
                    if lab[i] * msk[bi * p + s] != 0.0 {
                        valid.push((bi * p + s) as u32);
                        if prb[i] < threshold as f32 {
                            hard.push((bi * p + s) as u32);
                        }
                    }
                }
            }
            assert_eq!(
                parts.pixels.valid[cls], valid,
                "{name}: valid pixels of class {cls}"
            );
            assert_eq!(
                parts.pixels.hard[cls], hard,
                "{name}: hard pixels of class {cls}"
            );
        }
        let owner = class_of(&parts.pixels);
        for (block, &qc) in parts.draws.query_classes.iter().enumerate() {
            for r in block * cfg.num_queries..(block + 1) * cfg.num_queries {
                assert!(parts.pixels.hard[qc].contains(&parts.draws.queries[r]));
                for &n in &parts.draws.negatives[r * cfg.num_negatives..(r + 1) * cfg.num_negatives]
                {
                    assert_ne!(owner[&n], qc);
                }
            }
        }
        if name == "easyclass" {
            assert!(
                !parts.draws.query_classes.contains(&1),
                "the confident class must not get queries"
            );
            assert!(
                parts.draws.present.contains(&1),
                "but it still counts as present"
            );
        }
    }
}
