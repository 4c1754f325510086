//! The "formula weights" of docs/design.md#reference-fixtures: deterministic parameter and
//! input values from a tensor's name, with which the original code produced the parity
//! fixtures. Used by the parity tests and by `trainer check` on any device.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarMap;

fn fnv1a(name: &str) -> u64 {
    let mut h: u32 = 2166136261;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(16777619);
    }
    h as u64
}

/// `u_k` of the formula weights (docs/design.md#reference-fixtures).
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
pub fn formula_x(
    name: &str,
    shape: &[usize],
    scale: f64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let numel: usize = shape.iter().product();
    let v: Vec<f64> = (0..numel)
        .map(|k| scale * (2.0 * formula_u(name, k) - 1.0))
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// Fills every variable of a DeepLabV3+ VarMap with its formula values.
pub fn fill_formula(varmap: &VarMap) -> Result<()> {
    let vars = crate::vars::named_vars(varmap)?;
    for (name, var) in vars.iter() {
        let has_rm = name
            .rsplit_once('.')
            .map(|(p, _)| vars.contains_key(&format!("{p}.running_mean")))
            .unwrap_or(false);
        let v = formula_weight(name, var.dims(), has_rm);
        let t = Tensor::from_vec(v, var.dims(), &Device::Cpu)?
            .to_dtype(var.dtype())?
            .to_device(var.device())?;
        var.set(&t)?;
    }
    Ok(())
}

/// ‖a − b‖ / ‖b‖, computed in f64 on the CPU.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    if a.dims() != b.dims() {
        candle_core::bail!("shape mismatch: {:?} vs {:?}", a.dims(), b.dims());
    }
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?;
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    let den = b.sqr()?.sum_all()?.to_scalar::<f64>()?;
    Ok((num / den.max(f64::MIN_POSITIVE)).sqrt())
}
