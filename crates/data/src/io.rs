//! Reading image and label files, with errors that name the file.

use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

use crate::error::{DataError, Result};

fn read_bytes(path: &Path, what: &str, hint: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::missing(path, what, hint)
        } else {
            DataError::corrupt(path, what, e, hint)
        }
    })
}

/// Decodes an image file (JPEG or PNG) to 8-bit RGB.
pub fn read_rgb(path: &Path, hint: &str) -> Result<RgbImage> {
    let bytes = read_bytes(path, "image", hint)?;
    let img =
        image::load_from_memory(&bytes).map_err(|e| DataError::corrupt(path, "image", e, hint))?;
    Ok(img.into_rgb8())
}

/// Decodes a label PNG to its raw 8-bit values: the grey level of a grayscale PNG, or the
/// palette index of a palette PNG (VOC2012's `SegmentationClass` style). The `image` crate
/// would expand a palette to colours, so this uses the `png` crate directly.
pub fn read_label_png(path: &Path, hint: &str) -> Result<GrayImage> {
    let bytes = read_bytes(path, "label", hint)?;
    let corrupt = |reason: String| DataError::corrupt(path, "label", reason, hint);
    let mut decoder = png::Decoder::new(std::io::Cursor::new(&bytes));
    // IDENTITY keeps palette indices; we unpack sub-byte depths ourselves.
    decoder.set_transformations(png::Transformations::IDENTITY);
    let mut reader = decoder.read_info().map_err(|e| corrupt(e.to_string()))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| corrupt("image too large".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| corrupt(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let bits = info.bit_depth as usize;
    let line = info.line_size;
    let mut out = Vec::with_capacity(w * h);
    match info.color_type {
        png::ColorType::Grayscale | png::ColorType::Indexed => {
            for y in 0..h {
                let row = &buf[y * line..(y + 1) * line];
                for x in 0..w {
                    let v = match bits {
                        8 => row[x],
                        // 16-bit grey: class ids must fit in a byte.
                        16 => {
                            let v = u16::from_be_bytes([row[2 * x], row[2 * x + 1]]);
                            u8::try_from(v).map_err(|_| DataError::ClassOutOfRange {
                                path: path.to_path_buf(),
                                x: x as u32,
                                y: y as u32,
                                value: v as u32,
                                dataset: "any".into(),
                                allowed: "at most 255 (8-bit class ids)".into(),
                            })?
                        }
                        1 | 2 | 4 => {
                            let per_byte = 8 / bits;
                            let byte = row[x / per_byte];
                            let shift = 8 - bits * (x % per_byte + 1);
                            (byte >> shift) & ((1u8 << bits) - 1)
                        }
                        _ => return Err(corrupt(format!("unsupported bit depth {bits}"))),
                    };
                    out.push(v);
                }
            }
        }
        other => {
            return Err(corrupt(format!(
                "expected a grayscale or palette PNG of class ids, found colour type {other:?} \
                 (a colour-coded label must be converted to class ids first)"
            )))
        }
    }
    GrayImage::from_raw(w as u32, h as u32, out)
        .ok_or_else(|| corrupt("inconsistent PNG size".into()))
}

/// Errors if `label` and `image` differ in size.
pub fn check_same_size(
    label: &GrayImage,
    image: &RgbImage,
    label_path: &Path,
    image_path: &Path,
) -> Result<()> {
    if label.dimensions() != image.dimensions() {
        return Err(DataError::SizeMismatch {
            label: label_path.to_path_buf(),
            image: image_path.to_path_buf(),
            label_w: label.width(),
            label_h: label.height(),
            image_w: image.width(),
            image_h: image.height(),
        });
    }
    Ok(())
}

/// Reads a list file of ids (one per line, blank lines skipped).
pub fn read_id_list(path: &Path, what: &str, hint: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DataError::missing(path, &format!("list of {what} ids"), hint)
        } else {
            DataError::corrupt(path, &format!("list of {what} ids"), e, hint)
        }
    })?;
    let ids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if ids.is_empty() {
        return Err(DataError::EmptyList {
            path: path.to_path_buf(),
            what: what.to_string(),
            hint: hint.to_string(),
        });
    }
    Ok(ids)
}

/// Maps every pixel of a raw label through `map` (raw value -> class id or IGNORE; `None`
/// means the raw value is invalid), erroring on the first invalid pixel.
pub fn map_label(
    label: &mut GrayImage,
    path: &Path,
    dataset: &str,
    allowed: &str,
    map: impl Fn(u8) -> Option<u8>,
) -> Result<()> {
    let w = label.width();
    for (i, p) in label.as_mut().iter_mut().enumerate() {
        match map(*p) {
            Some(v) => *p = v,
            None => {
                return Err(DataError::ClassOutOfRange {
                    path: PathBuf::from(path),
                    x: i as u32 % w,
                    y: i as u32 / w,
                    value: *p as u32,
                    dataset: dataset.to_string(),
                    allowed: allowed.to_string(),
                })
            }
        }
    }
    Ok(())
}
