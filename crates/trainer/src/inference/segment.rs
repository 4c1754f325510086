//! Photos segmented by a trained network: per image, the class mask in the dataset's
//! palette and an overlay of it on the photo, as PNG files. Photos are turned upright by
//! their EXIF orientation first, so that the mask lines up with the photo as viewers
//! show it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use image::RgbImage;
use reco_data::colorize;
use reco_models::{PredictOptions, MIN_INPUT_SIZE};

use super::checkpoint::LoadedModel;
use crate::image_io::{file_stem, read_photo, save_png};

/// Lower-case; matched case-insensitively.
const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];
/// Weight of the mask colour in the overlay.
const OVERLAY_ALPHA: f32 = 0.5;

/// `input` itself when it is a file, else its .jpg and .png images, sorted.
pub fn list_images(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        bail!(
            "--input {} is neither an image nor a folder",
            input.display()
        );
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(input)
        .with_context(|| format!("cannot list {}", input.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("--input {} holds no .jpg or .png image", input.display());
    }
    Ok(files)
}

fn overlay(photo: &RgbImage, mask: &RgbImage) -> RgbImage {
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let (p, m) = (photo.get_pixel(x, y).0, mask.get_pixel(x, y).0);
        image::Rgb(std::array::from_fn(|c| {
            ((1.0 - OVERLAY_ALPHA) * p[c] as f32 + OVERLAY_ALPHA * m[c] as f32).round() as u8
        }))
    })
}

/// Segments the photo at `path` into `output`, predicting with the options `options`
/// gives for its height and width; returns the mask and overlay written.
pub fn segment_photo(
    path: &Path,
    loaded: &LoadedModel,
    palette: &[[u8; 3]],
    options: impl Fn(usize, usize) -> anyhow::Result<PredictOptions>,
    output: &Path,
) -> anyhow::Result<[PathBuf; 2]> {
    let photo = read_photo(path)?;
    let (w, h) = (photo.width() as usize, photo.height() as usize);
    if w < MIN_INPUT_SIZE || h < MIN_INPUT_SIZE {
        bail!("it is {w}x{h}: images must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} pixels (upscale or pad it)");
    }
    let opts = options(h, w)?;
    let image = reco_models::RgbImage {
        data: photo.as_raw(),
        width: w,
        height: h,
    };
    let classes: Vec<i64> = loaded
        .segmenter
        .predict_image(image, &opts)?
        .classes
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(i64::from)
        .collect();
    let mask = colorize(&classes, w, h, palette)?;
    let stem = file_stem(path);
    let mask_path = output.join(format!("{stem}_mask.png"));
    let overlay_path = output.join(format!("{stem}_overlay.png"));
    save_png(&mask, &mask_path)?;
    save_png(&overlay(&photo, &mask), &overlay_path)?;
    Ok([mask_path, overlay_path])
}
