//! The trainer's library: everything the `trainer` binary does, as modules, so that
//! integration tests (and other programs) can drive training, evaluation and the
//! optimiser directly.

pub mod ablate_cmd;
pub mod bench_cmd;
pub mod check_cmd;
pub mod checkpoint_model;
pub mod classes;
pub mod cli_args;
pub mod config;
pub mod dist;
pub mod eval;
pub mod eval_cmd;
pub mod explain;
pub mod metrics;
pub mod optim;
pub mod plot;
pub mod predict_cmd;
pub mod relation;
pub mod smoke;
pub mod split_cmd;
pub mod train;
pub mod train_cmd;
