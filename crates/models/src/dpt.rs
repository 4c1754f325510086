//! DPT (Ranftl et al. 2021) on a DINOv2 encoder, as UniMatch V2 builds it for
//! semi-supervised segmentation (`model/semseg/dpt.py`, `model/util/blocks.py` of
//! LiheYoung/UniMatch-V2), with ReCo's representation head added on the decoder's last
//! fused features, beside the classifier.
//!
//! Parameter names are UniMatch V2's (`backbone.*` the encoder, [`crate::vit`];
//! `head.projects.{0-3}`, `head.resize_layers.{0,1,3}`, `head.scratch.layer{1-4}_rn`,
//! `head.scratch.refinenet{1-4}.{out_conv, resConfUnit1, resConfUnit2}.*`,
//! `head.scratch.output_conv.{0,2}`), so its checkpoints load here (the representation
//! head, `representation.{0,2}`, is ReCo's). UniMatch V2 builds the head without batch
//! norm (`use_bn=False`), so DPT has nothing to synchronize or fold, and train and eval
//! mode compute the same function.
//!
//! Both outputs are at 8x the patch grid (the last fusion's resolution, `8·H/14`): the
//! trainer resizes the prediction to the labels bilinearly with `align_corners=True`,
//! which is UniMatch V2's final `F.interpolate` when the crop is a multiple of 14, and the
//! labels to the representation (nearest) as for DeepLab.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::deeplab_base::DeepLabConfig;
use crate::layers::{param_in, Conv2d, Conv2dConfig, Mode};
use crate::ops::resize_bilinear;
use crate::precision::{compute_input, Precision};
use crate::resnet::Backbone;
use crate::sync_bn::SyncBn;
use crate::vit::{Dinov2, VitConfig, PATCH_SIZE};

/// The input stride of DPT's encoder (the patch size), stored as the checkpoints'
/// `output_stride`.
pub const DPT_OUTPUT_STRIDE: usize = PATCH_SIZE;

/// The classifier's last convolution: its rows are the classes.
pub const CLASSIFIER_WEIGHT: &str = "head.scratch.output_conv.2.weight";
/// The representation head's last convolution: its rows are ReCo's feature dimension.
pub const REPRESENTATION_WEIGHT: &str = "representation.2.weight";

/// The DINOv2 size of a DPT checkpoint, from the width of its first attention block
/// (`backbone.blocks.0.attn.qkv.weight` is `[3D, D]`) and its depth; the reason when
/// it is none of ViT-S/B/L.
pub fn backbone_from_shapes(
    shapes: &std::collections::HashMap<String, Vec<usize>>,
) -> std::result::Result<Backbone, String> {
    let qkv = "backbone.blocks.0.attn.qkv.weight";
    let width = shapes
        .get(qkv)
        .and_then(|s| s.get(1).copied())
        .ok_or_else(|| format!("a DPT checkpoint without {qkv}"))?;
    let depth = (0..)
        .take_while(|i| shapes.contains_key(&format!("backbone.blocks.{i}.attn.qkv.weight")))
        .count();
    [Backbone::Dinov2Small, Backbone::Dinov2Base, Backbone::Dinov2Large]
        .into_iter()
        .find(|b| {
            VitConfig::for_backbone(*b)
                .map(|c| c.embed_dim == width && c.depth == depth)
                .unwrap_or(false)
        })
        .ok_or_else(|| {
            format!("a ViT of width {width} and {depth} blocks, which is none of DINOv2 ViT-S/14 (384, 12), ViT-B/14 (768, 12), ViT-L/14 (1024, 24)")
        })
}

/// The nearest multiple of the patch size to `side` (halves round up, at least one patch),
/// as UniMatch V2's evaluation computes it: `int(side / 14 + 0.5) * 14`.
pub fn nearest_patch_multiple(side: usize) -> usize {
    ((side + PATCH_SIZE / 2) / PATCH_SIZE).max(1) * PATCH_SIZE
}

