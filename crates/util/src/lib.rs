//! The few helpers that every crate of the workspace needs, in one place so that each
//! exists once: seed derivation ([`seed`]), files that are never seen half-written
//! ([`fs`]), the statistics the benchmarks print ([`bench`]) and the `RECO_OPS` switch
//! between the CPU kernels and the device-generic path ([`ops_path`]), how the CPU
//! thread pools are shared ([`threads`]) and a huge-page allocator for the binaries
//! ([`alloc`]).
//!
//! It depends on nothing of the workspace, so the library crates (`reco-models`,
//! `reco-loss`, `reco-data`) can share it without knowing one another.

pub mod alloc;
pub mod bench;
pub mod fs;
pub mod ops_path;
pub mod seed;
pub mod threads;
