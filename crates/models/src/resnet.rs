//! torchvision-layout ResNet as the original ReCo code uses it: the stem, layer1..layer4
//! (no average pool, no fc), with the original's output-stride dilation rule, under the
//! original parameter names (`resnet_conv1`, `resnet_bn1`, `resnet_layer{1..4}`).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::{BatchNorm2d, Conv2d, Conv2dConfig, ConvInit, Mode};
use crate::ops::{add_relu, max_pool_3x3_s2};

/// The encoders: torchvision's ResNets (for DeepLabV3+ and DeepLabV2) and Meta's DINOv2
/// ViTs with patch size 14 (for DPT, [`crate::dpt`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backbone {
    ResNet18,
    ResNet34,
    ResNet50,
    #[default]
    ResNet101,
    ResNet152,
    /// DINOv2 ViT-S/14 (facebook/dinov2-small).
    Dinov2Small,
    /// DINOv2 ViT-B/14 (facebook/dinov2-base).
    Dinov2Base,
    /// DINOv2 ViT-L/14 (facebook/dinov2-large).
    Dinov2Large,
}

impl Backbone {
    /// Blocks per stage for a ResNet; all zero for a ViT, which has no stages (only
    /// [`is_vit`](Self::is_vit) backbones reach [`crate::dpt`], the others
    /// [`ResNetFeatures`]).
    pub fn layers(self) -> [usize; 4] {
        match self {
            Backbone::ResNet18 => [2, 2, 2, 2],
            Backbone::ResNet34 | Backbone::ResNet50 => [3, 4, 6, 3],
            Backbone::ResNet101 => [3, 4, 23, 3],
            Backbone::ResNet152 => [3, 8, 36, 3],
            Backbone::Dinov2Small | Backbone::Dinov2Base | Backbone::Dinov2Large => [0; 4],
        }
    }

    /// A DINOv2 vision transformer rather than a ResNet.
    pub fn is_vit(self) -> bool {
        matches!(
            self,
            Backbone::Dinov2Small | Backbone::Dinov2Base | Backbone::Dinov2Large
        )
    }

    pub fn is_bottleneck(self) -> bool {
        !matches!(self, Backbone::ResNet18 | Backbone::ResNet34)
    }

    fn expansion(self) -> usize {
        if self.is_bottleneck() {
            4
        } else {
            1
        }
    }

    /// Channels of the layer1 features (the decoder's low-level input).
    pub fn low_level_channels(self) -> usize {
        64 * self.expansion()
    }

    /// Channels of the layer4 features (the ASPP input).
    pub fn out_channels(self) -> usize {
        512 * self.expansion()
    }

    /// The lower-case name used by torchvision, timm and the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::ResNet18 => "resnet18",
            Backbone::ResNet34 => "resnet34",
            Backbone::ResNet50 => "resnet50",
            Backbone::ResNet101 => "resnet101",
            Backbone::ResNet152 => "resnet152",
            Backbone::Dinov2Small => "dinov2-s",
            Backbone::Dinov2Base => "dinov2-b",
            Backbone::Dinov2Large => "dinov2-l",
        }
    }

    pub fn all() -> [Backbone; 8] {
        [
            Backbone::ResNet18,
            Backbone::ResNet34,
            Backbone::ResNet50,
            Backbone::ResNet101,
            Backbone::ResNet152,
            Backbone::Dinov2Small,
            Backbone::Dinov2Base,
            Backbone::Dinov2Large,
        ]
    }

    /// The ResNets only, for recognising a ResNet checkpoint by its blocks.
    pub fn resnets() -> impl Iterator<Item = Backbone> {
        Backbone::all().into_iter().filter(|b| !b.is_vit())
    }
}

impl std::str::FromStr for Backbone {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase().replace('_', "-");
        // Also the names of the hub (dinov2-small) and of torch.hub (dinov2_vits14).
        let alias = match lower.as_str() {
            "dinov2-small" | "dinov2-vits14" => "dinov2-s",
            "dinov2-base" | "dinov2-vitb14" => "dinov2-b",
            "dinov2-large" | "dinov2-vitl14" => "dinov2-l",
            other => other,
        };
        Backbone::all()
            .into_iter()
            .find(|b| b.name() == alias)
            .ok_or_else(|| {
                format!("unknown backbone {s:?}: expected one of resnet18, resnet34, resnet50, resnet101, resnet152 (DeepLab) or dinov2-s, dinov2-b, dinov2-l (DPT)")
            })
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dilation of layer3 and layer4 for an output stride (the original's
/// `_nostride_dilate`): 1 means the stage keeps its stride 2.
pub fn stage_dilations(output_stride: usize) -> Result<[usize; 2]> {
    match output_stride {
        8 => Ok([2, 4]),
        16 => Ok([1, 2]),
        32 => Ok([1, 1]),
        _ => candle_core::bail!("output stride must be 8, 16 or 32, got {output_stride}"),
    }
}

/// A backbone convolution: torchvision's ResNet initialises every one Kaiming fan-out.
fn backbone_conv(cin: usize, cout: usize, kernel: usize) -> Conv2dConfig {
    Conv2dConfig::new(cin, cout, kernel).init(ConvInit::KaimingFanOut)
}

/// How one 3x3 convolution of a stage is set up. A stage dilated by `d` turns its
/// strided convolutions into stride 1; a strided 3x3 becomes dilation `d/2`, every other
/// 3x3 dilation `d`, and 1x1 convolutions only lose their stride.
#[derive(Clone, Copy, Debug)]
struct StageGeometry {
    stride: usize,
    dilation: usize,
}

impl StageGeometry {
    fn conv3x3(self, cin: usize, cout: usize, first_block: bool) -> Conv2dConfig {
        let base = backbone_conv(cin, cout, 3);
        match (first_block, self.dilation) {
            (true, 1) => base.stride(self.stride).padding(1),
            (true, d) => base.dilated(d / 2),
            (false, d) => base.dilated(d),
        }
    }
    fn downsample_stride(self) -> usize {
        if self.dilation == 1 {
            self.stride
        } else {
            1
        }
    }
}

#[derive(Clone, Debug)]
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm2d,
}

impl Downsample {
    fn new(cin: usize, cout: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(backbone_conv(cin, cout, 1).stride(stride), vb.pp(0))?,
            bn: BatchNorm2d::new(cout, vb.pp(1))?,
        })
    }
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.bn.forward(&self.conv.forward(x, mode)?, mode)
    }
}

