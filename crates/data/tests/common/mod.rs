//! Setup shared by the integration tests: small image and label files, and the error text
//! of a result that must fail. Each test crate uses a part of it.
#![allow(dead_code)]

use std::path::Path;

use candle_core::Tensor;
use image::{GrayImage, Rgb, RgbImage};
use reco_data::Result;

/// A smooth RGB image (format from the extension), varied by `seed`.
pub fn write_rgb(path: &Path, w: u32, h: u32, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 9 + seed) as u8,
            (y * 7 + seed) as u8,
            ((x + y) * 3) as u8,
        ])
    })
    .save(path)
    .unwrap();
}

/// A grayscale label PNG: pixel values are the raw label values.
pub fn write_label(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

/// A palette PNG (VOC2012 SegmentationClass style): pixel values are palette indices.
pub fn write_palette_label(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    let palette: Vec<u8> = (0..=255u8).flat_map(|i| [i, 255 - i, i / 2]).collect();
    enc.set_palette(palette);
    let mut wr = enc.write_header().unwrap();
    let data: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| f(x, y))
        .collect();
    wr.write_image_data(&data).unwrap();
}

/// The message of an error that `r` must be.
pub fn err_text<T>(r: Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Asserts two image batches are equal to the bit.
pub fn assert_same_images(a: &Tensor, b: &Tensor) {
    let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(d.to_scalar::<f32>().unwrap(), 0.0);
}
