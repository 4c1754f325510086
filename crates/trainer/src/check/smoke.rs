//! The smoke test (`trainer check --smoke`): the first thing to run on a new device, in
//! seconds. Each line runs one kind of kernel the train step needs on the device and compares it with
//! the CPU kernels on the same inputs: device creation and copies, matmul (f32 with
//! reduced precision off), softmax, the convolution and its two gradients (at a stride-2
//! layer with H and W of different parity), the composed max-pool and batch norm, and
//! the device's random generator (moments of `randn`). Any error is reported as the
//! line that failed rather than a crash, so one bad kernel does not hide the others.

use candle_core::{DType, Device, Tensor, Var};
use reco_models::ops::{
    batch_norm, conv2d, conv2d_generic, max_pool_3x3_s2, max_pool_3x3_s2_composed, ConvParams,
    Normalize,
};
use reco_models::reference::{formula_x, rel_err};
use reco_util::ops_path::{with_ops_path, OpsPath};

use super::CheckLine;

/// Deterministic inputs on the CPU (the reference side).
fn input(name: &str, shape: &[usize]) -> candle_core::Result<Tensor> {
    formula_x(name, shape, 1.0, DType::F32, &Device::Cpu)
}

fn to_cpu(t: &Tensor) -> candle_core::Result<Tensor> {
    t.to_device(&Device::Cpu)
}

