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

/// Every variable's gradient (`grad.<name>`) and, for the running statistics, which
/// carry none, their updated values (`value.<name>`).
fn grads_and_running_stats(
    varmap: &candle_nn::VarMap,
    grads: &candle_core::backprop::GradStore,
) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        match grads.get(var.as_tensor()) {
            Some(g) => out.insert(format!("grad.{name}"), g.clone()),
            None => out.insert(format!("value.{name}"), var.as_tensor().clone()),
        };
    }
    out
}

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
        out.extend(grads_and_running_stats(&varmap, &grads));
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

/// Mixed precision on the generic path: `--precision f16` against f32 on the same f32
/// weights. Outputs leave in f32, every gradient reaches the f32 weights as f32, the
/// running statistics stay f32; the errors are f16's rounding through 20 layers. The
/// weights are the training initialisation (`init_seeded`), not the formula weights:
/// those give channels whose batch spread is a tiny fraction of their mean, which no
/// 11-bit activation can resolve (PyTorch's autocast included).
#[test]
fn f16_compute_follows_f32_within_half_precision_rounding() {
    use reco_models::Precision;
    let step = |precision: Precision| {
        with_ops_path(OpsPath::Generic, || {
            let varmap = candle_nn::VarMap::new();
            let vb =
                candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &candle_core::Device::Cpu);
            let model = reco_models::DeepLabV3Plus::new(&config(), vb)
                .unwrap()
                .with_precision(precision);
            reco_models::init_seeded(&varmap, 7).unwrap();
            let x = formula_x("input", &INPUT, 1.0, DType::F32);
            let (pred, rep) = model.forward_t(&x, true).unwrap();
            let weight = |name: &str, t: &Tensor| {
                formula_x(name, t.dims(), 1.0, DType::F64)
                    .to_dtype(DType::F32)
                    .unwrap()
            };
            let loss = ((&pred * weight("grad.pred", &pred))
                .unwrap()
                .sum_all()
                .unwrap()
                + (&rep * weight("grad.rep", &rep))
                    .unwrap()
                    .sum_all()
                    .unwrap())
            .unwrap();
            let grads = loss.backward().unwrap();
            let mut out = BTreeMap::new();
            out.insert("pred".to_string(), pred);
            out.insert("rep".to_string(), rep);
            out.extend(grads_and_running_stats(&varmap, &grads));
            out
        })
    };
    let f32_ = step(Precision::F32);
    let f16_ = step(Precision::F16);
    assert_eq!(
        f32_.keys().collect::<Vec<_>>(),
        f16_.keys().collect::<Vec<_>>()
    );
    let (mut worst_out, mut grad_errs) = (0f64, Vec::new());
    for (key, reference) in &f32_ {
        let t = &f16_[key];
        assert_eq!(t.dtype(), DType::F32, "{key} must stay f32");
        let e = rel_err(t, reference);
        if key.starts_with("grad.") {
            grad_errs.push((e, key.clone()));
        } else {
            worst_out = worst_out.max(e);
        }
    }
    grad_errs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let median = grad_errs[grad_errs.len() / 2].0;
    let worst = grad_errs.last().unwrap();
    println!(
        "f16 vs f32: outputs and running statistics {worst_out:.2e}; gradients median {median:.2e}, worst {:.2e} at {}",
        worst.0, worst.1
    );
    // The same comparison in PyTorch (torch 2.15, CPU autocast f16, torchvision's
    // ResNet-18 in train mode at the same input size, f32 weights): output 5.2e-3,
    // gradients median 0.15, worst 0.20. Behind batch norm a weight's gradient is
    // orthogonal to the weight (scale invariance), so it is a small difference of large
    // sums and f16's rounding shows there most. Ours runs the whole DeepLabV3+ (decoder
    // and both heads) and lands at outputs ~2e-2, gradients median ~0.3, worst ~0.4.
    assert!(
        worst_out < 5e-2,
        "outputs / running statistics rel err {worst_out:e}"
    );
    assert!(median < 0.4, "gradient rel err median {median:e}");
    assert!(worst.0 < 0.6, "{}: gradient rel err {:e}", worst.1, worst.0);
    // And the f16 run is not the f32 one (the casts happened).
    assert!(rel_err(&f16_["pred"], &f32_["pred"]) > 0.0);
}
