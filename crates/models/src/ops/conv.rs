//! 2-D convolution as im2col + gemm on the CPU, with both gradients as explicit ops.
//!
//! candle 0.11's own CPU convolution computes the input gradient with a slow direct
//! transposed convolution and fails (shape mismatch) when H and W differ in parity at a
//! stride-2 layer. Here the forward pass is one gemm per image over an im2col buffer
//! (skipped for 1x1 stride-1 convolutions, which are plain matrix products), the input
//! gradient is `Wᵀ·dY` scattered back with col2im, and the weight gradient is
//! `Σₙ dYₙ·colsₙᵀ`, the im2col buffer being recomputed rather than kept alive between the
//! forward and backward passes. On other devices [`conv2d`] uses candle's convolution.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::cpu::{storage, with_real_slices};
use super::Real;

mod taps;
mod valid_taps;
mod weight_grad;

/// Geometry of a square-kernel convolution (the network only uses square ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl ConvParams {
    pub fn out_size(&self, input: usize, kernel: usize) -> Result<usize> {
        let span = self.dilation * (kernel - 1) + 1;
        if input + 2 * self.padding < span {
            candle_core::bail!(
                "convolution input of size {input} is smaller than the kernel span {span} (padding {}): the image is too small for this network",
                self.padding
            )
        }
        Ok((input + 2 * self.padding - span) / self.stride + 1)
    }
}

/// `x [N,C,H,W]` convolved with `w [O,C,k,k]` (no bias), differentiable in both.
pub fn conv2d(x: &Tensor, w: &Tensor, p: ConvParams) -> Result<Tensor> {
    if super::use_generic_path(x.device()) {
        return conv2d_generic(x, w, p);
    }
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    // apply_op2 records the op for backprop only when x or w tracks a gradient.
    x.apply_op2(&w, Conv2dFwd(p))
}

/// The input gradient of [`conv2d`] on the CPU, `dX [N,C,H,W]` for the output gradient
/// `grad` and an input of `input_hw`, without recording a graph (what the backward pass
/// runs; public for the per-layer benchmark, `benches/conv_layers.rs`).
pub fn conv2d_input_grad(
    grad: &Tensor,
    w: &Tensor,
    p: ConvParams,
    input_hw: (usize, usize),
) -> Result<Tensor> {
    grad.contiguous()?
        .apply_op2_no_bwd(&w.contiguous()?, &ConvInputGrad { p, input_hw })
}

/// The weight gradient of [`conv2d`] on the CPU, `dW [O,C,k,k]` for the input `x` and the
/// output gradient `grad`, without recording a graph (as [`conv2d_input_grad`]).
pub fn conv2d_weight_grad(x: &Tensor, grad: &Tensor, p: ConvParams, k: usize) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &ConvWeightGrad { p, k })
}

/// The device-generic convolution: candle's `conv2d` and its backward, on any device.
///
/// candle 0.11 derives the input gradient's transposed convolution `output_padding` from
/// the height alone and applies it to both axes, so the backward fails (shape mismatch)
/// when `(H + 2p − span) mod stride` differs from the same for W, e.g. a 10x9 input at a
/// stride-2 layer (docs/design.md, candle gap 3). The axis with the smaller remainder gets
/// that many zero rows (or columns) appended: the remainder stays below the stride, so the
/// output size and values do not change (the extra zeros lie where the implicit padding
/// was), both axes now agree, and the appended part's gradient is dropped by the padding
/// op's own backward. Public for tests and benchmarks.
pub fn conv2d_generic(x: &Tensor, w: &Tensor, p: ConvParams) -> Result<Tensor> {
    let (_, _, h, wd) = x.dims4()?;
    let (_, _, kh, kw) = w.dims4()?;
    // The same error as the CPU kernel for inputs smaller than the kernel.
    p.out_size(h, kh)?;
    p.out_size(wd, kw)?;
    let remainder =
        |n: usize, k: usize| (n + 2 * p.padding - (p.dilation * (k - 1) + 1)) % p.stride;
    let (rh, rw) = (remainder(h, kh), remainder(wd, kw));
    let x = match rh.cmp(&rw) {
        std::cmp::Ordering::Less => x.pad_with_zeros(2, 0, rw - rh)?,
        std::cmp::Ordering::Greater => x.pad_with_zeros(3, 0, rh - rw)?,
        std::cmp::Ordering::Equal => x.clone(),
    };
    x.conv2d(w, p.padding, p.stride, p.dilation, 1)
}

#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    ho: usize,
    wo: usize,
}

