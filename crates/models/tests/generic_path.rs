//! The device-generic path (what CUDA runs: candle's conv2d and its backward, the composed
//! max-pool and batch norm) against the CPU kernels on the whole network, with a
//! non-square input whose height and width differ in parity at several stride-2 layers
//! (Cityscapes-like crops). Both paths run in this process through
//! `reco_util::ops_path::with_ops_path`, whatever `RECO_OPS` says.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use common::*;
use reco_models::DeepLabConfig;
use reco_util::ops_path::{with_ops_path, OpsPath};

fn config() -> DeepLabConfig {
    small_config(5, 16)
}

/// 42x33: the stem (7x7/2), layer3 and layer4 see H and W with different remainders.
const INPUT: [usize; 4] = [2, 3, 42, 33];

/// Train-mode outputs, input gradient, every variable's gradient and running statistics.
fn train_step(path: OpsPath) -> BTreeMap<String, Tensor> {
    with_ops_path(path, || {
        let (varmap, model) = formula_model(&config(), DType::F64).unwrap();
        let input = Var::from_tensor(&formula_x("input", &INPUT, 1.0, DType::F64)).unwrap();
        let (pred, rep) = model.forward_t(input.as_tensor(), true).unwrap();
        let grads = formula_loss_grads(&pred, &rep);
        let mut out = BTreeMap::new();
        out.insert("pred".to_string(), pred);
        out.insert("rep".to_string(), rep);
        out.insert(
            "grad.input".to_string(),
            grads.get(input.as_tensor()).unwrap().clone(),
        );
        for (name, var) in varmap.data().lock().unwrap().iter() {
            match grads.get(var.as_tensor()) {
                Some(g) => out.insert(format!("grad.{name}"), g.clone()),
                // Running statistics carry no gradient: compare their updated values.
                None => out.insert(format!("value.{name}"), var.as_tensor().clone()),
            };
        }
        out
    })
}

#[test]
fn generic_path_matches_cpu_kernels_in_train_mode_on_mixed_parity_input() {
    let cpu = train_step(OpsPath::Cpu);
    let generic = train_step(OpsPath::Generic);
    assert_eq!(
        cpu.keys().collect::<Vec<_>>(),
        generic.keys().collect::<Vec<_>>(),
        "both paths give gradients to the same variables"
    );
    assert!(cpu.keys().any(|k| k.ends_with("running_var")));
    let mut worst = (0.0, String::new());
    for (key, reference) in &cpu {
        let e = rel_err(&generic[key], reference);
        assert!(e < 1e-9, "{key}: generic vs CPU rel err {e:e}");
        if e > worst.0 {
            worst = (e, key.clone());
        }
    }
    println!("worst rel err {:.2e} at {}", worst.0, worst.1);
}

#[test]
fn generic_path_matches_cpu_kernels_in_eval_mode_f32() {
    let eval = |path| {
        with_ops_path(path, || {
            let (_vm, model) = formula_model(&config(), DType::F32).unwrap();
            let x = formula_x("input", &INPUT, 1.0, DType::F32);
            model.forward_no_grad(&x, false).unwrap()
        })
    };
    let (cpu, generic) = (eval(OpsPath::Cpu), eval(OpsPath::Generic));
    let (ep, er) = (rel_err(&generic.0, &cpu.0), rel_err(&generic.1, &cpu.1));
    assert!(ep < 1e-5 && er < 1e-5, "eval pred {ep:e}, rep {er:e}");
}

#[test]
fn reco_ops_env_selects_the_path_the_fixture_tests_take() {
    // CI runs the fixture tests once as they are and once with RECO_OPS=generic: this
    // proves the second run really takes the device path on CPU tensors.
    let forced = std::env::var("RECO_OPS").is_ok_and(|v| v.trim() == "generic");
    assert_eq!(
        reco_models::ops::use_generic_path(&candle_core::Device::Cpu),
        forced
    );
}
