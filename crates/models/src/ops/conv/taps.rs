//! Stride-1 convolutions as one gemm per kernel tap, without im2col.
//!
//! im2col copies every input pixel k·k times (a 72 MB buffer per image for the decoder's
//! 3x3 convolution at 81x81 with 304 channels) and the gemm then streams that copy from
//! memory. Instead, the input is copied once into a zero-padded plane per channel
//! (`[C, Hp·Wp]`), and tap `(i, j)` of the kernel reads it at the fixed offset
//! `i·d·Wp + j·d`: for outputs laid out on the padded width ("wide" rows of Wp, of which
//! the last Wp − Wo are discarded), every tap's operand is a plain strided matrix
//! `[C, Ho·Wp]` (row stride Hp·Wp, column stride 1). The convolution is then k·k gemms
//! with K = C accumulating into one output, and the input gradient is the same gemms with
//! the weight transposed, accumulating into a padded gradient (the weight gradient has a
//! path of its own, `weight_grad`). The price is the discarded columns, (Wp − Wo)/Wo of
//! the work, and gemms with a shorter inner dimension, so [`applies`] keeps im2col except
//! for large convolutions with narrow padding.
//!
//! Reading a tap's operand on a wide row runs up to `(k − 1)·d` elements past the end of
//! its channel's plane (into the next plane, or a zeroed tail after the last one): those
//! values only reach discarded columns. In the input gradient, the wide output gradient's
//! discarded columns are zero, so they add nothing.

use rayon::prelude::*;

use super::{matmul, parallelism, scratch, tap_major, Dims};
use crate::ops::{ConvParams, Real};

/// Whether the per-tap path is used: stride 1, a kernel larger than 1x1, and at most a
/// quarter of the work spent on discarded columns; and a large product (at least
/// [`MIN_PIXELS`] outputs and [`MIN_CHANNELS`] input channels), since k·k gemms with
/// K = C are each less efficient than im2col's one with K = C·k·k: measured on ResNet-101
/// (issue 15), the per-tap path is 1.5x faster on the decoder's 3x3 convolution at 81x81
/// with 304 channels, as fast at 81x81 with 64 channels and 1.3–1.5x slower at 21x21.
pub(super) fn applies(d: &Dims, p: ConvParams) -> bool {
    p.stride == 1
        && d.k > 1
        && 4 * (d.w + 2 * p.padding) <= 5 * d.wo
        && d.out_pixels() >= MIN_PIXELS
        && d.c >= MIN_CHANNELS
}

const MIN_PIXELS: usize = 4096;
const MIN_CHANNELS: usize = 256;

/// The padded-plane geometry of one convolution.
struct Planes {
    /// Padded height and width.
    hp: usize,
    wp: usize,
    /// Offset of each tap `(i, j)` (row-major) in a padded plane.
    offsets: Vec<usize>,
    /// Elements after the last plane that a tap's operand may read.
    tail: usize,
}

impl Planes {
    fn new(d: &Dims, p: ConvParams) -> Self {
        let (hp, wp) = (d.h + 2 * p.padding, d.w + 2 * p.padding);
        let offsets = (0..d.k)
            .flat_map(|i| (0..d.k).map(move |j| (i * wp + j) * p.dilation))
            .collect();
        Self {
            hp,
            wp,
            offsets,
            tail: (d.k - 1) * p.dilation,
        }
    }
    fn plane(&self) -> usize {
        self.hp * self.wp
    }
    /// Output positions on wide rows: Ho rows of Wp.
    fn wide(&self, d: &Dims) -> usize {
        d.ho * self.wp
    }
    fn padded_len(&self, d: &Dims) -> usize {
        d.c * self.plane() + self.tail
    }
}

/// Copies one image `[C,H,W]` into zero-padded planes (`xp`, `padded_len` elements).
fn pad<T: Real>(img: &[T], d: &Dims, p: ConvParams, g: &Planes, xp: &mut [T]) {
    let (plane, pad) = (g.plane(), p.padding);
    let (planes, tail) = xp.split_at_mut(d.c * plane);
    tail.fill(T::zero());
    planes
        .par_chunks_mut(plane)
        .zip(img.par_chunks(d.h * d.w))
        .for_each(|(dst, src)| {
            dst[..pad * g.wp].fill(T::zero());
            dst[(pad + d.h) * g.wp..].fill(T::zero());
            for (row, src_row) in src.chunks(d.w).enumerate() {
                let dst_row = &mut dst[(pad + row) * g.wp..(pad + row + 1) * g.wp];
                dst_row[..pad].fill(T::zero());
                dst_row[pad..pad + d.w].copy_from_slice(src_row);
                dst_row[pad + d.w..].fill(T::zero());
            }
        });
}

