//! One entry point for inference: [`Segmenter`] builds the checkpoint's network (from its
//! metadata, see [`crate::meta`]) with batch norm folded into the convolutions, and
//! [`Segmenter::predict_image`] / [`Segmenter::predict_tensor`] turn RGB images into
//! class maps and probabilities at the input size. Normalisation, the network's minimum
//! size, sliding windows for large photos, a maximum working size and test-time
//! augmentation (scales, horizontal flip) are options of [`PredictOptions`].
//!
//! Whole-image prediction is the trainer's evaluation: logits upsampled to the input
//! size (bilinear, `align_corners=True` as the original), softmax, argmax. With several
//! passes (tiles, scales, flips) the softmax probabilities of the passes are averaged
//! (MMSegmentation's `slide` mode and UniMatch average the same way; MMSegmentation
//! averages logits over tiles, which this does not).

mod folded;
mod maps;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

pub use folded::FoldedNetwork;
use maps::{finish, Planes};

use crate::deeplab::{DeepLabConfig, MIN_INPUT_SIZE};
use crate::meta::{resolve_meta, CheckpointMeta, MetaError, MetaFallback};
use crate::network::{Network, NetworkKind};

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error(transparent)]
    Meta(#[from] Box<MetaError>),
    #[error(transparent)]
    Checkpoint(#[from] Box<crate::checkpoint::CheckpointError>),
    #[error("cannot build the {network} network of {path}: {source}")]
    Build {
        network: String,
        path: PathBuf,
        source: Box<candle_core::Error>,
    },
    #[error("image of {width}x{height} pixels is too small: the network needs at least {MIN_INPUT_SIZE} pixels on each side (upscale or pad it)")]
    TooSmall { width: usize, height: usize },
    #[error("invalid image: {0}")]
    BadImage(String),
    #[error("invalid prediction options: {0}")]
    BadOptions(String),
    #[error("output stride {0} is not one of 8, 16 or 32")]
    BadOutputStride(usize),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, SegmentError>;

impl From<MetaError> for SegmentError {
    fn from(e: MetaError) -> Self {
        SegmentError::Meta(Box::new(e))
    }
}

impl From<crate::checkpoint::CheckpointError> for SegmentError {
    fn from(e: crate::checkpoint::CheckpointError) -> Self {
        SegmentError::Checkpoint(Box::new(e))
    }
}

fn checked_stride(network: NetworkKind, output_stride: usize) -> Result<usize> {
    if network.accepts_output_stride(output_stride) {
        Ok(output_stride)
    } else {
        Err(SegmentError::BadOutputStride(output_stride))
    }
}

/// The network a [`Segmenter`] runs: the DeepLabs with batch norm folded, DPT (which has
/// no batch norm) as it is.
// One per Segmenter: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum InferenceNet {
    Folded(FoldedNetwork),
    Plain(Network),
}

impl InferenceNet {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            InferenceNet::Folded(n) => n.forward(x),
            // The logits of the input resized to patch multiples cover the whole input,
            // so callers resize them to the input's size as the DeepLabs' logits.
            InferenceNet::Plain(n) => Ok(n.forward_no_grad(&n.fit_input(x)?, false)?.0),
        }
    }
}

/// Sliding-window geometry in pixels of the (possibly downscaled) image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Side of the square tiles (clipped to the image where it is smaller).
    pub tile: usize,
    /// Step between tiles; `< tile` makes them overlap.
    pub stride: usize,
}

impl SlidingWindow {
    /// Tiles of `tile` pixels overlapping by a third (stride = 2/3 tile, as
    /// MMSegmentation's 512/341 configs).
    pub fn new(tile: usize) -> Self {
        Self {
            tile,
            stride: (tile * 2 / 3).max(1),
        }
    }

