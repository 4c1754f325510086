//! Photometric augmentation on planar `[3, H, W]` f32 images with values in [0, 1]:
//! torchvision's ColorJitter (same formulas as its tensor functions), a Gaussian blur and
//! a horizontal flip.

/// Parameters of one ColorJitter draw. `order` is a permutation of 0..4
/// (0 brightness, 1 contrast, 2 saturation, 3 hue), applied in that order as
/// torchvision does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JitterParams {
    pub order: [usize; 4],
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

#[inline]
fn gray(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// Applies the four colour adjustments in `p.order`. `img` is planar RGB of `n` pixels.
pub fn color_jitter(img: &mut [f32], p: &JitterParams) {
    let n = img.len() / 3;
    for &op in &p.order {
        match op {
            0 => blend_scalar(img, p.brightness, 0.0),
            1 => {
                // Blend with the mean grey level of the whole image.
                let (r, rest) = img.split_at(n);
                let (g, b) = rest.split_at(n);
                let mean = (0..n).map(|i| gray(r[i], g[i], b[i]) as f64).sum::<f64>() / n as f64;
                blend_scalar(img, p.contrast, mean as f32);
            }
            2 => {
                let (r, rest) = img.split_at_mut(n);
                let (g, b) = rest.split_at_mut(n);
                let s = p.saturation;
                for i in 0..n {
                    let l = gray(r[i], g[i], b[i]) * (1.0 - s);
                    r[i] = (s * r[i] + l).clamp(0.0, 1.0);
                    g[i] = (s * g[i] + l).clamp(0.0, 1.0);
                    b[i] = (s * b[i] + l).clamp(0.0, 1.0);
                }
            }
            _ => adjust_hue(img, p.hue),
        }
    }
}

/// `x = clamp(f * x + (1 - f) * other)`, over all channels.
fn blend_scalar(img: &mut [f32], f: f32, other: f32) {
    let o = (1.0 - f) * other;
    for v in img.iter_mut() {
        *v = (f * *v + o).clamp(0.0, 1.0);
    }
}

/// Shifts the hue by `shift` (fraction of a turn), through HSV as torchvision does.
pub fn adjust_hue(img: &mut [f32], shift: f32) {
    let n = img.len() / 3;
    let (r, rest) = img.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for i in 0..n {
        let (rr, gg, bb) = (r[i], g[i], b[i]);
        let maxc = rr.max(gg).max(bb);
        let minc = rr.min(gg).min(bb);
        let cr = maxc - minc;
        let v = maxc;
        if cr <= 0.0 {
            continue; // grey pixel: hue has no effect
        }
        let s = cr / maxc;
        let rc = (maxc - rr) / cr;
        let gc = (maxc - gg) / cr;
        let bc = (maxc - bb) / cr;
        let h = if maxc == rr {
            bc - gc
        } else if maxc == gg {
            2.0 + rc - bc
        } else {
            4.0 + gc - rc
        };
        let h = (h / 6.0 + shift).rem_euclid(1.0);
        let h6 = h * 6.0;
        let sector = h6.floor();
        let f = h6 - sector;
        let p = v * (1.0 - s);
        let q = v * (1.0 - s * f);
        let t = v * (1.0 - s * (1.0 - f));
        let (nr, ng, nb) = match sector as i32 % 6 {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        };
        r[i] = nr.clamp(0.0, 1.0);
        g[i] = ng.clamp(0.0, 1.0);
        b[i] = nb.clamp(0.0, 1.0);
    }
}

/// Reflect index (no edge repeat, as `padding_mode='reflect'`) for any offset.
#[inline]
pub fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let m = i.rem_euclid(period);
    if m < n as isize {
        m as usize
    } else {
        (period - m) as usize
    }
}

