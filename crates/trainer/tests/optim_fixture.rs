//! Nesterov SGD, the mean-teacher EMA and the poly schedule against the original's
//! values (the reference fixture crates/loss/tests/fixtures/losses.safetensors; see
//! docs/design.md#reference-fixtures).

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use trainer::optim::{poly_lr, Ema, Sgd};

fn fixture() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../loss/tests/fixtures/losses.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu).expect("losses.safetensors fixture")
}

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-6))
        .fold(0.0, f32::max)
}

#[test]
fn sgd_and_ema_match_the_original() {
    let f = fixture();
    let weight = Var::from_tensor(&f["opt.init.weight"]).unwrap();
    let bias = Var::from_tensor(&f["opt.init.bias"]).unwrap();
    let teacher_w = Var::from_tensor(&f["opt.init.weight"].copy().unwrap()).unwrap();
    let teacher_b = Var::from_tensor(&f["opt.init.bias"].copy().unwrap()).unwrap();
    let mut sgd = Sgd::new(
        vec![
            ("weight".into(), weight.clone()),
            ("bias".into(), bias.clone()),
        ],
        0.9,
        5e-4,
    );
    let mut ema = Ema::new(
        vec![
            (teacher_w.clone(), weight.clone()),
            (teacher_b.clone(), bias.clone()),
        ],
        0.99,
    );
    let mut worst: f32 = 0.0;
    for step in 0..4 {
        // A GradStore holding the fixture's gradients for the two parameters.
        let loss = ((weight.as_tensor() * &f[&format!("opt.step{step}.grad.weight")])
            .unwrap()
            .sum_all()
            .unwrap()
            + (bias.as_tensor() * &f[&format!("opt.step{step}.grad.bias")])
                .unwrap()
                .sum_all()
                .unwrap())
        .unwrap();
        let grads: GradStore = loss.backward().unwrap();
        sgd.step(&grads, 2.5e-3).unwrap();
        ema.update().unwrap();
        for (got, key) in [
            (weight.as_tensor(), format!("opt.step{step}.weight")),
            (bias.as_tensor(), format!("opt.step{step}.bias")),
            (teacher_w.as_tensor(), format!("opt.step{step}.ema.weight")),
            (teacher_b.as_tensor(), format!("opt.step{step}.ema.bias")),
        ] {
            let err = max_rel(got, &f[&key]);
            assert!(err < 1e-5, "{key}: relative error {err}");
            worst = worst.max(err);
        }
    }
    println!("SGD + EMA over 4 steps: worst relative error {worst:e}");
}

#[test]
fn poly_schedule_matches_the_original() {
    let f = fixture();
    let expected = f["polylr.lr_per_epoch"].to_vec1::<f64>().unwrap();
    assert_eq!(expected.len(), 200);
    // 200 epochs of 200 iterations: the value used during each epoch.
    for (epoch, want) in expected.iter().enumerate() {
        for iter in [epoch * 200, epoch * 200 + 199] {
            let got = poly_lr(2.5e-3, iter, 200, 40_000, 0.9, 1e-6);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1e-6),
                "epoch {epoch} iter {iter}: {got} vs {want}"
            );
        }
    }
}