    fn validate(&self) -> Result<()> {
        if self.tile < MIN_INPUT_SIZE {
            return Err(SegmentError::BadOptions(format!(
                "tile size {} is below the network's minimum input of {MIN_INPUT_SIZE} pixels",
                self.tile
            )));
        }
        if self.stride == 0 || self.stride > self.tile {
            return Err(SegmentError::BadOptions(format!(
                "tile stride {} must be between 1 and the tile size {} (a larger stride leaves pixels unpredicted)",
                self.stride, self.tile
            )));
        }
        Ok(())
    }

    /// Top-left corners and sizes of the tiles covering `h`x`w`, as MMSegmentation's
    /// `slide_inference`: a regular grid whose last row/column is shifted back to end at
    /// the border.
    pub fn tiles(&self, h: usize, w: usize) -> Vec<(usize, usize, usize, usize)> {
        let grid = |n: usize| n.saturating_sub(self.tile).div_ceil(self.stride) + 1;
        let mut out = Vec::new();
        for i in 0..grid(h) {
            for j in 0..grid(w) {
                let y2 = (i * self.stride + self.tile).min(h);
                let x2 = (j * self.stride + self.tile).min(w);
                let y1 = y2.saturating_sub(self.tile);
                let x1 = x2.saturating_sub(self.tile);
                out.push((y1, x1, y2 - y1, x2 - x1));
            }
        }
        out
    }
}

/// How [`Segmenter`] predicts. The default is the trainer's evaluation: the whole image
/// in one pass at its own size, probabilities returned.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictOptions {
    /// `None`: the whole image at once; `Some`: overlapping tiles (bounded memory).
    pub sliding_window: Option<SlidingWindow>,
    /// Downscale images whose long side exceeds this (bilinear) and upsample the result
    /// back; `None`: never.
    pub max_size: Option<usize>,
    /// Test-time scales (1.0 = working size); probabilities averaged over them.
    pub scales: Vec<f64>,
    /// Also predict the mirrored image and average (test-time augmentation).
    pub flip: bool,
    /// Return the per-class probabilities (`[B, C, H, W]`, the largest output); class
    /// maps and confidences are always returned.
    pub probabilities: bool,
}

impl Default for PredictOptions {
    fn default() -> Self {
        Self {
            sliding_window: None,
            max_size: None,
            scales: vec![1.0],
            flip: false,
            probabilities: true,
        }
    }
}

impl PredictOptions {
    fn validate(&self) -> Result<()> {
        if let Some(sw) = &self.sliding_window {
            sw.validate()?;
        }
        if let Some(m) = self.max_size {
            if m < MIN_INPUT_SIZE {
                return Err(SegmentError::BadOptions(format!(
                    "max size {m} is below the network's minimum input of {MIN_INPUT_SIZE} pixels"
                )));
            }
        }
        if self.scales.is_empty() || self.scales.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
            return Err(SegmentError::BadOptions(format!(
                "scales must be a non-empty list of positive numbers, got {:?}",
                self.scales
            )));
        }
        Ok(())
    }

    fn passes(&self) -> usize {
        self.scales.len() * if self.flip { 2 } else { 1 }
    }
}

/// An 8-bit RGB image, rows of `width` pixels of 3 bytes, without padding.
#[derive(Clone, Copy, Debug)]
pub struct RgbImage<'a> {
    pub data: &'a [u8],
    pub width: usize,
    pub height: usize,
}

/// Outputs at the input size, on the CPU.
#[derive(Clone, Debug)]
pub struct Prediction {
    /// `[B, H, W]` u32 class indices.
    pub classes: Tensor,
    /// `[B, H, W]` f32 probability of the predicted class.
    pub confidence: Tensor,
    /// `[B, C, H, W]` f32 class probabilities, when requested.
    pub probabilities: Option<Tensor>,
}

/// A checkpoint ready for inference; see the module documentation.
#[derive(Clone, Debug)]
pub struct Segmenter {
    net: InferenceNet,
    meta: CheckpointMeta,
    /// The output stride the network runs at (the trained one unless asked otherwise).
    output_stride: usize,
    device: Device,
}

