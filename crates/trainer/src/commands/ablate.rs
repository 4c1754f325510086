//! `trainer ablate`: flags → the base settings, the seeds and the folder of
//! [`crate::ablation`]; its table printed (and written as Markdown).

use std::path::PathBuf;

use anyhow::bail;

use super::train::TrainArgs;
use crate::ablation::{self, AblationRow};
use crate::train::Resume;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct AblateArgs {
    /// Every flag of `trainer train`; --mode, --mix and --reco are set per variant, and
    /// each variant writes to a sub-folder of --out (default runs/ablate-<dataset>).
    #[command(flatten)]
    pub train: TrainArgs,
    /// Repeat the ablation for this many consecutive seeds, starting at --seed, and
    /// report mean ± std over them (each seed in its own sub-folder seed-<s>).
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
}

pub fn run(args: &AblateArgs) -> anyhow::Result<Vec<AblationRow>> {
    if args.seeds == 0 {
        bail!("--seeds 0: give at least one seed");
    }
    let base = args.train.resolve()?;
    let root = match &args.train.out {
        Some(out) => out.clone(),
        None => PathBuf::from("runs").join(format!("ablate-{}", base.dataset)),
    };
    // A resumed ablation continues the variants it had begun and starts the others.
    let resume = match args.train.resume {
        None => Resume::No,
        Some(_) => Resume::Auto,
    };
    let rows = ablation::run(&base, args.seeds, &root, resume)?;
    let table = ablation::markdown(&rows, &ablation::header(&base, args.seeds));
    let md = ablation::write_table(&root, &table)?;
    println!("\n{table}\n(written to {})", md.display());
    Ok(rows)
}
