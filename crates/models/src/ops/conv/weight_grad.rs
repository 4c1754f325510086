//! The weight gradient `dW = Σₙ dYₙ · colsₙᵀ` as independent gemms over slices of the
//! output pixels, each on one thread, summed in a fixed order.
//!
//! dW is a small matrix (O x C·k·k) with a long inner dimension (every output pixel of
//! every image). Measured on 2 cores with gemm 0.19 (issue 15): splitting such a product
//! over gemm's threads makes it slower than one thread (gemm splits the output, of which
//! there is little), and reading `colsᵀ` with the pixel index contiguous in both operands
//! costs another 2x. So the pixels are cut into slices of [`SLICE_PIXELS`] (per image),
//! one single-threaded gemm per slice runs on rayon's pool, as many at a time as there are
//! threads, and the slices' partial gradients are added in slice order: the result does not
//! depend on the thread count.
//! Each slice's right operand is built channels-last (`rows [pixels, k·k·C]`, a patch per
//! row) from a zero-padded channels-last copy of the image, so patch rows are plain
//! copies of C contiguous values and the gemm reads both operands in their natural
//! layout. Its columns come out tap-major (`[O, k·k, C]`); the final sum transposes them to
//! the `[O, C, k, k]` layout of the weight.

use gemm::Parallelism;
use rayon::prelude::*;

use super::{from_tap_major, matmul, scratch, Dims};
use crate::ops::{ConvParams, Real};

/// Whether the sliced path is used: at least [`MIN_PIXELS`] output pixels per image. With
/// fewer (ResNet-101's 21x21 layers at OS16), one multi-threaded gemm per image with the
/// im2col operand was measured as fast or faster.
pub(super) fn applies(d: &Dims) -> bool {
    d.out_pixels() >= MIN_PIXELS
}

const MIN_PIXELS: usize = 1024;

/// Output pixels per slice: enough inner dimension for an efficient gemm, small enough
/// that a slice's patch rows stay a few MB.
const SLICE_PIXELS: usize = 1024;

/// Memory the slices in flight may hold at once.
const IN_FLIGHT_BYTES: usize = 256 << 20;

/// One image's input, zero-padded and channels-last: `[(H + 2p)·(W + 2p), C]`.
fn padded_channels_last<T: Real>(img: &[T], d: &Dims, pad: usize) -> Vec<T> {
    let (hp, wp) = (d.h + 2 * pad, d.w + 2 * pad);
    let mut out = vec![T::zero(); hp * wp * d.c];
    out.par_chunks_mut(wp * d.c)
        .enumerate()
        .for_each(|(row, dst)| {
            if row < pad || row >= pad + d.h {
                return;
            }
            let ih = row - pad;
            for iw in 0..d.w {
                let px = &mut dst[(iw + pad) * d.c..(iw + pad + 1) * d.c];
                for (c, v) in px.iter_mut().enumerate() {
                    *v = img[(c * d.h + ih) * d.w + iw];
                }
            }
        });
    out
}

/// Patch rows of output pixels `pixels` (one image): row `r` holds, tap by tap, the C
/// channels under tap `(i, j)` of pixel `pixels.start + r`. Writes every element.
fn patch_rows<T: Real>(
    xt: &[T],
    d: &Dims,
    p: ConvParams,
    pixels: std::ops::Range<usize>,
    rows: &mut [T],
) {
    let wp = d.w + 2 * p.padding;
    let row_len = d.k * d.k * d.c;
    for (pix, row) in pixels.zip(rows.chunks_mut(row_len)) {
        let (oh, ow) = (pix / d.wo, pix % d.wo);
        for i in 0..d.k {
            for j in 0..d.k {
                let src = (oh * p.stride + i * p.dilation) * wp + ow * p.stride + j * p.dilation;
                let t = i * d.k + j;
                row[t * d.c..(t + 1) * d.c].copy_from_slice(&xt[src * d.c..(src + 1) * d.c]);
            }
        }
    }
}

pub(super) fn weight_grad<T: Real>(x: &[T], g: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    let (kk, pix) = (d.k * d.k, d.out_pixels());
    let row_len = kk * d.c;
    // As many slices in flight as threads, within IN_FLIGHT_BYTES of patch rows and
    // partial sums (a many-core host would otherwise hold one set per core); the partial
    // gradients are added to `sum` in slice order whatever the count, so the result does
    // not depend on it.
    let per_slice = (SLICE_PIXELS + d.o) * row_len * std::mem::size_of::<T>();
    let in_flight = rayon::current_num_threads()
        .min(IN_FLIGHT_BYTES / per_slice.max(1))
        .max(1);
    let slices: Vec<std::ops::Range<usize>> = (0..pix)
        .step_by(SLICE_PIXELS)
        .map(|a| a..(a + SLICE_PIXELS).min(pix))
        .collect();
    let mut sum: Option<Vec<T>> = None;
    for n in 0..d.n {
        let image = padded_channels_last(
            &x[n * d.c * d.h * d.w..(n + 1) * d.c * d.h * d.w],
            d,
            p.padding,
        );
        let gn = &g[n * d.o * pix..(n + 1) * d.o * pix];
        for group in slices.chunks(in_flight) {
            let partials: Vec<Vec<T>> = group
                .par_iter()
                .map(|range| {
                    // Written whole by patch_rows, and by the gemm (no accumulation).
                    let mut rows = scratch(range.len() * row_len);
                    patch_rows(&image, d, p, range.clone(), &mut rows);
                    let mut part = scratch(d.o * row_len);
                    // dYₙ[:, slice] [O, len] (row stride pix) · rows [len, k·k·C].
                    matmul(
                        (d.o, row_len, range.len()),
                        &mut part,
                        (row_len, 1),
                        false,
                        &gn[range.start..],
                        (pix, 1),
                        &rows,
                        (row_len, 1),
                        Parallelism::None,
                    );
                    part
                })
                .collect();
            for part in partials {
                match sum.as_mut() {
                    None => sum = Some(part),
                    Some(acc) => acc
                        .par_chunks_mut(row_len)
                        .zip(part.par_chunks(row_len))
                        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b)),
                }
            }
        }
    }
    // `weight_grad` runs only with at least one image and one slice.
    let sum = sum.unwrap_or_else(|| vec![T::zero(); d.o * row_len]);
    // [O, k·k, C] → [O, C, k, k].
    from_tap_major(&sum, d.c, kk)
}
