//! The NCCL process group (cargo feature `nccl`): one process per GPU, collectives on
//! the device through candle's cudarc bindings.
//!
//! NOT COMPILED YET: the machine this was written on has no CUDA toolchain in the
//! default build; it follows cudarc 0.19's `nccl::safe` API and candle 0.11's
//! `CudaStorage` (docs/distributed.md says how to build and check it on a GPU).
//!
//! NCCL's unique id reaches every rank in one of two ways:
//! - under `mpirun` (build with `--features mpi,nccl`): rank 0 creates it and MPI
//!   broadcasts it; MPI stays up to abort the job on errors;
//! - torchrun-style (`RANK`/`WORLD_SIZE`/`LOCAL_RANK`): through the file named by
//!   `RECO_RENDEZVOUS_FILE` on a filesystem all ranks see. Rank 0 writes it atomically
//!   (refusing a stale one) and removes it once the communicator is up; the others wait
//!   for it at most [`RENDEZVOUS_TIMEOUT`].

use std::path::Path;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor,
};

use super::{Backend, DistError, Launch, LaunchSource, ProcessGroup};

/// How long ranks other than 0 wait for the rendezvous file.
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(300);

pub struct NcclGroup {
    comm: Comm,
    device: Device,
    rank: usize,
    size: usize,
    owner: ThreadId,
    /// Kept alive under mpirun: aborts the job on errors (see [`super::mpi`]).
    #[cfg(feature = "mpi")]
    mpi: Option<super::mpi::MpiGroup>,
}

// SAFETY: the communicator is only used from `owner` (checked before every call).
unsafe impl Send for NcclGroup {}
unsafe impl Sync for NcclGroup {}

impl NcclGroup {
    /// Joins the NCCL communicator of this launch on GPU `cuda:$LOCAL_RANK`.
    pub fn init(launch: &Launch) -> std::result::Result<Self, DistError> {
        let device = Device::new_cuda(launch.local_rank).map_err(|e| {
            DistError::Nccl(format!("cannot open GPU cuda:{}: {e}", launch.local_rank))
        })?;
        let cuda = device
            .as_cuda_device()
            .map_err(|e| DistError::Nccl(e.to_string()))?;
        #[cfg(feature = "mpi")]
        let mut mpi = None;
        // srun: the rendezvous file when given, else over MPI (srun --mpi=pmix).
        let over_file = matches!(launch.source, LaunchSource::Torchrun | LaunchSource::Slurm);
        let id = match (launch.source, &launch.rendezvous) {
            (_, Some(path)) if over_file => id_over_file(path, launch.rank)?,
            (LaunchSource::Torchrun, None) => return Err(DistError::NcclNeedsRendezvous),
            #[cfg(feature = "mpi")]
            (LaunchSource::Mpi | LaunchSource::Slurm, _) => {
                let group = super::mpi::MpiGroup::init(launch)?;
                let id = id_over_mpi(&group)?;
                mpi = Some(group);
                id
            }
            #[cfg(not(feature = "mpi"))]
            (LaunchSource::Slurm, None) => return Err(DistError::NcclNeedsRendezvous),
            (LaunchSource::Single, _) => new_id()?,
            #[allow(unreachable_patterns)]
            _ => return Err(DistError::NcclNeedsMpi),
        };
        let comm = Comm::from_rank(cuda.cuda_stream(), launch.rank, launch.world_size, id)
            .map_err(|e| DistError::Nccl(format!("ncclCommInitRank failed: {e:?}")))?;
        if over_file && launch.rank == 0 {
            if let Some(path) = &launch.rendezvous {
                // Every rank has joined: the id is no longer needed, and a later run must
                // not read this one.
                let _ = std::fs::remove_file(path);
            }
        }
        Ok(NcclGroup {
            comm,
            device,
            rank: launch.rank,
            size: launch.world_size,
            owner: std::thread::current().id(),
            #[cfg(feature = "mpi")]
            mpi,
        })
    }

    fn on_owner(&self, what: &str) -> Result<()> {
        if std::thread::current().id() != self.owner {
            candle_core::bail!(
                "NCCL {what} called from a thread other than the one that created the communicator"
            )
        }
        Ok(())
    }

    /// The GPU of this rank.
    pub fn device(&self) -> &Device {
        &self.device
    }
}

fn new_id() -> std::result::Result<Id, DistError> {
    Id::new().map_err(|e| DistError::Nccl(format!("ncclGetUniqueId failed: {e:?}")))
}

#[cfg(feature = "mpi")]
fn id_over_mpi(group: &super::mpi::MpiGroup) -> std::result::Result<Id, DistError> {
    let mut bytes = [0 as std::ffi::c_char; 128];
    if group.rank() == 0 {
        bytes = *new_id()?.internal();
    }
    // 128 small integers travel exactly as f64 through the group's broadcast.
    let values: Vec<f64> = bytes.iter().map(|&b| b as f64).collect();
    let t =
        Tensor::new(values.as_slice(), &Device::Cpu).map_err(|e| DistError::Mpi(e.to_string()))?;
    let got: Vec<f64> = group
        .broadcast_flat(&t, 0)
        .and_then(|t| t.to_vec1())
        .map_err(|e| DistError::Mpi(format!("broadcasting the NCCL id: {e}")))?;
    for (b, v) in bytes.iter_mut().zip(got) {
        *b = v as std::ffi::c_char;
    }
    Ok(Id::uninit(bytes))
}

