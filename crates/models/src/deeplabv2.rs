//! DeepLabV2 as in the original ReCo code (`network/deeplabv2.py`, `--backbone deeplabv2`
//! of its training scripts): the ResNet encoder at output stride 8, then on the layer4
//! features a classifier that sums four dilated 3x3 convolutions (rates 6, 12, 18, 24,
//! with bias) and a representation head of one 1x1 convolution with bias. No ASPP, no
//! decoder, no batch norm after the backbone; outputs at 1/output_stride of the input.
//! Parameter names are the original's (`classifier.conv2d_list.{0..3}.*`,
//! `representation.0.*`), so exports load into it with `strict=True`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::deeplab_base::{DeepLab, DeepLabConfig, DeepLabHeads};
use crate::layers::{Conv2d, Conv2dConfig, Mode};
use crate::resnet::ResNetFeatures;

/// Dilation (and padding) of the four classifier branches.
pub const DEEPLABV2_RATES: [usize; 4] = [6, 12, 18, 24];

/// The output stride the original builds DeepLabV2 with (layer3 dilated 2, layer4 4).
pub const DEEPLABV2_OUTPUT_STRIDE: usize = 8;

/// DeepLabV2: the ResNet encoder with [`DeepLabV2Heads`]. `cfg.output_stride` is
/// normally [`DEEPLABV2_OUTPUT_STRIDE`]; 16 and 32 are accepted (the classifier rates do
/// not change with it).
pub type DeepLabV2 = DeepLab<DeepLabV2Heads>;

/// What DeepLabV2 puts after the encoder: the summed dilated classifier branches and the
/// 1x1 representation head, both on the layer4 features.
#[derive(Clone, Debug)]
pub struct DeepLabV2Heads {
    classifier: Vec<Conv2d>,
    representation: Conv2d,
}

impl DeepLabHeads for DeepLabV2Heads {
    const NAME: &'static str = "DeepLabV2";

    /// The original hard-codes 2048 input channels (ResNet-50/101/152); ResNet-18/34 get
    /// their 512.
    fn new(cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self> {
        let features = cfg.backbone.out_channels();
        let branches = vb.pp("classifier").pp("conv2d_list");
        let classifier = DEEPLABV2_RATES
            .iter()
            .enumerate()
            .map(|(i, &rate)| {
                Conv2d::new(
                    Conv2dConfig::new(features, cfg.num_classes, 3)
                        .dilated(rate)
                        .with_bias(),
                    branches.pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let representation = Conv2d::new(
            Conv2dConfig::new(features, cfg.output_dim, 1).with_bias(),
            vb.pp("representation").pp(0),
        )?;
        Ok(Self {
            classifier,
            representation,
        })
    }

    fn forward(&self, features: &ResNetFeatures, mode: Mode) -> Result<(Tensor, Tensor)> {
        let features = &features.out;
        let mut prediction = self.classifier[0].forward(features, mode)?;
        for branch in &self.classifier[1..] {
            prediction = (prediction + branch.forward(features, mode)?)?;
        }
        let representation = self.representation.forward(features, mode)?;
        Ok((prediction, representation))
    }
}
