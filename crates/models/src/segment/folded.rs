//! The networks for inference only, with every batch norm folded into the convolution
//! before it: `w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)` (+ the conv's own bias, scaled).
//! A conv-BN-ReLU unit is then one convolution plus one in-place bias(+residual)+ReLU
//! pass over its output, instead of a convolution and a batch norm writing a second
//! buffer; a residual block's last unit adds the identity in the same pass.
//!
//! Built from any [`VarBuilder`] (a VarMap, tensors read by this crate, or candle's
//! `from_mmaped_safetensors`) under the original names. Only the prediction path is
//! built: inference never needs the representation head.

use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Result, Tensor, D};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use crate::deeplab::DeepLabConfig;
use crate::deeplabv2::DEEPLABV2_RATES;
use crate::layers::Conv2dConfig;
use crate::network::NetworkKind;
use crate::ops::cpu::contiguous;
use crate::ops::{conv2d, max_pool_3x3_s2, resize_bilinear, ConvParams, Real};
use crate::resnet::{stage_dilations, Backbone};

/// PyTorch's `nn.BatchNorm2d` default, as [`crate::layers::BatchNorm2d`] uses.
const BN_EPS: f64 = 1e-5;
const ASPP_CHANNELS: usize = 256;
const LOW_LEVEL_CHANNELS: usize = 48;
const HEAD_CHANNELS: usize = 256;

/// A convolution with the following batch norm folded in (always with a bias).
#[derive(Clone, Debug)]
struct FoldedConv {
    weight: Tensor,
    bias: Tensor,
    params: ConvParams,
}

impl FoldedConv {
    /// `conv` names the convolution, `bn` its batch norm (`None`: the conv's own bias,
    /// or zero, is the bias). Folding is computed in f64, then cast to `dtype`.
    fn load(
        vb: &VarBuilder,
        cfg: Conv2dConfig,
        conv: &str,
        bn: Option<&str>,
        dtype: DType,
    ) -> Result<Self> {
        let o = cfg.out_channels;
        let w = vb
            .pp(conv)
            .get((o, cfg.in_channels, cfg.kernel, cfg.kernel), "weight")?
            .to_dtype(DType::F64)?;
        let conv_bias = if cfg.bias {
            vb.pp(conv).get(o, "bias")?.to_dtype(DType::F64)?
        } else {
            Tensor::zeros(o, DType::F64, w.device())?
        };
        let (weight, bias) = match bn {
            None => (w, conv_bias),
            Some(bn) => {
                let bn = vb.pp(bn);
                let get = |name: &str| bn.get(o, name)?.to_dtype(DType::F64);
                let (gamma, beta, mean, var) = (
                    get("weight")?,
                    get("bias")?,
                    get("running_mean")?,
                    get("running_var")?,
                );
                let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
                let weight = w.broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
                let bias = (beta + ((conv_bias - mean)? * &scale)?)?;
                (weight, bias)
            }
        };
        Ok(Self {
            // Detached: derived from VarMap variables, they must not record a graph.
            weight: weight.to_dtype(dtype)?.detach(),
            bias: bias.to_dtype(dtype)?.detach(),
            params: ConvParams {
                stride: cfg.stride,
                padding: cfg.padding,
                dilation: cfg.dilation,
            },
        })
    }

    fn forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        bias_act(
            conv2d(x, &self.weight, self.params)?,
            &self.bias,
            None,
            relu,
        )
    }

    /// `relu(conv(x) + b + residual)`, the end of a residual block.
    fn forward_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        bias_act(
            conv2d(x, &self.weight, self.params)?,
            &self.bias,
            Some(residual),
            true,
        )
    }
}

/// `relu?(y + bias[c] (+ residual))`, in place on the CPU when `y` is a contiguous f32
/// or f64 tensor (a fresh convolution output, owned by nobody else).
fn bias_act(y: Tensor, bias: &Tensor, residual: Option<&Tensor>, relu: bool) -> Result<Tensor> {
    let fits = y.device().is_cpu()
        && matches!(y.dtype(), DType::F32 | DType::F64)
        && y.is_contiguous()
        && y.rank() == 4;
    if fits {
        let bias = bias.contiguous()?;
        match residual {
            None => y.inplace_op2(&bias, &BiasAct { relu })?,
            Some(r) => {
                if r.dims() != y.dims() {
                    candle_core::bail!(
                        "residual {:?} does not match the block output {:?}",
                        r.dims(),
                        y.dims()
                    )
                }
                y.inplace_op3(&bias, &r.contiguous()?, &BiasResidualAct { relu })?
            }
        }
        return Ok(y);
    }
    let mut out = y.broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
    if let Some(r) = residual {
        out = (out + r)?;
    }
    if relu {
        out = out.relu()?;
    }
    Ok(out)
}