/// `x [B, C, H, W]` resized bilinearly (align_corners=True) to the nearest patch
/// multiples; unchanged when H and W are multiples already.
pub fn fit_to_patches(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    resize_bilinear(
        x,
        nearest_patch_multiple(h),
        nearest_patch_multiple(w),
        true,
    )
}

/// UniMatch V2's head sizes per encoder (`configs/*.yaml` and `dpt.py`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DptLayout {
    /// Channels of the fused features (`features`).
    pub features: usize,
    /// Channels of the four projected encoder maps (`out_channels`).
    pub out_channels: [usize; 4],
    /// The encoder blocks read (`intermediate_layer_idx`).
    pub layers: [usize; 4],
}

impl DptLayout {
    pub fn for_backbone(backbone: Backbone) -> Result<Self> {
        Ok(match backbone {
            Backbone::Dinov2Small => Self {
                features: 64,
                out_channels: [48, 96, 192, 384],
                layers: [2, 5, 8, 11],
            },
            Backbone::Dinov2Base => Self {
                features: 128,
                out_channels: [96, 192, 384, 768],
                layers: [2, 5, 8, 11],
            },
            Backbone::Dinov2Large => Self {
                features: 256,
                out_channels: [256, 512, 1024, 1024],
                layers: [4, 11, 17, 23],
            },
            other => candle_core::bail!(
                "DPT needs a DINOv2 encoder (dinov2-s, dinov2-b, dinov2-l), got {other}"
            ),
        })
    }
}

/// `nn.ConvTranspose2d` with kernel = stride and no padding (DPT's 4x and 2x upsampling
/// of the first two maps): the output patches do not overlap, so it is one matrix product
/// and a reshuffle (`weight [in, out, k, k]`, `bias [out]`), differentiable through
/// candle's matmul on every device.
#[derive(Clone, Debug)]
struct PatchConvTranspose {
    weight: Tensor,
    bias: Tensor,
    k: usize,
}

impl PatchConvTranspose {
    fn new(channels: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        // PyTorch's default: kaiming_uniform(a=√5) with fan_in = weight.size(1)·k·k.
        let bound = 1.0 / ((channels * k * k) as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Self {
            weight: vb.get_with_hints((channels, channels, k, k), "weight", init)?,
            bias: vb.get_with_hints(channels, "bias", init)?,
            k,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let (b, cin, h, w) = x.dims4()?;
        let k = self.k;
        let weight = param_in(&self.weight, mode, x.dtype())?;
        let bias = param_in(&self.bias, mode, x.dtype())?;
        let cout = weight.dim(1)?;
        let y = x
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .reshape((b * h * w, cin))?
            .matmul(&weight.reshape((cin, cout * k * k))?)?
            .reshape((b, h, w, cout, k, k))?
            .permute((0, 3, 1, 4, 2, 5))?
            .contiguous()?
            .reshape((b, cout, h * k, w * k))?;
        y.broadcast_add(&bias.reshape((1, cout, 1, 1))?)
    }
}

/// The resampling after each projection: 4x and 2x up, unchanged, 2x down.
#[derive(Clone, Debug)]
enum Resize {
    Up(PatchConvTranspose),
    Same,
    Down(Conv2d),
}

impl Resize {
    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        match self {
            Resize::Up(t) => t.forward(x, mode),
            Resize::Same => Ok(x.clone()),
            Resize::Down(c) => c.forward(x, mode),
        }
    }
}

fn conv3x3(cin: usize, cout: usize) -> Conv2dConfig {
    Conv2dConfig::new(cin, cout, 3).padding(1)
}

/// `ResidualConvUnit` without batch norm: `x + conv2(relu(conv1(relu(x))))`.
#[derive(Clone, Debug)]
struct ResidualConvUnit {
    conv1: Conv2d,
    conv2: Conv2d,
}

impl ResidualConvUnit {
    fn new(features: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: Conv2d::new(conv3x3(features, features).with_bias(), vb.pp("conv1"))?,
            conv2: Conv2d::new(conv3x3(features, features).with_bias(), vb.pp("conv2"))?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let y = self.conv1.forward(&x.relu()?, mode)?;
        let y = self.conv2.forward(&y.relu()?, mode)?;
        y + x
    }
}

/// `FeatureFusionBlock`: the coarser path plus the refined skip, refined again,
/// resized bilinearly (align_corners=True) to the next map's size (2x for the last), and
/// a 1x1 convolution.
#[derive(Clone, Debug)]
struct FusionBlock {
    out_conv: Conv2d,
    /// Refines the skip input; present in every block's checkpoint, used by all but
    /// refinenet4 (which has no skip).
    res_conf_unit1: ResidualConvUnit,
    res_conf_unit2: ResidualConvUnit,
}

impl FusionBlock {
    fn new(features: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            out_conv: Conv2d::new(
                Conv2dConfig::new(features, features, 1).with_bias(),
                vb.pp("out_conv"),
            )?,
            res_conf_unit1: ResidualConvUnit::new(features, vb.pp("resConfUnit1"))?,
            res_conf_unit2: ResidualConvUnit::new(features, vb.pp("resConfUnit2"))?,
        })
    }

    fn forward(
        &self,
        path: &Tensor,
        skip: Option<&Tensor>,
        size: (usize, usize),
        mode: Mode,
    ) -> Result<Tensor> {
        let x = match skip {
            Some(s) => (path + self.res_conf_unit1.forward(s, mode)?)?,
            None => path.clone(),
        };
        let x = self.res_conf_unit2.forward(&x, mode)?;
        let x = resize_bilinear(&x, size.0, size.1, true)?;
        self.out_conv.forward(&x, mode)
    }
}

