//! Reading photos as viewers show them and writing pictures as PNG files atomically:
//! the image files of predict, explain and the reports.

use std::path::Path;

use anyhow::Context;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

/// `img` encoded as PNG (`path`: for the error only).
pub fn encode_png(img: &RgbImage, path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .with_context(|| format!("cannot encode {}", path.display()))?;
    Ok(bytes)
}

/// Writes `img` to `path` as PNG, atomically (a reader never sees half a file).
pub fn save_png(img: &RgbImage, path: &Path) -> anyhow::Result<()> {
    let bytes = encode_png(img, path)?;
    reco_util::fs::write_atomic(path, &bytes)
        .with_context(|| format!("cannot save {}", path.display()))
}

/// The photo at `path` as viewers show it: decoded, then turned by its EXIF orientation.
pub fn read_photo(path: &Path) -> anyhow::Result<RgbImage> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let decode = || -> image::ImageResult<DynamicImage> {
        let mut decoder = ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()?
            .into_decoder()?;
        let orientation = decoder.orientation()?;
        let mut img = DynamicImage::from_decoder(decoder)?;
        img.apply_orientation(orientation);
        Ok(img)
    };
    let img = decode().with_context(|| {
        format!(
            "{} is not a readable image (predict reads .jpg and .png photos)",
            path.display()
        )
    })?;
    Ok(img.into_rgb8())
}

/// The file name of `path` without its extension (empty for none): the start of the
/// names of the pictures made from it.
pub fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{ImageFormat, Rgb};
    use std::io::Cursor;

    pub(crate) fn photo(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 5) as u8, (y * 6) as u8, 90]))
    }

    /// A JPEG of `w`x`h` with an APP1 Exif segment (written by hand: a big-endian TIFF
    /// header and one IFD holding only the Orientation tag, 0x0112) right after SOI.
    pub(crate) fn jpeg_with_orientation(w: u32, h: u32, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        photo(w, h)
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let mut tiff = b"MM\0\x2a".to_vec();
        tiff.extend(8u32.to_be_bytes()); // offset of the first IFD
        tiff.extend(1u16.to_be_bytes()); // one entry
        tiff.extend(0x0112u16.to_be_bytes()); // Orientation
        tiff.extend(3u16.to_be_bytes()); // SHORT
        tiff.extend(1u32.to_be_bytes()); // one value
        tiff.extend(orientation.to_be_bytes());
        tiff.extend([0, 0]); // the value field is 4 bytes
        tiff.extend(0u32.to_be_bytes()); // no next IFD
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend(tiff);
        let mut out = jpeg[..2].to_vec(); // SOI
        out.extend([0xFF, 0xE1]);
        out.extend(((app1.len() + 2) as u16).to_be_bytes());
        out.extend(app1);
        out.extend(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_turns_the_photo_upright() {
        let dir = tempfile::tempdir().unwrap();
        let upright = dir.path().join("upright.jpg");
        std::fs::write(&upright, jpeg_with_orientation(45, 37, 1)).unwrap();
        assert_eq!(read_photo(&upright).unwrap().dimensions(), (45, 37));
        // 6: stored landscape, shown turned 90° clockwise.
        let turned = dir.path().join("turned.jpg");
        std::fs::write(&turned, jpeg_with_orientation(45, 37, 6)).unwrap();
        assert_eq!(read_photo(&turned).unwrap().dimensions(), (37, 45));
    }
}