/// Value and gradients of `sum(f(inputs) * G)` with `f` on `device`, all on the CPU.
fn value_and_grads(
    inputs: &[Tensor],
    device: &Device,
    f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> candle_core::Result<Vec<Tensor>> {
    let vars = inputs
        .iter()
        .map(|t| Var::from_tensor(&t.to_device(device)?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts)?;
    let g = formula_x("smoke.g", y.dims(), 1.0, y.dtype(), device)?;
    let grads = (&y * &g)?.sum_all()?.backward()?;
    let mut out = vec![to_cpu(&y)?];
    for v in &vars {
        let gv = grads
            .get(v.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient reached an input".into()))?;
        out.push(to_cpu(gv)?);
    }
    Ok(out)
}

/// Worst relative error between the device's and the CPU kernels' results.
fn worst(device: &[Tensor], cpu: &[Tensor]) -> candle_core::Result<f64> {
    device
        .iter()
        .zip(cpu)
        .try_fold(0f64, |w, (a, b)| -> candle_core::Result<f64> {
            Ok(w.max(rel_err(a, b)?))
        })
}

fn device_copies(device: &Device) -> candle_core::Result<f64> {
    let x = input("smoke.copy", &[3, 5, 7])?;
    let back = x.to_device(device)?.to_device(&Device::Cpu)?;
    rel_err(&back, &x)
}

fn matmul(device: &Device) -> candle_core::Result<f64> {
    let (a, b) = (
        input("smoke.a", &[4, 64, 128])?,
        input("smoke.b", &[4, 128, 96])?,
    );
    let on_device = a.to_device(device)?.matmul(&b.to_device(device)?)?;
    rel_err(&to_cpu(&on_device)?, &a.matmul(&b)?)
}

fn softmax(device: &Device) -> candle_core::Result<f64> {
    let x = (input("smoke.logits", &[2, 21, 9, 11])? * 5.0)?;
    let on_device = candle_nn::ops::softmax(&x.to_device(device)?, 1)?;
    rel_err(&to_cpu(&on_device)?, &candle_nn::ops::softmax(&x, 1)?)
}

fn conv(device: &Device) -> candle_core::Result<f64> {
    let p = ConvParams {
        stride: 2,
        padding: 1,
        dilation: 1,
    };
    let inputs = [
        input("smoke.x", &[2, 8, 10, 9])?,
        input("smoke.w", &[16, 8, 3, 3])?,
    ];
    let on_device = value_and_grads(&inputs, device, |t| conv2d_generic(&t[0], &t[1], p))?;
    let cpu = with_ops_path(OpsPath::Cpu, || {
        value_and_grads(&inputs, &Device::Cpu, |t| conv2d(&t[0], &t[1], p))
    })?;
    worst(&on_device, &cpu)
}

fn max_pool(device: &Device) -> candle_core::Result<f64> {
    // Rounded values give ties, as after a ReLU.
    let inputs = [(input("smoke.pool", &[2, 4, 11, 8])? * 3.0)?.round()?];
    let on_device = value_and_grads(&inputs, device, |t| max_pool_3x3_s2_composed(&t[0]))?;
    let cpu = with_ops_path(OpsPath::Cpu, || {
        value_and_grads(&inputs, &Device::Cpu, |t| max_pool_3x3_s2(&t[0]))
    })?;
    worst(&on_device, &cpu)
}

fn batch_norm_train(device: &Device) -> candle_core::Result<f64> {
    let inputs = [
        input("smoke.bn.x", &[2, 6, 7, 5])?,
        input("smoke.bn.w", &[6])?,
        input("smoke.bn.b", &[6])?,
    ];
    let f = |t: &[Tensor]| -> candle_core::Result<Tensor> {
        Ok(batch_norm(&t[0], &t[1], &t[2], Normalize::Batch, 1e-5, true)?.0)
    };
    let on_device = with_ops_path(OpsPath::Generic, || value_and_grads(&inputs, device, f))?;
    let cpu = with_ops_path(OpsPath::Cpu, || value_and_grads(&inputs, &Device::Cpu, f))?;
    worst(&on_device, &cpu)
}

/// `|mean| + |std − 1|` of a million standard normal draws (expected ~1e-3).
fn randn(device: &Device) -> candle_core::Result<f64> {
    // The CPU generator cannot be seeded (docs/design.md, candle gap 8); CUDA's can.
    if !device.is_cpu() {
        device.set_seed(7)?;
    }
    let x = Tensor::randn(0f32, 1f32, 1 << 20, device)?.to_dtype(DType::F64)?;
    let mean = x.mean_all()?.to_scalar::<f64>()?;
    let std = x.sqr()?.mean_all()?.to_scalar::<f64>()?.sqrt();
    Ok(mean.abs() + (std - 1.0).abs())
}

/// The smoke lines for `device`; a line whose kernel errors reports the error and fails.
pub fn smoke_checks(device: &Device) -> Vec<(CheckLine, Option<String>)> {
    type Check = fn(&Device) -> candle_core::Result<f64>;
    let checks: [(&str, Check, f64); 7] = [
        (
            "smoke: device created, copies there and back",
            device_copies,
            0.0,
        ),
        ("smoke: matmul f32 (reduced precision off)", matmul, 1e-5),
        ("smoke: softmax", softmax, 1e-5),
        (
            "smoke: conv 3x3/2 on 10x9, value + both gradients",
            conv,
            1e-5,
        ),
        (
            "smoke: composed max-pool, value + gradient (ties)",
            max_pool,
            1e-6,
        ),
        (
            "smoke: composed batch norm + ReLU, value + gradients",
            batch_norm_train,
            1e-4,
        ),
        (
            "smoke: randn moments |mean| + |std - 1| (2^20 draws)",
            randn,
            1e-2,
        ),
    ];
    checks
        .into_iter()
        .map(|(what, f, limit)| {
            let (value, error) = match f(device) {
                Ok(v) if v.is_finite() => (v, None),
                Ok(v) => (v, Some(format!("not finite: {v}"))),
                Err(e) => (f64::INFINITY, Some(e.to_string())),
            };
            (
                CheckLine {
                    what: what.to_string(),
                    value,
                    limit,
                },
                error,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke_checks_pass_on_the_cpu_generic_path() {
        // On the CPU the "device" side takes the generic path where the check asks for
        // it explicitly: this is the same comparison a GPU makes.
        for (line, error) in smoke_checks(&Device::Cpu) {
            assert!(error.is_none(), "{}: {error:?}", line.what);
            assert!(line.ok(), "{}: {} > {}", line.what, line.value, line.limit);
        }
    }
}