impl Segmenter {
    /// Loads a checkpoint (this project's safetensors with or without metadata, the
    /// original's state_dict as safetensors or `.pth`) strictly, with the project's
    /// loader; `fallback` describes files without metadata.
    pub fn load(path: &Path, device: &Device, fallback: &MetaFallback) -> Result<Self> {
        Self::load_at(path, device, fallback, None)
    }

    /// [`Segmenter::load`], run at `output_stride` instead of the trained one (`None`: the
    /// trained one), as DeepLab evaluates at 8 what it trained at 16: the weights are the
    /// same, only the dilations of layer3/layer4 and ASPP change. [`Segmenter::meta`]
    /// still says how the network was trained; [`Segmenter::output_stride`] how it runs.
    pub fn load_at(
        path: &Path,
        device: &Device,
        fallback: &MetaFallback,
        output_stride: Option<usize>,
    ) -> Result<Self> {
        let meta = resolve_meta(path, fallback)?;
        let output_stride =
            checked_stride(meta.network, output_stride.unwrap_or(meta.output_stride))?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        Network::new(meta.network, &meta.config(), vb).map_err(|source| SegmentError::Build {
            network: meta.network.to_string(),
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        crate::checkpoint::load_checkpoint(&varmap, path)?;
        Self::from_varmap_on(&varmap, meta, output_stride, device)
    }

    /// From weights a caller already holds in a candle `VarBuilder` under the original
    /// names, e.g. `VarBuilder::from_mmaped_safetensors` (how candle apps load weights).
    pub fn from_varbuilder(vb: &VarBuilder, meta: CheckpointMeta) -> Result<Self> {
        let output_stride = meta.output_stride;
        Self::from_varbuilder_at(vb, meta, output_stride)
    }

    /// [`Segmenter::from_varbuilder`] run at another output stride than the trained one
    /// (see [`Segmenter::load_at`]).
    pub fn from_varbuilder_at(
        vb: &VarBuilder,
        meta: CheckpointMeta,
        output_stride: usize,
    ) -> Result<Self> {
        let output_stride = checked_stride(meta.network, output_stride)?;
        let device = vb.device().clone();
        let cfg = DeepLabConfig {
            output_stride,
            ..meta.config()
        };
        let net = if meta.network.takes_vit() {
            InferenceNet::Plain(Network::new(meta.network, &cfg, vb.clone())?)
        } else {
            InferenceNet::Folded(FoldedNetwork::load(meta.network, &cfg, vb, DType::F32)?)
        };
        Ok(Self {
            net,
            meta,
            output_stride,
            device,
        })
    }

    /// From a model's live VarMap (e.g. evaluation during training): a folded snapshot of
    /// its current weights, on the VarMap's device.
    pub fn from_varmap(varmap: &VarMap, meta: CheckpointMeta) -> Result<Self> {
        let device = crate::vars::named_vars(varmap)?
            .values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu);
        let output_stride = meta.output_stride;
        Self::from_varmap_on(varmap, meta, output_stride, &device)
    }

    fn from_varmap_on(
        varmap: &VarMap,
        meta: CheckpointMeta,
        output_stride: usize,
        device: &Device,
    ) -> Result<Self> {
        let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
        Self::from_varbuilder_at(&vb, meta, output_stride)
    }

    /// How the network was trained (and what it predicts).
    pub fn meta(&self) -> &CheckpointMeta {
        &self.meta
    }

    /// The output stride the network runs at: [`CheckpointMeta::output_stride`] unless
    /// another was asked for.
    pub fn output_stride(&self) -> usize {
        self.output_stride
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The network's class logits for a normalised `[B, 3, H, W]` input, at the
    /// prediction resolution (equal to the unfolded network's eval prediction). DPT
    /// resizes an input that is not a multiple of 14 to the nearest multiples first
    /// ([`Network::fit_input`]); its logits still cover the whole input.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 3 {
            return Err(SegmentError::BadImage(format!(
                "expected 3 channels, got shape {:?}",
                x.dims()
            )));
        }
        if h < MIN_INPUT_SIZE || w < MIN_INPUT_SIZE {
            return Err(SegmentError::TooSmall {
                width: w,
                height: h,
            });
        }
        Ok(self
            .net
            .logits(&x.to_device(&self.device)?.to_dtype(DType::F32)?)?)
    }

