//! The ablation: supervised, ClassMix and ClassMix + ReCo on the same split, seed and
//! iteration budget, reported as one mIoU table in Markdown. Over several consecutive
//! seeds (each draws its own split, initialisation and sampling) the three runs are
//! repeated and the table gives mean ± std over seeds.

use std::path::{Path, PathBuf};

use anyhow::Context;
use reco_data::MixMode;
use reco_util::fs::write_atomic;

use crate::reports::curves;
use crate::train::config::{TrainConfig, TrainMode};
use crate::train::{train, Resume, METRICS_FILE};

/// The table's file in the ablation's folder.
pub const TABLE_FILE: &str = "ablation.md";

/// One run of the ablation: a variant at one seed.
pub struct AblationRow {
    pub name: &'static str,
    pub seed: u64,
    pub best_miou: f64,
    pub best_step: usize,
    pub last_miou: f64,
    /// (step, mIoU in %) of every evaluation, from the run's metrics.jsonl.
    pub evals: Vec<(f64, f64)>,
    pub out: PathBuf,
}

const VARIANTS: [(&str, &str, TrainMode, MixMode, bool); 3] = [
    ("supervised", "sup", TrainMode::Sup, MixMode::None, false),
    (
        "ClassMix",
        "classmix",
        TrainMode::Semi,
        MixMode::ClassMix,
        false,
    ),
    (
        "ClassMix + ReCo",
        "classmix_reco",
        TrainMode::Semi,
        MixMode::ClassMix,
        true,
    ),
];

/// Mean and sample standard deviation (0 for a single value).
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// The table of a one-seed ablation: best, last and every evaluation per variant.
fn single_seed_table(rows: &[AblationRow]) -> String {
    let mut s = String::from(
        "| method | best mIoU (step) | last mIoU | mIoU % per evaluation (step: mIoU) |\n|---|---|---|---|\n",
    );
    for r in rows {
        let evals: Vec<String> = r
            .evals
            .iter()
            .map(|(step, miou)| format!("{step}: {miou:.2}"))
            .collect();
        s.push_str(&format!(
            "| {} | {:.2}% ({}) | {:.2}% | {} |\n",
            r.name,
            100.0 * r.best_miou,
            r.best_step,
            100.0 * r.last_miou,
            evals.join(", ")
        ));
    }
    s
}

/// The table of a several-seed ablation: mean ± std of last and best, and each seed's last.
fn multi_seed_table(rows: &[AblationRow]) -> String {
    let mut s = String::from(
        "| method | last mIoU (mean ± std) | best mIoU (mean ± std) | last mIoU % per seed (seed: mIoU) |\n|---|---|---|---|\n",
    );
    for (name, ..) in VARIANTS {
        let runs: Vec<&AblationRow> = rows.iter().filter(|r| r.name == name).collect();
        let last: Vec<f64> = runs.iter().map(|r| 100.0 * r.last_miou).collect();
        let best: Vec<f64> = runs.iter().map(|r| 100.0 * r.best_miou).collect();
        let ((lm, ls), (bm, bs)) = (mean_std(&last), mean_std(&best));
        let per_seed: Vec<String> = runs
            .iter()
            .map(|r| format!("{}: {:.2}", r.seed, 100.0 * r.last_miou))
            .collect();
        s.push_str(&format!(
            "| {name} | {lm:.2} ± {ls:.2}% | {bm:.2} ± {bs:.2}% | {} |\n",
            per_seed.join(", ")
        ));
    }
    s
}

/// The Markdown table of `rows` (all variants, one or several seeds) under `header`.
pub fn markdown(rows: &[AblationRow], header: &str) -> String {
    let several_seeds = rows.iter().any(|r| r.seed != rows[0].seed);
    let table = if several_seeds {
        multi_seed_table(rows)
    } else {
        single_seed_table(rows)
    };
    format!("{header}\n\n{table}")
}

/// Trains the three variants at `base.seed` into `dir`.
fn run_seed(base: &TrainConfig, dir: &Path, resume: Resume) -> anyhow::Result<Vec<AblationRow>> {
    let mut rows = Vec::new();
    for (name, sub, mode, mix, reco) in VARIANTS {
        let mut cfg = base.clone();
        cfg.mode = mode;
        cfg.mix = mix;
        cfg.reco = reco;
        cfg.out = dir.join(sub);
        cfg.validate()?;
        eprintln!("\n== {name}, seed {} ({}) ==", cfg.seed, cfg.out.display());
        let s = train(cfg, resume)?;
        // metrics.jsonl holds each evaluation once: resume truncates it to the checkpoint.
        let evals = curves::read(&s.out.join(METRICS_FILE))?.miou;
        rows.push(AblationRow {
            name,
            seed: base.seed,
            best_miou: s.best_miou,
            best_step: s.best_step,
            last_miou: s.last.miou,
            evals,
            out: s.out,
        });
    }
    Ok(rows)
}

