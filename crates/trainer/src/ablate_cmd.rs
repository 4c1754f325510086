//! `trainer ablate`: supervised, ClassMix and ClassMix + ReCo on the same split, seed
//! and iteration budget, reported as one mIoU table (also written as Markdown).

use std::path::PathBuf;

use reco_data::MixMode;

use crate::config::TrainMode;
use crate::fsutil::write_atomic;
use crate::plot;
use crate::train::METRICS_FILE;
use crate::train_cmd::{train, TrainArgs};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct AblateArgs {
    /// Every flag of `trainer train`; --mode, --mix and --reco are set per variant, and
    /// each variant writes to a sub-folder of --out (default runs/ablate-<dataset>).
    #[command(flatten)]
    pub train: TrainArgs,
}

/// One line of the ablation table.
pub struct AblationRow {
    pub name: &'static str,
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

pub fn markdown(rows: &[AblationRow], header: &str) -> String {
    let mut s = format!(
        "{header}\n\n| method | best mIoU (step) | last mIoU | mIoU % per evaluation (step: mIoU) |\n|---|---|---|---|\n"
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

pub fn run(args: &AblateArgs) -> anyhow::Result<Vec<AblationRow>> {
    let base = args.train.resolve()?;
    let root = match &args.train.out {
        Some(out) => out.clone(),
        None => PathBuf::from("runs").join(format!("ablate-{}", base.dataset)),
    };
    let mut rows = Vec::new();
    for (name, dir, mode, mix, reco) in VARIANTS {
        let mut cfg = base.clone();
        cfg.mode = mode;
        cfg.mix = mix;
        cfg.reco = reco;
        cfg.out = root.join(dir);
        cfg.validate()?;
        eprintln!("\n== {name} ({}) ==", cfg.out.display());
        let s = train(cfg, args.train.resume)?;
        // metrics.jsonl holds each evaluation once: resume truncates it to the checkpoint.
        let evals = plot::read(&s.out.join(METRICS_FILE))?.miou;
        rows.push(AblationRow {
            name,
            best_miou: s.best_miou,
            best_step: s.best_step,
            last_miou: s.last.miou,
            evals,
            out: s.out,
        });
    }
    let header = format!(
        "Ablation on {} ({} labels{}, backbone {}, {} iterations, seed {})",
        base.dataset,
        base.num_labels,
        base.partial
            .map(|p| format!(", partial {p:?}"))
            .unwrap_or_default(),
        base.backbone,
        base.iters,
        base.seed
    );
    let table = markdown(&rows, &header);
    write_atomic(&root.join("ablation.md"), table.as_bytes())?;
    println!(
        "\n{table}\n(written to {})",
        root.join("ablation.md").display()
    );
    Ok(rows)
}