fn rendezvous_err(path: &Path, why: impl Into<String>) -> DistError {
    DistError::Rendezvous {
        path: path.display().to_string(),
        why: why.into(),
    }
}

fn id_over_file(path: &Path, rank: usize) -> std::result::Result<Id, DistError> {
    if rank == 0 {
        if path.exists() {
            return Err(rendezvous_err(
                path,
                "exists already (left by an earlier run?): delete it and launch again",
            ));
        }
        let id = new_id()?;
        let hex: String = id
            .internal()
            .iter()
            .map(|&b| format!("{:02x}", b as u8))
            .collect();
        reco_util::fs::write_atomic(path, hex.as_bytes())
            .map_err(|e| rendezvous_err(path, e.to_string()))?;
        return Ok(id);
    }
    let start = Instant::now();
    loop {
        match std::fs::read_to_string(path) {
            Ok(hex) => return parse_id(path, hex.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if start.elapsed() > RENDEZVOUS_TIMEOUT {
                    return Err(rendezvous_err(
                        path,
                        format!(
                            "rank 0 did not write it within {} s: is rank 0 running, and is the path on a filesystem every rank sees?",
                            RENDEZVOUS_TIMEOUT.as_secs()
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(rendezvous_err(path, e.to_string())),
        }
    }
}

fn parse_id(path: &Path, hex: &str) -> std::result::Result<Id, DistError> {
    if hex.len() != 256 {
        return Err(rendezvous_err(
            path,
            format!("holds {} characters, expected 256 hex digits", hex.len()),
        ));
    }
    let mut bytes = [0 as std::ffi::c_char; 128];
    for (i, b) in bytes.iter_mut().enumerate() {
        let v = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|e| rendezvous_err(path, format!("not hex: {e}")))?;
        *b = v as std::ffi::c_char;
    }
    Ok(Id::uninit(bytes))
}

/// A collective as a candle op: NCCL works on device buffers, which candle hands out
/// only to custom ops.
struct Collective<'a> {
    comm: &'a Comm,
    /// `None`: all-reduce sum; `Some(root)`: broadcast from `root`.
    root: Option<usize>,
}

impl CustomOp1 for Collective<'_> {
    fn name(&self) -> &'static str {
        "reco-nccl-collective"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "the nccl process group takes GPU tensors; use the mpi backend on the CPU"
        )
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let n = l.shape().elem_count();
        let (start, end) = l.contiguous_offsets().ok_or_else(|| {
            candle_core::Error::Msg("NCCL collective: expected a contiguous tensor".into())
        })?;
        let dev = s.device().clone();
        macro_rules! run {
            ($t:ty) => {{
                let src = s.as_cuda_slice::<$t>()?.slice(start..end);
                let mut dst = dev.alloc_zeros::<$t>(n)?;
                let status = match self.root {
                    None => self.comm.all_reduce(&src, &mut dst, &ReduceOp::Sum),
                    Some(root) => self.comm.broadcast(Some(&src), &mut dst, root as i32),
                };
                status.map_err(|e| {
                    candle_core::Error::Msg(format!("NCCL collective failed: {e:?}"))
                })?;
                debug_assert_eq!(dst.len(), n);
                CudaStorage::wrap_cuda_slice(dst, dev)
            }};
        }
        let out = match s.dtype() {
            DType::F32 => run!(f32),
            DType::F64 => run!(f64),
            other => candle_core::bail!("NCCL collective: f32 or f64 tensors only, got {other:?}"),
        };
        Ok((out, l.shape().clone()))
    }
}

impl ProcessGroup for NcclGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn backend(&self) -> Backend {
        Backend::Nccl
    }

    fn all_reduce_flat(&self, flat: &Tensor) -> Result<Tensor> {
        self.on_owner("all-reduce")?;
        let flat = flat.to_device(&self.device)?.contiguous()?;
        flat.apply_op1_no_bwd(&Collective {
            comm: &self.comm,
            root: None,
        })
    }

    fn broadcast_flat(&self, flat: &Tensor, root: usize) -> Result<Tensor> {
        self.on_owner("broadcast")?;
        let flat = flat.to_device(&self.device)?.contiguous()?;
        flat.apply_op1_no_bwd(&Collective {
            comm: &self.comm,
            root: Some(root),
        })
    }

    fn barrier(&self) -> Result<()> {
        // NCCL has no barrier: a one-value all-reduce, waited for on the host.
        let one = Tensor::ones(1, DType::F32, &self.device)?;
        self.all_reduce_flat(&one)?;
        self.device.synchronize()
    }

    fn abort(&self, code: i32) -> ! {
        #[cfg(feature = "mpi")]
        if let Some(mpi) = &self.mpi {
            mpi.abort(code)
        }
        // torchrun-style launchers end the other ranks when one exits with an error.
        std::process::exit(code)
    }
}
