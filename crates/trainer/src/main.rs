//! `trainer`: the command line of the ReCo workspace. Each subcommand lives in its own
//! module; `main` only parses and dispatches. Without a subcommand it trains the
//! default run (ReCo + ClassMix on the built-in synthetic dataset).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use trainer::commands::{ablate, bench, check, eval, predict, split, train};

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    version,
    about = "Semi-supervised semantic segmentation with regional contrast (ReCo)"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Train (supervised or semi-supervised, with or without ReCo).
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on a validation set (mIoU, pixel accuracy, per-class IoU).
    Eval(eval::EvalArgs),
    /// Segment images: colour masks in the dataset palette and overlays.
    Predict(predict::PredictArgs),
    /// Supervised vs ClassMix vs ClassMix + ReCo on the same split and budget.
    Ablate(ablate::AblateArgs),
    /// Time the train step, the evaluation forward and the ReCo loss (Pascal VOC setting).
    Bench(bench::BenchArgs),
    /// Run the reference fixtures of the original code on a device and print the errors.
    Check(check::CheckArgs),
    /// Pick the labelled images (class-balanced, seeded) and save the split as JSON.
    Split(split::SplitArgs),
}

/// Large buffers on transparent huge pages (`reco_util::alloc`; measured in
/// docs/benchmarks.md, issue 15).
#[global_allocator]
static ALLOCATOR: reco_util::alloc::HugePageAlloc = reco_util::alloc::HugePageAlloc;

fn main() -> ExitCode {
    reco_util::threads::single_candle_elementwise_pool();
    // `train --help` (and `ablate --help`) show each setting's default, per dataset.
    let cmd = Cli::command()
        .mut_subcommand("train", train::with_defaults_in_help)
        .mut_subcommand("ablate", train::with_defaults_in_help);
    let cli = Cli::from_arg_matches(&cmd.get_matches()).unwrap_or_else(|e| e.exit());
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A run stopped by a signal is no failure of the program: it says where it
        // stopped and exits as schedulers expect of it, with 128 + signal.
        Err(e) => match e.downcast_ref::<trainer::train::Interrupted>() {
            Some(i) => {
                eprintln!("{i}");
                ExitCode::from(trainer::train::stop::exit_code(i.signal) as u8)
            }
            None => {
                eprintln!("Error: {e:?}");
                ExitCode::FAILURE
            }
        },
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => {
            // The bare command never fails on an earlier default run: it takes the next
            // free folder (runs/synthetic, runs/synthetic-1, ...) instead.
            let base = std::path::PathBuf::from("runs/synthetic");
            let out = (0..)
                .map(|i| match i {
                    0 => base.clone(),
                    i => std::path::PathBuf::from(format!("runs/synthetic-{i}")),
                })
                .find(|p| !p.join("state.safetensors").exists())
                .unwrap_or(base);
            train::run(&train::TrainArgs {
                out: Some(out),
                ..Default::default()
            })
        }
        Some(Commands::Train(args)) => train::run(&args),
        Some(Commands::Eval(args)) => eval::run(&args, &mut std::io::stdout().lock()),
        Some(Commands::Predict(args)) => predict::run(&args).map(|_| ()),
        Some(Commands::Ablate(args)) => ablate::run(&args).map(|_| ()),
        Some(Commands::Bench(args)) => bench::run(&args),
        Some(Commands::Check(args)) => check::run(&args).map(|_| ()),
        Some(Commands::Split(args)) => split::run(&args, &mut std::io::stdout().lock()),
    }
}
