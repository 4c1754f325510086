//! 8-bit label images: read palette or grayscale PNGs as raw indices, write grayscale (L8)
//! PNGs atomically.
//!
//! VOC's `SegmentationClass/*.png` are palette PNGs whose *index* is the class id (255 =
//! void); decoding them as RGB (what most image libraries do by default) would lose that, so
//! the `png` crate is used with no transformations.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub use crate::mat5::Labels;

/// Reads an 8-bit palette or grayscale PNG as its raw sample values.
pub fn read_label_png(path: &Path) -> Result<Labels> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder
        .read_info()
        .with_context(|| format!("{} is not a readable PNG", path.display()))?;
    let (color, depth) = reader.output_color_type();
    if depth != png::BitDepth::Eight
        || !matches!(color, png::ColorType::Indexed | png::ColorType::Grayscale)
    {
        bail!(
            "{}: expected an 8-bit palette or grayscale label PNG, found {color:?} {depth:?}",
            path.display()
        );
    }
    let size = reader
        .output_buffer_size()
        .with_context(|| format!("{}: image too large", path.display()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .with_context(|| format!("{}: corrupt PNG data", path.display()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let stride = info.line_size;
    let mut data = Vec::with_capacity(w * h);
    for row in 0..h {
        data.extend_from_slice(&buf[row * stride..row * stride + w]);
    }
    Ok(Labels {
        width: info.width,
        height: info.height,
        data,
    })
}

/// Writes `labels` as an 8-bit grayscale PNG atomically, so an interrupted run never
/// leaves a half-written label behind.
pub fn write_label_png(path: &Path, labels: &Labels) -> Result<()> {
    if labels.data.len() != labels.width as usize * labels.height as usize {
        bail!("internal error: label buffer does not match its size");
    }
    // Encoded in memory (a label is at most a few hundred kB), so every write error
    // surfaces here instead of in a buffered writer's drop.
    let mut png_bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut png_bytes, labels.width, labels.height);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc
            .write_header()
            .with_context(|| format!("cannot encode {}", path.display()))?;
        writer
            .write_image_data(&labels.data)
            .with_context(|| format!("cannot encode {}", path.display()))?;
        writer
            .finish()
            .with_context(|| format!("cannot encode {}", path.display()))?;
    }
    Ok(reco_util::fs::write_atomic(path, &png_bytes)?)
}

/// Cheap check that a file starts like a JPEG (SOI marker), to catch HTML error pages or
/// truncated copies without decoding thousands of images.
pub fn looks_like_jpeg(path: &Path) -> Result<bool> {
    use std::io::Read;
    let mut head = [0u8; 3];
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(f.read_exact(&mut head).is_ok() && head == [0xFF, 0xD8, 0xFF])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufWriter;

    #[test]
    fn palette_indices_survive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pal.png");
        // A 3x2 palette PNG whose indices are not in palette-colour order.
        {
            let file = File::create(&p).unwrap();
            let mut enc = png::Encoder::new(BufWriter::new(file), 3, 2);
            enc.set_color(png::ColorType::Indexed);
            enc.set_depth(png::BitDepth::Eight);
            let mut palette = vec![0u8; 256 * 3];
            palette[255 * 3] = 224; // VOC's void colour
            palette[3] = 128;
            enc.set_palette(palette);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0, 1, 255, 15, 20, 0]).unwrap();
        }
        let l = read_label_png(&p).unwrap();
        assert_eq!((l.width, l.height), (3, 2));
        assert_eq!(l.data, vec![0, 1, 255, 15, 20, 0]);
        let out = dir.path().join("out.png");
        write_label_png(&out, &l).unwrap();
        assert_eq!(read_label_png(&out).unwrap(), l);
        assert!(!looks_like_jpeg(&out).unwrap());
    }
}