/// Copies one image's output gradient `[O,Ho,Wo]` onto wide rows, zeros in the
/// discarded columns.
fn widen<T: Real>(g: &[T], d: &Dims, planes: &Planes, wide: &mut [T]) {
    let wp = planes.wp;
    wide.par_chunks_mut(planes.wide(d))
        .zip(g.par_chunks(d.ho * d.wo))
        .for_each(|(dst, src)| {
            for (dst_row, src_row) in dst.chunks_mut(wp).zip(src.chunks(d.wo)) {
                dst_row[..d.wo].copy_from_slice(src_row);
                dst_row[d.wo..].fill(T::zero());
            }
        });
}

pub(super) fn forward<T: Real>(x: &[T], w: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    let (g, kk) = (Planes::new(d, p), d.k * d.k);
    let (plane, wide_len, pix) = (g.plane(), g.wide(d), d.out_pixels());
    // Written whole by the compaction below.
    let mut out = scratch(d.n * d.o * pix);
    // Written whole by `pad` and by the first tap's gemm (no accumulation).
    let mut xp = scratch(g.padded_len(d));
    let mut wide = scratch(d.o * wide_len);
    let wt = tap_major(w, d.c, kk);
    for n in 0..d.n {
        pad(
            &x[n * d.c * d.h * d.w..(n + 1) * d.c * d.h * d.w],
            d,
            p,
            &g,
            &mut xp,
        );
        for (t, &off) in g.offsets.iter().enumerate() {
            // W[:, :, tap] [O, C]: rows of C in the tap-major copy, row stride k·k·C.
            matmul(
                (d.o, wide_len, d.c),
                &mut wide,
                (wide_len, 1),
                t > 0,
                &wt[t * d.c..],
                (kk * d.c, 1),
                &xp[off..],
                (plane, 1),
                parallelism(),
            );
        }
        out[n * d.o * pix..(n + 1) * d.o * pix]
            .par_chunks_mut(pix)
            .zip(wide.par_chunks(wide_len))
            .for_each(|(dst, src)| {
                for (dst_row, src_row) in dst.chunks_mut(d.wo).zip(src.chunks(g.wp)) {
                    dst_row.copy_from_slice(&src_row[..d.wo]);
                }
            });
    }
    out
}

pub(super) fn input_grad<T: Real>(gy: &[T], w: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    let (g, kk) = (Planes::new(d, p), d.k * d.k);
    let wt = tap_major(w, d.c, kk);
    let (plane, wide_len, pix) = (g.plane(), g.wide(d), d.out_pixels());
    let img_len = d.c * d.h * d.w;
    // Written whole by the crop below.
    let mut dx = scratch(d.n * img_len);
    // Written whole by `widen`.
    let mut gw = scratch(d.o * wide_len);
    let mut dxp = vec![T::zero(); g.padded_len(d)];
    for n in 0..d.n {
        widen(&gy[n * d.o * pix..(n + 1) * d.o * pix], d, &g, &mut gw);
        if n > 0 {
            dxp.fill(T::zero());
        }
        for (t, &off) in g.offsets.iter().enumerate() {
            // W[:, :, tap]ᵀ [C, O]: row stride 1, column stride k·k·C in the tap-major copy.
            matmul(
                (d.c, wide_len, d.o),
                &mut dxp[off..],
                (plane, 1),
                true,
                &wt[t * d.c..],
                (1, kk * d.c),
                &gw,
                (wide_len, 1),
                parallelism(),
            );
        }
        dx[n * img_len..(n + 1) * img_len]
            .par_chunks_mut(d.h * d.w)
            .zip(dxp.par_chunks(plane))
            .for_each(|(dst, src)| {
                for (row, dst_row) in dst.chunks_mut(d.w).enumerate() {
                    let start = (row + p.padding) * g.wp + p.padding;
                    dst_row.copy_from_slice(&src[start..start + d.w]);
                }
            });
    }
    dx
}
