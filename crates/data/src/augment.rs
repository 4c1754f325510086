//! Per-image augmentation of the original code (`build_data.transform`): random rescale,
//! pad (reflect for images, ignore for labels), random crop, colour jitter, Gaussian blur,
//! horizontal flip, ImageNet normalisation; and the evaluation transform (pad to the
//! evaluation size). Works on flat CPU arrays; writes straight into a batch buffer.

use image::{GrayImage, Rgb, RgbImage};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::color::{color_jitter, gaussian_blur, hflip, reflect, JitterParams};
use crate::error::{DataError, Result};
use crate::kind::{DatasetKind, IGNORE};

/// ImageNet channel means (RGB), applied after scaling to [0, 1].
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// What the training transform does. Defaults are the original's.
#[derive(Clone, Debug, PartialEq)]
pub struct AugConfig {
    /// Output crop `(height, width)`.
    pub crop_size: (usize, usize),
    /// Random rescale factor range (uniform); `(1, 1)` disables rescaling.
    pub scale_range: (f32, f32),
    /// Colour jitter, blur and flip on/off (the original's `augmentation` flag).
    pub photometric: bool,
    /// Probability of colour jitter (0.8).
    pub jitter_p: f32,
    pub brightness: (f32, f32),
    pub contrast: (f32, f32),
    pub saturation: (f32, f32),
    /// Hue shift range, fraction of a turn (±0.25).
    pub hue: (f32, f32),
    /// Probability of Gaussian blur (0.5).
    pub blur_p: f32,
    pub blur_sigma: (f32, f32),
    /// Probability of a horizontal flip (0.5).
    pub flip_p: f32,
}

impl AugConfig {
    /// The labelled-branch transform of `kind`: its crop and scale range, photometric on.
    pub fn labelled(kind: DatasetKind) -> Self {
        let d = kind.defaults();
        Self {
            crop_size: d.crop_size,
            scale_range: d.scale_range,
            photometric: true,
            jitter_p: 0.8,
            brightness: (0.75, 1.25),
            contrast: (0.75, 1.25),
            saturation: (0.75, 1.25),
            hue: (-0.25, 0.25),
            blur_p: 0.5,
            blur_sigma: (0.15, 1.15),
            flip_p: 0.5,
        }
    }

    /// The unlabelled loader of the original: crop only (scale 1, no photometric); the
    /// rescale and photometric steps happen later on the batch ([`crate::mix`]).
    pub fn unlabelled(kind: DatasetKind) -> Self {
        Self {
            scale_range: (1.0, 1.0),
            photometric: false,
            ..Self::labelled(kind)
        }
    }

    pub fn validate(&self) -> Result<()> {
        let (h, w) = self.crop_size;
        let (lo, hi) = self.scale_range;
        if h == 0 || w == 0 {
            return Err(DataError::Config(format!(
                "crop size {h}x{w} must be positive"
            )));
        }
        if !(lo > 0.0 && lo <= hi && hi.is_finite()) {
            return Err(DataError::Config(format!(
                "scale range ({lo}, {hi}) must satisfy 0 < lo <= hi"
            )));
        }
        let (s0, s1) = self.blur_sigma;
        if !(s0 > 0.0 && s0 <= s1) {
            return Err(DataError::Config(format!(
                "blur sigma range ({s0}, {s1}) must satisfy 0 < lo <= hi"
            )));
        }
        for (name, (a, b)) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
            ("hue", self.hue),
        ] {
            if a > b {
                return Err(DataError::Config(format!(
                    "{name} range ({a}, {b}) is reversed"
                )));
            }
        }
        Ok(())
    }
}