/// `conv3x3 (bias) → ReLU → conv1x1 (bias)`: UniMatch V2's `output_conv` and, with the
/// same shape, ReCo's representation head on the fused features.
#[derive(Clone, Debug)]
struct OutputHead {
    hidden: Conv2d,
    out: Conv2d,
}

impl OutputHead {
    fn new(features: usize, outputs: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            hidden: Conv2d::new(conv3x3(features, features).with_bias(), vb.pp(0))?,
            out: Conv2d::new(
                Conv2dConfig::new(features, outputs, 1).with_bias(),
                vb.pp(2),
            )?,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.out
            .forward(&self.hidden.forward(x, mode)?.relu()?, mode)
    }
}

#[derive(Clone, Debug)]
struct DptHead {
    projects: Vec<Conv2d>,
    resize: Vec<Resize>,
    layer_rn: Vec<Conv2d>,
    /// refinenet1 .. refinenet4.
    refine: Vec<FusionBlock>,
    classifier: OutputHead,
}

impl DptHead {
    fn new(
        layout: &DptLayout,
        embed_dim: usize,
        num_classes: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let oc = layout.out_channels;
        let f = layout.features;
        let projects = (0..4)
            .map(|i| {
                Conv2d::new(
                    Conv2dConfig::new(embed_dim, oc[i], 1).with_bias(),
                    vb.pp("projects").pp(i),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let rl = vb.pp("resize_layers");
        let resize = vec![
            Resize::Up(PatchConvTranspose::new(oc[0], 4, rl.pp(0))?),
            Resize::Up(PatchConvTranspose::new(oc[1], 2, rl.pp(1))?),
            Resize::Same,
            Resize::Down(Conv2d::new(
                conv3x3(oc[3], oc[3]).stride(2).with_bias(),
                rl.pp(3),
            )?),
        ];
        let scratch = vb.pp("scratch");
        let layer_rn = (0..4)
            .map(|i| Conv2d::new(conv3x3(oc[i], f), scratch.pp(format!("layer{}_rn", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        let refine = (1..=4)
            .map(|i| FusionBlock::new(f, scratch.pp(format!("refinenet{i}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            projects,
            resize,
            layer_rn,
            refine,
            classifier: OutputHead::new(f, num_classes, scratch.pp("output_conv"))?,
        })
    }

    /// The four encoder maps to the last fused features `[B, features, 8h, 8w]`.
    fn fuse(&self, maps: &[Tensor], mode: Mode) -> Result<Tensor> {
        let mut rn = Vec::with_capacity(4);
        for (i, map) in maps.iter().enumerate() {
            let x = self.projects[i].forward(map, mode)?;
            let x = self.resize[i].forward(&x, mode)?;
            rn.push(self.layer_rn[i].forward(&x, mode)?);
        }
        let size = |t: &Tensor| -> Result<(usize, usize)> {
            let (_, _, h, w) = t.dims4()?;
            Ok((h, w))
        };
        let (h1, w1) = size(&rn[0])?;
        let path4 = self.refine[3].forward(&rn[3], None, size(&rn[2])?, mode)?;
        let path3 = self.refine[2].forward(&path4, Some(&rn[2]), size(&rn[1])?, mode)?;
        let path2 = self.refine[1].forward(&path3, Some(&rn[1]), (h1, w1), mode)?;
        self.refine[0].forward(&path2, Some(&rn[0]), (2 * h1, 2 * w1), mode)
    }
}

/// DINOv2 + DPT with ReCo's two heads; forward gives `(prediction, representation)` at
/// 8x the patch grid.
#[derive(Clone, Debug)]
pub struct Dpt {
    cfg: DeepLabConfig,
    layout: DptLayout,
    backbone: Dinov2,
    head: DptHead,
    representation: OutputHead,
    sync_bn: Option<SyncBn>,
    precision: Precision,
}

impl Dpt {
    /// `cfg.backbone` must be a DINOv2 size; `cfg.output_stride` is the patch size (14).
    pub fn new(cfg: &DeepLabConfig, vb: VarBuilder) -> Result<Self> {
        if cfg.output_stride != DPT_OUTPUT_STRIDE {
            candle_core::bail!(
                "DPT on DINOv2 has output stride {DPT_OUTPUT_STRIDE} (its patch size), got {}",
                cfg.output_stride
            )
        }
        let layout = DptLayout::for_backbone(cfg.backbone)?;
        let vit = VitConfig::for_backbone(cfg.backbone)?;
        let backbone = Dinov2::new(&vit, vb.pp("backbone"))?;
        let head = DptHead::new(&layout, vit.embed_dim, cfg.num_classes, vb.pp("head"))?;
        let representation =
            OutputHead::new(layout.features, cfg.output_dim, vb.pp("representation"))?;
        Ok(Self {
            cfg: cfg.clone(),
            layout,
            backbone,
            head,
            representation,
            sync_bn: None,
            precision: Precision::F32,
        })
    }

    pub fn config(&self) -> &DeepLabConfig {
        &self.cfg
    }

    pub fn layout(&self) -> &DptLayout {
        &self.layout
    }

    /// Kept for the common network API; DPT has no batch norm, so it changes nothing.
    pub fn with_sync_bn(self, sync: Option<SyncBn>) -> Self {
        Self {
            sync_bn: sync,
            ..self
        }
    }

    pub fn sync_bn(&self) -> Option<&SyncBn> {
        self.sync_bn.as_ref()
    }

    /// Convolutions and matrix products in `precision`; layer norm and softmax in f32;
    /// the outputs in the input's type.
    pub fn with_precision(self, precision: Precision) -> Self {
        Self { precision, ..self }
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// `x [B, 3, H, W]`, H and W multiples of 14.
    pub fn forward_mode(&self, x: &Tensor, mode: Mode) -> Result<(Tensor, Tensor)> {
        // The encoder checks H and W (multiples of the patch size).
        let (_, c, _, _) = x.dims4()?;
        if c != 3 {
            candle_core::bail!("DPT expects images [B, 3, H, W], got {:?}", x.dims())
        }
        let mode = mode.with_compute(self.precision.compute_dtype());
        let out = x.dtype();
        let x = compute_input(x, &mode)?;
        let maps = self
            .backbone
            .intermediate_layers(&x, &self.layout.layers, mode)?;
        let fused = self.head.fuse(&maps, mode)?;
        let pred = self.head.classifier.forward(&fused, mode)?;
        let rep = self.representation.forward(&fused, mode)?;
        Ok((pred.to_dtype(out)?, rep.to_dtype(out)?))
    }
}