/// Trains the three variants for each of `seeds` consecutive seeds from `base.seed`:
/// into `root` itself for one seed, into `root/seed-<s>` for several.
pub fn run(
    base: &TrainConfig,
    seeds: usize,
    root: &Path,
    resume: Resume,
) -> anyhow::Result<Vec<AblationRow>> {
    let mut rows = Vec::new();
    for k in 0..seeds as u64 {
        let mut cfg = base.clone();
        cfg.seed = base
            .seed
            .checked_add(k)
            .ok_or_else(|| anyhow::anyhow!("--seed {} + --seeds overflows", base.seed))?;
        // One seed keeps the flat layout; several get a folder each.
        let dir = if seeds == 1 {
            root.to_path_buf()
        } else {
            root.join(format!("seed-{}", cfg.seed))
        };
        rows.extend(run_seed(&cfg, &dir, resume)?);
    }
    Ok(rows)
}

/// The title line of the table: dataset, labels, backbone, budget and seeds.
pub fn header(base: &TrainConfig, seeds: usize) -> String {
    let seeds = if seeds == 1 {
        format!("seed {}", base.seed)
    } else {
        format!("seeds {}..={}", base.seed, base.seed + seeds as u64 - 1)
    };
    format!(
        "Ablation on {} ({} labels{}, backbone {}, {} iterations, {seeds})",
        base.dataset,
        base.num_labels,
        base.partial
            .map(|p| format!(", partial {p:?}"))
            .unwrap_or_default(),
        base.backbone,
        base.iters,
    )
}

/// Writes `table` to `root/ablation.md`; returns that path.
pub fn write_table(root: &Path, table: &str) -> anyhow::Result<PathBuf> {
    let md = root.join(TABLE_FILE);
    write_atomic(&md, table.as_bytes())
        .with_context(|| format!("cannot write the ablation table {}", md.display()))?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &'static str, seed: u64, last: f64) -> AblationRow {
        AblationRow {
            name,
            seed,
            best_miou: last + 0.01,
            best_step: 10,
            last_miou: last,
            evals: vec![(10.0, 100.0 * last)],
            out: PathBuf::new(),
        }
    }

    #[test]
    fn mean_std_uses_the_sample_deviation() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]);
        assert!((m - 2.0).abs() < 1e-12 && (s - 1.0).abs() < 1e-12);
        assert_eq!(mean_std(&[4.0]), (4.0, 0.0));
    }

    #[test]
    fn one_seed_lists_best_last_and_every_evaluation() {
        let rows = [row("supervised", 7, 0.30), row("ClassMix", 7, 0.31)];
        let md = markdown(&rows, "h");
        let sup = md
            .lines()
            .find(|l| l.starts_with("| supervised |"))
            .unwrap();
        assert_eq!(sup, "| supervised | 31.00% (10) | 30.00% | 10: 30.00 |");
    }

    #[test]
    fn several_seeds_give_mean_and_std_per_variant() {
        let mut rows = Vec::new();
        for (seed, base) in [(0, 0.30), (1, 0.32)] {
            rows.push(row("supervised", seed, base));
            rows.push(row("ClassMix", seed, base + 0.01));
            rows.push(row("ClassMix + ReCo", seed, base + 0.02));
        }
        let md = markdown(&rows, "h");
        let sup = md
            .lines()
            .find(|l| l.starts_with("| supervised |"))
            .unwrap();
        // last: 30 and 32 → 31.00 ± 1.41; best: 31 and 33.
        assert!(sup.contains("31.00 ± 1.41%"), "{sup}");
        assert!(sup.contains("32.00 ± 1.41%"), "{sup}");
        assert!(sup.contains("0: 30.00, 1: 32.00"), "{sup}");
        let reco = md
            .lines()
            .find(|l| l.starts_with("| ClassMix + ReCo |"))
            .unwrap();
        assert!(reco.contains("33.00 ± 1.41%"), "{reco}");
    }
}