    /// Predicts one 8-bit RGB image.
    pub fn predict_image(&self, image: RgbImage<'_>, opts: &PredictOptions) -> Result<Prediction> {
        let (w, h) = (image.width, image.height);
        if image.data.len() != w * h * 3 {
            return Err(SegmentError::BadImage(format!(
                "{w}x{h} RGB needs {} bytes, got {}",
                w * h * 3,
                image.data.len()
            )));
        }
        // HWC bytes to CHW values in 0..1.
        let mut chw = vec![0f32; 3 * h * w];
        for (p, px) in image.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * h * w + p] = px[c] as f32 / 255.0;
            }
        }
        self.predict_planes(Planes::new(chw, 3, h, w), 1, opts)
    }

    /// Predicts a batch `[B, 3, H, W]` of RGB values in 0..1 (any device and float type).
    pub fn predict_tensor(&self, images: &Tensor, opts: &PredictOptions) -> Result<Prediction> {
        let (b, c, h, w) = images.dims4()?;
        if c != 3 {
            return Err(SegmentError::BadImage(format!(
                "expected [B, 3, H, W] RGB in 0..1, got shape {:?}",
                images.dims()
            )));
        }
        let data = images
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        self.predict_planes(Planes::new(data, b * 3, h, w), b, opts)
    }

    /// `images`: `[B·3, H, W]` RGB in 0..1.
    fn predict_planes(
        &self,
        mut images: Planes,
        batch: usize,
        opts: &PredictOptions,
    ) -> Result<Prediction> {
        opts.validate()?;
        let (h, w) = (images.h, images.w);
        if h < MIN_INPUT_SIZE || w < MIN_INPUT_SIZE {
            return Err(SegmentError::TooSmall {
                width: w,
                height: h,
            });
        }
        self.normalize(&mut images);
        // The working size: the long side capped at max_size.
        let images = match opts.max_size {
            Some(m) if h.max(w) > m => {
                let r = m as f64 / h.max(w) as f64;
                let (wh, ww) = (
                    ((h as f64 * r).round() as usize).max(MIN_INPUT_SIZE),
                    ((w as f64 * r).round() as usize).max(MIN_INPUT_SIZE),
                );
                images.resize(wh, ww, false)
            }
            _ => images,
        };
        let classes = self.meta.num_classes;
        let single = opts.passes() == 1 && opts.sliding_window.is_none() && opts.scales[0] == 1.0;
        let done = if single {
            // One pass: logits straight from the network's resolution to the input size.
            let logits = self.logits_planes(&images, batch)?;
            finish(&logits, classes, h, w, true, true, opts.probabilities)
        } else {
            let mut sum: Option<Planes> = None;
            for &scale in &opts.scales {
                for flip in [false, true]
                    .into_iter()
                    .take(if opts.flip { 2 } else { 1 })
                {
                    let probs = self.probabilities_at_scale(&images, batch, scale, flip, opts)?;
                    match sum.as_mut() {
                        None => sum = Some(probs),
                        Some(s) => s.add_region(&probs, 0, 0),
                    }
                }
            }
            let mut sum = sum.ok_or_else(|| SegmentError::BadOptions("no scales".into()))?;
            if opts.passes() > 1 {
                sum.scale(1.0 / opts.passes() as f32);
            }
            // Probabilities (a convex combination survives bilinear resizing).
            finish(&sum, classes, h, w, false, false, opts.probabilities)
        };
        let probabilities = match done.probabilities {
            Some(p) => Some(Tensor::from_vec(p, (batch, classes, h, w), &Device::Cpu)?),
            None => None,
        };
        Ok(Prediction {
            classes: Tensor::from_vec(done.classes, (batch, h, w), &Device::Cpu)?,
            confidence: Tensor::from_vec(done.confidence, (batch, h, w), &Device::Cpu)?,
            probabilities,
        })
    }

    fn normalize(&self, images: &mut Planes) {
        let hw = images.h * images.w;
        let n = self.meta.normalization;
        for (i, plane) in images.data.chunks_mut(hw).enumerate() {
            let (m, s) = (n.mean[i % 3], n.std[i % 3]);
            plane.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
    }

    /// Network logits of normalised `[B·3, h, w]` images, as `[B·C, h', w']` planes.
    fn logits_planes(&self, images: &Planes, batch: usize) -> Result<Planes> {
        let x = Tensor::from_slice(&images.data, (batch, 3, images.h, images.w), &self.device)?;
        let logits = self.logits(&x)?;
        let (_, c, lh, lw) = logits.dims4()?;
        let data = logits
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Planes::new(data, batch * c, lh, lw))
    }

    /// Softmax probabilities at `images`' size for one (scale, flip) pass.
    fn probabilities_at_scale(
        &self,
        images: &Planes,
        batch: usize,
        scale: f64,
        flip: bool,
        opts: &PredictOptions,
    ) -> Result<Planes> {
        let (h, w) = (images.h, images.w);
        let (sh, sw) = (
            ((h as f64 * scale).round() as usize).max(MIN_INPUT_SIZE),
            ((w as f64 * scale).round() as usize).max(MIN_INPUT_SIZE),
        );
        let mut scaled = images.resize(sh, sw, false);
        if flip {
            scaled.flip_horizontal();
        }
        let mut probs = match &opts.sliding_window {
            None => self.probabilities_whole(&scaled, batch)?,
            Some(sw) => self.probabilities_sliding(&scaled, batch, sw)?,
        };
        if flip {
            probs.flip_horizontal();
        }
        Ok(probs.into_resized(h, w, false))
    }

    fn probabilities_whole(&self, images: &Planes, batch: usize) -> Result<Planes> {
        let mut p = self
            .logits_planes(images, batch)?
            .into_resized(images.h, images.w, true);
        p.softmax(self.meta.num_classes);
        Ok(p)
    }

    /// Tiles of `window` over `images`, their probabilities averaged where they overlap.
    fn probabilities_sliding(
        &self,
        images: &Planes,
        batch: usize,
        window: &SlidingWindow,
    ) -> Result<Planes> {
        let classes = self.meta.num_classes;
        let (h, w) = (images.h, images.w);
        let mut sum = Planes::zeros(batch * classes, h, w);
        let mut count = vec![0u16; h * w];
        // DPT's tiles are patch multiples, rounded up (512 becomes 518), so that each
        // runs on the patch grid without resizing.
        let window = match self.meta.network.takes_vit() {
            true => SlidingWindow {
                tile: window.tile.div_ceil(crate::vit::PATCH_SIZE) * crate::vit::PATCH_SIZE,
                stride: window.stride,
            },
            false => *window,
        };
        for (y0, x0, th, tw) in window.tiles(h, w) {
            let mut tile = Planes::zeros(batch * 3, th, tw);
            for (dst, src) in tile.data.chunks_mut(th * tw).zip(images.data.chunks(h * w)) {
                for y in 0..th {
                    dst[y * tw..(y + 1) * tw]
                        .copy_from_slice(&src[(y0 + y) * w + x0..(y0 + y) * w + x0 + tw]);
                }
            }
            let probs = self.probabilities_whole(&tile, batch)?;
            sum.add_region(&probs, y0, x0);
            for y in y0..y0 + th {
                count[y * w + x0..y * w + x0 + tw]
                    .iter_mut()
                    .for_each(|c| *c += 1);
            }
        }
        let hw = h * w;
        for plane in sum.data.chunks_mut(hw) {
            for (v, &c) in plane.iter_mut().zip(&count) {
                *v /= c.max(1) as f32;
            }
        }
        Ok(sum)
    }
}
