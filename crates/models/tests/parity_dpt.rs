//! Parity of DPT on DINOv2-S with UniMatch V2's model code (plus ReCo's representation
//! head) on formula weights: `tests/fixtures/dpt_dinov2s.safetensors`, written by
//! `tests/fixtures/make_dpt_fixture.py`. Eval in f32, train mode in f64 with gradients
//! (docs/design.md#reference-fixtures); the tolerances are the ResNet fixtures'.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use reco_models::layers::Mode;
use reco_models::vit::{interpolated_position_embedding, Dinov2, VitConfig};
use reco_models::{Backbone, DeepLabConfig, Network, NetworkKind};

const FILE: &str = "dpt_dinov2s.safetensors";
const EVAL_TOL: f64 = 1e-4;
const TRAIN_TOL: f64 = 1e-6;

fn config() -> DeepLabConfig {
    DeepLabConfig {
        backbone: Backbone::Dinov2Small,
        output_stride: 14,
        num_classes: 21,
        output_dim: 32,
    }
}

fn formula_dpt(dtype: DType) -> (VarMap, Network) {
    formula_network(NetworkKind::Dpt, &config(), dtype)
}

#[test]
fn dpt_eval_matches_unimatch_v2() {
    let fx = load_fixture(FILE);
    let (_vm, net) = formula_dpt(DType::F32);
    let (pred, rep) = net.forward_no_grad(&fx["input"], false).unwrap();
    let (ep, er) = eval_errors(FILE, &fx, &pred, &rep);
    assert!(
        ep < EVAL_TOL && er < EVAL_TOL,
        "eval pred {ep:e}, rep {er:e}"
    );
    // The graph-recording path and train mode (no batch norm, no dropout) agree.
    let (pred_t, _) = net.forward_t(&fx["input"], true).unwrap();
    assert!(rel_err(&pred_t, &pred) < 1e-6);
}

#[test]
fn dinov2_intermediate_layers_and_position_embedding_match() {
    let fx = load_fixture(FILE);
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let vit = Dinov2::new(
        &VitConfig::for_backbone(Backbone::Dinov2Small).unwrap(),
        vb.pp("backbone"),
    )
    .unwrap();
    reco_models::reference::fill_formula(&varmap).unwrap();
    let pos = varmap.data().lock().unwrap()["backbone.pos_embed"]
        .as_tensor()
        .clone();
    let (_, _, h, w) = fx["input"].dims4().unwrap();
    let resized = interpolated_position_embedding(&pos, h, w).unwrap();
    let e = rel_err(&resized, &fx["eval.pos_embed"]);
    assert!(e < 1e-5, "position embedding {e:e}");
    let maps = vit
        .intermediate_layers(&fx["input"], &[2, 5, 8, 11], Mode::new(false, false))
        .unwrap();
    for (i, map) in maps.iter().enumerate() {
        let e = rel_err(map, &fx[&format!("eval.features.{i}")]);
        assert!(e < EVAL_TOL, "intermediate layer {i}: {e:e}");
    }
}

#[test]
fn dpt_train_mode_gradients_match_unimatch_v2() {
    let fx = load_fixture(FILE);
    let (varmap, net) = formula_dpt(DType::F64);
    let input = candle_core::Var::from_tensor(&fx["input"].to_dtype(DType::F64).unwrap()).unwrap();
    let (pred, rep) = net.forward_t(input.as_tensor(), true).unwrap();
    let mut report = Vec::new();
    let mut checked = 0;
    let mut worst = (String::new(), 0f64);
    let check = |what: &str, ours: &Tensor, reference: &Tensor| {
        let e = rel_err(ours, reference);
        report.push(format!("{what}: {e:.2e}"));
        checked += 1;
        if e > worst.1 {
            worst = (what.to_string(), e);
        }
        assert!(e < TRAIN_TOL, "{what} rel err {e:e}\n{}", report.join("\n"));
    };
    compare_train_step(&fx, &varmap, &input, (&pred, &rep), check);
    println!(
        "{checked} train-mode comparisons, worst {}: {:.2e}",
        worst.0, worst.1
    );
    // Outputs, input gradient, and a head and abssum for each of the 178 parameters
    // that receive a gradient.
    assert!(checked > 300, "only {checked} comparisons");
}

#[test]
fn dpt_rejects_inputs_off_the_patch_grid() {
    let (_vm, net) = network(NetworkKind::Dpt, &config(), DType::F32);
    let x = Tensor::zeros((1, 3, 40, 42), DType::F32, &Device::Cpu).unwrap();
    let err = net.forward_no_grad(&x, false).unwrap_err().to_string();
    assert!(err.contains("multiples of 14"), "{err}");
    // fit_input resizes to the nearest multiples (40 -> 42, 42 stays), then it runs.
    let fitted = net.fit_input(&x).unwrap();
    assert_eq!(fitted.dims(), &[1, 3, 42, 42]);
    let (pred, rep) = net.forward_no_grad(&fitted, false).unwrap();
    assert_eq!(pred.dims(), &[1, 21, 24, 24]);
    assert_eq!(rep.dims(), &[1, 32, 24, 24]);
}
