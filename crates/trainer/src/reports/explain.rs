//! The pictures of `trainer predict --explain`: per image, the two maps that explain
//! which pixels the ReCo loss would use as queries (docs/design.md#losses-and-sampling):
//! the confidence map (max softmax probability, dark = unsure) and the hard queries (valid at the weak
//! threshold but below the strong one, in red), both as overlays on the photo. Hard
//! pixels lie on region borders.

use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device};
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
    let x = image_to_tensor(photo)?.to_device(device)?;
    let pred = model.logits(&x)?;
    let logits = resize_bilinear(&pred, h, w, true)?;
    let q = query_map(&logits, thresholds.weak, thresholds.strong)?;
    let confidence = q.confidence.flatten_all()?.to_vec1::<f32>()?;
    let hard = q.hard.to_dtype(DType::U8)?.flatten_all()?.to_vec1::<u8>()?;
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
    let conf_path = output.join(format!("{stem}_confidence.png"));
    let hard_path = output.join(format!("{stem}_hard.png"));
    save_png(&conf_img, &conf_path)?;
    save_png(&hard_img, &hard_path)?;
    let n_hard = hard.iter().filter(|&&v| v != 0).count();
    eprintln!(
        "  {stem}: {n_hard} of {} pixels are hard queries (confidence in [{}, {}))",
        w * h,
        thresholds.weak,
        thresholds.strong
    );
    Ok([conf_path, hard_path])
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
