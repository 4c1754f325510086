//! Training, split by job: [`config`] (every setting of a run), [`learner`] (the
//! networks, the supervised or semi-supervised step, backward, SGD and EMA), [`run`] (the
//! loop: schedule, logging, evaluation, checkpoints), [`state`] (the saved run state and
//! the exact resume from it), [`stop`] (the clean stop on a scheduler's signal), [`seeds`]
//! (each rank's random streams) and [`driver`] (a whole run, alone or as one rank, to its
//! summary).

pub mod config;
pub mod driver;
pub mod learner;
pub mod run;
pub mod seeds;
pub(crate) mod state;
pub mod stop;

pub use config::{TrainConfig, TrainMode};
pub use driver::{train, train_in_group};
pub use learner::{Learner, Network, Regime, StepLosses, Teacher};
pub(crate) use run::METRICS_FILE;
pub use run::{Resume, RunSummary, Trainer};
pub use seeds::RankSeeds;
pub use stop::Interrupted;