/// A residual block: basic (two 3x3) or bottleneck (1x1, 3x3, 1x1), torchvision v1.5
/// (stride on the 3x3).
#[derive(Clone, Debug)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm2d)>,
    downsample: Option<Downsample>,
}

impl Block {
    fn new(
        backbone: Backbone,
        cin: usize,
        planes: usize,
        geo: StageGeometry,
        first: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cout = planes * backbone.expansion();
        let cfgs = if backbone.is_bottleneck() {
            vec![
                backbone_conv(cin, planes, 1),
                geo.conv3x3(planes, planes, first),
                backbone_conv(planes, cout, 1),
            ]
        } else {
            vec![
                geo.conv3x3(cin, planes, first),
                geo.conv3x3(planes, cout, false),
            ]
        };
        let convs = cfgs
            .into_iter()
            .enumerate()
            .map(|(i, cfg)| {
                Ok((
                    Conv2d::new(cfg, vb.pp(format!("conv{}", i + 1)))?,
                    BatchNorm2d::new(cfg.out_channels, vb.pp(format!("bn{}", i + 1)))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // torchvision adds a projection where the shape changes (before dilation is
        // applied, so a dilated stage keeps its projection).
        let downsample = if first && (geo.stride != 1 || cin != cout) {
            Some(Downsample::new(
                cin,
                cout,
                geo.downsample_stride(),
                vb.pp("downsample"),
            )?)
        } else {
            None
        };
        Ok(Self { convs, downsample })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let last = self.convs.len() - 1;
        let mut y = x.clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            y = bn.forward_relu(&conv.forward(&y, mode)?, mode, i != last)?;
        }
        let identity = match &self.downsample {
            Some(d) => d.forward(x, mode)?,
            None => x.clone(),
        };
        add_relu(&y, &identity)
    }
}

/// The features DeepLabV3+ takes from the backbone.
pub struct ResNetFeatures {
    /// layer1 output, stride 4.
    pub low_level: Tensor,
    /// layer4 output, at the configured output stride.
    pub out: Tensor,
}

#[derive(Clone, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    layers: Vec<Vec<Block>>,
}

impl ResNet {
    /// `vb` is the model root: parameters are created as `resnet_conv1.*`,
    /// `resnet_bn1.*`, `resnet_layerN.i.*`.
    pub fn new(backbone: Backbone, output_stride: usize, vb: VarBuilder) -> Result<Self> {
        if backbone.is_vit() {
            candle_core::bail!(
                "backbone {backbone} is a vision transformer: it goes with --network dpt, not with a DeepLab network"
            )
        }
        let [d3, d4] = stage_dilations(output_stride)?;
        let conv1 = Conv2d::new(
            backbone_conv(3, 64, 7).stride(2).padding(3),
            vb.pp("resnet_conv1"),
        )?;
        let bn1 = BatchNorm2d::new(64, vb.pp("resnet_bn1"))?;
        let geometries = [
            StageGeometry {
                stride: 1,
                dilation: 1,
            },
            StageGeometry {
                stride: 2,
                dilation: 1,
            },
            StageGeometry {
                stride: 2,
                dilation: d3,
            },
            StageGeometry {
                stride: 2,
                dilation: d4,
            },
        ];
        let mut cin = 64;
        let mut layers = Vec::new();
        for (stage, (&blocks, geo)) in backbone.layers().iter().zip(geometries).enumerate() {
            let planes = 64 << stage;
            let vb_layer = vb.pp(format!("resnet_layer{}", stage + 1));
            let mut stage_blocks = Vec::with_capacity(blocks);
            for i in 0..blocks {
                stage_blocks.push(Block::new(
                    backbone,
                    cin,
                    planes,
                    geo,
                    i == 0,
                    vb_layer.pp(i),
                )?);
                cin = planes * backbone.expansion();
            }
            layers.push(stage_blocks);
        }
        Ok(Self { conv1, bn1, layers })
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<ResNetFeatures> {
        let x = self
            .bn1
            .forward_relu(&self.conv1.forward(x, mode)?, mode, true)?;
        let mut x = max_pool_3x3_s2(&x)?;
        let mut low_level = None;
        for (stage, blocks) in self.layers.iter().enumerate() {
            for block in blocks {
                x = block.forward(&x, mode)?;
            }
            if stage == 0 {
                low_level = Some(x.clone());
            }
        }
        let low_level =
            low_level.ok_or_else(|| candle_core::Error::Msg("ResNet without stages".into()))?;
        Ok(ResNetFeatures { low_level, out: x })
    }
}
