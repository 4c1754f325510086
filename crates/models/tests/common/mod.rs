//! Shared by the parity tests: the reference README's "formula weights" and fixture I/O.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use reco_models::{Backbone, DeepLabConfig, DeepLabV3Plus};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn load_fixture(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu).expect("fixture readable")
}

fn fnv1a(name: &str) -> u64 {
    let mut h: u32 = 2166136261;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(16777619);
    }
    h as u64
}

/// `u_k` of the reference README.
pub fn formula_u(name: &str, k: usize) -> f64 {
    let seed = fnv1a(name);
    ((k as u64).wrapping_mul(2654435761).wrapping_add(seed) % (1u64 << 32)) as f64 / 4294967296.0
}

/// The formula tensor for a state_dict entry, computed in f64 and rounded to f32 (the
/// references widen those f32 values exactly).
pub fn formula_weight(name: &str, shape: &[usize], has_running_mean: bool) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    (0..numel)
        .map(|k| {
            let u = formula_u(name, k);
            let x = 2.0 * u - 1.0;
            let v = if shape.len() >= 2 {
                let fan_in = (numel / shape[0]) as f64;
                x * (6.0 / fan_in).sqrt()
            } else if name.ends_with(".running_mean") {
                0.1 * x
            } else if name.ends_with(".running_var") {
                1.0 + 0.5 * u
            } else if name.ends_with(".weight") && has_running_mean {
                1.0 + 0.1 * x
            } else {
                0.1 * x
            };
            v as f32
        })
        .collect()
}

/// Formula tensor `x_k` (used for input and output gradients: `input_k = 2 x_k`).
pub fn formula_x(name: &str, shape: &[usize], scale: f64, dtype: DType) -> Tensor {
    let numel: usize = shape.iter().product();
    let v: Vec<f64> = (0..numel)
        .map(|k| scale * (2.0 * formula_u(name, k) - 1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
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
    {
        let vars = varmap.data().lock().unwrap();
        for (name, var) in vars.iter() {
            let has_rm = name
                .rsplit_once('.')
                .map(|(p, _)| vars.contains_key(&format!("{p}.running_mean")))
                .unwrap_or(false);
            let v = formula_weight(name, var.dims(), has_rm);
            let t = Tensor::from_vec(v, var.dims(), &Device::Cpu)?.to_dtype(dtype)?;
            var.set(&t)?;
        }
    }
    Ok((varmap, model))
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let num = (&a - &b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let den = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    (num / den).sqrt()
}
