//! DeepLabV3+ as in the original ReCo code (`network/deeplabv3.py`): ResNet encoder,
//! ASPP, a decoder joining layer1 features, and two heads on the joined features: the
//! classifier and the representation head used by the ReCo loss.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

pub use crate::deeplab_base::{DeepLab, DeepLabConfig, DeepLabHeads, MIN_INPUT_SIZE};
use crate::layers::{global_avg_pool, Conv2d, Conv2dConfig, ConvBnRelu, Mode};
use crate::ops::resize_bilinear;
use crate::resnet::ResNetFeatures;

/// Channels of every ASPP branch and of its projection.
const ASPP_CHANNELS: usize = 256;
/// Channels the decoder reduces the layer1 features to.
const LOW_LEVEL_CHANNELS: usize = 48;
/// Channels of the hidden 3x3 layer of each head.
const HEAD_CHANNELS: usize = 256;

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

/// DeepLabV3+: the ResNet encoder with [`DeepLabV3PlusHeads`].
pub type DeepLabV3Plus = DeepLab<DeepLabV3PlusHeads>;

/// What DeepLabV3+ puts after the encoder: the ASPP, the decoder's layer1 projection,
/// and the classifier and representation heads on the joined features.
#[derive(Clone, Debug)]
pub struct DeepLabV3PlusHeads {
    aspp: Aspp,
    project: ConvBnRelu,
    classifier: Head,
    representation: Head,
}

impl DeepLabHeads for DeepLabV3PlusHeads {
    const NAME: &'static str = "DeepLabV3+";

    fn new(cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self> {
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
            aspp,
            project,
            classifier: Head::new(joined, cfg.num_classes, vb.pp("classifier"))?,
            representation: Head::new(joined, cfg.output_dim, vb.pp("representation"))?,
        })
    }

    fn forward(&self, features: &ResNetFeatures, mode: Mode) -> Result<(Tensor, Tensor)> {
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