/// Uniform draw in `[lo, hi]` (`lo` when the range is empty).
pub(crate) fn uniform(rng: &mut impl Rng, (lo, hi): (f32, f32)) -> f32 {
    if hi > lo {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

/// One draw of the photometric steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Photometric {
    pub jitter: Option<JitterParams>,
    pub blur_sigma: Option<f32>,
    pub flip: bool,
}

impl Photometric {
    /// Draws in the original's order: jitter (p 0.8, random op order), blur (p 0.5), flip.
    pub fn draw(cfg: &AugConfig, rng: &mut impl Rng) -> Self {
        let jitter = (rng.gen::<f32>() < cfg.jitter_p).then(|| {
            let mut order = [0, 1, 2, 3];
            order.shuffle(rng);
            JitterParams {
                order,
                brightness: uniform(rng, cfg.brightness),
                contrast: uniform(rng, cfg.contrast),
                saturation: uniform(rng, cfg.saturation),
                hue: uniform(rng, cfg.hue),
            }
        });
        let blur_sigma = (rng.gen::<f32>() < cfg.blur_p).then(|| uniform(rng, cfg.blur_sigma));
        let flip = rng.gen::<f32>() < cfg.flip_p;
        Self {
            jitter,
            blur_sigma,
            flip,
        }
    }

    /// Applies jitter and blur to a planar `[3, h, w]` image in [0, 1], then the flip (if
    /// drawn). Labels must be flipped by the caller with [`hflip`] when `self.flip`.
    pub fn apply(&self, img: &mut [f32], h: usize, w: usize) {
        if let Some(j) = &self.jitter {
            color_jitter(img, j);
        }
        if let Some(s) = self.blur_sigma {
            gaussian_blur(img, h, w, s);
        }
        if self.flip {
            hflip(img, w);
        }
    }
}

/// Size after rescaling by `s`, truncated like the original's `int(h * s)`.
pub(crate) fn scaled(h: usize, w: usize, s: f32) -> (usize, usize) {
    (
        ((h as f32 * s) as usize).max(1),
        ((w as f32 * s) as usize).max(1),
    )
}

/// Copies a `(ch, cw)` window at `(top, left)` of an interleaved RGB u8 image into planar
/// f32 in [0, 1], reflecting beyond the bottom/right edge (the original pads there).
fn crop_rgb_reflect(img: &RgbImage, top: usize, left: usize, ch: usize, cw: usize) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut out = vec![0f32; 3 * ch * cw];
    let plane = ch * cw;
    let cols: Vec<usize> = (0..cw).map(|x| reflect((left + x) as isize, w)).collect();
    for y in 0..ch {
        let sy = reflect((top + y) as isize, h);
        let row = &raw[sy * w * 3..(sy + 1) * w * 3];
        for (x, &sx) in cols.iter().enumerate() {
            let p = &row[sx * 3..sx * 3 + 3];
            let o = y * cw + x;
            out[o] = p[0] as f32 / 255.0;
            out[plane + o] = p[1] as f32 / 255.0;
            out[2 * plane + o] = p[2] as f32 / 255.0;
        }
    }
    out
}

/// Copies a window of a label map, filling outside with [`IGNORE`].
fn crop_label_const(label: &GrayImage, top: usize, left: usize, ch: usize, cw: usize) -> Vec<u8> {
    let (w, h) = (label.width() as usize, label.height() as usize);
    let raw = label.as_raw();
    let mut out = vec![IGNORE; ch * cw];
    for y in 0..ch {
        let sy = top + y;
        if sy >= h {
            break;
        }
        for x in 0..cw {
            let sx = left + x;
            if sx >= w {
                break;
            }
            out[y * cw + x] = raw[sy * w + sx];
        }
    }
    out
}

/// Writes a planar [0,1] image normalised into `img_out` and labels (255 -> -1) into
/// `lab_out`.
fn write_out(img: &[f32], label: &[u8], img_out: &mut [f32], lab_out: &mut [i64]) {
    let plane = label.len();
    for c in 0..3 {
        let (m, s) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
        for (o, v) in img_out[c * plane..(c + 1) * plane]
            .iter_mut()
            .zip(&img[c * plane..(c + 1) * plane])
        {
            *o = (v - m) / s;
        }
    }
    for (o, &l) in lab_out.iter_mut().zip(label) {
        *o = if l == IGNORE { -1 } else { l as i64 };
    }
}

pub use crate::resize::{resize_label, resize_rgb};