impl Dims {
    fn new(x: &[usize], w: &[usize], p: ConvParams) -> Result<Self> {
        let (&[n, c, h, wd], &[o, ci, kh, kw]) = (x, w) else {
            candle_core::bail!("conv2d expects a 4-D input and a 4-D kernel, got {x:?} and {w:?}")
        };
        if ci != c || kh != kw {
            candle_core::bail!("conv2d: input {x:?} does not fit kernel {w:?}")
        }
        Ok(Self {
            n,
            c,
            h,
            w: wd,
            o,
            k: kh,
            ho: p.out_size(h, kh)?,
            wo: p.out_size(wd, kw)?,
        })
    }
    fn cols_rows(&self) -> usize {
        self.c * self.k * self.k
    }
    fn out_pixels(&self) -> usize {
        self.ho * self.wo
    }
    /// No gemm runs (an empty batch, image or channel list): the result is all zeros,
    /// which the uninitialised buffers would not give.
    fn is_empty(&self) -> bool {
        self.n * self.c * self.o * self.out_pixels() == 0
    }
    /// Errors unless `g_dims` is the shape of this convolution's output (its gradient).
    fn check_output_grad(&self, g_dims: &[usize]) -> Result<()> {
        if g_dims != [self.n, self.o, self.ho, self.wo] {
            candle_core::bail!("conv2d backward: gradient {g_dims:?} does not fit {self:?}")
        }
        Ok(())
    }
    /// Multiply-adds of the direct formula (each of the forward pass and the two
    /// gradients does as many).
    fn multiply_adds(&self) -> usize {
        self.n * self.o * self.out_pixels() * self.cols_rows()
    }
    /// A 1x1 stride-1 unpadded convolution reads its input as the im2col matrix itself.
    fn is_pointwise(&self, p: ConvParams) -> bool {
        self.k == 1 && p.stride == 1 && p.padding == 0
    }
}

