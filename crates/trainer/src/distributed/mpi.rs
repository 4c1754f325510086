//! The MPI process group (cargo feature `mpi`): the system's Open MPI through the `mpi`
//! crate. Used on CPU clusters and by the 2-rank tests (`mpirun -np 2`).
//!
//! Errors never leave a peer waiting: MPI errors are fatal to the job (MPI's default
//! handler), a panic on any rank calls `MPI_Abort` (hook installed by [`MpiGroup::init`]),
//! and [`super::run_or_abort`] turns a returned error into `MPI_Abort`. A rank killed by
//! a signal is noticed by `mpirun`, which ends the others.

use std::sync::Once;
use std::thread::ThreadId;

use candle_core::{DType, Result, Tensor};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use super::{Backend, DistError, Launch, LaunchSource, ProcessGroup};

/// `MPI_COMM_WORLD` of this process. MPI is initialised with `MPI_THREAD_FUNNELED`:
/// only the thread that created the group calls MPI (rayon's workers never do); calls
/// from another thread are refused with an error, which is what makes the `Send + Sync`
/// below sound.
pub struct MpiGroup {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    owner: ThreadId,
    bucket_bytes: usize,
    // Last: finalises MPI when dropped, after the communicator handle.
    _universe: Universe,
}

// SAFETY: the raw MPI handles are only used from `owner` (checked by `on_owner` before
// every MPI call); other threads get an error instead.
unsafe impl Send for MpiGroup {}
unsafe impl Sync for MpiGroup {}

static PANIC_HOOK: Once = Once::new();

impl MpiGroup {
    /// Initialises MPI. When `launch` came from mpirun's variables, MPI's rank and size
    /// must agree with them.
    pub fn init(launch: &Launch) -> std::result::Result<Self, DistError> {
        // Without an MPI plugin srun gives the tasks no PMI server, and Open MPI's own
        // MPI_Init then fails with a page about rebuilding it; say what to do instead.
        if launch.source == LaunchSource::Slurm
            && std::env::var_os("PMIX_RANK").is_none()
            && std::env::var_os("PMI_FD").is_none()
        {
            return Err(DistError::Mpi(
                "srun started this task without an MPI plugin (no PMIX_RANK or PMI_FD in its environment): start the tasks with `srun --mpi=pmix` (or set MpiDefault=pmix in slurm.conf)".into(),
            ));
        }
        let (universe, provided) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| DistError::Mpi("MPI is already initialised in this process".into()))?;
        if provided == Threading::Single {
            return Err(DistError::Mpi(
                "this MPI library only supports single-threaded processes (MPI_THREAD_SINGLE); the trainer needs MPI_THREAD_FUNNELED".into(),
            ));
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        if matches!(launch.source, LaunchSource::Mpi | LaunchSource::Slurm)
            && (rank, size) != (launch.rank, launch.world_size)
        {
            let hint = match launch.source {
                LaunchSource::Slurm => "start the tasks with `srun --mpi=pmix` (or set MpiDefault=pmix in slurm.conf), so that MPI sees the job step",
                _ => "is this binary linked against the MPI that mpirun belongs to?",
            };
            return Err(DistError::Mpi(format!(
                "MPI says rank {rank} of {size} but the launcher's variables say rank {} of {}: {hint}",
                launch.rank, launch.world_size
            )));
        }
        if size > 1 {
            install_abort_on_panic();
        }
        Ok(MpiGroup {
            world,
            rank,
            size,
            owner: std::thread::current().id(),
            bucket_bytes: super::DEFAULT_BUCKET_BYTES,
            _universe: universe,
        })
    }

    /// Bounds the gradient buckets (default [`super::DEFAULT_BUCKET_BYTES`]).
    pub fn with_bucket_bytes(mut self, bytes: usize) -> Self {
        self.bucket_bytes = bytes.max(1);
        self
    }

    fn on_owner(&self, what: &str) -> Result<()> {
        if std::thread::current().id() != self.owner {
            candle_core::bail!(
                "MPI {what} called from a thread other than the one that initialised MPI (MPI_THREAD_FUNNELED)"
            )
        }
        Ok(())
    }
}

/// A panic on one rank would leave the others blocked in their next collective:
/// after the usual panic message, abort the whole job.
fn install_abort_on_panic() {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            eprintln!("panic on an MPI rank: aborting every rank");
            // SAFETY: MPI is initialised (the hook is installed after initialisation);
            // MPI_Abort does not return.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 101);
            }
        }));
    });
}

fn count(flat: &Tensor) -> Result<usize> {
    let n = flat.elem_count();
    if flat.rank() != 1 {
        candle_core::bail!(
            "MPI collective: expected a 1-D tensor, got {:?}",
            flat.dims()
        )
    }
    if n > i32::MAX as usize {
        candle_core::bail!(
            "MPI collective: {n} values exceed MPI's count limit; use smaller buckets"
        )
    }
    Ok(n)
}

impl ProcessGroup for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> Backend {
        Backend::Mpi
    }

    fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    fn all_reduce_flat(&self, flat: &Tensor) -> Result<Tensor> {
        self.on_owner("all-reduce")?;
        let n = count(flat)?;
        macro_rules! reduce {
            ($t:ty) => {{
                let send: Vec<$t> = flat.to_vec1()?;
                let mut recv = vec![0 as $t; n];
                self.world
                    .all_reduce_into(&send[..], &mut recv[..], SystemOperation::sum());
                Tensor::from_vec(recv, n, flat.device())
            }};
        }
        match flat.dtype() {
            DType::F32 => reduce!(f32),
            DType::F64 => reduce!(f64),
            other => candle_core::bail!("MPI all-reduce: f32 or f64 tensors only, got {other:?}"),
        }
    }

    fn broadcast_flat(&self, flat: &Tensor, root: usize) -> Result<Tensor> {
        self.on_owner("broadcast")?;
        let n = count(flat)?;
        if root >= self.size {
            candle_core::bail!(
                "MPI broadcast: root {root} is not below the world size {}",
                self.size
            )
        }
        macro_rules! bcast {
            ($t:ty) => {{
                let mut buf: Vec<$t> = flat.to_vec1()?;
                self.world
                    .process_at_rank(root as i32)
                    .broadcast_into(&mut buf[..]);
                Tensor::from_vec(buf, n, flat.device())
            }};
        }
        match flat.dtype() {
            DType::F32 => bcast!(f32),
            DType::F64 => bcast!(f64),
            other => candle_core::bail!("MPI broadcast: f32 or f64 tensors only, got {other:?}"),
        }
    }

    fn barrier(&self) -> Result<()> {
        self.on_owner("barrier")?;
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
