//! Shared by the integration tests: the "formula weights"
//! (docs/design.md#reference-fixtures), fixture I/O, small networks, the formula loss
//! and the reference-fixture comparisons of a train step.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use reco_models::{Backbone, DeepLabConfig, DeepLabV3Plus, Network, NetworkKind};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu).expect("fixture readable")
}

/// Formula tensor `x_k` on the CPU.
pub fn formula_x(name: &str, shape: &[usize], scale: f64, dtype: DType) -> Tensor {
    reco_models::reference::formula_x(name, shape, scale, dtype, &Device::Cpu).unwrap()
}

pub fn config_of(meta_backbone: &str, os: usize) -> DeepLabConfig {
    DeepLabConfig {
        backbone: meta_backbone.parse::<Backbone>().unwrap(),
        output_stride: os,
        num_classes: 21,
        output_dim: 256,
    }
}

/// Builds the model over a VarMap in `dtype` and fills every variable with the formula.
pub fn formula_model(cfg: &DeepLabConfig, dtype: DType) -> Result<(VarMap, DeepLabV3Plus)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let model = DeepLabV3Plus::new(cfg, vb)?;
    reco_models::reference::fill_formula(&varmap)?;
    Ok((varmap, model))
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    reco_models::reference::rel_err(a, b).unwrap()
}

/// A ResNet-18, output stride 16 configuration: the small networks of most tests.
pub fn small_config(num_classes: usize, output_dim: usize) -> DeepLabConfig {
    DeepLabConfig {
        backbone: Backbone::ResNet18,
        output_stride: 16,
        num_classes,
        output_dim,
    }
}

/// `kind` built over a fresh VarMap in `dtype` (default initialisation).
pub fn network(kind: NetworkKind, cfg: &DeepLabConfig, dtype: DType) -> (VarMap, Network) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let net = Network::new(kind, cfg, vb).unwrap();
    (varmap, net)
}

/// As [`network`], every variable filled with the formula (non-trivial batch-norm
/// statistics).
pub fn formula_network(kind: NetworkKind, cfg: &DeepLabConfig, dtype: DType) -> (VarMap, Network) {
    let (varmap, net) = network(kind, cfg, dtype);
    reco_models::reference::fill_formula(&varmap).unwrap();
    (varmap, net)
}

/// `x` normalised with the ImageNet mean and standard deviation (the checkpoints'
/// default normalisation), `x` being `[B, 3, H, W]` f32 in 0..1.
pub fn imagenet_normalize(x: &Tensor) -> Tensor {
    let per_channel = |v: [f32; 3]| {
        Tensor::new(&v, &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 1, 1))
            .unwrap()
    };
    let (mean, std) = (
        per_channel([0.485, 0.456, 0.406]),
        per_channel([0.229, 0.224, 0.225]),
    );
    x.broadcast_sub(&mean).unwrap().broadcast_div(&std).unwrap()
}

/// The gradients of the fixtures' loss `Σ pred·G_pred + Σ rep·G_rep`, the `G`s being the
/// formula tensors "grad.pred" and "grad.rep" (f64).
pub fn formula_loss_grads(pred: &Tensor, rep: &Tensor) -> GradStore {
    let gp = formula_x("grad.pred", pred.dims(), 1.0, DType::F64);
    let gr = formula_x("grad.rep", rep.dims(), 1.0, DType::F64);
    let loss = ((pred * &gp).unwrap().sum_all().unwrap() + (rep * &gr).unwrap().sum_all().unwrap())
        .unwrap();
    loss.backward().unwrap()
}

/// Relative errors of eval-mode outputs against the fixture's "eval.pred" and "eval.rep",
/// printed under `label`.
pub fn eval_errors(
    label: &str,
    fx: &HashMap<String, Tensor>,
    pred: &Tensor,
    rep: &Tensor,
) -> (f64, f64) {
    let (ep, er) = (
        rel_err(pred, &fx["eval.pred"]),
        rel_err(rep, &fx["eval.rep"]),
    );
    println!("{label} eval: pred {ep:.2e}, rep {er:.2e}");
    (ep, er)
}

/// Hands every train-mode comparison a fixture holds to `check(what, ours, reference)`:
/// the outputs, the input gradient, the head of each parameter gradient and its absolute
/// sum, and the running statistics after the step. `input` is the step's input variable,
/// `varmap` the network's variables.
pub fn compare_train_step(
    fx: &HashMap<String, Tensor>,
    varmap: &VarMap,
    input: &candle_core::Var,
    (pred, rep): (&Tensor, &Tensor),
    mut check: impl FnMut(&str, &Tensor, &Tensor),
) {
    check("train.pred", pred, &fx["train.pred"]);
    check("train.rep", rep, &fx["train.rep"]);
    let grads = formula_loss_grads(pred, rep);
    check(
        "grad.input",
        grads.get(input.as_tensor()).unwrap(),
        &fx["train.grad.input"],
    );
    let vars = varmap.data().lock().unwrap();
    for (key, reference) in fx {
        if let Some(param) = key
            .strip_prefix("train.grad.")
            .and_then(|k| k.strip_suffix(".head"))
        {
            let g = grads.get(vars[param].as_tensor()).expect(param);
            // The head is the first two rows (ResNet fixtures) or, stored flat, the
            // first elements of the flattened gradient (the DPT fixture).
            let head = if reference.rank() == 1 {
                g.flatten_all()
                    .unwrap()
                    .narrow(0, 0, reference.dim(0).unwrap())
            } else {
                g.narrow(0, 0, 2)
            };
            check(key, &head.unwrap(), reference);
            let abssum = g.abs().unwrap().sum_all().unwrap();
            let reference_abssum = &fx[&format!("train.grad.{param}.abssum")];
            check(
                &format!("train.grad.{param}.abssum"),
                &abssum.reshape(reference_abssum.dims()).unwrap(),
                reference_abssum,
            );
        }
        if let Some(stat) = key.strip_prefix("train.after.") {
            check(key, vars[stat].as_tensor(), reference);
        }
    }
}
