//! The subcommands of `trainer`, one module each: the clap arguments, the turning of
//! flags into the library's settings, and what is printed. The work itself is the
//! library's (see the crate's layout); [`args`] holds the flag groups several
//! subcommands share.

pub mod ablate;
pub mod args;
pub mod bench;
pub mod check;
pub mod eval;
pub mod predict;
pub mod split;
pub mod train;

/// A subcommand's arguments alone as a parser, for the commands' unit tests: parse with
/// `Wrapper::<TrainArgs>::try_parse_from(["train", ...])`.
#[cfg(test)]
#[derive(clap::Parser)]
pub(crate) struct Wrapper<A: clap::Args> {
    #[command(flatten)]
    pub args: A,
}
