//! Parity with the original PyTorch network on the reference fixtures
//! (docs/design.md#reference-fixtures): eval outputs in f32, train-mode outputs, gradients
//! and running statistics in f64.

mod common;

use candle_core::{DType, Tensor};
use common::*;

const EVAL_TOL: f64 = 1e-4;
const TRAIN_TOL: f64 = 1e-6;

fn meta(file: &str) -> (String, usize) {
    let path = fixture(file);
    let bytes = std::fs::read(path).unwrap();
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = st.metadata().clone().unwrap();
    (m["backbone"].clone(), m["output_stride"].parse().unwrap())
}

fn check_eval(file: &str) {
    let (backbone, os) = meta(file);
    let fx = load_fixture(file);
    let (_vm, model) = formula_model(&config_of(&backbone, os), DType::F32).unwrap();
    let (pred, rep) = model.forward_no_grad(&fx["input"], false).unwrap();
    let (ep, er) = eval_errors(file, &fx, &pred, &rep);
    assert!(
        ep < EVAL_TOL && er < EVAL_TOL,
        "{file}: eval pred {ep:e}, rep {er:e}"
    );
    // The graph-recording path computes the same thing.
    let (pred_t, _) = model.forward_t(&fx["input"], false).unwrap();
    assert!(rel_err(&pred_t, &pred) < 1e-6);
}

fn check_train(file: &str) {
    let (backbone, os) = meta(file);
    let fx = load_fixture(file);
    let (varmap, model) = formula_model(&config_of(&backbone, os), DType::F64).unwrap();
    let input = candle_core::Var::from_tensor(&fx["input"].to_dtype(DType::F64).unwrap()).unwrap();
    let (pred, rep) = model.forward_t(input.as_tensor(), true).unwrap();
    let mut report = Vec::new();
    let check = |what: &str, ours: &Tensor, reference: &Tensor| {
        let e = rel_err(ours, reference);
        report.push(format!("{what}: {e:.2e}"));
        assert!(
            e < TRAIN_TOL,
            "{file}: {what} rel err {e:e}\n{}",
            report.join("\n")
        );
    };
    compare_train_step(&fx, &varmap, &input, (&pred, &rep), check);
    println!("{file} train:\n  {}", report.join("\n  "));
}

#[test]
fn resnet50_os16_eval_matches_reference() {
    check_eval("deeplabv3p_resnet50_os16.safetensors");
}

#[test]
fn resnet101_os8_eval_matches_reference() {
    check_eval("deeplabv3p_resnet101_os8.safetensors");
}

#[test]
fn resnet50_os16_train_matches_reference() {
    check_train("deeplabv3p_resnet50_os16.safetensors");
}

#[test]
fn resnet101_os8_train_matches_reference() {
    check_train("deeplabv3p_resnet101_os8.safetensors");
}
