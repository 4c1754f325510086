//! The default process group: one process, every collective is the identity.

use candle_core::{Result, Tensor};

use super::{Backend, ProcessGroup};

/// One process: rank 0 of 1.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleProcess;

impl ProcessGroup for SingleProcess {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn backend(&self) -> Backend {
        Backend::Single
    }

    fn all_reduce_flat(&self, flat: &Tensor) -> Result<Tensor> {
        Ok(flat.clone())
    }

    fn broadcast_flat(&self, flat: &Tensor, _root: usize) -> Result<Tensor> {
        Ok(flat.clone())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
