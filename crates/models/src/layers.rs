//! Convolution and batch-norm layers over VarBuilder variables, with an explicit
//! gradient switch: candle has no no-grad mode, so inference and the EMA teacher run on
//! detached weights and record no graph.

use candle_core::{Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

use crate::ops::{conv2d, ConvParams};

/// Whether a forward pass normalises with batch statistics and whether it records a graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode {
    /// Batch norm uses batch statistics and updates its running statistics.
    pub train: bool,
    /// Record the graph so that `backward` reaches the weights and the input.
    pub grad: bool,
}

fn maybe_detach(t: &Tensor, grad: bool) -> Tensor {
    if grad {
        t.clone()
    } else {
        t.detach()
    }
}

/// Square-kernel convolution, PyTorch's `nn.Conv2d` layout (`weight [O,C,k,k]`, `bias [O]`).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvParams,
}

#[derive(Clone, Copy, Debug)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub bias: bool,
}

impl Conv2dConfig {
    /// A `kernel`x`kernel` convolution without bias, stride 1, no padding or dilation.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            bias: false,
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }
    /// Dilation `d` with the "same" padding of a 3x3 kernel, as the original sets both.
    pub fn dilated(self, d: usize) -> Self {
        Self {
            dilation: d,
            padding: d * (self.kernel / 2),
            ..self
        }
    }
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }
    pub fn with_bias(self) -> Self {
        Self { bias: true, ..self }
    }
}

impl Conv2d {
    pub fn new(cfg: Conv2dConfig, vb: VarBuilder) -> Result<Self> {
        let shape = (cfg.out_channels, cfg.in_channels, cfg.kernel, cfg.kernel);
        // torchvision's ResNet initialisation: Kaiming normal, fan-out, ReLU gain.
        let init = Init::Kaiming {
            dist: candle_nn::init::NormalOrUniform::Normal,
            fan: candle_nn::init::FanInOut::FanOut,
            non_linearity: candle_nn::init::NonLinearity::ReLU,
        };
        let weight = vb.get_with_hints(shape, "weight", init)?;
        let bias = if cfg.bias {
            let bound = 1.0 / ((cfg.in_channels * cfg.kernel * cfg.kernel) as f64).sqrt();
            Some(vb.get_with_hints(
                cfg.out_channels,
                "bias",
                Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        let params = ConvParams {
            stride: cfg.stride,
            padding: cfg.padding,
            dilation: cfg.dilation,
        };
        Ok(Self {
            weight,
            bias,
            params,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = conv2d(x, &maybe_detach(&self.weight, mode.grad), self.params)?;
        match &self.bias {
            None => Ok(y),
            Some(b) => y.broadcast_add(&maybe_detach(b, mode.grad).reshape((1, (), 1, 1))?),
        }
    }
}

/// `nn.BatchNorm2d` with PyTorch's defaults (eps 1e-5, momentum 0.1, affine). The
/// running statistics are variables of the VarMap, so checkpoints carry them, and they
/// are updated in place by every train-mode forward (with the unbiased batch variance).
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

impl BatchNorm2d {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        // Var::from_tensor of a VarMap variable shares its storage, so `set` below
        // writes through to the map.
        let running_mean =
            Var::from_tensor(&vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?)?;
        let running_var =
            Var::from_tensor(&vb.get_with_hints(channels, "running_var", Init::Const(1.0))?)?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = if mode.grad { x.clone() } else { x.detach() };
        let c = x.dim(1)?;
        let (mean, var) = if mode.train {
            let count = x.elem_count() / c;
            if count < 2 {
                candle_core::bail!(
                    "batch norm in training mode needs more than one value per channel, got input {:?}: use a batch of at least 2",
                    x.dims()
                )
            }
            let mean = x.mean_keepdim((0, 2, 3))?;
            let centred = x.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim((0, 2, 3))?;
            let unbiased = count as f64 / (count as f64 - 1.0);
            let new_mean = ((self.running_mean.as_detached_tensor() * (1.0 - BN_MOMENTUM))?
                + (mean.detach().flatten_all()? * BN_MOMENTUM)?)?;
            let new_var = ((self.running_var.as_detached_tensor() * (1.0 - BN_MOMENTUM))?
                + (var.detach().flatten_all()? * (BN_MOMENTUM * unbiased))?)?;
            self.running_mean.set(&new_mean)?;
            self.running_var.set(&new_var)?;
            (mean, var)
        } else {
            (
                self.running_mean
                    .as_detached_tensor()
                    .reshape((1, c, 1, 1))?,
                self.running_var
                    .as_detached_tensor()
                    .reshape((1, c, 1, 1))?,
            )
        };
        let weight = maybe_detach(&self.weight, mode.grad).reshape((1, c, 1, 1))?;
        let bias = maybe_detach(&self.bias, mode.grad).reshape((1, c, 1, 1))?;
        let scale = weight.broadcast_div(&(var + BN_EPS)?.sqrt()?)?;
        x.broadcast_sub(&mean)?
            .broadcast_mul(&scale)?
            .broadcast_add(&bias)
    }
}

/// Conv → BN → ReLU, the unit every head of the network is made of.
#[derive(Clone, Debug)]
pub struct ConvBnRelu {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl ConvBnRelu {
    /// `vb` names the `nn.Sequential`; its children are `0` (conv) and `1` (BN), or
    /// the indices given (the ASPP pooling branch has the pooling layer at 0).
    pub fn new(
        cfg: Conv2dConfig,
        vb: VarBuilder,
        (conv_idx, bn_idx): (usize, usize),
    ) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(cfg, vb.pp(conv_idx))?,
            bn: BatchNorm2d::new(cfg.out_channels, vb.pp(bn_idx))?,
        })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x, mode)?, mode)?.relu()
    }
}

/// Mean over H and W, keeping them as 1x1 (`nn.AdaptiveAvgPool2d(1)`).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)
}
