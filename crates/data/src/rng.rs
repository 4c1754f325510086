//! Seed derivation: every random decision of the crate comes from a ChaCha RNG whose seed
//! is derived from the user's seed and the position of the decision (batch index, position
//! in the batch, ...), so results do not depend on thread scheduling. The mixer itself is
//! the workspace's one implementation, `reco_util::seed`; it is re-exported here so the
//! crate's call sites read `rng::rng_for(...)`.

pub use reco_util::seed::{hash_str, mix_seed, rng_for};
