//! Stride-1 convolutions whose kernel taps fall mostly in the padding: one gemm per tap
//! over only the outputs where that tap reads the image.
//!
//! The ASPP's dilated 3x3 branches run at rates 6, 12 and 18 on a 21x21 feature map
//! (DeepLabV2's classifier at rates up to 24 on 41x41): a tap `(i, j)` shifted by
//! `(i·d − p, j·d − p)` reads the image only for the outputs in one rectangle, 18 % of
//! the im2col matrix at rate 18, the rest being zeros that im2col writes and gemm
//! multiplies. Here each tap's rectangle is gathered into a compact `[C, |R|]` operand,
//! multiplied by the tap's `[O, C]` weight slice, and scattered back; the three kernels
//! (forward, input gradient, weight gradient) use the same rectangles.

use rayon::prelude::*;

use super::{from_tap_major, matmul, parallelism, scratch, tap_major, Dims};
use crate::ops::{ConvParams, Real};

/// Whether the forward and the input gradient take this path: stride 1, a kernel larger
/// than 1x1, and at most three quarters of the kernel's reads inside the image (the others
/// being padding). Measured on ResNet-101's ASPP at 21x21 (issue 15): 1.2x faster than
/// im2col at rate 6 (65 % inside), 1.6–1.9x and 2.5–2.8x at rates 12 and 18 (38 %, 18 %).
pub(super) fn applies(d: &Dims, p: ConvParams) -> bool {
    inside_fraction_at_most(d, p, 3, 4)
}

/// Smaller outputs keep im2col: on the default run's 4x4 maps (64-pixel crops at OS16) the
/// per-tap gemms and copies cost more than the zeros they skip (its train step was
/// measured 32 % slower with them).
const MIN_PIXELS: usize = 256;

/// Whether the weight gradient takes this path: as [`applies`] but at most half inside.
/// At rate 6 the per-tap weight gradient was measured 3.5x slower than im2col's (its gemms
/// read both operands along the short pixel dimension), at rates 12 and 18 1.5x and 2x
/// faster.
pub(super) fn applies_to_weight_grad(d: &Dims, p: ConvParams) -> bool {
    inside_fraction_at_most(d, p, 1, 2)
}

fn inside_fraction_at_most(d: &Dims, p: ConvParams, num: usize, den: usize) -> bool {
    if p.stride != 1 || d.k == 1 || d.out_pixels() < MIN_PIXELS {
        return false;
    }
    let inside: usize = rects(d, p).iter().map(Rect::len).sum();
    den * inside <= num * d.k * d.k * d.out_pixels()
}

/// The outputs `rows x cols` where tap `t` reads the image, and its shift `(dy, dx)`:
/// output `(oh, ow)` reads input `(oh + dy, ow + dx)`.
struct Rect {
    t: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    dy: isize,
    dx: isize,
}

impl Rect {
    fn len(&self) -> usize {
        self.rows.len() * self.cols.len()
    }
    /// Where the rectangle's `r`-th row starts in an input plane `[H·W]`.
    fn input_row(&self, d: &Dims, r: usize) -> usize {
        let ih = (self.rows.start + r) as isize + self.dy;
        let iw = self.cols.start as isize + self.dx;
        (ih * d.w as isize + iw) as usize
    }
    /// Where the rectangle's `r`-th row starts in an output plane `[Ho·Wo]`.
    fn output_row(&self, d: &Dims, r: usize) -> usize {
        (self.rows.start + r) * d.wo + self.cols.start
    }
}

/// The non-empty rectangles of all taps.
fn rects(d: &Dims, p: ConvParams) -> Vec<Rect> {
    // Outputs o in 0..n_out with 0 <= o + shift < n_in.
    let range = |shift: isize, n_in: usize, n_out: usize| {
        let start = (-shift).max(0) as usize;
        let end = (n_in as isize - shift).clamp(0, n_out as isize) as usize;
        start.min(end)..end
    };
    let mut out = Vec::new();
    for i in 0..d.k {
        for j in 0..d.k {
            let dy = (i * p.dilation) as isize - p.padding as isize;
            let dx = (j * p.dilation) as isize - p.padding as isize;
            let rect = Rect {
                t: i * d.k + j,
                rows: range(dy, d.h, d.ho),
                cols: range(dx, d.w, d.wo),
                dy,
                dx,
            };
            if rect.len() > 0 {
                out.push(rect);
            }
        }
    }
    out
}

/// `dst [ch, |R|]` = the rectangle of each plane of `src [ch, plane]`, whose `r`-th row
/// starts at `row(r)` in a plane.
fn gather<T: Real>(
    src: &[T],
    plane: usize,
    rect: &Rect,
    row: impl Fn(usize) -> usize + Sync,
    dst: &mut [T],
) {
    dst.par_chunks_mut(rect.len())
        .zip(src.par_chunks(plane))
        .for_each(|(dst, src)| {
            for (r, seg) in dst.chunks_mut(rect.cols.len()).enumerate() {
                let start = row(r);
                seg.copy_from_slice(&src[start..start + seg.len()]);
            }
        });
}

/// The adjoint of [`gather`]: adds `src [ch, |R|]` into the rectangle of each plane of
/// `dst [ch, plane]`.
fn scatter_add<T: Real>(
    src: &[T],
    rect: &Rect,
    row: impl Fn(usize) -> usize + Sync,
    dst: &mut [T],
    plane: usize,
) {
    dst.par_chunks_mut(plane)
        .zip(src.par_chunks(rect.len()))
        .for_each(|(dst, src)| {
            for (r, seg) in src.chunks(rect.cols.len()).enumerate() {
                let start = row(r);
                for (a, &b) in dst[start..start + seg.len()].iter_mut().zip(seg) {
                    *a += b;
                }
            }
        });
}

