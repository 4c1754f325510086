//! Convolution and batch-norm layers over VarBuilder variables, with an explicit
//! gradient switch: candle has no no-grad mode, so inference and the EMA teacher run on
//! detached weights and record no graph.

use candle_core::{DType, Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};

use crate::ops::{batch_norm, conv2d, ConvParams, Normalize};
use crate::sync_bn::{sync_batch_norm, GlobalStats, SyncBn};

/// Whether a forward pass normalises with batch statistics, whether it records a graph,
/// and with which ranks batch norm shares its statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode<'a> {
    /// Batch norm uses batch statistics and updates its running statistics.
    pub train: bool,
    /// Record the graph so that `backward` reaches the weights and the input.
    pub grad: bool,
    /// Synchronized batch norm (data-parallel training with `--sync-bn`): in train mode
    /// every batch-norm layer uses the statistics of the batch over all ranks of this
    /// group. `None`: the local batch (and the single-process code path).
    pub sync: Option<&'a SyncBn>,
    /// Mixed precision ([`crate::Precision`]): the type the convolutions compute in
    /// (their weights are cast to it inside the graph); batch norm normalises in its
    /// weights' type. `None`: the input's type, no casts.
    pub compute: Option<DType>,
}

impl<'a> Mode<'a> {
    /// A mode without synchronized batch norm.
    pub fn new(train: bool, grad: bool) -> Self {
        Self {
            train,
            grad,
            sync: None,
            compute: None,
        }
    }

    /// This mode computing in `compute`, unless it already has a compute type.
    pub fn with_compute(self, compute: Option<DType>) -> Self {
        Self {
            compute: self.compute.or(compute),
            ..self
        }
    }

    /// This mode with `sync` as the batch-norm group, unless it already has one.
    pub fn with_sync<'b>(self, sync: Option<&'b SyncBn>) -> Mode<'b>
    where
        'a: 'b,
    {
        Mode {
            sync: self.sync.or(sync),
            ..self
        }
    }
}

/// Runs a network's `forward_mode` without recording a graph (candle has no global
/// no-grad switch): the input and both outputs are detached. One home for what
/// every network's `forward_no_grad` does.
pub(crate) fn forward_without_graph(
    x: &Tensor,
    train: bool,
    forward_mode: impl FnOnce(&Tensor, Mode) -> Result<(Tensor, Tensor)>,
) -> Result<(Tensor, Tensor)> {
    let (p, r) = forward_mode(&x.detach(), Mode::new(train, false))?;
    Ok((p.detach(), r.detach()))
}

fn maybe_detach(t: &Tensor, grad: bool) -> Tensor {
    if grad {
        t.clone()
    } else {
        t.detach()
    }
}

/// A variable as a forward pass in `mode` uses it: detached without a graph, cast to
/// `dtype` inside the graph (so in mixed precision its gradient arrives in its own type).
pub(crate) fn param_in(t: &Tensor, mode: Mode, dtype: DType) -> Result<Tensor> {
    maybe_detach(t, mode.grad).to_dtype(dtype)
}

/// Square-kernel convolution, PyTorch's `nn.Conv2d` layout (`weight [O,C,k,k]`, `bias [O]`).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    params: ConvParams,
}

/// How [`Conv2d::new`] fills a weight that the VarBuilder creates (a model built without
/// [`init_seeded`](crate::init_seeded) and without a checkpoint keeps these values).
/// The two rules are the original's, and the ones `init_seeded` draws from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConvInit {
    /// PyTorch's `nn.Conv2d` default, kaiming_uniform(a=√5) = U(±1/√fan_in): what the
    /// original's heads (ASPP, decoder, classifier, representation) keep. A fan-out
    /// normal there would make the initial logits of the 1x1 classifier ~10x too large.
    #[default]
    PyTorchDefault,
    /// torchvision's ResNet initialisation: Kaiming normal, fan-out, ReLU gain.
    KaimingFanOut,
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
    /// Initial weight distribution; the bias (if any) is always U(±1/√fan_in).
    pub init: ConvInit,
}

impl Conv2dConfig {
    /// A `kernel`x`kernel` convolution without bias, stride 1, no padding or dilation,
    /// with PyTorch's default initialisation.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            bias: false,
            init: ConvInit::PyTorchDefault,
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
    pub fn init(self, init: ConvInit) -> Self {
        Self { init, ..self }
    }
}

