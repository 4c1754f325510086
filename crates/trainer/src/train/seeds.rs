//! The seeds of one rank's random streams (docs/distributed.md).
//!
//! Every random decision of a run comes from `mix_seed(seed, tag, ...)`. In a
//! data-parallel run each rank must draw its own labelled and unlabelled batches,
//! augmentation, mixing and ReCo samples, so the rank is mixed in after the tag. With one
//! process it is not: a single-process run draws exactly what it drew before
//! distributed training existed (the default run's recorded numbers stay valid).
//! Seeds that must agree on every rank (initial weights, the labelled/unlabelled split,
//! partial labels) do not go through this type.

use reco_util::seed::mix_seed;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankSeeds {
    seed: u64,
    rank: usize,
    world_size: usize,
}

impl RankSeeds {
    pub fn new(seed: u64, rank: usize, world_size: usize) -> Self {
        Self {
            seed,
            rank,
            world_size,
        }
    }

    /// The seed of a whole stream (a data loader, which adds its batch index):
    /// `(seed, tag)` with one process, `(seed, tag, rank)` with several.
    pub fn stream(&self, tag: u64) -> u64 {
        mix_seed(&self.parts(tag, None))
    }

    /// The seed of one step's draws: `(seed, tag, step)` with one process,
    /// `(seed, tag, rank, step)` with several.
    pub fn at_step(&self, tag: u64, step: usize) -> u64 {
        mix_seed(&self.parts(tag, Some(step)))
    }

    fn parts(&self, tag: u64, step: Option<usize>) -> Vec<u64> {
        let mut parts = vec![self.seed, tag];
        if self.world_size > 1 {
            parts.push(self.rank as u64);
        }
        parts.extend(step.map(|s| s as u64));
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_draws_what_it_drew_before_ranks_existed() {
        let s = RankSeeds::new(5, 0, 1);
        // The formulas of the single-process trainer, before data-parallel training.
        assert_eq!(s.stream(2), mix_seed(&[5, 2]));
        assert_eq!(s.at_step(4, 17), mix_seed(&[5, 4, 17]));
    }

    #[test]
    fn ranks_draw_different_streams() {
        let r0 = RankSeeds::new(5, 0, 2);
        let r1 = RankSeeds::new(5, 1, 2);
        assert_ne!(r0.stream(2), r1.stream(2));
        assert_ne!(r0.at_step(4, 17), r1.at_step(4, 17));
        assert_eq!(r1.at_step(4, 17), mix_seed(&[5, 4, 1, 17]));
        // Still different per tag and per step.
        assert_ne!(r1.at_step(4, 17), r1.at_step(4, 18));
        assert_ne!(r1.stream(2), r1.stream(3));
        // Rank 0 of several is not the single process (its streams are its own).
        assert_ne!(r0.stream(2), RankSeeds::new(5, 0, 1).stream(2));
    }
}
