//! The pictures of `trainer predict --explain`: per image, the two maps that explain
//! which pixels the ReCo loss would use as queries (docs/design.md#losses-and-sampling):
//! the confidence map (max softmax probability, dark = unsure) and the hard queries (valid at the weak
//! threshold but below the strong one, in red), both as overlays on the photo. Hard
//! pixels lie on region borders.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use reco_data::image_to_tensor;
use reco_loss::query_map;
use reco_models::ops::resize_bilinear;
use reco_models::Segmenter;

use crate::image_io::{file_stem, read_photo, save_png};

/// The original's strong threshold δs, used when the checkpoint has no run beside it.
pub const DEFAULT_STRONG_THRESHOLD: f64 = 0.97;
/// The original's weak threshold δw.
pub const DEFAULT_WEAK_THRESHOLD: f64 = 0.7;

/// The thresholds the hard-query map is drawn at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub weak: f64,
    pub strong: f64,
}

/// Grey photo under the map: the colour of the photo would hide the map's.
fn grey(p: [u8; 3]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

/// The pictures of one photo: its confidence map and hard queries, and the predicted
/// class of each pixel (row-major).
pub struct Explained {
    pub confidence: RgbImage,
    pub hard: RgbImage,
    pub hard_count: usize,
    pub classes: Vec<i64>,
}

/// The pictures of `photo` from a network: `forward` maps the normalised photo
/// `[1,3,H,W]` on `device` to its logits at any size, which are resized to the photo's.
pub fn explain_photo(
    photo: &RgbImage,
    thresholds: Thresholds,
    device: &Device,
    forward: impl FnOnce(&Tensor) -> anyhow::Result<Tensor>,
) -> anyhow::Result<Explained> {
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let x = image_to_tensor(photo)?.to_device(device)?;
    let logits = resize_bilinear(&forward(&x)?, h, w, true)?;
    let q = query_map(&logits, thresholds.weak, thresholds.strong)?;
    let confidence = q.confidence.flatten_all()?.to_vec1::<f32>()?;
    let hard = q.hard.to_dtype(DType::U8)?.flatten_all()?.to_vec1::<u8>()?;
    let classes = q
        .pseudo
        .flatten_all()?
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?;
    let conf_img = RgbImage::from_fn(photo.width(), photo.height(), |px, py| {
        let i = py as usize * w + px as usize;
        // Confident pixels bright yellow, unsure ones dark purple, over a faint photo.
        let t = confidence[i].clamp(0.0, 1.0);
        let map = [
            (68.0 + t * (253.0 - 68.0)),
            (1.0 + t * (231.0 - 1.0)),
            (84.0 + t * (37.0 - 84.0)),
        ];
        let g = grey(photo.get_pixel(px, py).0);
        image::Rgb(std::array::from_fn(|c| {
            (0.75 * map[c] + 0.25 * g).round() as u8
        }))
    });
    let hard_img = RgbImage::from_fn(photo.width(), photo.height(), |px, py| {
        let i = py as usize * w + px as usize;
        let g = (0.6 * grey(photo.get_pixel(px, py).0)).round() as u8;
        if hard[i] != 0 {
            image::Rgb([255, 40, 40])
        } else {
            image::Rgb([g, g, g])
        }
    });
    Ok(Explained {
        confidence: conf_img,
        hard: hard_img,
        hard_count: hard.iter().filter(|&&v| v != 0).count(),
        classes,
    })
}

/// Writes `<stem>_confidence.png` and `<stem>_hard.png` for `photo` into `output`.
pub fn explain_one(
    model: &Segmenter,
    photo: &RgbImage,
    stem: &str,
    thresholds: Thresholds,
    device: &Device,
    output: &Path,
) -> anyhow::Result<[PathBuf; 2]> {
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let e = explain_photo(photo, thresholds, device, |x| Ok(model.logits(x)?))?;
    let conf_path = output.join(format!("{stem}_confidence.png"));
    let hard_path = output.join(format!("{stem}_hard.png"));
    save_png(&e.confidence, &conf_path)?;
    save_png(&e.hard, &hard_path)?;
    eprintln!(
        "  {stem}: {} of {} pixels are hard queries (confidence in [{}, {}))",
        e.hard_count,
        w * h,
        thresholds.weak,
        thresholds.strong
    );
    Ok([conf_path, hard_path])
}

/// The pictures TensorBoard shows of a validation image during training: the
/// prediction in the dataset's palette, the confidence map and the hard queries, from
/// the network being trained (eval mode, as the evaluation predicts).
pub fn explain_sample(
    model: &reco_models::Network,
    photo: &RgbImage,
    palette: &[[u8; 3]],
    thresholds: Thresholds,
    device: &Device,
) -> anyhow::Result<[RgbImage; 3]> {
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    let e = explain_photo(photo, thresholds, device, |x| {
        Ok(model.forward_no_grad(&model.fit_input(x)?, false)?.0)
    })?;
    let prediction = reco_data::colorize(&e.classes, w, h, palette)?;
    Ok([prediction, e.confidence, e.hard])
}

/// [`explain_one`] for the photo at `path` (read as predict reads it).
pub fn explain_file(
    model: &Segmenter,
    path: &Path,
    thresholds: Thresholds,
    device: &Device,
    output: &Path,
) -> anyhow::Result<[PathBuf; 2]> {
    let photo = read_photo(path)?;
    let stem = file_stem(path);
    explain_one(model, &photo, &stem, thresholds, device, output)
        .with_context(|| format!("--explain for {}", path.display()))
}
