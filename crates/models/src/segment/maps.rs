//! Score maps on the CPU for the steps after the network: bilinear resizing as two
//! 2-tap passes (O(output), unlike the dense interpolation matrices of
//! [`crate::ops::resize_bilinear`], which cost O(H·W·(H+W)) and are meant for training),
//! horizontal flips, and the final per-pixel softmax/argmax at the input size.

use rayon::prelude::*;

use crate::ops::linear_taps;

/// `[planes, h, w]` values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Planes {
    pub data: Vec<f32>,
    pub planes: usize,
    pub h: usize,
    pub w: usize,
}

/// For each output index: `(i0, i1, λ)` such that out = (1−λ)·in[i0] + λ·in[i1], as
/// PyTorch's linear interpolation (and [`crate::ops::interpolation_matrix`]).
pub(crate) fn taps(input: usize, output: usize, align_corners: bool) -> Vec<(usize, usize, f32)> {
    (0..output)
        .map(|o| {
            let (i0, i1, lambda) = linear_taps(o, input, output, align_corners);
            (i0, i1, lambda as f32)
        })
        .collect()
}

impl Planes {
    pub fn new(data: Vec<f32>, planes: usize, h: usize, w: usize) -> Self {
        debug_assert_eq!(data.len(), planes * h * w);
        Self { data, planes, h, w }
    }

    pub fn zeros(planes: usize, h: usize, w: usize) -> Self {
        Self::new(vec![0.0; planes * h * w], planes, h, w)
    }

    /// Bilinear resize of every plane to `oh`x`ow`.
    pub fn resize(&self, oh: usize, ow: usize, align_corners: bool) -> Planes {
        if (oh, ow) == (self.h, self.w) {
            return self.clone();
        }
        let (h, w) = (self.h, self.w);
        let tx = taps(w, ow, align_corners);
        let ty = taps(h, oh, align_corners);
        let mut out = vec![0f32; self.planes * oh * ow];
        out.par_chunks_mut(oh * ow)
            .zip(self.data.par_chunks(h * w))
            .for_each(|(dst, src)| {
                for (row, &y_taps) in dst.chunks_mut(ow).zip(&ty) {
                    resize_row(src, w, y_taps, &tx, row);
                }
            });
        Planes::new(out, self.planes, oh, ow)
    }

    /// As [`resize`](Self::resize), without a copy when the size is already right.
    pub fn into_resized(self, oh: usize, ow: usize, align_corners: bool) -> Planes {
        if (oh, ow) == (self.h, self.w) {
            self
        } else {
            self.resize(oh, ow, align_corners)
        }
    }

    /// Mirrors every plane left-right.
    pub fn flip_horizontal(&mut self) {
        let w = self.w;
        self.data.par_chunks_mut(w).for_each(|row| row.reverse());
    }

    /// Softmax over groups of `classes` consecutive planes, per pixel.
    pub fn softmax(&mut self, classes: usize) {
        let hw = self.h * self.w;
        self.data.par_chunks_mut(classes * hw).for_each(|img| {
            for p in 0..hw {
                let mut max = f32::NEG_INFINITY;
                for c in 0..classes {
                    max = max.max(img[c * hw + p]);
                }
                exp_normalize(img, p, hw, classes, max);
            }
        });
    }

    /// Adds `other` (whose planes cover rows `y0..`, columns `x0..` of `self`) in place.
    pub fn add_region(&mut self, other: &Planes, y0: usize, x0: usize) {
        let (w, hw) = (self.w, self.h * self.w);
        let (ow, ohw) = (other.w, other.h * other.w);
        self.data
            .par_chunks_mut(hw)
            .zip(other.data.par_chunks(ohw))
            .for_each(|(dst, src)| {
                for y in 0..other.h {
                    let d = &mut dst[(y0 + y) * w + x0..(y0 + y) * w + x0 + ow];
                    for (a, b) in d.iter_mut().zip(&src[y * ow..(y + 1) * ow]) {
                        *a += b;
                    }
                }
            });
    }

    /// Multiplies every value by `s`.
    pub fn scale(&mut self, s: f32) {
        self.data.par_iter_mut().for_each(|v| *v *= s);
    }
}

/// Output row `out` of a bilinear resize of `plane` (rows of `w`): input rows `y0` and
/// `y1` blended by `ly`, each column by its taps in `tx`.
fn resize_row(
    plane: &[f32],
    w: usize,
    (y0, y1, ly): (usize, usize, f32),
    tx: &[(usize, usize, f32)],
    out: &mut [f32],
) {
    let (r0, r1) = (&plane[y0 * w..(y0 + 1) * w], &plane[y1 * w..(y1 + 1) * w]);
    for (v, &(x0, x1, lx)) in out.iter_mut().zip(tx) {
        let top = r0[x0] + lx * (r0[x1] - r0[x0]);
        let bottom = r1[x0] + lx * (r1[x1] - r1[x0]);
        *v = top + ly * (bottom - top);
    }
}

