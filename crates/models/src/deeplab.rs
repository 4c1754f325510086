//! DeepLabV3+ as in the original ReCo code (`network/deeplabv3.py`): ResNet encoder,
//! ASPP, a decoder joining layer1 features, and two heads on the joined features: the
//! classifier and the representation head used by the ReCo loss.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{global_avg_pool, Conv2d, Conv2dConfig, ConvBnRelu, Mode};
use crate::ops::resize_bilinear;
use crate::resnet::{Backbone, ResNet};
use crate::sync_bn::SyncBn;

/// Channels of every ASPP branch and of its projection.
const ASPP_CHANNELS: usize = 256;
/// Channels the decoder reduces the layer1 features to.
const LOW_LEVEL_CHANNELS: usize = 48;
/// Channels of the hidden 3x3 layer of each head.
const HEAD_CHANNELS: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeepLabConfig {
    pub backbone: Backbone,
    /// 8, 16 or 32.
    pub output_stride: usize,
    pub num_classes: usize,
    /// Channels of the representation head (ReCo's feature dimension).
    pub output_dim: usize,
}

/// The paper's network: ResNet-101, output stride 16, 21 classes (Pascal VOC), D = 256.
impl Default for DeepLabConfig {
    fn default() -> Self {
        Self {
            backbone: Backbone::ResNet101,
            output_stride: 16,
            num_classes: 21,
            output_dim: 256,
        }
    }
}

impl DeepLabConfig {
    /// ASPP atrous rates for the output stride.
    pub fn aspp_rates(&self) -> Result<[usize; 3]> {
        match self.output_stride {
            8 => Ok([12, 24, 36]),
            16 => Ok([6, 12, 18]),
            // The original defines no rates for 32; torchvision's DeepLab halves again.
            32 => Ok([3, 6, 9]),
            s => candle_core::bail!("output stride must be 8, 16 or 32, got {s}"),
        }
    }
}

#[derive(Clone, Debug)]
struct Aspp {
    branches: Vec<ConvBnRelu>,
    pooling: ConvBnRelu,
    project: ConvBnRelu,
}