/// Separable Gaussian blur of each plane (`h x w` planes), kernel radius ceil(3 sigma),
/// reflected borders. Rows are copied once into a reflect-padded buffer so the inner
/// loops are plain multiply-adds.
pub fn gaussian_blur(img: &mut [f32], h: usize, w: usize, sigma: f32) {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let mut kernel: Vec<f32> = (0..=2 * radius)
        .map(|k| {
            let d = k as f32 - radius as f32;
            (-(d * d) / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let sum: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let mut padded = vec![0f32; w + 2 * radius];
    let mut tmp = vec![0f32; h * w];
    for plane in img.chunks_mut(h * w) {
        // Horizontal pass into tmp.
        for y in 0..h {
            let row = &plane[y * w..(y + 1) * w];
            for (i, p) in padded.iter_mut().enumerate() {
                *p = row[reflect(i as isize - radius as isize, w)];
            }
            let out = &mut tmp[y * w..(y + 1) * w];
            out.fill(0.0);
            for (k, &kv) in kernel.iter().enumerate() {
                for (o, &v) in out.iter_mut().zip(&padded[k..k + w]) {
                    *o += kv * v;
                }
            }
        }
        // Vertical pass back into the plane: whole rows at a time.
        for y in 0..h {
            let out = &mut plane[y * w..(y + 1) * w];
            out.fill(0.0);
            for (k, &kv) in kernel.iter().enumerate() {
                let sy = reflect(y as isize + k as isize - radius as isize, h);
                for (o, &v) in out.iter_mut().zip(&tmp[sy * w..(sy + 1) * w]) {
                    *o += kv * v;
                }
            }
        }
    }
}

/// Mirrors every row of every plane (planes of `w` columns).
pub fn hflip<T>(data: &mut [T], w: usize) {
    for row in data.chunks_mut(w) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_jitter_keeps_the_image() {
        let mut img: Vec<f32> = (0..48).map(|i| (i as f32 * 0.37).fract()).collect();
        let orig = img.clone();
        let p = JitterParams {
            order: [3, 1, 0, 2],
            brightness: 1.0,
            contrast: 1.0,
            saturation: 1.0,
            hue: 0.0,
        };
        color_jitter(&mut img, &p);
        for (a, b) in img.iter().zip(&orig) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn hue_shift_of_a_full_turn_is_identity_and_half_turn_rotates_red_to_cyan() {
        let mut px = vec![1.0, 0.0, 0.0]; // one red pixel
        adjust_hue(&mut px, 0.5);
        assert!(
            (px[0] - 0.0).abs() < 1e-5 && (px[1] - 1.0).abs() < 1e-5 && (px[2] - 1.0).abs() < 1e-5
        );
        let mut px = vec![0.2, 0.5, 0.9];
        adjust_hue(&mut px, 1.0);
        assert!(
            (px[0] - 0.2).abs() < 1e-5 && (px[1] - 0.5).abs() < 1e-5 && (px[2] - 0.9).abs() < 1e-5
        );
    }

    #[test]
    fn blur_keeps_constant_images_and_smooths_an_impulse() {
        let mut c = vec![0.4f32; 3 * 8 * 8];
        gaussian_blur(&mut c, 8, 8, 1.0);
        assert!(c.iter().all(|v| (v - 0.4).abs() < 1e-5));
        let mut imp = vec![0f32; 9 * 9];
        imp[4 * 9 + 4] = 1.0;
        gaussian_blur(&mut imp, 9, 9, 1.0);
        let s: f32 = imp.iter().sum();
        assert!((s - 1.0).abs() < 1e-4);
        assert!(imp[4 * 9 + 4] < 0.2 && imp[4 * 9 + 5] > 0.05);
    }

    #[test]
    fn reflect_matches_torch_reflect_padding() {
        // torch reflect of [0,1,2,3] padded by 2 on both sides: 2 1 | 0 1 2 3 | 2 1
        let got: Vec<usize> = (-2..6).map(|i| reflect(i, 4)).collect();
        assert_eq!(got, vec![2, 1, 0, 1, 2, 3, 2, 1]);
    }
}
