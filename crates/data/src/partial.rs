//! Partial labels (the original's `pascal_preprocess.py`): per class region of an image,
//! keep one random pixel (p0), or grow a 5x5-dilated blob from one random pixel until it
//! covers 1 / 5 / 25 % of the region (p1 / p5 / p25). Everything else becomes ignore.

use image::GrayImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::kind::IGNORE;

/// Which partial-label setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partial {
    P0,
    P1,
    P5,
    P25,
}

impl Partial {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "p0" => Some(Partial::P0),
            "p1" => Some(Partial::P1),
            "p5" => Some(Partial::P5),
            "p25" => Some(Partial::P25),
            _ => None,
        }
    }

    /// Share of each class region kept (p0: a single pixel).
    pub fn fraction(self) -> f64 {
        match self {
            Partial::P0 => 0.0,
            Partial::P1 => 0.01,
            Partial::P5 => 0.05,
            Partial::P25 => 0.25,
        }
    }
}

impl std::str::FromStr for Partial {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
            .ok_or_else(|| format!("unknown partial setting `{s}`: expected p0, p1, p5 or p25"))
    }
}

/// The partial version of `label`. Classes are visited in increasing order and each draws
/// its seed pixel from `rng`, as the original does with numpy.
pub fn partial_label(label: &GrayImage, mode: Partial, rng: &mut impl Rng) -> GrayImage {
    let (w, h) = (label.width() as usize, label.height() as usize);
    let raw = label.as_raw();
    let mut out = GrayImage::from_pixel(w as u32, h as u32, image::Luma([IGNORE]));
    let mut present = [false; 256];
    raw.iter().for_each(|&v| present[v as usize] = true);
    for class in (0..=254u8).filter(|&c| present[c as usize]) {
        let pixels: Vec<usize> = (0..raw.len()).filter(|&i| raw[i] == class).collect();
        let seed_px = pixels[rng.gen_range(0..pixels.len())];
        let (sy, sx) = (seed_px / w, seed_px % w);
        let target = (mode.fraction() * pixels.len() as f64) as usize;
        // Summed-area table of this class's mask, to count class pixels in a square fast.
        let mut sat = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            let mut row = 0u32;
            for x in 0..w {
                row += (raw[y * w + x] == class) as u32;
                sat[(y + 1) * (w + 1) + x + 1] = sat[y * (w + 1) + x + 1] + row;
            }
        }
        let count = |r: usize| {
            let (y0, y1) = (sy.saturating_sub(r), (sy + r + 1).min(h));
            let (x0, x1) = (sx.saturating_sub(r), (sx + r + 1).min(w));
            (sat[y1 * (w + 1) + x1] + sat[y0 * (w + 1) + x0]
                - sat[y0 * (w + 1) + x1]
                - sat[y1 * (w + 1) + x0]) as usize
        };
        // Each 5x5 dilation grows the square blob by 2 pixels on every side.
        let mut r = 0;
        if mode != Partial::P0 {
            while count(r) < target {
                r += 2;
            }
        }
        let (y0, y1) = (sy.saturating_sub(r), (sy + r + 1).min(h));
        let (x0, x1) = (sx.saturating_sub(r), (sx + r + 1).min(w));
        for y in y0..y1 {
            for x in x0..x1 {
                if raw[y * w + x] == class {
                    out.put_pixel(x as u32, y as u32, image::Luma([class]));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_for;

    fn two_class_label() -> GrayImage {
        GrayImage::from_fn(40, 30, |x, y| {
            image::Luma([if y < 2 {
                IGNORE
            } else if x < 25 {
                1
            } else {
                4
            }])
        })
    }

    #[test]
    fn p0_keeps_one_pixel_per_class() {
        let l = two_class_label();
        let p = partial_label(&l, Partial::P0, &mut rng_for(&[0]));
        let kept: Vec<u8> = p.iter().copied().filter(|&v| v != IGNORE).collect();
        assert_eq!(kept.len(), 2);
        assert!(kept.contains(&1) && kept.contains(&4));
    }

    #[test]
    fn p25_keeps_at_least_a_quarter_of_each_region_and_only_true_labels() {
        let l = two_class_label();
        for seed in 0..5 {
            let p = partial_label(&l, Partial::P25, &mut rng_for(&[seed]));
            for class in [1u8, 4] {
                let region = l.iter().filter(|&&v| v == class).count();
                let kept = p.iter().filter(|&&v| v == class).count();
                assert!(kept * 4 >= region, "class {class}: {kept} of {region}");
                assert!(kept < region, "p25 should not keep the whole region");
            }
            for (a, b) in p.iter().zip(l.iter()) {
                assert!(*a == IGNORE || a == b);
            }
        }
    }
}
