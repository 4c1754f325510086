//! Resizing with `fast_image_resize` (SIMD; the same convolution scheme as Pillow, whose
//! BILINEAR/NEAREST the original code used): bilinear for images, nearest for labels and
//! confidences.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{GrayImage, RgbImage};

/// Resizes `src` (`(w, h)`) into `dst` (`(nw, nh)`).
fn run(
    (src, w, h): (&[u8], usize, usize),
    (dst, nw, nh): (&mut [u8], usize, usize),
    pixel: PixelType,
    alg: ResizeAlg,
) {
    // Sizes and buffers are built here from consistent dimensions, so the calls below
    // cannot fail on user input; a failure would be a bug in this module.
    let src =
        ImageRef::new(w as u32, h as u32, src, pixel).expect("source buffer matches its size");
    let mut dst = Image::from_slice_u8(nw as u32, nh as u32, dst, pixel)
        .expect("destination buffer matches its size");
    Resizer::new()
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(alg))
        .expect("same pixel type on both sides");
}

/// Bilinear resize of an RGB u8 image to `nh x nw`.
pub fn resize_rgb(img: &RgbImage, nh: usize, nw: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0u8; nh * nw * 3];
    run(
        (img.as_raw(), w, h),
        (&mut out, nw, nh),
        PixelType::U8x3,
        ResizeAlg::Convolution(FilterType::Bilinear),
    );
    RgbImage::from_raw(nw as u32, nh as u32, out).expect("buffer matches nh*nw*3")
}

/// Nearest-neighbour resize of a label map to `nh x nw`.
pub fn resize_label(label: &GrayImage, nh: usize, nw: usize) -> GrayImage {
    let (w, h) = (label.width() as usize, label.height() as usize);
    let mut out = vec![0u8; nh * nw];
    run(
        (label.as_raw(), w, h),
        (&mut out, nw, nh),
        PixelType::U8,
        ResizeAlg::Nearest,
    );
    GrayImage::from_raw(nw as u32, nh as u32, out).expect("buffer matches nh*nw")
}

/// Resize of one f32 plane (`bilinear`, else nearest).
pub fn resize_plane(
    src: &[f32],
    h: usize,
    w: usize,
    nh: usize,
    nw: usize,
    bilinear: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; nh * nw];
    let alg = if bilinear {
        ResizeAlg::Convolution(FilterType::Bilinear)
    } else {
        ResizeAlg::Nearest
    };
    run(
        (bytemuck::cast_slice(src), w, h),
        (bytemuck::cast_slice_mut(&mut out), nw, nh),
        PixelType::F32,
        alg,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_keeps_label_values_and_bilinear_keeps_constants() {
        let l = GrayImage::from_fn(10, 6, |x, _| image::Luma([if x < 5 { 3 } else { 255 }]));
        let r = resize_label(&l, 12, 20);
        assert_eq!(r.dimensions(), (20, 12));
        assert!(r.iter().all(|&v| v == 3 || v == 255));
        assert_eq!(r.get_pixel(2, 5)[0], 3);
        assert_eq!(r.get_pixel(17, 5)[0], 255);
        let img = RgbImage::from_pixel(9, 7, image::Rgb([10, 200, 30]));
        let r = resize_rgb(&img, 3, 4);
        assert!(r.pixels().all(|p| p.0 == [10, 200, 30]));
        let p = resize_plane(&[0.25f32; 35], 5, 7, 9, 3, true);
        assert_eq!(p.len(), 27);
        assert!(p.iter().all(|v| (v - 0.25).abs() < 1e-6));
        // Upscaling a 2-pixel ramp by bilinear interpolates between the two values.
        let p = resize_plane(&[0.0, 1.0], 1, 2, 1, 4, true);
        assert!(p[0] < p[1] && p[1] < p[2] && p[2] < p[3], "{p:?}");
    }
}
