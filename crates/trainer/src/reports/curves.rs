//! `curves.png`: training losses and validation mIoU against the step, from metrics.jsonl.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

pub(crate) struct Series {
    loss: Vec<(f64, f64)>,
    sup: Vec<(f64, f64)>,
    unsup: Vec<(f64, f64)>,
    reco: Vec<(f64, f64)>,
    /// (step, mIoU in %) of each evaluation.
    pub(crate) miou: Vec<(f64, f64)>,
}

pub(crate) fn read(metrics: &Path) -> anyhow::Result<Series> {
    let text = std::fs::read_to_string(metrics)
        .with_context(|| format!("cannot read {}", metrics.display()))?;
    let mut s = Series {
        loss: vec![],
        sup: vec![],
        unsup: vec![],
        reco: vec![],
        miou: vec![],
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(step), Some(kind)) = (v["step"].as_f64(), v["kind"].as_str()) else {
            continue;
        };
        let get = |k: &str| v[k].as_f64().filter(|x| x.is_finite());
        match kind {
            "train" => {
                for (k, dst) in [
                    ("loss", &mut s.loss),
                    ("sup", &mut s.sup),
                    ("unsup", &mut s.unsup),
                    ("reco", &mut s.reco),
                ] {
                    if let Some(x) = get(k) {
                        dst.push((step, x));
                    }
                }
            }
            "eval" => {
                if let Some(x) = get("miou") {
                    s.miou.push((step, 100.0 * x));
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

/// Draws the losses and the mIoU of `metrics` (a metrics.jsonl) into the PNG `out`.
pub fn draw_curves(metrics: &Path, out: &Path) -> anyhow::Result<()> {
    super::register_font();
    let s = read(metrics)?;
    let max_step = s
        .loss
        .iter()
        .chain(&s.miou)
        .map(|p| p.0)
        .fold(1.0, f64::max);
    let max_loss = s
        .loss
        .iter()
        .chain(&s.sup)
        .chain(&s.unsup)
        .chain(&s.reco)
        .map(|p| p.1)
        .fold(1e-3, f64::max);
    let tmp = out.with_file_name(".curves.png.tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1000, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let mut chart = ChartBuilder::on(&left)
            .caption("training losses", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..max_step, 0f64..max_loss * 1.05)?;
        chart.configure_mesh().x_desc("step").draw()?;
        for (name, data, color) in [
            ("total", &s.loss, BLACK),
            ("sup", &s.sup, BLUE),
            ("unsup", &s.unsup, GREEN),
            ("reco", &s.reco, RED),
        ] {
            if data.iter().any(|p| p.1 != 0.0) {
                chart
                    .draw_series(LineSeries::new(data.iter().copied(), color))?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        let max_miou = s.miou.iter().map(|p| p.1).fold(10.0, f64::max);
        let mut chart = ChartBuilder::on(&right)
            .caption("validation mIoU (%)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0f64..max_step, 0f64..(max_miou * 1.1).min(100.0))?;
        chart.configure_mesh().x_desc("step").draw()?;
        chart.draw_series(LineSeries::new(s.miou.iter().copied(), BLUE))?;
        chart.draw_series(s.miou.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))?;
        root.present()?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))
}