fn parallelism() -> Parallelism {
    match candle_core::utils::get_num_threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// `dst[m,n] = (accumulate ? dst : 0) + lhs[m,k] · rhs[k,n]`, with each operand given by
/// its row and column strides so that transposes and interleaved outputs cost nothing.
#[allow(clippy::too_many_arguments)]
fn matmul<T: Real>(
    (m, n, k): (usize, usize, usize),
    dst: &mut [T],
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: &[T],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[T],
    (rhs_rs, rhs_cs): (usize, usize),
    parallelism: Parallelism,
) {
    debug_assert!(m * n == 0 || dst.len() > (m - 1) * dst_rs + (n - 1) * dst_cs);
    debug_assert!(m * k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    debug_assert!(k * n == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the slices cover every index the strides reach (checked by the callers'
    // shape arithmetic; debug-asserted above), the strides give distinct dst elements
    // distinct indices, and dst does not alias lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A buffer of `len` elements whose every element the caller overwrites before reading
/// (gemm output with `accumulate == false`, an im2col buffer, col2im's target): skipping
/// the zero fill saves a full-size memory pass per buffer.
fn scratch<T: Real>(len: usize) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    // SAFETY: f32/f64 have no invalid bit patterns and every caller writes all `len`
    // elements before reading any (see the callers' comments).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(len)
    };
    v
}

/// Unfolds one image `[C,H,W]` into `[C·k·k, Ho·Wo]` (zeros where the kernel hangs over
/// the padding). Writes every element of `cols`; rows in parallel.
fn im2col<T: Real>(img: &[T], d: &Dims, p: ConvParams, cols: &mut [T]) {
    let plane = d.ho * d.wo;
    cols[..d.cols_rows() * plane]
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(row, dst)| {
            let (c, ki, kj) = (row / (d.k * d.k), (row / d.k) % d.k, row % d.k);
            let src = &img[c * d.h * d.w..(c + 1) * d.h * d.w];
            for oh in 0..d.ho {
                let ih = (oh * p.stride + ki * p.dilation) as isize - p.padding as isize;
                let out_row = &mut dst[oh * d.wo..(oh + 1) * d.wo];
                if ih < 0 || ih >= d.h as isize {
                    out_row.fill(T::zero());
                    continue;
                }
                let src_row = &src[ih as usize * d.w..(ih as usize + 1) * d.w];
                let offset = (kj * p.dilation) as isize - p.padding as isize;
                for (ow, v) in out_row.iter_mut().enumerate() {
                    let iw = (ow * p.stride) as isize + offset;
                    *v = if iw < 0 || iw >= d.w as isize {
                        T::zero()
                    } else {
                        src_row[iw as usize]
                    };
                }
            }
        });
}

/// The im2col matrix `[C·k·k, Ho·Wo]` of one image at a time, in one buffer reused for
/// every image; a pointwise convolution's image is that matrix already (no buffer).
struct Columns<T> {
    buf: Vec<T>,
    pointwise: bool,
}

impl<T: Real> Columns<T> {
    fn new(d: &Dims, p: ConvParams) -> Self {
        let pointwise = d.is_pointwise(p);
        Self {
            // Written whole by im2col before each read.
            buf: if pointwise {
                Vec::new()
            } else {
                scratch(d.cols_rows() * d.out_pixels())
            },
            pointwise,
        }
    }

    /// The matrix of image `n` of the batch `x [N,C,H,W]`.
    fn of_image<'a>(&'a mut self, x: &'a [T], n: usize, d: &Dims, p: ConvParams) -> &'a [T] {
        let img = &x[n * d.c * d.h * d.w..(n + 1) * d.c * d.h * d.w];
        if self.pointwise {
            img
        } else {
            im2col(img, d, p, &mut self.buf);
            &self.buf
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back to the pixel it was read from.
/// Writes every element of `img` (zeroed first); channels in parallel, each summing its
/// k·k rows in the same order as a sequential loop.
fn col2im<T: Real>(cols: &[T], d: &Dims, p: ConvParams, img: &mut [T]) {
    let plane = d.ho * d.wo;
    img[..d.c * d.h * d.w]
        .par_chunks_mut(d.h * d.w)
        .enumerate()
        .for_each(|(c, dst)| {
            dst.fill(T::zero());
            for ki in 0..d.k {
                for kj in 0..d.k {
                    let row = (c * d.k + ki) * d.k + kj;
                    let src = &cols[row * plane..(row + 1) * plane];
                    for oh in 0..d.ho {
                        let ih = (oh * p.stride + ki * p.dilation) as isize - p.padding as isize;
                        if ih < 0 || ih >= d.h as isize {
                            continue;
                        }
                        let dst_row = &mut dst[ih as usize * d.w..(ih as usize + 1) * d.w];
                        let offset = (kj * p.dilation) as isize - p.padding as isize;
                        for (ow, &v) in src[oh * d.wo..(oh + 1) * d.wo].iter().enumerate() {
                            let iw = (ow * p.stride) as isize + offset;
                            if iw >= 0 && iw < d.w as isize {
                                dst_row[iw as usize] += v;
                            }
                        }
                    }
                }
            }
        });
}

fn forward<T: Real>(x: &[T], w: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    super::flops::add_pass(d.multiply_adds());
    let (kk, pix) = (d.cols_rows(), d.out_pixels());
    if d.is_empty() {
        return vec![T::zero(); d.n * d.o * pix];
    }
    if valid_taps::applies(d, p) {
        return valid_taps::forward(x, w, d, p);
    }
    if taps::applies(d, p) {
        return taps::forward(x, w, d, p);
    }
    // Written whole by the gemms (no accumulation).
    let mut out = scratch(d.n * d.o * pix);
    let mut cols = Columns::new(d, p);
    for n in 0..d.n {
        let rhs = cols.of_image(x, n, d, p);
        let dst = &mut out[n * d.o * pix..(n + 1) * d.o * pix];
        matmul(
            (d.o, pix, kk),
            dst,
            (pix, 1),
            false,
            w,
            (kk, 1),
            rhs,
            (pix, 1),
            parallelism(),
        );
    }
    out
}

/// `W [O, C, k·k]` reordered to `[O, k·k, C]`: tap `t`'s `[O, C]` slice then has rows of
/// C contiguous values (row stride k·k·C). The per-tap paths multiply by one slice per
/// gemm, and gemm packs contiguous rows much faster than values k·k apart.
fn tap_major<T: Real>(w: &[T], c: usize, kk: usize) -> Vec<T> {
    transpose_blocks(w, c, kk)
}

/// The inverse of [`tap_major`]: `[O, k·k, C]` back to `[O, C, k·k]`.
fn from_tap_major<T: Real>(wt: &[T], c: usize, kk: usize) -> Vec<T> {
    transpose_blocks(wt, kk, c)
}

/// Each `[rows, cols]` block of `src` (row-major, one after another) transposed to
/// `[cols, rows]`, blocks in parallel.
fn transpose_blocks<T: Real>(src: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = scratch(src.len());
    out.par_chunks_mut(rows * cols)
        .zip(src.par_chunks(rows * cols))
        .for_each(|(dst, block)| {
            for (r, row) in block.chunks(cols).enumerate() {
                for (col, &v) in row.iter().enumerate() {
                    dst[col * rows + r] = v;
                }
            }
        });
    out
}

fn input_grad<T: Real>(g: &[T], w: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    super::flops::add_pass(d.multiply_adds());
    let (kk, pix) = (d.cols_rows(), d.out_pixels());
    if d.is_empty() {
        return vec![T::zero(); d.n * d.c * d.h * d.w];
    }
    if valid_taps::applies(d, p) {
        return valid_taps::input_grad(g, w, d, p);
    }
    if taps::applies(d, p) {
        return taps::input_grad(g, w, d, p);
    }
    let img_len = d.c * d.h * d.w;
    // Written whole by the gemms (no accumulation) and by col2im.
    let mut dx = scratch(d.n * img_len);
    let mut dcols = if d.is_pointwise(p) {
        Vec::new()
    } else {
        scratch(kk * pix)
    };
    for n in 0..d.n {
        let gn = &g[n * d.o * pix..(n + 1) * d.o * pix];
        let dxn = &mut dx[n * img_len..(n + 1) * img_len];
        let dst = if d.is_pointwise(p) {
            &mut dxn[..]
        } else {
            &mut dcols[..]
        };
        // Wᵀ [kk, O] read through strides: row stride 1, column stride kk. gemm packs this
        // operand faster than a transposed copy with the inner dimension contiguous
        // (measured, issue 15); the per-tap paths read their tap slices the same way.
        matmul(
            (kk, pix, d.o),
            dst,
            (pix, 1),
            false,
            w,
            (1, kk),
            gn,
            (pix, 1),
            parallelism(),
        );
        if !d.is_pointwise(p) {
            col2im(&dcols, d, p, dxn);
        }
    }
    dx
}

fn weight_grad<T: Real>(x: &[T], g: &[T], d: &Dims, p: ConvParams) -> Vec<T> {
    super::flops::add_pass(d.multiply_adds());
    let (kk, pix) = (d.cols_rows(), d.out_pixels());
    if d.is_empty() {
        return vec![T::zero(); d.o * kk];
    }
    if valid_taps::applies_to_weight_grad(d, p) {
        return valid_taps::weight_grad(x, g, d, p);
    }
    if weight_grad::applies(d) {
        return weight_grad::weight_grad(x, g, d, p);
    }
    // Few output pixels per image: one gemm per image, split over gemm's threads.
    // The first image's gemm writes dw whole (accumulate == false), the others add.
    let mut dw = scratch(d.o * kk);
    let mut cols = Columns::new(d, p);
    for n in 0..d.n {
        let colsn = cols.of_image(x, n, d, p);
        let gn = &g[n * d.o * pix..(n + 1) * d.o * pix];
        // colsᵀ [pix, kk]: row stride 1, column stride pix.
        matmul(
            (d.o, kk, pix),
            &mut dw,
            (kk, 1),
            n > 0,
            gn,
            (pix, 1),
            colsn,
            (1, pix),
            parallelism(),
        );
    }
    dw
}

struct Conv2dFwd(ConvParams);

impl CustomOp2 for Conv2dFwd {
    fn name(&self) -> &'static str {
        "reco-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        let d = Dims::new(l1.dims(), l2.dims(), self.0)?;
        let out = with_real_slices!("conv2d", |x = (s1, l1), w = (s2, l2)| storage(forward(
            x, w, &d, self.0
        )));
        Ok((out, Shape::from((d.n, d.o, d.ho, d.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            Some(conv2d_input_grad(grad, w, self.0, (x.dim(2)?, x.dim(3)?))?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(conv2d_weight_grad(x, grad, self.0, w.dim(2)?)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `(dY [N,O,Ho,Wo], W [O,C,k,k]) → dX [N,C,H,W]`.
struct ConvInputGrad {
    p: ConvParams,
    input_hw: (usize, usize),
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "reco-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        let (g_dims, w_dims) = (l1.dims(), l2.dims());
        let (h, w) = self.input_hw;
        let d = Dims::new(&[g_dims[0], w_dims[1], h, w], w_dims, self.p)?;
        d.check_output_grad(g_dims)?;
        let out = with_real_slices!("conv2d backward", |g = (s1, l1), w = (s2, l2)| storage(
            input_grad(g, w, &d, self.p)
        ));
        Ok((out, Shape::from((d.n, d.c, d.h, d.w))))
    }
}

/// `(X [N,C,H,W], dY [N,O,Ho,Wo]) → dW [O,C,k,k]`.
struct ConvWeightGrad {
    p: ConvParams,
    k: usize,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "reco-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _timed = super::timing::scope(self.name());
        let (x_dims, g_dims) = (l1.dims(), l2.dims());
        let d = Dims::new(x_dims, &[g_dims[1], x_dims[1], self.k, self.k], self.p)?;
        d.check_output_grad(g_dims)?;
        let out = with_real_slices!("conv2d backward", |x = (s1, l1), g = (s2, l2)| storage(
            weight_grad(x, g, &d, self.p)
        ));
        Ok((out, Shape::from((d.o, d.c, d.k, d.k))))
    }
}
