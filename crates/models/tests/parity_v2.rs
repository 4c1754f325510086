//! DeepLabV2 against the original PyTorch network (`deeplabv2_resnet101.safetensors`,
//! docs/design.md#reference-fixtures): eval outputs in f32 (< 1e-4), train-mode outputs,
//! gradients and running statistics in f64 (< 1e-6), formula weights.

mod common;

use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use common::*;
use reco_models::{Backbone, DeepLabConfig, Network, NetworkKind};

const FILE: &str = "deeplabv2_resnet101.safetensors";
const EVAL_TOL: f64 = 1e-4;
const TRAIN_TOL: f64 = 1e-6;

fn config() -> DeepLabConfig {
    let bytes = std::fs::read(fixture(FILE)).unwrap();
    let (_, st) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let m = st.metadata().clone().unwrap();
    assert_eq!(m["network"], "deeplabv2");
    DeepLabConfig {
        backbone: m["backbone"].parse::<Backbone>().unwrap(),
        output_stride: m["output_stride"].parse().unwrap(),
        num_classes: m["num_classes"].parse().unwrap(),
        output_dim: m["output_dim"].parse().unwrap(),
    }
}

fn formula_v2(dtype: DType) -> (VarMap, Network) {
    formula_network(NetworkKind::DeepLabV2, &config(), dtype)
}

#[test]
fn deeplabv2_state_dict_names_are_the_originals() {
    let (varmap, _) = formula_v2(DType::F32);
    let vars = varmap.data().lock().unwrap();
    let fx = load_fixture(FILE);
    // Every parameter with a reference gradient exists under the original's name.
    for key in fx.keys() {
        if let Some(param) = key
            .strip_prefix("train.grad.")
            .and_then(|k| k.strip_suffix(".head"))
        {
            assert!(vars.contains_key(param), "missing {param}");
        }
    }
    let heads: Vec<_> = vars
        .keys()
        .filter(|k| !k.starts_with("resnet_"))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut expected = vec![];
    for i in 0..4 {
        expected.push(format!("classifier.conv2d_list.{i}.bias"));
        expected.push(format!("classifier.conv2d_list.{i}.weight"));
    }
    expected.push("representation.0.bias".into());
    expected.push("representation.0.weight".into());
    assert_eq!(heads, expected);
}

#[test]
fn deeplabv2_eval_matches_reference() {
    let fx = load_fixture(FILE);
    let (_vm, net) = formula_v2(DType::F32);
    let (pred, rep) = net.forward_no_grad(&fx["input"], false).unwrap();
    let (ep, er) = eval_errors("deeplabv2", &fx, &pred, &rep);
    assert!(
        ep < EVAL_TOL && er < EVAL_TOL,
        "eval pred {ep:e}, rep {er:e}"
    );
}

#[test]
fn deeplabv2_train_matches_reference() {
    let fx = load_fixture(FILE);
    let (varmap, net) = formula_v2(DType::F64);
    // Unlike the DeepLabV3+ fixtures, this one's train-mode references were computed
    // from the formula input in f64 (`2 x_k` never rounded to f32): the stored f32
    // `input` widened differs by 2e-8, which batch-statistics ResNet-101 amplifies to
    // 1e-2 at the outputs (measured). Its f32 rounding is the stored input (checked).
    let exact = formula_x("input", fx["input"].dims(), 2.0, DType::F64);
    assert_eq!(
        exact
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap(),
        fx["input"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    let input = candle_core::Var::from_tensor(&exact).unwrap();
    let (pred, rep) = net.forward_t(input.as_tensor(), true).unwrap();
    let mut report = Vec::new();
    let mut checked = 0usize;
    let check = |what: &str, ours: &Tensor, reference: &Tensor| {
        let e = rel_err(ours, reference);
        report.push(format!("{what}: {e:.2e}"));
        assert!(e < TRAIN_TOL, "{what} rel err {e:e}\n{}", report.join("\n"));
        checked += 1;
    };
    compare_train_step(&fx, &varmap, &input, (&pred, &rep), check);
    assert!(checked > 100, "only {checked} comparisons");
    println!("deeplabv2 train: {checked} comparisons below {TRAIN_TOL:e}");
}