/// Bilinear resize of a planar `[3, h, w]` f32 image.
pub fn resize_planar_rgb(img: &[f32], h: usize, w: usize, nh: usize, nw: usize) -> Vec<f32> {
    img.chunks(h * w)
        .take(3)
        .flat_map(|plane| crate::resize::resize_plane(plane, h, w, nh, nw, true))
        .collect()
}

/// Nearest-neighbour resize of a single-channel f32 map.
pub fn resize_nearest_f32(map: &[f32], h: usize, w: usize, nh: usize, nw: usize) -> Vec<f32> {
    crate::resize::resize_plane(map, h, w, nh, nw, false)
}

/// The training transform of one sample. `img_out` receives `[3, ch, cw]` normalised
/// values, `lab_out` `[ch, cw]` class ids with -1 = ignore.
pub fn augment_sample(
    image: &RgbImage,
    label: &GrayImage,
    cfg: &AugConfig,
    rng: &mut impl Rng,
    img_out: &mut [f32],
    lab_out: &mut [i64],
) {
    let (h, w) = (image.height() as usize, image.width() as usize);
    let (ch, cw) = cfg.crop_size;
    let s = uniform(rng, cfg.scale_range);
    let (nh, nw) = scaled(h, w, s);
    let resized;
    let (image, label) = if (nh, nw) != (h, w) {
        resized = (resize_rgb(image, nh, nw), resize_label(label, nh, nw));
        (&resized.0, &resized.1)
    } else {
        (image, label)
    };
    // Pad right/bottom to the crop size, then crop at random: the offsets range over the
    // padded size, as `RandomCrop.get_params` on the padded image.
    let top = rng.gen_range(0..=nh.max(ch) - ch);
    let left = rng.gen_range(0..=nw.max(cw) - cw);
    let mut img = crop_rgb_reflect(image, top, left, ch, cw);
    let mut lab = crop_label_const(label, top, left, ch, cw);
    if cfg.photometric {
        let p = Photometric::draw(cfg, rng);
        p.apply(&mut img, ch, cw);
        if p.flip {
            hflip(&mut lab, cw);
        }
    }
    write_out(&img, &lab, img_out, lab_out);
}

/// The evaluation transform: no rescale; pad right/bottom to `eval_size` (reflect image,
/// ignore label). An image larger than `eval_size` is cropped at the top-left (the
/// original crops at random there; sizes the defaults fit never need it).
pub fn eval_sample(
    image: &RgbImage,
    label: &GrayImage,
    eval_size: (usize, usize),
    img_out: &mut [f32],
    lab_out: &mut [i64],
) {
    let (eh, ew) = eval_size;
    let img = crop_rgb_reflect(image, 0, 0, eh, ew);
    let lab = crop_label_const(label, 0, 0, eh, ew);
    write_out(&img, &lab, img_out, lab_out);
}

/// An image as a `[1, 3, H, W]` f32 ImageNet-normalised CPU tensor (for `predict`).
pub fn image_to_tensor(image: &RgbImage) -> Result<candle_core::Tensor> {
    let (h, w) = (image.height() as usize, image.width() as usize);
    let label = GrayImage::new(w as u32, h as u32);
    let mut img = vec![0f32; 3 * h * w];
    let mut lab = vec![0i64; h * w];
    eval_sample(image, &label, (h, w), &mut img, &mut lab);
    Ok(candle_core::Tensor::from_vec(
        img,
        (1, 3, h, w),
        &candle_core::Device::Cpu,
    )?)
}