impl Conv2d {
    pub fn new(cfg: Conv2dConfig, vb: VarBuilder) -> Result<Self> {
        let shape = (cfg.out_channels, cfg.in_channels, cfg.kernel, cfg.kernel);
        let bound = 1.0 / ((cfg.in_channels * cfg.kernel * cfg.kernel) as f64).sqrt();
        let fan_in_uniform = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let init = match cfg.init {
            ConvInit::PyTorchDefault => fan_in_uniform,
            ConvInit::KaimingFanOut => Init::Kaiming {
                dist: candle_nn::init::NormalOrUniform::Normal,
                fan: candle_nn::init::FanInOut::FanOut,
                non_linearity: candle_nn::init::NonLinearity::ReLU,
            },
        };
        let weight = vb.get_with_hints(shape, "weight", init)?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(cfg.out_channels, "bias", fan_in_uniform)?)
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

    /// The convolution in the input's type: in mixed precision the f32 weight is cast
    /// inside the graph, so its gradient arrives as f32.
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let weight = param_in(&self.weight, mode, x.dtype())?;
        let y = conv2d(x, &weight, self.params)?;
        match &self.bias {
            None => Ok(y),
            Some(b) => {
                let b = param_in(b, mode, x.dtype())?;
                crate::ops::add_channel_bias(&y, &b)
            }
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
        self.forward_relu(x, mode, false)
    }

    /// Batch norm, followed by ReLU when `relu` (fused into one op on the CPU).
    /// In mixed precision the input (in the compute type) is normalised in the weights'
    /// type (f32) and the output cast back, as PyTorch's autocast keeps batch norm in f32.
    pub fn forward_relu(&self, x: &Tensor, mode: Mode, relu: bool) -> Result<Tensor> {
        let own = self.weight.dtype();
        if x.dtype() != own {
            let y = self.forward_relu(&x.to_dtype(own)?, mode, relu)?;
            return y.to_dtype(x.dtype());
        }
        if let (true, Some(sync)) = (mode.train, mode.sync) {
            return self.forward_sync(x, mode.grad, sync, relu);
        }
        let x = maybe_detach(x, mode.grad);
        let weight = maybe_detach(&self.weight, mode.grad);
        let bias = maybe_detach(&self.bias, mode.grad);
        let (running_mean, running_var) = (
            self.running_mean.as_detached_tensor(),
            self.running_var.as_detached_tensor(),
        );
        let norm = if mode.train {
            Normalize::Batch
        } else {
            Normalize::Running {
                mean: &running_mean,
                var: &running_var,
            }
        };
        let (y, batch_stats) = batch_norm(&x, &weight, &bias, norm, BN_EPS, relu)?;
        if let Some(stats) = batch_stats {
            // PyTorch's running update: momentum 0.1, unbiased batch variance.
            let count = (x.elem_count() / x.dim(1)?) as f64;
            let unbiased = count / (count - 1.0);
            let (dtype, dev) = (running_mean.dtype(), running_mean.device());
            let mean = stats.mean.to_dtype(dtype)?.to_device(dev)?;
            let var = stats.var.to_dtype(dtype)?.to_device(dev)?;
            self.running_mean
                .set(&((running_mean * (1.0 - BN_MOMENTUM))? + (mean * BN_MOMENTUM)?)?)?;
            self.running_var.set(
                &((running_var * (1.0 - BN_MOMENTUM))? + (var * (BN_MOMENTUM * unbiased))?)?,
            )?;
        }
        Ok(y)
    }

    /// Train-mode batch norm with the statistics of the batch over every rank of `sync`;
    /// the running statistics follow the global mean and unbiased variance (the GLOBAL
    /// count), so they are the same on every rank.
    fn forward_sync(&self, x: &Tensor, grad: bool, sync: &SyncBn, relu: bool) -> Result<Tensor> {
        let x = maybe_detach(x, grad);
        let weight = maybe_detach(&self.weight, grad);
        let bias = maybe_detach(&self.bias, grad);
        let (y, stats) = sync_batch_norm(&x, &weight, &bias, sync.reducer(), BN_EPS, relu)?;
        self.update_running(&stats)?;
        Ok(y)
    }

    fn update_running(&self, stats: &GlobalStats) -> Result<()> {
        let running_mean = self.running_mean.as_detached_tensor();
        let running_var = self.running_var.as_detached_tensor();
        let (dtype, dev) = (running_mean.dtype(), running_mean.device());
        let c = stats.mean.len();
        let mean = Tensor::from_slice(&stats.mean, c, dev)?.to_dtype(dtype)?;
        let var = Tensor::from_slice(&stats.unbiased_var(), c, dev)?.to_dtype(dtype)?;
        self.running_mean
            .set(&((running_mean * (1.0 - BN_MOMENTUM))? + (mean * BN_MOMENTUM)?)?)?;
        self.running_var
            .set(&((running_var * (1.0 - BN_MOMENTUM))? + (var * BN_MOMENTUM)?)?)
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
        self.bn
            .forward_relu(&self.conv.forward(x, mode)?, mode, true)
    }
}

/// Mean over H and W, keeping them as 1x1 (`nn.AdaptiveAvgPool2d(1)`).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)
}