/// The softmax of the `classes` values at `at`, `at + stride`, …, in place, given their
/// maximum (both softmax paths find it their own way: `finish` with its argmax).
fn exp_normalize(values: &mut [f32], at: usize, stride: usize, classes: usize, max: f32) {
    let mut sum = 0f32;
    for c in 0..classes {
        let e = (values[c * stride + at] - max).exp();
        values[c * stride + at] = e;
        sum += e;
    }
    for c in 0..classes {
        values[c * stride + at] /= sum;
    }
}

/// Class, confidence and (optionally) probabilities of every pixel at `oh`x`ow`, from
/// `scores` (`[batch·classes, h, w]`): bilinear-resized row by row, so no full-size
/// intermediate exists beyond the outputs; `logits` selects a softmax after resizing.
pub(crate) struct Finished {
    pub classes: Vec<u32>,
    pub confidence: Vec<f32>,
    pub probabilities: Option<Vec<f32>>,
}

/// Output rows computed in parallel before being copied into place.
const ROWS_PER_BAND: usize = 64;

/// Classes, confidences and (optionally) `[classes, ow]` probabilities of one row.
type RowResult = (Vec<u32>, Vec<f32>, Option<Vec<f32>>);

pub(crate) fn finish(
    scores: &Planes,
    classes: usize,
    oh: usize,
    ow: usize,
    align_corners: bool,
    logits: bool,
    keep_probabilities: bool,
) -> Finished {
    let batch = scores.planes / classes;
    let (h, w) = (scores.h, scores.w);
    let tx = taps(w, ow, align_corners);
    let ty = taps(h, oh, align_corners);
    let mut labels = vec![0u32; batch * oh * ow];
    let mut confidence = vec![0f32; batch * oh * ow];
    let mut probs = keep_probabilities.then(|| vec![0f32; batch * classes * oh * ow]);
    let hw = h * w;
    // One task per output row: a [classes, ow] scratch row, then argmax.
    let rows: Vec<(usize, usize)> = (0..batch)
        .flat_map(|b| (0..oh).map(move |y| (b, y)))
        .collect();
    // Bands of rows, so that the per-row scratch never approaches the output's size.
    for band in rows.chunks(ROWS_PER_BAND) {
        let results: Vec<RowResult> = band
            .par_iter()
            .map(|&(b, oy)| {
                let mut row = vec![0f32; classes * ow];
                for (c, class_row) in row.chunks_mut(ow).enumerate() {
                    let plane = &scores.data[(b * classes + c) * hw..(b * classes + c + 1) * hw];
                    resize_row(plane, w, ty[oy], &tx, class_row);
                }
                let mut lab = vec![0u32; ow];
                let mut conf = vec![0f32; ow];
                for ox in 0..ow {
                    let mut best = 0;
                    let mut max = f32::NEG_INFINITY;
                    for c in 0..classes {
                        let v = row[c * ow + ox];
                        if v > max {
                            max = v;
                            best = c;
                        }
                    }
                    if logits {
                        exp_normalize(&mut row, ox, ow, classes, max);
                    }
                    lab[ox] = best as u32;
                    conf[ox] = row[best * ow + ox];
                }
                (lab, conf, keep_probabilities.then_some(row))
            })
            .collect();
        for (&(b, oy), (lab, conf, row)) in band.iter().zip(results) {
            let at = (b * oh + oy) * ow;
            labels[at..at + ow].copy_from_slice(&lab);
            confidence[at..at + ow].copy_from_slice(&conf);
            if let (Some(p), Some(row)) = (probs.as_mut(), row) {
                for c in 0..classes {
                    let at = ((b * classes + c) * oh + oy) * ow;
                    p[at..at + ow].copy_from_slice(&row[c * ow..(c + 1) * ow]);
                }
            }
        }
    }
    Finished {
        classes: labels,
        confidence,
        probabilities: probs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn resize_matches_the_interpolation_matrices() {
        let (h, w) = (5, 7);
        let data: Vec<f32> = (0..2 * h * w)
            .map(|i| ((i * 37) % 11) as f32 - 5.0)
            .collect();
        let p = Planes::new(data.clone(), 2, h, w);
        let t = Tensor::from_vec(data, (1, 2, h, w), &Device::Cpu).unwrap();
        for (oh, ow, ac) in [(9, 4, true), (9, 4, false), (3, 13, true), (2, 2, false)] {
            let ours = p.resize(oh, ow, ac).data;
            let theirs = crate::ops::resize_bilinear(&t, oh, ow, ac)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (a, b) in ours.iter().zip(&theirs) {
                assert!((a - b).abs() < 1e-5, "{oh}x{ow} {ac}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn finish_is_resize_then_softmax_then_argmax() {
        let (c, h, w) = (3, 4, 5);
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 13) % 7) as f32 * 0.3)
            .collect();
        let p = Planes::new(data, c, h, w);
        let f = finish(&p, c, 7, 9, true, true, true);
        let mut r = p.resize(7, 9, true);
        r.softmax(c);
        assert_eq!(f.probabilities.as_ref().unwrap(), &r.data);
        for px in 0..63 {
            let v: Vec<f32> = (0..c).map(|k| r.data[k * 63 + px]).collect();
            let best = (0..c).fold(0, |b, k| if v[k] > v[b] { k } else { b });
            assert_eq!(f.classes[px] as usize, best);
            assert_eq!(f.confidence[px], v[best]);
        }
    }
}