pub(super) fn forward<T: Real>(x: &[T], w: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    // W[:, :, tap] [O, C]: rows of C in the tap-major copy, row stride k·k·C.
    let w_strides = (d.k * d.k * d.c, 1);
    tap_products(x, input_side(d), output_side(d), w, w_strides, d, p)
}

pub(super) fn input_grad<T: Real>(g: &[T], w: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    // W[:, :, tap]ᵀ [C, O]: row stride 1, column stride k·k·C in the tap-major copy.
    let w_strides = (1, d.k * d.k * d.c);
    tap_products(g, output_side(d), input_side(d), w, w_strides, d, p)
}

/// One side of a convolution as the per-tap products see it: `channels` planes of
/// `plane` values per image, a tap rectangle's `r`-th row starting at `row(rect, r)`.
struct Side<R> {
    channels: usize,
    plane: usize,
    row: R,
}

impl<R: Fn(&Rect, usize) -> usize + Sync> Side<R> {
    /// `dst [channels, |R|]` = the rectangle of each plane of one image `src`.
    fn gather<T: Real>(&self, src: &[T], rect: &Rect, dst: &mut [T]) {
        let len = self.channels * rect.len();
        gather(
            src,
            self.plane,
            rect,
            |r| (self.row)(rect, r),
            &mut dst[..len],
        );
    }
    /// Adds `src [channels, |R|]` into the rectangle of each plane of one image `dst`.
    fn scatter_add<T: Real>(&self, src: &[T], rect: &Rect, dst: &mut [T]) {
        let len = self.channels * rect.len();
        scatter_add(&src[..len], rect, |r| (self.row)(rect, r), dst, self.plane);
    }
    /// One image's values.
    fn image_len(&self) -> usize {
        self.channels * self.plane
    }
}

/// The input (or its gradient): C planes of H·W.
fn input_side(d: &Dims) -> Side<impl Fn(&Rect, usize) -> usize + Sync + '_> {
    Side {
        channels: d.c,
        plane: d.h * d.w,
        row: move |rect: &Rect, r| rect.input_row(d, r),
    }
}

/// The output (or its gradient): O planes of Ho·Wo.
fn output_side(d: &Dims) -> Side<impl Fn(&Rect, usize) -> usize + Sync + '_> {
    Side {
        channels: d.o,
        plane: d.out_pixels(),
        row: move |rect: &Rect, r| rect.output_row(d, r),
    }
}

/// `dst = Σ_tap scatter(W_tap · gather(src))` per image, `W_tap` being the tap's weight
/// slice read through `w_strides`. The forward (input to output, `W[:, :, tap]`) and the
/// input gradient (output gradient to input, its transpose) are this one loop with the
/// sides swapped: the input gradient is the forward's adjoint.
fn tap_products<T: Real, RS, RD>(
    src: &[T],
    from: Side<RS>,
    to: Side<RD>,
    w: &[T],
    w_strides: (usize, usize),
    d: &Dims,
    p: ConvParams,
) -> Vec<T>
where
    RS: Fn(&Rect, usize) -> usize + Sync,
    RD: Fn(&Rect, usize) -> usize + Sync,
{
    let kk = d.k * d.k;
    let rects = rects(d, p);
    let most = rects.iter().map(Rect::len).max().unwrap_or(0);
    let wt = tap_major(w, d.c, kk);
    let (src_len, dst_len) = (from.image_len(), to.image_len());
    let mut dst = vec![T::zero(); d.n * dst_len];
    let (mut gathered, mut product) = (scratch(from.channels * most), scratch(to.channels * most));
    for n in 0..d.n {
        let srcn = &src[n * src_len..(n + 1) * src_len];
        let dstn = &mut dst[n * dst_len..(n + 1) * dst_len];
        for rect in &rects {
            let len = rect.len();
            from.gather(srcn, rect, &mut gathered);
            matmul(
                (to.channels, len, from.channels),
                &mut product,
                (len, 1),
                false,
                &wt[rect.t * d.c..],
                w_strides,
                &gathered,
                (len, 1),
                parallelism(),
            );
            to.scatter_add(&product, rect, dstn);
        }
    }
    dst
}

pub(super) fn weight_grad<T: Real>(x: &[T], g: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    let kk = d.k * d.k;
    let (input, output) = (input_side(d), output_side(d));
    let rects = rects(d, p);
    let most = rects.iter().map(Rect::len).max().unwrap_or(0);
    // Tap-major `[O, k·k, C]`; taps that never read the image keep a zero gradient.
    let mut dwt = vec![T::zero(); d.o * kk * d.c];
    let (mut gs, mut xs) = (scratch(d.o * most), scratch(d.c * most));
    let (img_len, out_len) = (input.image_len(), output.image_len());
    for n in 0..d.n {
        let img = &x[n * img_len..(n + 1) * img_len];
        let gn = &g[n * out_len..(n + 1) * out_len];
        for rect in &rects {
            let len = rect.len();
            input.gather(img, rect, &mut xs);
            output.gather(gn, rect, &mut gs);
            // dW[:, :, tap] [O, C] += gs [O, |R|] · xsᵀ [|R|, C].
            matmul(
                (d.o, d.c, len),
                &mut dwt[rect.t * d.c..],
                (kk * d.c, 1),
                true,
                &gs,
                (len, 1),
                &xs,
                (1, len),
                parallelism(),
            );
        }
    }
    from_tap_major(&dwt, d.c, kk)
}
