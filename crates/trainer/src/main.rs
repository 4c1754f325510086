//! `trainer`: the command line of the ReCo workspace. Each subcommand lives in its own
//! module; `main` only parses and dispatches.

use clap::{Parser, Subcommand};

mod split_cmd;

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    version,
    about = "Semi-supervised semantic segmentation with regional contrast (ReCo)"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand, Debug)]
enum Commands {
    /// Pick the labelled images (class-balanced, seeded) and save the split as JSON.
    Split(split_cmd::SplitArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Commands::Split(args) => split_cmd::run(&args, &mut std::io::stdout().lock()),
    }
}