struct BiasAct {
    relu: bool,
}

fn bias_act_kernel<T: Real>(
    dst: &mut [T],
    plane: usize,
    bias: &[T],
    residual: Option<&[T]>,
    relu: bool,
) {
    let channels = bias.len();
    dst.par_chunks_mut(plane).enumerate().for_each(|(i, out)| {
        let b = bias[i % channels];
        let res = residual.map(|r| &r[i * plane..(i + 1) * plane]);
        for (k, v) in out.iter_mut().enumerate() {
            let mut s = *v + b;
            if let Some(r) = res {
                s += r[k];
            }
            *v = if relu && s < T::zero() { T::zero() } else { s };
        }
    });
}

impl BiasAct {
    fn run(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        bias: (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<()> {
        let (_, c, h, w) = dst_l.shape().dims4()?;
        let (start, end) = dst_l.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("bias_act expects a contiguous output".into())
        })?;
        if bias.1.shape().elem_count() != c {
            candle_core::bail!(
                "bias of {} values for {c} channels",
                bias.1.shape().elem_count()
            )
        }
        let plane = h * w;
        // The output is borrowed mutably, so it is matched here; the operands are read
        // with the shared CPU-kernel helpers, which reject a dtype other than the output's.
        match dst {
            CpuStorage::F32(d) => self.apply(&mut d[start..end], plane, bias, residual),
            CpuStorage::F64(d) => self.apply(&mut d[start..end], plane, bias, residual),
            _ => candle_core::bail!("bias_act supports f32 and f64 of one dtype"),
        }
    }

    fn apply<T: Real>(
        &self,
        dst: &mut [T],
        plane: usize,
        (bias, bias_l): (&CpuStorage, &Layout),
        residual: Option<(&CpuStorage, &Layout)>,
    ) -> Result<()> {
        let bias = contiguous::<T>("bias_act", bias, bias_l)?;
        let residual = residual
            .map(|(r, l)| contiguous::<T>("bias_act", r, l))
            .transpose()?;
        bias_act_kernel(dst, plane, bias, residual, self.relu);
        Ok(())
    }
}

impl InplaceOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }
    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        b: &CpuStorage,
        bl: &Layout,
    ) -> Result<()> {
        self.run(dst, dst_l, (b, bl), None)
    }
}

/// [`BiasAct`] with a residual added in the same pass.
struct BiasResidualAct {
    relu: bool,
}

impl InplaceOp3 for BiasResidualAct {
    fn name(&self) -> &'static str {
        "bias-residual-act"
    }
    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        b: &CpuStorage,
        bl: &Layout,
        r: &CpuStorage,
        rl: &Layout,
    ) -> Result<()> {
        BiasAct { relu: self.relu }.run(dst, dst_l, (b, bl), Some((r, rl)))
    }
}

/// A residual block with folded units; `downsample` is the folded projection.
#[derive(Clone, Debug)]
struct FoldedBlock {
    convs: Vec<FoldedConv>,
    downsample: Option<FoldedConv>,
}

impl FoldedBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for conv in &self.convs[..last] {
            y = conv.forward(&y, true)?;
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x, false)?,
            None => x.clone(),
        };
        self.convs[last].forward_residual(&y, &identity)
    }
}

#[derive(Clone, Debug)]
struct FoldedResNet {
    stem: FoldedConv,
    layers: Vec<Vec<FoldedBlock>>,
}

