//! A model built without `init_seeded` (nor a checkpoint) starts from the original's
//! distributions: Kaiming fan-out normal in the backbone, PyTorch's default U(±1/√fan_in)
//! in the heads, so its initial logits have the magnitude of the original's.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use reco_models::{init_seeded, Backbone, DeepLabConfig, DeepLabV3Plus};

fn config() -> DeepLabConfig {
    DeepLabConfig {
        backbone: Backbone::ResNet18,
        output_stride: 16,
        num_classes: 21,
        output_dim: 32,
    }
}

/// A freshly built network (variables drawn by the VarBuilder's hints).
fn fresh() -> (VarMap, DeepLabV3Plus) {
    let vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu);
    let model = DeepLabV3Plus::new(&config(), vb).unwrap();
    (vars, model)
}

fn values(vars: &VarMap) -> HashMap<String, Vec<f32>> {
    let data = vars.data().lock().unwrap();
    data.iter()
        .map(|(name, var)| {
            let v = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (name.clone(), v)
        })
        .collect()
}

fn rms(v: &[f32]) -> f64 {
    (v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().map(|&x| x.abs() as f64).fold(0.0, f64::max)
}

#[test]
fn head_convolutions_get_pytorchs_default_and_the_backbone_kaiming_fan_out() {
    let (vars, _model) = fresh();
    let v = values(&vars);
    // Heads: U(±b), b = 1/√fan_in, so rms = b/√3 and nothing beyond b.
    for (name, fan_in) in [
        ("classifier.3.weight", 256),
        ("classifier.3.bias", 256),
        ("classifier.0.weight", 304 * 9),
        ("representation.3.weight", 256),
        ("ASPP.convs.1.0.weight", 512 * 9),
        ("ASPP.project.0.weight", 1280),
        ("project.0.weight", 64),
    ] {
        let w = &v[name];
        let bound = 1.0 / (fan_in as f64).sqrt();
        assert!(
            max_abs(w) <= bound * (1.0 + 1e-6),
            "{name}: |w| up to {} > 1/sqrt({fan_in})",
            max_abs(w)
        );
        let want = bound / 3f64.sqrt();
        // 21 values (a bias) give a loose estimate; the weights have thousands.
        let tol = if w.len() < 100 { 0.5 } else { 0.1 };
        assert!(
            (rms(w) / want - 1.0).abs() < tol,
            "{name}: rms {} vs {want}",
            rms(w)
        );
    }
    // Backbone: N(0, 2/fan_out), fan_out = out channels x kernel area.
    let w = &v["resnet_layer1.0.conv1.weight"]; // 64x64x3x3
    let want = (2.0f64 / (64.0 * 9.0)).sqrt();
    assert!(
        (rms(w) / want - 1.0).abs() < 0.05,
        "backbone rms {}",
        rms(w)
    );
}

#[test]
fn fresh_weights_follow_the_distributions_of_init_seeded() {
    let fresh_values = values(&fresh().0);
    let (seeded, _model) = fresh();
    init_seeded(&seeded, 3).unwrap();
    let seeded_values = values(&seeded);
    assert_eq!(fresh_values.len(), seeded_values.len());
    for (name, s) in &seeded_values {
        let f = &fresh_values[name];
        let constant = s.iter().all(|&x| x == s[0]);
        if constant {
            // Batch norm: ones, zeros, running statistics.
            assert!(
                f.iter().all(|&x| x == s[0]),
                "{name}: not constant {}",
                s[0]
            );
        } else if s.len() >= 1000 {
            let ratio = rms(f) / rms(s);
            assert!(
                (ratio - 1.0).abs() < 0.15,
                "{name}: fresh rms {} vs init_seeded {}",
                rms(f),
                rms(s)
            );
        }
    }
}

#[test]
fn initial_logits_have_a_sane_magnitude() {
    let (_vars, model) = fresh();
    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    // Train mode: batch statistics, as in the first training step.
    let (pred, rep) = model.forward_no_grad(&x, true).unwrap();
    let logits = pred.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    // The classifier's input is BN + ReLU output (E x² = 1/2 over 256 channels) and
    // its weights U(±1/16): logit rms ≈ √(256 · 0.5 · 1/768) ≈ 0.41. The backbone's
    // fan-out normal there would give ≈ 3.5.
    let r = rms(&logits);
    assert!((0.1..1.0).contains(&r), "initial logit rms {r}");
    assert!(logits.iter().all(|x| x.is_finite()));
    let r = rms(&rep.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert!((0.1..1.0).contains(&r), "initial representation rms {r}");
}
