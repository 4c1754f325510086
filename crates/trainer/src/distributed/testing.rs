//! A stand-in for a process group of several ranks, for unit tests of code that must
//! behave differently with several ranks: each collective is a plain function of this
//! rank's input, so a result shows that (and how) it went through the collective.

use candle_core::{Result, Tensor};

use super::{Backend, ProcessGroup, DEFAULT_BUCKET_BYTES};

pub(crate) struct FakeGroup {
    pub rank: usize,
    pub world_size: usize,
    pub backend: Backend,
    /// This rank's result of an all-reduce of `flat`.
    pub all_reduce: fn(&FakeGroup, &Tensor) -> Result<Tensor>,
    /// This rank's result of a broadcast of `flat`.
    pub broadcast: fn(&Tensor) -> Result<Tensor>,
    pub bucket_bytes: usize,
}

impl FakeGroup {
    /// Rank `rank` of `world_size` ranks that all hold what this one holds: all-reduce
    /// multiplies by the world size, broadcast returns its input.
    pub fn mirrored(rank: usize, world_size: usize) -> Self {
        Self {
            rank,
            world_size,
            backend: Backend::Mpi,
            all_reduce: |g, flat| flat * g.world_size as f64,
            broadcast: |flat| Ok(flat.clone()),
            bucket_bytes: DEFAULT_BUCKET_BYTES,
        }
    }
}

impl ProcessGroup for FakeGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world_size
    }
    fn backend(&self) -> Backend {
        self.backend
    }
    fn all_reduce_flat(&self, flat: &Tensor) -> Result<Tensor> {
        (self.all_reduce)(self, flat)
    }
    fn broadcast_flat(&self, flat: &Tensor, _root: usize) -> Result<Tensor> {
        (self.broadcast)(flat)
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        panic!("abort {code}")
    }
    fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }
}
