//! What DeepLabV3+ and DeepLabV2 share: the configuration, the ResNet encoder, the
//! batch-norm group and the public forward API. Each network is a [`DeepLab`] over its
//! own [`DeepLabHeads`], which turn the encoder's features into
//! `(prediction, representation)`; [`crate::DeepLabV3Plus`] and [`crate::DeepLabV2`]
//! name the two.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::Mode;
use crate::precision::{compute_input, Precision};
use crate::resnet::{Backbone, ResNet, ResNetFeatures};
use crate::sync_bn::SyncBn;

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

/// The part of a DeepLab network after the encoder. Implemented by this crate's two
/// networks only; public because [`DeepLab`]'s methods are bounded by it.
pub trait DeepLabHeads: Sized {
    /// The network's name in error messages.
    const NAME: &'static str;
    /// The heads for `cfg`, their parameters under `vb` (the network's root).
    fn new(cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self>;
    /// `(prediction, representation)` from the encoder's features.
    fn forward(&self, features: &ResNetFeatures, mode: Mode) -> Result<(Tensor, Tensor)>;
}

/// A ResNet encoder and the heads `H` on its features.
#[derive(Clone, Debug)]
pub struct DeepLab<H> {
    cfg: DeepLabConfig,
    backbone: ResNet,
    heads: H,
    sync_bn: Option<SyncBn>,
    precision: Precision,
}

impl<H: DeepLabHeads> DeepLab<H> {
    pub fn new(cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.num_classes == 0 || cfg.output_dim == 0 {
            candle_core::bail!(
                "num_classes and output_dim must be positive, got {} and {}",
                cfg.num_classes,
                cfg.output_dim
            )
        }
        Ok(Self {
            cfg: cfg.clone(),
            backbone: ResNet::new(cfg.backbone, cfg.output_stride, vb.clone())?,
            heads: H::new(cfg, vb)?,
            sync_bn: None,
            precision: Precision::F32,
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

    /// Forward passes compute their convolutions in `precision` ([`crate::precision`]);
    /// the outputs stay in the input's type.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// `(prediction [B, num_classes, h, w], representation [B, output_dim, h, w])` at
    /// the network's prediction resolution (DeepLabV3+ at layer1's stride 4, h = ⌈⌈H/2⌉/2⌉; DeepLabV2 at the output stride).
    /// `train` selects batch statistics for batch norm (and updates the running
    /// statistics); the graph is recorded.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.forward_mode(x, Mode::new(train, true))
    }

    /// As [`forward_t`](Self::forward_t) without recording a graph: for evaluation,
    /// prediction and the EMA teacher (candle has no global no-grad switch).
    pub fn forward_no_grad(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        crate::layers::forward_without_graph(x, train, |x, mode| self.forward_mode(x, mode))
    }

    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        check_image_batch(x, H::NAME)?;
        let mode = mode
            .with_sync(self.sync_bn.as_ref())
            .with_compute(self.precision.compute_dtype());
        let out = x.dtype();
        let x = compute_input(x, &mode)?;
        let features = self.backbone.forward(&x, mode)?;
        let (pred, rep) = self.heads.forward(&features, mode)?;
        // Softmax, the losses and ReCo's similarities run in the input's type (f32).
        Ok((pred.to_dtype(out)?, rep.to_dtype(out)?))
    }
}
