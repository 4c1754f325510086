//! DeepLabV2 as in the original ReCo code (`network/deeplabv2.py`, `--backbone deeplabv2`
//! of its training scripts): the ResNet encoder at output stride 8, then on the layer4
//! features a classifier that sums four dilated 3x3 convolutions (rates 6, 12, 18, 24,
//! with bias) and a representation head of one 1x1 convolution with bias. No ASPP, no
//! decoder, no batch norm after the backbone; outputs at 1/output_stride of the input.
//! Parameter names are the original's (`classifier.conv2d_list.{0..3}.*`,
//! `representation.0.*`), so exports load into it with `strict=True`.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::deeplab::{check_image_batch, DeepLabConfig};
use crate::layers::{Conv2d, Conv2dConfig, Mode};
use crate::resnet::ResNet;
use crate::sync_bn::SyncBn;

/// Dilation (and padding) of the four classifier branches.
pub const DEEPLABV2_RATES: [usize; 4] = [6, 12, 18, 24];

/// The output stride the original builds DeepLabV2 with (layer3 dilated 2, layer4 4).
pub const DEEPLABV2_OUTPUT_STRIDE: usize = 8;

#[derive(Clone, Debug)]
pub struct DeepLabV2 {
    cfg: DeepLabConfig,
    backbone: ResNet,
    classifier: Vec<Conv2d>,
    representation: Conv2d,
    sync_bn: Option<SyncBn>,
}

impl DeepLabV2 {
    /// `cfg.output_stride` is normally [`DEEPLABV2_OUTPUT_STRIDE`]; 16 and 32 are
    /// accepted (the classifier rates do not change with it). The original hard-codes
    /// 2048 input channels (ResNet-50/101/152); ResNet-18/34 get their 512.
    pub fn new(cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.num_classes == 0 || cfg.output_dim == 0 {
            candle_core::bail!(
                "num_classes and output_dim must be positive, got {} and {}",
                cfg.num_classes,
                cfg.output_dim
            )
        }
        let backbone = ResNet::new(cfg.backbone, cfg.output_stride, vb.clone())?;
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
            cfg: cfg.clone(),
            backbone,
            classifier,
            representation,
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

    /// `(prediction [B, num_classes, h, w], representation [B, output_dim, h, w])` at the
    /// layer4 resolution (h = ⌈H/output_stride⌉ up to the stem's rounding).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_mode(x, Mode::new(train, true))
    }

    /// As [`forward_t`](Self::forward_t) without recording a graph.
    pub fn forward_no_grad(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        crate::layers::forward_without_graph(x, train, |x, mode| self.forward_mode(x, mode))
    }

    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        check_image_batch(x, "DeepLabV2")?;
        let mode = mode.with_sync(self.sync_bn.as_ref());
        let features = self.backbone.forward(x, mode)?.out;
        let mut prediction = self.classifier[0].forward(&features, mode)?;
        for branch in &self.classifier[1..] {
            prediction = (prediction + branch.forward(&features, mode)?)?;
        }
        let representation = self.representation.forward(&features, mode)?;
        Ok((prediction, representation))
    }
}
