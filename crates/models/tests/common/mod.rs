//! Shared by the parity tests: the "formula weights" (docs/design.md#reference-fixtures)
//! and fixture I/O.
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
