//! Batch transforms of the unlabelled branch (the original's `batch_transform` and
//! `generate_unsup_data`), on tensors:
//!
//! 1. per image: random rescale (bilinear image, nearest pseudo-labels and confidences),
//!    pad (reflect image, ignore labels, zero confidence), random crop;
//! 2. mixing across the batch: ClassMix, CutMix or CutOut (or none);
//! 3. per image: colour jitter (p 0.8), Gaussian blur (p 0.5), flip (p 0.5; labels and
//!    confidences flipped too).
//!
//! Images come in and go out ImageNet-normalised (`[B,3,H,W]` f32, as the loader makes
//! them); internally they are de-normalised to [0, 1]. CutOut fills its box with the
//! ImageNet mean colour, i.e. 0 in normalised space, exactly as the original (which
//! multiplies the normalised tensor by the mask). All randomness comes from `seed`
//! (candle's CPU RNG cannot be seeded).

use candle_core::{DType, Device, Tensor};
use image::GrayImage;
use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::augment::{
    resize_label, resize_nearest_f32, resize_planar_rgb, scaled, uniform, AugConfig, Photometric,
    IMAGENET_MEAN, IMAGENET_STD,
};
use crate::color::{hflip, reflect};
use crate::error::{DataError, Result};
use crate::kind::{DatasetKind, IGNORE};
use crate::rng::rng_for;

/// The mixing strategy of the unlabelled branch (`--apply_aug` of the original).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixMode {
    /// Half of each image's pseudo-classes keep image i; the rest comes from image i+1.
    ClassMix,
    /// A random box of half the area comes from image i+1.
    CutMix,
    /// A random box of half the area is blanked; its labels become ignore.
    CutOut,
    /// No mixing.
    None,
}

impl std::str::FromStr for MixMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "classmix" => Ok(MixMode::ClassMix),
            "cutmix" => Ok(MixMode::CutMix),
            "cutout" => Ok(MixMode::CutOut),
            "none" => Ok(MixMode::None),
            _ => Err(format!(
                "unknown mix mode `{s}`: expected classmix, cutmix, cutout or none"
            )),
        }
    }
}

/// Settings of [`unsup_transform`].
#[derive(Clone, Debug, PartialEq)]
pub struct UnsupAugConfig {
    /// Output `(height, width)` of step 1.
    pub crop_size: (usize, usize),
    /// Rescale range of step 1.
    pub scale_range: (f32, f32),
    pub mix: MixMode,
    /// Photometric settings of step 3 (its crop/scale fields are not used).
    pub photometric: AugConfig,
}

impl UnsupAugConfig {
    /// The original's settings for `kind`: its crop and scale range, then `mix`.
    pub fn new(kind: DatasetKind, mix: MixMode) -> Self {
        let aug = AugConfig::labelled(kind);
        Self {
            crop_size: aug.crop_size,
            scale_range: aug.scale_range,
            mix,
            photometric: aug,
        }
    }
}

/// Output of [`unsup_transform`], on the device of the inputs.
#[derive(Debug, Clone)]
pub struct UnsupBatch {
    /// `[B,3,H,W]` f32, normalised.
    pub images: Tensor,
    /// `[B,H,W]` i64 pseudo-labels, -1 = ignore.
    pub labels: Tensor,
    /// `[B,H,W]` f32 confidences (0 where padded or cut out).
    pub confidence: Tensor,
}

/// A batch on the host: images planar `[B,3,H,W]` in [0, 1], labels `[B,H,W]` u8 with
/// 255 = ignore, confidences `[B,H,W]`.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    pub b: usize,
    pub h: usize,
    pub w: usize,
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub confidence: Vec<f32>,
}

impl HostBatch {
    /// Copies tensors to the host, de-normalising the images. Labels must be -1 or in
    /// 0..=254 (any integer dtype); confidences any float dtype.
    pub fn from_tensors(images: &Tensor, labels: &Tensor, confidence: &Tensor) -> Result<Self> {
        let (b, c, h, w) = images.dims4()?;
        if c != 3 || labels.dims() != [b, h, w] || confidence.dims() != [b, h, w] {
            return Err(DataError::Config(format!(
                "unsup_transform expects images [B,3,H,W], labels and confidences [B,H,W]; got {:?}, {:?}, {:?}",
                images.dims(),
                labels.dims(),
                confidence.dims()
            )));
        }
        let mut img = images
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        reco_util::ops_path::record_host_copy();
        for (k, chunk) in img.chunks_mut(h * w).enumerate() {
            let (m, s) = (IMAGENET_MEAN[k % 3], IMAGENET_STD[k % 3]);
            chunk.iter_mut().for_each(|v| *v = *v * s + m);
        }
        let lab = labels
            .to_device(&Device::Cpu)?
            .to_dtype(DType::I64)?
            .flatten_all()?
            .to_vec1::<i64>()?;
        reco_util::ops_path::record_host_copy();
        let labels = lab
            .iter()
            .map(|&v| match v {
                -1 => Ok(IGNORE),
                0..=254 => Ok(v as u8),
                _ => Err(DataError::Config(format!(
                    "pseudo-label {v} out of range (expected -1 or 0..=254)"
                ))),
            })
            .collect::<Result<Vec<u8>>>()?;
        let confidence = confidence
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        reco_util::ops_path::record_host_copy();
        Ok(Self {
            b,
            h,
            w,
            images: img,
            labels,
            confidence,
        })
    }