/// Colours a class map (`classes[y * width + x]`) with `palette`; negative values and
/// classes outside the palette (ignore) are white.
pub fn colorize(
    classes: &[i64],
    width: usize,
    height: usize,
    palette: &[[u8; 3]],
) -> Result<RgbImage> {
    if classes.len() != width * height {
        return Err(DataError::Config(format!(
            "colorize: {} classes for a {width}x{height} image",
            classes.len()
        )));
    }
    Ok(RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let c = classes[y as usize * width + x as usize];
        let rgb = usize::try_from(c)
            .ok()
            .and_then(|c| palette.get(c))
            .copied()
            .unwrap_or([255, 255, 255]);
        Rgb(rgb)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_for;

    fn test_pair(w: u32, h: u32) -> (RgbImage, GrayImage) {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 100]));
        let lab = GrayImage::from_fn(w, h, |x, _| image::Luma([(x % 3) as u8]));
        (img, lab)
    }

    #[test]
    fn crop_without_rescale_or_photometric_is_an_exact_window() {
        let (img, lab) = test_pair(20, 16);
        let mut cfg = AugConfig::labelled(DatasetKind::Pascal);
        cfg.crop_size = (8, 10);
        cfg.scale_range = (1.0, 1.0);
        cfg.photometric = false;
        let mut io = vec![0f32; 3 * 80];
        let mut lo = vec![0i64; 80];
        augment_sample(&img, &lab, &cfg, &mut rng_for(&[1]), &mut io, &mut lo);
        // Find the offset from the first pixel and check the whole window.
        let r0 = io[0] * IMAGENET_STD[0] + IMAGENET_MEAN[0];
        let g0 = io[80] * IMAGENET_STD[1] + IMAGENET_MEAN[1];
        let left = (r0 * 255.0 / 7.0).round() as u32;
        let top = (g0 * 255.0 / 5.0).round() as u32;
        for y in 0..8u32 {
            for x in 0..10u32 {
                assert_eq!(lo[(y * 10 + x) as usize], ((left + x) % 3) as i64);
                let b = io[160 + (y * 10 + x) as usize] * IMAGENET_STD[2] + IMAGENET_MEAN[2];
                assert!((b - 100.0 / 255.0).abs() < 1e-5);
            }
        }
        assert!(top <= 8 && left <= 10);
    }

    #[test]
    fn image_to_tensor_normalises_and_colorize_uses_the_palette() {
        let (img, _) = test_pair(5, 4);
        let t = image_to_tensor(&img).unwrap();
        assert_eq!(t.dims(), &[1, 3, 4, 5]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = (100.0 / 255.0 - IMAGENET_MEAN[2]) / IMAGENET_STD[2];
        assert!((v[2 * 20 + 7] - b).abs() < 1e-5);
        let pal = DatasetKind::Pascal.palette();
        let c = colorize(&[0, 1, -1, 300], 2, 2, pal).unwrap();
        assert_eq!(c.get_pixel(1, 0).0, pal[1]);
        assert_eq!(c.get_pixel(0, 1).0, [255, 255, 255]);
        assert_eq!(c.get_pixel(1, 1).0, [255, 255, 255]);
        assert!(colorize(&[0], 2, 2, pal).is_err());
    }

    #[test]
    fn small_images_are_padded_reflect_and_ignore() {
        let (img, lab) = test_pair(6, 5);
        let mut io = vec![0f32; 3 * 8 * 8];
        let mut lo = vec![0i64; 64];
        eval_sample(&img, &lab, (8, 8), &mut io, &mut lo);
        // Right of column 5 is ignore; reflect: column 6 mirrors column 4.
        assert_eq!(lo[6], -1);
        assert_eq!(lo[5 * 8], -1);
        assert_eq!(lo[4], 1);
        let r = |x: usize| io[x] * IMAGENET_STD[0] + IMAGENET_MEAN[0];
        assert!((r(6) - r(4)).abs() < 1e-6);
        assert!((r(7) - r(3)).abs() < 1e-6);
    }

    #[test]
    fn rescale_changes_the_content_scale_and_labels_stay_valid() {
        let (img, lab) = test_pair(40, 30);
        let mut cfg = AugConfig::labelled(DatasetKind::Pascal);
        cfg.crop_size = (24, 24);
        cfg.scale_range = (0.5, 0.5);
        let mut io = vec![0f32; 3 * 24 * 24];
        let mut lo = vec![0i64; 24 * 24];
        augment_sample(&img, &lab, &cfg, &mut rng_for(&[3]), &mut io, &mut lo);
        // Scaled to 20x15, padded to 24x24: the bottom rows are ignore.
        assert!(lo[23 * 24..].iter().all(|&v| v == -1));
        assert!(lo.iter().all(|&v| (-1..3).contains(&v)));
        assert!(io.iter().all(|v| v.is_finite()));
    }
}
