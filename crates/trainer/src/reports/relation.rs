//! The class-relation graph of an evaluated network (docs/design.md#losses-and-sampling)
//! drawn as `relation.png`, with the class names on both axes: the matrix the ReCo key
//! sampler draws negative classes from, made from the class-mean representations over
//! the validation set ([`crate::evaluation::evaluate_with_relation`]).

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use reco_loss::ClassRelation;

use crate::image_io::encode_png;

pub(crate) const RELATION_FILE: &str = "relation.png";

/// White (the smallest entry) to dark blue (the largest): rows of an early network are
/// close to uniform, and a scale from 0 would show them all the same. NaN entries
/// (diagonal, absent classes) light grey.
fn cell_colour(v: f32, min: f32, max: f32) -> RGBColor {
    if v.is_nan() {
        return RGBColor(225, 225, 225);
    }
    let t = if max - min > 1e-9 {
        ((v - min) / (max - min)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    let lerp = |a: f32, b: f32| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0))
}

/// Draws `relation` as a heat map (row = query class, column = negative class) with
/// `names` on both axes, written atomically to `out`.
pub fn draw_relation(relation: &ClassRelation, names: &[String], out: &Path) -> anyhow::Result<()> {
    super::register_font();
    let n = relation.num_classes.max(1);
    let cell: u32 = (640 / n as u32).clamp(10, 48);
    let label_chars = names
        .iter()
        .map(|s| s.chars().count())
        .max()
        .unwrap_or(2)
        .min(24) as u32;
    let font_px = (cell * 3 / 5).clamp(9, 14);
    let margin = 10 + label_chars * font_px * 3 / 5 + 6;
    let title = 46;
    // Wide enough for the title line.
    let width = (margin + n as u32 * cell + 20).max(500);
    let height = title + margin + n as u32 * cell + 20;
    let mut buf = vec![255u8; (width * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let values = || relation.matrix.iter().copied().filter(|v| !v.is_nan());
        let max = values().fold(f32::NEG_INFINITY, f32::max);
        let min = values().fold(f32::INFINITY, f32::min);
        root.draw(&Text::new(
            "class relation (row: query class, column: negative class)",
            (10, 8),
            ("sans-serif", 14).into_font(),
        ))?;
        if min <= max {
            root.draw(&Text::new(
                format!("white {min:.3} .. dark blue {max:.3}, grey: unused"),
                (10, 26),
                ("sans-serif", 12).into_font(),
            ))?;
        }
        let (x0, y0) = (margin as i32, (title + margin) as i32);
        let c = cell as i32;
        for i in 0..relation.num_classes {
            for j in 0..relation.num_classes {
                let (x, y) = (x0 + j as i32 * c, y0 + i as i32 * c);
                root.draw(&Rectangle::new(
                    [(x, y), (x + c - 1, y + c - 1)],
                    cell_colour(relation.get(i, j), min, max).filled(),
                ))?;
            }
        }
        let name = |k: usize| -> String {
            let s = names.get(k).cloned().unwrap_or_else(|| k.to_string());
            s.chars().take(label_chars as usize).collect()
        };
        let font = ("sans-serif", font_px).into_font();
        for k in 0..relation.num_classes {
            let mid = k as i32 * c + c / 2;
            let left = font
                .clone()
                .color(&BLACK)
                .pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(name(k), (x0 - 4, y0 + mid), left))?;
            let top = font
                .clone()
                .transform(FontTransform::Rotate270)
                .color(&BLACK)
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw(&Text::new(name(k), (x0 + mid, y0 - 4), top))?;
        }
        root.present()?;
    }
    let img = image::RgbImage::from_raw(width, height, buf).context("relation image buffer")?;
    let bytes = encode_png(&img, out)?;
    reco_util::fs::write_atomic(out, &bytes)
        .with_context(|| format!("cannot write {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_map_is_written_with_one_cell_per_class_pair() {
        let dir = tempfile::tempdir().unwrap();
        let nan = f32::NAN;
        let relation = ClassRelation {
            num_classes: 3,
            present: vec![true; 3],
            matrix: vec![nan, 0.7, 0.3, 0.5, nan, 0.5, 0.1, 0.9, nan],
        };
        let names: Vec<String> = ["background", "cat", "dog"].map(String::from).to_vec();
        let path = dir.path().join(RELATION_FILE);
        draw_relation(&relation, &names, &path).unwrap();
        let img = image::open(&path).unwrap().into_rgb8();
        // The largest entry (dog -> cat) is dark blue, the diagonal grey, 0.3 in between.
        let has = |c: RGBColor| img.pixels().any(|p| p.0 == [c.0, c.1, c.2]);
        assert!(has(RGBColor(8, 48, 107)), "no cell for the largest entry");
        assert!(has(RGBColor(225, 225, 225)), "no grey diagonal");
        assert!(
            has(RGBColor(255, 255, 255)),
            "no white cell for the smallest entry"
        );
        assert!(has(cell_colour(0.3, 0.1, 0.9)), "no cell for 0.3");
        assert!(img.width() > 3 * 10 && img.height() > 3 * 10);
    }
}