    /// Normalises and uploads to `device`.
    pub fn to_tensors(&self, device: &Device) -> Result<UnsupBatch> {
        let plane = self.h * self.w;
        let mut img = self.images.clone();
        for (k, chunk) in img.chunks_mut(plane).enumerate() {
            let (m, inv) = (IMAGENET_MEAN[k % 3], 1.0 / IMAGENET_STD[k % 3]);
            chunk.iter_mut().for_each(|v| *v = (*v - m) * inv);
        }
        let lab: Vec<i64> = self
            .labels
            .iter()
            .map(|&v| if v == IGNORE { -1 } else { v as i64 })
            .collect();
        let (b, h, w) = (self.b, self.h, self.w);
        Ok(UnsupBatch {
            images: Tensor::from_vec(img, (b, 3, h, w), device)?,
            labels: Tensor::from_vec(lab, (b, h, w), device)?,
            confidence: Tensor::from_vec(self.confidence.clone(), (b, h, w), device)?,
        })
    }

    fn image(&self, i: usize) -> &[f32] {
        &self.images[i * 3 * self.h * self.w..(i + 1) * 3 * self.h * self.w]
    }
    fn label(&self, i: usize) -> &[u8] {
        &self.labels[i * self.h * self.w..(i + 1) * self.h * self.w]
    }
    fn conf(&self, i: usize) -> &[f32] {
        &self.confidence[i * self.h * self.w..(i + 1) * self.h * self.w]
    }
}

// Stream tags of the three steps.
const TAG_CROP: u64 = 0xC409;
const TAG_MIX: u64 = 0x41C5;
const TAG_PHOTO: u64 = 0x9407;

/// Steps 1-3 on tensors; see the module docs. Same `seed`, same output.
pub fn unsup_transform(
    images: &Tensor,
    pseudo_labels: &Tensor,
    confidence: &Tensor,
    cfg: &UnsupAugConfig,
    seed: u64,
) -> Result<UnsupBatch> {
    cfg.photometric.validate()?;
    let device = images.device().clone();
    let host = HostBatch::from_tensors(images, pseudo_labels, confidence)?;
    let host = rescale_crop(&host, cfg.crop_size, cfg.scale_range, seed)?;
    let mut host = mix(&host, cfg.mix, seed);
    photometric(&mut host, &cfg.photometric, seed);
    host.to_tensors(&device)
}

/// Step 1: per image, rescale by a random factor in `scale_range`, pad right/bottom to
/// `crop` (reflect / ignore / 0) and crop at a random offset.
pub fn rescale_crop(
    x: &HostBatch,
    crop: (usize, usize),
    scale_range: (f32, f32),
    seed: u64,
) -> Result<HostBatch> {
    let (ch, cw) = crop;
    if ch == 0 || cw == 0 || scale_range.0 <= 0.0 || scale_range.0 > scale_range.1 {
        return Err(DataError::Config(format!(
            "invalid crop {ch}x{cw} or scale range {scale_range:?}"
        )));
    }
    // Images are independent (each has its own RNG stream): do them in parallel.
    let parts: Vec<(Vec<f32>, Vec<u8>, Vec<f32>)> = (0..x.b)
        .into_par_iter()
        .map(|i| {
            let mut rng = rng_for(&[seed, TAG_CROP, i as u64]);
            let s = uniform(&mut rng, scale_range);
            let (nh, nw) = scaled(x.h, x.w, s);
            let (img, lab, conf) = if (nh, nw) != (x.h, x.w) {
                let gray = GrayImage::from_raw(x.w as u32, x.h as u32, x.label(i).to_vec())
                    .expect("label buffer matches h*w");
                (
                    resize_planar_rgb(x.image(i), x.h, x.w, nh, nw),
                    resize_label(&gray, nh, nw).into_raw(),
                    resize_nearest_f32(x.conf(i), x.h, x.w, nh, nw),
                )
            } else {
                (x.image(i).to_vec(), x.label(i).to_vec(), x.conf(i).to_vec())
            };
            let top = rng.gen_range(0..=nh.max(ch) - ch);
            let left = rng.gen_range(0..=nw.max(cw) - cw);
            let mut out_img = Vec::with_capacity(3 * ch * cw);
            let cols: Vec<usize> = (0..cw)
                .map(|xx| reflect((left + xx) as isize, nw))
                .collect();
            for c in 0..3 {
                let src = &img[c * nh * nw..(c + 1) * nh * nw];
                for y in 0..ch {
                    let row = &src[reflect((top + y) as isize, nh) * nw..][..nw];
                    out_img.extend(cols.iter().map(|&sx| row[sx]));
                }
            }
            let mut out_lab = Vec::with_capacity(ch * cw);
            let mut out_conf = Vec::with_capacity(ch * cw);
            for y in 0..ch {
                for xx in 0..cw {
                    let (sy, sx) = (top + y, left + xx);
                    if sy < nh && sx < nw {
                        out_lab.push(lab[sy * nw + sx]);
                        out_conf.push(conf[sy * nw + sx]);
                    } else {
                        out_lab.push(IGNORE);
                        out_conf.push(0.0);
                    }
                }
            }
            (out_img, out_lab, out_conf)
        })
        .collect();
    let mut out = HostBatch {
        b: x.b,
        h: ch,
        w: cw,
        images: Vec::with_capacity(x.b * 3 * ch * cw),
        labels: Vec::with_capacity(x.b * ch * cw),
        confidence: Vec::with_capacity(x.b * ch * cw),
    };
    for (img, lab, conf) in parts {
        out.images.extend(img);
        out.labels.extend(lab);
        out.confidence.extend(conf);
    }
    Ok(out)
}

