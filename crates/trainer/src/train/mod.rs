//! Training, split by job: [`learner`] (the networks, the supervised or semi-supervised
//! step, backward, SGD and EMA), [`run`] (the loop: schedule, logging, evaluation,
//! checkpoints) and [`state`] (the saved run state and the exact resume from it).

pub mod learner;
pub mod run;
pub mod seeds;
mod state;

pub use learner::{Learner, Network, Regime, StepLosses, Teacher};
pub(crate) use run::METRICS_FILE;
pub use run::{RunSummary, Trainer};
pub use seeds::RankSeeds;
