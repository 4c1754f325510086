//! The trainer's library: everything the `trainer` binary does, as modules, so that
//! integration tests (and other programs) can drive training, evaluation and the
//! optimiser directly. The binary itself (`main.rs`) only parses and dispatches to
//! [`commands`], a thin layer of flags over the library below it.
//!
//! ```text
//! commands/      one file per subcommand: its flags, flags → library settings, printing
//!   args.rs      flag groups several subcommands share (--device, the model, inference)
//! ablation.rs    supervised vs ClassMix vs ClassMix + ReCo over seeds, as one table
//! check/         the reference fixtures, the CPU-vs-device step and the smoke test
//! bench.rs       timing the train step, the evaluation forward, the ReCo loss, the state write
//! inference/     a checkpoint rebuilt for inference, its palette, photos segmented
//! train/         a training run: settings, learner, loop, saved state, stop on a signal,
//!                seeds, driver
//! evaluation.rs  metrics (and class relation) of a network on a validation set
//! reports/       metrics, curves.png, relation.png, the explain pictures, TensorBoard
//!                event files and the run log (metrics.jsonl + TensorBoard)
//! image_io.rs    photos read as viewers show them, PNG files written atomically
//! distributed/   process groups of data-parallel training (single, MPI, NCCL) and the
//!                launchers (mpirun, srun, torchrun-style)
//! optim/         SGD, the poly schedule and the mean-teacher EMA (in-place CPU kernels)
//! ```
//!
//! A module uses only modules below it in this list: `commands` uses the library, the
//! library never uses `commands`, and no two modules use each other (checked at every
//! level by `scripts/module-cycles.py`).

pub mod ablation;
pub mod bench;
pub mod check;
pub mod commands;
pub mod distributed;
pub mod evaluation;
pub mod image_io;
pub mod inference;
pub mod optim;
pub mod reports;
pub mod train;