impl FoldedResNet {
    /// The geometry of [`crate::resnet::ResNet`] (the original's `_nostride_dilate`): a
    /// dilated stage's first 3x3 gets dilation d/2 and stride 1, its other 3x3s d, and
    /// its 1x1 projection only loses its stride.
    fn load(
        backbone: Backbone,
        output_stride: usize,
        vb: &VarBuilder,
        dtype: DType,
    ) -> Result<Self> {
        let [d3, d4] = stage_dilations(output_stride)?;
        let stem = FoldedConv::load(
            vb,
            Conv2dConfig::new(3, 64, 7).stride(2).padding(3),
            "resnet_conv1",
            Some("resnet_bn1"),
            dtype,
        )?;
        let expansion = if backbone.is_bottleneck() { 4 } else { 1 };
        let mut cin = 64;
        let mut layers = Vec::new();
        for (stage, (&blocks, (stride, dilation))) in backbone
            .layers()
            .iter()
            .zip([(1, 1), (2, 1), (2, d3), (2, d4)])
            .enumerate()
        {
            let planes = 64 << stage;
            let cout = planes * expansion;
            let mut stage_blocks = Vec::with_capacity(blocks);
            for i in 0..blocks {
                let first = i == 0;
                let conv3x3 = |cin: usize, cout: usize, first: bool| {
                    let base = Conv2dConfig::new(cin, cout, 3);
                    match (first, dilation) {
                        (true, 1) => base.stride(stride).padding(1),
                        (true, d) => base.dilated(d / 2),
                        (false, d) => base.dilated(d),
                    }
                };
                let cfgs = if backbone.is_bottleneck() {
                    vec![
                        Conv2dConfig::new(cin, planes, 1),
                        conv3x3(planes, planes, first),
                        Conv2dConfig::new(planes, cout, 1),
                    ]
                } else {
                    vec![conv3x3(cin, planes, first), conv3x3(planes, cout, false)]
                };
                let prefix = format!("resnet_layer{}.{i}", stage + 1);
                let convs = cfgs
                    .into_iter()
                    .enumerate()
                    .map(|(k, cfg)| {
                        FoldedConv::load(
                            vb,
                            cfg,
                            &format!("{prefix}.conv{}", k + 1),
                            Some(&format!("{prefix}.bn{}", k + 1)),
                            dtype,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                let downsample = if first && (stride != 1 || cin != cout) {
                    let s = if dilation == 1 { stride } else { 1 };
                    Some(FoldedConv::load(
                        vb,
                        Conv2dConfig::new(cin, cout, 1).stride(s),
                        &format!("{prefix}.downsample.0"),
                        Some(&format!("{prefix}.downsample.1")),
                        dtype,
                    )?)
                } else {
                    None
                };
                stage_blocks.push(FoldedBlock { convs, downsample });
                cin = cout;
            }
            layers.push(stage_blocks);
        }
        Ok(Self { stem, layers })
    }

    /// `(layer1, layer4)` features.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut x = max_pool_3x3_s2(&self.stem.forward(x, true)?)?;
        let mut low = None;
        for (stage, blocks) in self.layers.iter().enumerate() {
            for block in blocks {
                x = block.forward(&x)?;
            }
            if stage == 0 {
                low = Some(x.clone());
            }
        }
        let low = low.ok_or_else(|| candle_core::Error::Msg("ResNet without stages".into()))?;
        Ok((low, x))
    }
}

#[derive(Clone, Debug)]
enum FoldedHead {
    DeepLabV3Plus {
        aspp: Vec<FoldedConv>,
        pooling: FoldedConv,
        aspp_project: FoldedConv,
        project: FoldedConv,
        hidden: FoldedConv,
        out: FoldedConv,
    },
    DeepLabV2 {
        branches: Vec<FoldedConv>,
        bias: Tensor,
    },
}

/// The prediction path of either network with batch norm folded.
#[derive(Clone, Debug)]
pub struct FoldedNetwork {
    backbone: FoldedResNet,
    head: FoldedHead,
}

impl FoldedNetwork {
    pub fn load(
        kind: NetworkKind,
        cfg: &DeepLabConfig,
        vb: &VarBuilder,
        dtype: DType,
    ) -> Result<Self> {
        if kind == NetworkKind::Dpt {
            candle_core::bail!("DPT has no batch norm to fold: run it as a Network")
        }
        let backbone = FoldedResNet::load(cfg.backbone, cfg.output_stride, vb, dtype)?;
        let features = cfg.backbone.out_channels();
        let head = match kind {
            NetworkKind::DeepLabV3Plus => {
                let rates = cfg.aspp_rates()?;
                let mut aspp = vec![FoldedConv::load(
                    vb,
                    Conv2dConfig::new(features, ASPP_CHANNELS, 1),
                    "ASPP.convs.0.0",
                    Some("ASPP.convs.0.1"),
                    dtype,
                )?];
                for (i, rate) in rates.into_iter().enumerate() {
                    aspp.push(FoldedConv::load(
                        vb,
                        Conv2dConfig::new(features, ASPP_CHANNELS, 3).dilated(rate),
                        &format!("ASPP.convs.{}.0", i + 1),
                        Some(&format!("ASPP.convs.{}.1", i + 1)),
                        dtype,
                    )?);
                }
                let joined = ASPP_CHANNELS + LOW_LEVEL_CHANNELS;
                FoldedHead::DeepLabV3Plus {
                    aspp,
                    pooling: FoldedConv::load(
                        vb,
                        Conv2dConfig::new(features, ASPP_CHANNELS, 1),
                        "ASPP.convs.4.1",
                        Some("ASPP.convs.4.2"),
                        dtype,
                    )?,
                    aspp_project: FoldedConv::load(
                        vb,
                        Conv2dConfig::new(5 * ASPP_CHANNELS, ASPP_CHANNELS, 1),
                        "ASPP.project.0",
                        Some("ASPP.project.1"),
                        dtype,
                    )?,
                    project: FoldedConv::load(
                        vb,
                        Conv2dConfig::new(cfg.backbone.low_level_channels(), LOW_LEVEL_CHANNELS, 1),
                        "project.0",
                        Some("project.1"),
                        dtype,
                    )?,
                    hidden: FoldedConv::load(
                        vb,
                        Conv2dConfig::new(joined, HEAD_CHANNELS, 3).padding(1),
                        "classifier.0",
                        Some("classifier.1"),
                        dtype,
                    )?,
                    out: FoldedConv::load(
                        vb,
                        Conv2dConfig::new(HEAD_CHANNELS, cfg.num_classes, 1).with_bias(),
                        "classifier.3",
                        None,
                        dtype,
                    )?,
                }
            }
            NetworkKind::DeepLabV2 => {
                let branches = DEEPLABV2_RATES
                    .iter()
                    .enumerate()
                    .map(|(i, &rate)| {
                        FoldedConv::load(
                            vb,
                            Conv2dConfig::new(features, cfg.num_classes, 3)
                                .dilated(rate)
                                .with_bias(),
                            &format!("classifier.conv2d_list.{i}"),
                            None,
                            dtype,
                        )
                    })
                    .collect::<Result<Vec<_>>>()?;
                // The branches are summed, so their biases are too.
                let mut bias = branches[0].bias.clone();
                for b in &branches[1..] {
                    bias = (bias + &b.bias)?;
                }
                FoldedHead::DeepLabV2 { branches, bias }
            }
            NetworkKind::Dpt => candle_core::bail!("DPT has no batch norm to fold"),
        };
        Ok(Self { backbone, head })
    }

    /// Class logits `[B, num_classes, h, w]` for a normalised `[B, 3, H, W]` input, at
    /// the network's prediction resolution (stride 4 for DeepLabV3+, the output stride
    /// for DeepLabV2), as the unfolded network's eval-mode prediction.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.detach();
        let (low, features) = self.backbone.forward(&x)?;
        match &self.head {
            FoldedHead::DeepLabV3Plus {
                aspp,
                pooling,
                aspp_project,
                project,
                hidden,
                out,
            } => {
                let (n, _, h, w) = features.dims4()?;
                let mut outs = aspp
                    .iter()
                    .map(|c| c.forward(&features, true))
                    .collect::<Result<Vec<_>>>()?;
                let pooled = features.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?;
                let pooled = pooling.forward(&pooled, true)?;
                outs.push(
                    pooled
                        .broadcast_as((n, ASPP_CHANNELS, h, w))?
                        .contiguous()?,
                );
                let context = aspp_project.forward(&Tensor::cat(&outs, 1)?, true)?;
                drop(outs);
                let low = project.forward(&low, true)?;
                let (_, _, lh, lw) = low.dims4()?;
                let context = resize_bilinear(&context, lh, lw, true)?;
                let joined = Tensor::cat(&[low, context], 1)?;
                out.forward(&hidden.forward(&joined, true)?, false)
            }
            FoldedHead::DeepLabV2 { branches, bias } => {
                drop(low);
                let mut sum = conv2d(&features, &branches[0].weight, branches[0].params)?;
                for b in &branches[1..] {
                    sum = (sum + conv2d(&features, &b.weight, b.params)?)?;
                }
                bias_act(sum, bias, None, false)
            }
        }
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.backbone.stem.weight.device()
    }
}
