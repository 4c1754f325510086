//! `trainer`: the command line of the ReCo workspace. Each subcommand lives in its own
//! module; `main` only parses and dispatches. Without a subcommand it trains the
//! default run (ReCo + ClassMix on the built-in synthetic dataset).

use clap::{Parser, Subcommand};

mod config;
mod eval;
mod fsutil;
mod metrics;
mod optim;
mod plot;
mod split_cmd;
mod train;
mod train_cmd;

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
    Train(train_cmd::TrainArgs),
    /// Pick the labelled images (class-balanced, seeded) and save the split as JSON.
    Split(split_cmd::SplitArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        None => train_cmd::run(&train_cmd::TrainArgs::default()),
        Some(Commands::Train(args)) => train_cmd::run(&args),
        Some(Commands::Split(args)) => split_cmd::run(&args, &mut std::io::stdout().lock()),
    }
}