impl Aspp {
    fn new(in_channels: usize, rates: [usize; 3], vb: VarBuilder) -> Result<Self> {
        let convs = vb.pp("convs");
        let mut branches = vec![ConvBnRelu::new(
            Conv2dConfig::new(in_channels, ASPP_CHANNELS, 1),
            convs.pp(0),
            (0, 1),
        )?];
        for (i, rate) in rates.into_iter().enumerate() {
            branches.push(ConvBnRelu::new(
                Conv2dConfig::new(in_channels, ASPP_CHANNELS, 3).dilated(rate),
                convs.pp(i + 1),
                (0, 1),
            )?);
        }
        // Index 0 of the pooling branch is the parameter-free AdaptiveAvgPool2d.
        let pooling = ConvBnRelu::new(
            Conv2dConfig::new(in_channels, ASPP_CHANNELS, 1),
            convs.pp(4),
            (1, 2),
        )?;
        let project = ConvBnRelu::new(
            Conv2dConfig::new(5 * ASPP_CHANNELS, ASPP_CHANNELS, 1),
            vb.pp("project"),
            (0, 1),
        )?;
        Ok(Self {
            branches,
            pooling,
            project,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let mut outs = self
            .branches
            .iter()
            .map(|b| b.forward(x, mode))
            .collect::<Result<Vec<_>>>()?;
        // Bilinear upsampling of a 1x1 map (align_corners=false) is a broadcast.
        let pooled = self.pooling.forward(&global_avg_pool(x)?, mode)?;
        outs.push(
            pooled
                .broadcast_as((n, ASPP_CHANNELS, h, w))?
                .contiguous()?,
        );
        self.project.forward(&Tensor::cat(&outs, 1)?, mode)
    }
}

/// 3x3 conv-BN-ReLU then a 1x1 conv with bias: `classifier` and `representation`.
#[derive(Clone, Debug)]
struct Head {
    hidden: ConvBnRelu,
    out: Conv2d,
}

impl Head {
    fn new(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            hidden: ConvBnRelu::new(
                Conv2dConfig::new(in_channels, HEAD_CHANNELS, 3).padding(1),
                vb.clone(),
                (0, 1),
            )?,
            out: Conv2d::new(
                Conv2dConfig::new(HEAD_CHANNELS, out_channels, 1).with_bias(),
                vb.pp(3),
            )?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.out.forward(&self.hidden.forward(x, mode)?, mode)
    }
}

#[derive(Clone, Debug)]
pub struct DeepLabV3Plus {
    cfg: DeepLabConfig,
    backbone: ResNet,
    aspp: Aspp,
    project: ConvBnRelu,
    classifier: Head,
    representation: Head,
    sync_bn: Option<SyncBn>,
}

/// The smallest input side the network accepts (the stem and four stages must leave at
/// least one pixel).
pub const MIN_INPUT_SIZE: usize = 32;

/// The networks' input check: `[B, 3, H, W]` with H, W >= [`MIN_INPUT_SIZE`], else an
/// error naming `network` and the shape.
pub(crate) fn check_image_batch(x: &Tensor, network: &str) -> Result<()> {
    let (_, c, h, w) = x.dims4()?;
    if c != 3 || h < MIN_INPUT_SIZE || w < MIN_INPUT_SIZE {
        candle_core::bail!(
            "{network} expects images [B, 3, H, W] with H, W >= {MIN_INPUT_SIZE}, got {:?}",
            x.dims()
        )
    }
    Ok(())
}

impl DeepLabV3Plus {
    pub fn new(cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.num_classes == 0 || cfg.output_dim == 0 {
            candle_core::bail!(
                "num_classes and output_dim must be positive, got {} and {}",
                cfg.num_classes,
                cfg.output_dim
            )
        }
        let backbone = ResNet::new(cfg.backbone, cfg.output_stride, vb.clone())?;
        let aspp = Aspp::new(
            cfg.backbone.out_channels(),
            cfg.aspp_rates()?,
            vb.pp("ASPP"),
        )?;
        let project = ConvBnRelu::new(
            Conv2dConfig::new(cfg.backbone.low_level_channels(), LOW_LEVEL_CHANNELS, 1),
            vb.pp("project"),
            (0, 1),
        )?;
        let joined = ASPP_CHANNELS + LOW_LEVEL_CHANNELS;
        Ok(Self {
            cfg: cfg.clone(),
            backbone,
            aspp,
            project,
            classifier: Head::new(joined, cfg.num_classes, vb.pp("classifier"))?,
            representation: Head::new(joined, cfg.output_dim, vb.pp("representation"))?,
            sync_bn: None,
        })
    }

    pub fn config(&self) -> &DeepLabConfig {
        &self.cfg
    }

    /// Train-mode forward passes synchronize batch norm over `sync`'s ranks (`None`:
    /// local batch statistics).
    pub fn with_sync_bn(self, sync: Option<SyncBn>) -> Self {
        Self {
            sync_bn: sync,
            ..self
        }
    }

    pub fn sync_bn(&self) -> Option<&SyncBn> {
        self.sync_bn.as_ref()
    }

    /// `(prediction [B, num_classes, h, w], representation [B, output_dim, h, w])` at
    /// the layer1 resolution (stride 4: h = ⌈⌈H/2⌉/2⌉). `train` selects batch statistics
    /// for batch norm (and updates the running statistics); the graph is recorded.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_mode(x, Mode::new(train, true))
    }

    /// As [`forward_t`](Self::forward_t) without recording a graph: for evaluation,
    /// prediction and the EMA teacher (candle has no global no-grad switch).
    pub fn forward_no_grad(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        crate::layers::forward_without_graph(x, train, |x, mode| self.forward_mode(x, mode))
    }

    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        check_image_batch(x, "DeepLabV3+")?;
        let mode = mode.with_sync(self.sync_bn.as_ref());
        let features = self.backbone.forward(x, mode)?;
        let context = self.aspp.forward(&features.out, mode)?;
        let low = self.project.forward(&features.low_level, mode)?;
        let (_, _, lh, lw) = low.dims4()?;
        let context = resize_bilinear(&context, lh, lw, true)?;
        let joined = Tensor::cat(&[low, context], 1)?;
        let prediction = self.classifier.forward(&joined, mode)?;
        let representation = self.representation.forward(&joined, mode)?;
        Ok((prediction, representation))
    }
}
