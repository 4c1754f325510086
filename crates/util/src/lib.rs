//! The few helpers that every crate of the workspace needs, in one place so that each
//! exists once: seed derivation ([`seed`]), files that are never seen half-written
//! ([`fs`]) and the statistics the benchmarks print ([`bench`]).
//!
//! It depends on nothing of the workspace, so the library crates (`reco-models`,
//! `reco-loss`, `reco-data`) can share it without knowing one another.

pub mod bench;
pub mod fs;
pub mod seed;
