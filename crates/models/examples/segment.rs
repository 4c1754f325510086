//! Segments a photo with a reco-models checkpoint and writes a colour mask.
//!
//! cargo run -p reco-models --release --example segment -- model.safetensors photo.jpg mask.png [TILE]
//!
//! The checkpoint says which network it holds (its safetensors metadata); TILE predicts
//! large photos in overlapping tiles of that many pixels, in bounded memory.

use std::error::Error;
use std::path::Path;

use candle_core::Device;
use reco_models::{MetaFallback, PredictOptions, RgbImage, Segmenter, SlidingWindow};

/// The Pascal VOC colour of a class (bits of the index spread over R, G and B).
pub fn palette(class: u32) -> [u8; 3] {
    let mut rgb = [0u8; 3];
    for bit in 0..8 {
        for (channel, value) in rgb.iter_mut().enumerate() {
            *value |= (((class >> (3 * bit + channel)) & 1) as u8) << (7 - bit);
        }
    }
    rgb
}

/// Predicts `photo` and writes the palette mask to `mask`; returns pixels per class.
pub fn segment(
    checkpoint: &Path,
    photo: &Path,
    mask: &Path,
    tile: Option<usize>,
) -> Result<Vec<usize>, Box<dyn Error>> {
    let segmenter = Segmenter::load(checkpoint, &Device::Cpu, &MetaFallback::default())?;
    let photo = image::open(photo)
        .map_err(|e| format!("cannot read {}: {e}", photo.display()))?
        .to_rgb8();
    let (width, height) = photo.dimensions();
    let image = RgbImage {
        data: photo.as_raw(),
        width: width as usize,
        height: height as usize,
    };
    let options = PredictOptions {
        sliding_window: tile.map(SlidingWindow::new),
        probabilities: false,
        ..PredictOptions::default()
    };
    let classes = segmenter
        .predict_image(image, &options)?
        .classes
        .flatten_all()?
        .to_vec1::<u32>()?;
    let mut counts = vec![0; segmenter.meta().num_classes];
    let out = image::RgbImage::from_fn(width, height, |x, y| {
        let class = classes[(y * width + x) as usize];
        counts[class as usize] += 1;
        image::Rgb(palette(class))
    });
    // Written beside the target, then renamed: never a half-written mask.
    let tmp = mask.with_extension("partial.png");
    out.save(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, mask).map_err(|e| format!("cannot write {}: {e}", mask.display()))?;
    for (class, count) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
        let name = segmenter
            .meta()
            .class_names
            .get(class)
            .cloned()
            .unwrap_or(format!("class {class}"));
        println!("{name}: {count} pixels");
    }
    Ok(counts)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(3..=4).contains(&args.len()) {
        eprintln!("usage: segment CHECKPOINT PHOTO MASK.png [TILE]");
        std::process::exit(2);
    }
    let tile = match args.get(3).map(|t| t.parse::<usize>()) {
        Some(Err(e)) => return eprintln!("error: TILE must be a number of pixels: {e}"),
        Some(Ok(t)) => Some(t),
        None => None,
    };
    if let Err(e) = segment(
        Path::new(&args[0]),
        Path::new(&args[1]),
        Path::new(&args[2]),
        tile,
    ) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
