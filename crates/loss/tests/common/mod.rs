//! Shared helpers of the integration tests: the fixture file `fixtures/losses.safetensors`
//! (outputs of the original PyTorch code; docs/design.md#reference-fixtures).

#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{Device, Tensor};

pub fn fixtures() -> HashMap<String, Tensor> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/losses.safetensors"
    );
    candle_core::safetensors::load(path, &Device::Cpu)
        .expect("tests/fixtures/losses.safetensors is part of the crate")
}

pub fn get<'a>(f: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    f.get(key)
        .unwrap_or_else(|| panic!("fixture key {key} missing"))
}

pub fn scalar_f64(f: &HashMap<String, Tensor>, key: &str) -> f64 {
    let t = get(f, key).to_dtype(candle_core::DType::F64).unwrap();
    t.flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]
}

pub fn vec_f64(t: &Tensor) -> Vec<f64> {
    t.to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// Asserts that two runs of a loss agree to `tol`: the loss relative to the reference
/// run `a`, the gradient as ‖g_b − g_a‖ / ‖g_a‖. `names` label the runs in the message.
pub fn assert_same_loss_and_grad(
    case: &str,
    names: (&str, &str),
    (la, ga): (f64, &[f64]),
    (lb, gb): (f64, &[f64]),
    tol: f64,
) {
    assert!(
        (la - lb).abs() <= tol * la.abs(),
        "{case}: {} {la} vs {} {lb}",
        names.0,
        names.1
    );
    let err = rel_l2(gb, ga);
    assert!(err < tol, "{case}: gradient rel difference {err}");
}