/// A box of about half the image, as the original's `generate_cutout_mask(ratio=2)`:
/// returns `(y0, y1, x0, x1)` (exclusive ends).
pub fn cutout_box(h: usize, w: usize, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let area = (h * w) as f64 / 2.0;
    let lo = w / 2 + 1;
    let bw = if lo < w { rng.gen_range(lo..w) } else { w };
    let bh = ((area / bw as f64).round() as usize).clamp(1, h);
    let x0 = rng.gen_range(0..=w - bw);
    let y0 = rng.gen_range(0..=h - bh);
    (y0, y0 + bh, x0, x0 + bw)
}

/// Step 2: the mixing strategy. Mask 1 keeps image i, mask 0 takes image (i+1) mod B
/// (CutOut: blanks instead). Mixing reads the un-mixed batch.
pub fn mix(x: &HostBatch, mode: MixMode, seed: u64) -> HostBatch {
    let mut out = x.clone();
    let plane = x.h * x.w;
    for i in 0..x.b {
        let mut rng = rng_for(&[seed, TAG_MIX, i as u64]);
        let keep: Vec<bool> = match mode {
            MixMode::None => continue,
            MixMode::CutMix | MixMode::CutOut => {
                let (y0, y1, x0, x1) = cutout_box(x.h, x.w, &mut rng);
                (0..plane)
                    .map(|p| {
                        let (y, xx) = (p / x.w, p % x.w);
                        !(y >= y0 && y < y1 && xx >= x0 && xx < x1)
                    })
                    .collect()
            }
            MixMode::ClassMix => {
                // As `generate_class_mask`: the unique values of the pseudo-label map (the
                // ignore value included, as torch.unique would), half of them at random.
                let mut present = [false; 256];
                x.label(i).iter().for_each(|&v| present[v as usize] = true);
                let mut classes: Vec<u8> = (0..=255u8).filter(|&c| present[c as usize]).collect();
                classes.shuffle(&mut rng);
                let mut chosen = [false; 256];
                for &c in &classes[..classes.len() / 2] {
                    chosen[c as usize] = true;
                }
                x.label(i).iter().map(|&v| chosen[v as usize]).collect()
            }
        };
        let j = (i + 1) % x.b;
        // Plane by plane, so each loop is a simple masked copy.
        fn blend<T: Copy>(dst: &mut [T], keep: &[bool], fill: impl Fn(usize) -> T) {
            for (p, (d, &k)) in dst.iter_mut().zip(keep).enumerate() {
                if !k {
                    *d = fill(p);
                }
            }
        }
        let lab = &mut out.labels[i * plane..(i + 1) * plane];
        let conf = &mut out.confidence[i * plane..(i + 1) * plane];
        if mode == MixMode::CutOut {
            for (c, &mean) in IMAGENET_MEAN.iter().enumerate() {
                let img = &mut out.images[(i * 3 + c) * plane..(i * 3 + c + 1) * plane];
                blend(img, &keep, |_| mean);
            }
            blend(lab, &keep, |_| IGNORE);
            blend(conf, &keep, |_| 0.0);
        } else {
            for c in 0..3 {
                let src = &x.images[(j * 3 + c) * plane..(j * 3 + c + 1) * plane];
                let img = &mut out.images[(i * 3 + c) * plane..(i * 3 + c + 1) * plane];
                blend(img, &keep, |p| src[p]);
            }
            blend(lab, &keep, |p| x.labels[j * plane + p]);
            blend(conf, &keep, |p| x.confidence[j * plane + p]);
        }
    }
    out
}

/// Step 3: jitter, blur, flip per image (flip also applied to labels and confidences).
pub fn photometric(x: &mut HostBatch, cfg: &AugConfig, seed: u64) {
    let (h, w) = (x.h, x.w);
    let plane = h * w;
    x.images
        .par_chunks_mut(3 * plane)
        .zip(x.labels.par_chunks_mut(plane))
        .zip(x.confidence.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(i, ((img, lab), conf))| {
            let mut rng = rng_for(&[seed, TAG_PHOTO, i as u64]);
            let p = Photometric::draw(cfg, &mut rng);
            p.apply(img, h, w);
            if p.flip {
                hflip(lab, w);
                hflip(conf, w);
            }
        });
}
