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
    let (ep, er) = (
        rel_err(&pred, &fx["eval.pred"]),
        rel_err(&rep, &fx["eval.rep"]),
    );
    println!("{file} eval: pred {ep:.2e}, rep {er:.2e}");
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
    let mut check = |what: &str, ours: &Tensor, reference: &Tensor| {
        let e = rel_err(ours, reference);
        report.push(format!("{what}: {e:.2e}"));
        assert!(
            e < TRAIN_TOL,
            "{file}: {what} rel err {e:e}\n{}",
            report.join("\n")
        );
    };
    check("train.pred", &pred, &fx["train.pred"]);
    check("train.rep", &rep, &fx["train.rep"]);
    let gp = formula_x("grad.pred", pred.dims(), 1.0, DType::F64);
    let gr = formula_x("grad.rep", rep.dims(), 1.0, DType::F64);
    let loss = ((&pred * &gp).unwrap().sum_all().unwrap()
        + (&rep * &gr).unwrap().sum_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    check(
        "grad.input",
        grads.get(input.as_tensor()).unwrap(),
        &fx["train.grad.input"],
    );
    let vars = varmap.data().lock().unwrap();
    for (key, reference) in &fx {
        if let Some(param) = key
            .strip_prefix("train.grad.")
            .and_then(|k| k.strip_suffix(".head"))
        {
            let g = grads.get(vars[param].as_tensor()).expect(param);
            check(key, &g.narrow(0, 0, 2).unwrap(), reference);
            let abssum = g.abs().unwrap().sum_all().unwrap().reshape(1).unwrap();
            check(
                &format!("train.grad.{param}.abssum"),
                &abssum,
                &fx[&format!("train.grad.{param}.abssum")],
            );
        }
        if let Some(stat) = key.strip_prefix("train.after.") {
            check(key, vars[stat].as_tensor(), reference);
        }
    }
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
