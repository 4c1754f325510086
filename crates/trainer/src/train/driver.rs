//! A whole run from its settings to its summary, in this process alone ([`train`]) or as
//! one rank of a data-parallel run ([`train_in_group`]); progress lines go to stderr.
//! `trainer train` and `trainer ablate` both train through here.

use std::sync::Arc;

use anyhow::Context;

use super::config::TrainConfig;
use super::run::{Resume, RunSummary, Trainer};
use crate::distributed::ProcessGroup;

/// Trains in this process alone.
pub fn train(cfg: TrainConfig, resume: Resume) -> anyhow::Result<RunSummary> {
    let mut trainer = Trainer::new(cfg, resume)?;
    trainer
        .run(&mut |line| eprintln!("{line}"))?
        .context("a single-process run ends with a summary")
}

/// Trains as one rank of `group`; the summary comes back on rank 0. Every rank waits for
/// the others before returning, so that none finalises its process group while a peer
/// still trains.
pub fn train_in_group(
    cfg: TrainConfig,
    resume: Resume,
    group: Arc<dyn ProcessGroup>,
) -> anyhow::Result<Option<RunSummary>> {
    let mut trainer = Trainer::in_group(cfg, resume, group.clone())?;
    let summary = trainer.run(&mut |line| eprintln!("{line}"))?;
    group
        .barrier()
        .context("waiting for the other ranks at the end")?;
    Ok(summary)
}
