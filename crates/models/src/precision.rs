//! Mixed precision (`--precision`), as PyTorch's autocast does it for these networks:
//! the convolutions (and the matmuls of the bilinear resizes) run in bf16 or f16; batch
//! norm normalises in f32 and hands its output back in the compute type; the network's
//! two outputs leave in the weights' type (f32), so that softmax, the losses and ReCo's
//! similarities are f32. The weights stay f32 variables: each convolution casts its
//! weight inside the graph, so the gradient that reaches a weight is f32 (the cast's
//! backward), and SGD, the EMA and checkpoints never see the low precision.
//!
//! The CPU kernels of this crate are f32/f64 only; in low precision the CPU runs the
//! device-generic ops (`RECO_OPS=generic`), which is how the tests exercise the code a
//! GPU runs.

use candle_core::{DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::ops::{conv2d_generic, use_generic_path, ConvParams};

/// The type the convolutions compute in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in the weights' type (plain f32 training).
    #[default]
    F32,
    /// bfloat16 convolutions: f32's exponent range, so no loss scaling.
    Bf16,
    /// float16 convolutions: the gradients need dynamic loss scaling
    /// ([`Precision::needs_loss_scaling`]).
    F16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    pub fn all() -> [Precision; 3] {
        [Precision::F32, Precision::Bf16, Precision::F16]
    }

    /// The convolutions' type; `None`: the input's own (no casts at all).
    pub fn compute_dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::F16 => Some(DType::F16),
        }
    }

    /// f16 gradients underflow without a loss scale (PyTorch's GradScaler); bf16 ones do not.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::F16
    }

    /// Checks that `device` can train in this precision, by running what a step runs in
    /// it (a convolution forward and backward, a matmul, the casts), so that an incapable
    /// device ends in this error rather than in a kernel failure mid-step.
    pub fn check_device(self, device: &Device) -> Result<()> {
        let Some(dtype) = self.compute_dtype() else {
            return Ok(());
        };
        check_ops_path(dtype, device)?;
        probe(dtype, device).map_err(|e| {
            let hint = match (self, device.is_cpu()) {
                // candle's CPU backend has no bf16 matmul.
                (Precision::Bf16, true) => "candle's CPU backend cannot multiply bf16 matrices; on the CPU use --precision f16 (with RECO_OPS=generic) or f32",
                (Precision::Bf16, false) => "bf16 needs a GPU of compute capability 8.0 or newer (A100, H100, H200, RTX 30xx and later); use --precision f16 there, or f32",
                _ => "use --precision f32",
            };
            candle_core::Error::Msg(format!(
                "--precision {self} does not run on {}: {e}. {hint}",
                device_name(device)
            ))
        })
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Precision::all()
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("unknown precision {s:?}: expected f32, bf16 or f16"))
    }
}

fn device_name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "the CPU".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// A network's input in `mode`'s compute type (unchanged when it has none or it is the
/// input's), after checking that the device's ops take that type.
pub(crate) fn compute_input(x: &Tensor, mode: &crate::layers::Mode) -> Result<Tensor> {
    match mode.compute {
        Some(compute) if compute != x.dtype() => {
            check_ops_path(compute, x.device())?;
            x.to_dtype(compute)
        }
        _ => Ok(x.clone()),
    }
}

/// Low precision needs the device-generic ops: on the CPU that is `RECO_OPS=generic`.
fn check_ops_path(dtype: DType, device: &Device) -> Result<()> {
    if dtype != DType::F32 && dtype != DType::F64 && !use_generic_path(device) {
        candle_core::bail!(
            "{} convolutions on the CPU need candle's generic ops: set RECO_OPS=generic (slow: for testing the GPU path; this crate's fast CPU kernels are f32/f64 only), or use --precision f32",
            dtype.as_str()
        )
    }
    Ok(())
}

fn probe(dtype: DType, device: &Device) -> Result<()> {
    let w = Var::from_tensor(&Tensor::ones((2, 2, 3, 3), DType::F32, device)?)?;
    let x = Tensor::ones((1, 2, 4, 4), DType::F32, device)?.to_dtype(dtype)?;
    let p = ConvParams {
        stride: 1,
        padding: 1,
        dilation: 1,
    };
    let y = conv2d_generic(&x, &w.as_tensor().to_dtype(dtype)?, p)?.relu()?;
    let y = y.matmul(&y.transpose(2, 3)?.contiguous()?)?;
    let loss = y.to_dtype(DType::F32)?.sum_all()?;
    let grads = loss.backward()?;
    let g = grads
        .get(w.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the weight".into()))?;
    let (l, g) = (
        loss.to_scalar::<f32>()?,
        g.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?,
    );
    if !(l.is_finite() && l > 0.0 && g.is_finite() && g > 0.0) {
        candle_core::bail!("a test convolution gave loss {l} and gradient sum {g}")
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reco_util::ops_path::{with_ops_path, OpsPath};

    #[test]
    fn names_round_trip_and_bad_names_say_what_is_allowed() {
        for p in Precision::all() {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        let err = "fp8".parse::<Precision>().unwrap_err();
        assert!(err.contains("f32, bf16 or f16"), "{err}");
    }

    #[test]
    fn low_precision_on_the_cpu_kernels_names_the_switch() {
        let err = with_ops_path(OpsPath::Cpu, || Precision::F16.check_device(&Device::Cpu))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RECO_OPS=generic"), "{err}");
        Precision::F32.check_device(&Device::Cpu).unwrap();
    }

    #[test]
    fn the_generic_ops_train_in_f16_on_the_cpu_and_bf16_is_a_clear_error() {
        with_ops_path(OpsPath::Generic, || {
            Precision::F16.check_device(&Device::Cpu).unwrap();
            // A device that cannot do bf16 (candle's CPU backend: no bf16 matmul).
            let err = Precision::Bf16
                .check_device(&Device::Cpu)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--precision bf16 does not run on the CPU"),
                "{err}"
            );
            assert!(err.contains("--precision f16"), "{err}");
        });
    }
}
