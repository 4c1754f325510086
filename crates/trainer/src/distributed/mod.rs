//! Process groups for data-parallel training (docs/distributed.md).
//!
//! A [`ProcessGroup`] is the small set of collectives data-parallel training needs:
//! an all-reduce-sum of a list of tensors (gradients, in buckets), a broadcast from
//! rank 0 (initial weights) and a barrier. Backends: [`SingleProcess`] (no-op, the
//! default), [`mpi::MpiGroup`] (cargo feature `mpi`, the system's Open MPI) and
//! [`nccl::NcclGroup`] (cargo feature `nccl`, GPUs). [`launch`] reads who we are from
//! the launcher's environment; [`check`] holds the checks of user input.

pub mod check;
pub mod launch;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
mod single;
#[cfg(test)]
pub(crate) mod testing;

use std::sync::Arc;

use anyhow::Context;

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};

pub use check::{check_resume_world_size, check_sync_bn, split_global_batch, DistError};
pub use launch::{Launch, LaunchSource};
pub use single::SingleProcess;

/// Gradients are all-reduced in buckets of at most this many bytes, as PyTorch DDP
/// does by default (25 MB): few enough collectives to amortise their latency, small
/// enough that the first buckets could travel while later gradients are computed.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Which collective engine a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// One process, collectives are the identity.
    Single,
    /// Open MPI (CPU clusters; this machine's tests). Cargo feature `mpi`.
    Mpi,
    /// NCCL (one process per GPU). Cargo feature `nccl`.
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Single => "single",
            Backend::Mpi => "mpi",
            Backend::Nccl => "nccl",
        }
    }

    /// The backend when `--dist-backend` is not given: `single` for one process; under a
    /// multi-rank launch `nccl` on GPUs (`device` `cuda` or `cuda:K`), `mpi` otherwise.
    pub fn default_for(launch: &Launch, device: &str) -> Self {
        if !launch.is_distributed() {
            Backend::Single
        } else if device.starts_with("cuda") {
            Backend::Nccl
        } else {
            Backend::Mpi
        }
    }

    /// Whether this binary was built with the backend's cargo feature.
    pub fn compiled(self) -> bool {
        match self {
            Backend::Single => true,
            Backend::Mpi => cfg!(feature = "mpi"),
            Backend::Nccl => cfg!(feature = "nccl"),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = DistError;
    fn from_str(s: &str) -> std::result::Result<Self, DistError> {
        match s {
            "single" => Ok(Backend::Single),
            "mpi" => Ok(Backend::Mpi),
            "nccl" => Ok(Backend::Nccl),
            other => Err(DistError::UnknownBackend(other.to_string())),
        }
    }
}

/// The collectives of data-parallel training. Every rank must call the same
/// collectives in the same order with tensors of the same shapes and dtypes.
///
/// Backends implement the flat primitives; [`ProcessGroup::all_reduce_sum`] and
/// [`ProcessGroup::broadcast`] bucket lists of tensors over them.
pub trait ProcessGroup: Send + Sync {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    fn backend(&self) -> Backend;

    /// Element-wise sum over ranks of a 1-D contiguous f32 or f64 tensor.
    fn all_reduce_flat(&self, flat: &Tensor) -> Result<Tensor>;
    /// Rank `root`'s value of a 1-D contiguous f32 or f64 tensor, on every rank.
    fn broadcast_flat(&self, flat: &Tensor, root: usize) -> Result<Tensor>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;

    /// Ends every rank of the job after an error on this one, so that no rank waits
    /// forever in a collective its peer will never join. Single process: exits.
    fn abort(&self, code: i32) -> !;

    /// Bucket bound of [`ProcessGroup::all_reduce_sum`], in bytes.
    fn bucket_bytes(&self) -> usize {
        DEFAULT_BUCKET_BYTES
    }

    /// Element-wise sums over ranks of `tensors` (same shapes, dtypes and devices as
    /// given), all-reduced in buckets of at most [`ProcessGroup::bucket_bytes`].
    fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        if self.world_size() == 1 {
            return Ok(tensors.to_vec());
        }
        bucketed(tensors, self.bucket_bytes(), |flat| {
            self.all_reduce_flat(flat)
        })
    }

    /// Rank 0's values of `tensors`, on every rank (for the initial weights).
    fn broadcast(&self, tensors: &[Tensor]) -> Result<Vec<Tensor>> {
        if self.world_size() == 1 {
            return Ok(tensors.to_vec());
        }
        bucketed(tensors, self.bucket_bytes(), |flat| {
            self.broadcast_flat(flat, 0)
        })
    }
}

/// Consecutive runs of `tensors` that share dtype and device and together hold at most
/// `max_bytes` (a larger tensor is a bucket on its own), as index ranges.
pub fn buckets(tensors: &[Tensor], max_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, t) in tensors.iter().enumerate() {
        let size = t.elem_count() * t.dtype().size_in_bytes();
        let same_kind = i == start
            || (t.dtype() == tensors[start].dtype()
                && t.device().same_device(tensors[start].device()));
        if i > start && (!same_kind || bytes + size > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < tensors.len() {
        out.push(start..tensors.len());
    }
    out
}

/// Flattens each bucket into one tensor, applies `collective` and cuts the result back
/// into the original shapes.
fn bucketed(
    tensors: &[Tensor],
    max_bytes: usize,
    collective: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
    let mut out = Vec::with_capacity(tensors.len());
    for range in buckets(tensors, max_bytes) {
        let group = &tensors[range];
        let dtype = group[0].dtype();
        if !matches!(dtype, DType::F32 | DType::F64) {
            candle_core::bail!("process group: collectives take f32 or f64 tensors, got {dtype:?}")
        }
        let flats = group
            .iter()
            .map(|t| t.flatten_all())
            .collect::<Result<Vec<_>>>()?;
        let flat = Tensor::cat(&flats, 0)?;
        let reduced = collective(&flat)?;
        if reduced.dims() != flat.dims() {
            candle_core::bail!(
                "process group: a collective over {} values returned {:?}",
                flat.elem_count(),
                reduced.dims()
            )
        }
        let mut offset = 0;
        for t in group {
            let n = t.elem_count();
            out.push(reduced.narrow(0, offset, n)?.reshape(t.shape())?);
            offset += n;
        }
    }
    Ok(out)
}

/// Averages gradients over ranks: the all-reduced sums divided by the world size.
pub fn average(group: &dyn ProcessGroup, grads: &[Tensor]) -> Result<Vec<Tensor>> {
    let sums = group.all_reduce_sum(grads)?;
    if group.world_size() == 1 {
        return Ok(sums);
    }
    let n = group.world_size() as f64;
    sums.into_iter().map(|g| g / n).collect()
}

/// Replaces, in `grads`, the gradients of `vars` by their average over the ranks of
/// `group`, all-reduced in the order of `vars` (every rank must pass the same variables
/// in the same order: sorted by name). One process: returns at once, touching nothing.
///
/// A variable may lack a gradient on some ranks only (a loss term that found nothing to
/// contrast on one rank's batch): it then counts as zeros there, so every rank reduces
/// the same list. One that lacks it on every rank stays without, as in one process
/// (SGD skips it). Knowing which is which costs one small all-reduce of flags.
pub fn average_grads(group: &dyn ProcessGroup, vars: &[Var], grads: &mut GradStore) -> Result<()> {
    if group.world_size() == 1 {
        return Ok(());
    }
    let first = match vars.first() {
        Some(v) => v,
        None => return Ok(()),
    };
    let present: Vec<f64> = vars
        .iter()
        .map(|v| f64::from(u8::from(grads.get(v.as_tensor()).is_some())))
        .collect();
    let present = Tensor::from_vec(present, vars.len(), first.device())?;
    let anywhere: Vec<f64> = group.all_reduce_flat(&present)?.to_vec1()?;
    let mut reduced_vars = Vec::new();
    let mut local = Vec::new();
    for (v, n) in vars.iter().zip(anywhere) {
        if n == 0.0 {
            continue;
        }
        local.push(match grads.get(v.as_tensor()) {
            Some(g) => g.detach(),
            None => v.as_detached_tensor().zeros_like()?,
        });
        reduced_vars.push(v);
    }
    for (v, g) in reduced_vars.into_iter().zip(average(group, &local)?) {
        grads.insert(v.as_tensor(), g);
    }
    Ok(())
}

/// Sets every variable of `vars` to rank 0's value (initial weights), in the order given
/// (sorted by name on every rank).
pub fn broadcast_vars(group: &dyn ProcessGroup, vars: &[Var]) -> Result<()> {
    if group.world_size() == 1 {
        return Ok(());
    }
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_detached_tensor()).collect();
    for (v, t) in vars.iter().zip(group.broadcast(&tensors)?) {
        v.set(&t)?;
    }
    Ok(())
}

/// A process group as the statistics reducer of synchronized batch norm
/// (`reco_models::sync_bn`).
pub struct SyncBnGroup(pub Arc<dyn ProcessGroup>);

impl reco_models::sync_bn::StatsAllReduce for SyncBnGroup {
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.flatten_all()?.contiguous()?;
        self.0.all_reduce_flat(&t)
    }
}

/// Runs `body`; on error, prints it with this rank's number and aborts the whole job
/// (MPI_Abort under MPI) instead of returning, so peers blocked in a collective end
/// too. Single process: returns the error.
pub fn run_or_abort<T>(
    group: &dyn ProcessGroup,
    body: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match body() {
        Ok(v) => Ok(v),
        Err(e) if group.world_size() > 1 => {
            eprintln!(
                "error on rank {} of {}: {e:#}\naborting every rank",
                group.rank(),
                group.world_size()
            );
            group.abort(1)
        }
        Err(e) => Err(e),
    }
}

/// The group this process belongs to, from the launch environment and the requested
/// backend: `Single` for one process, otherwise the compiled backend (an error names
/// the missing cargo feature).
pub fn init(
    launch: &Launch,
    backend: Backend,
) -> std::result::Result<Arc<dyn ProcessGroup>, DistError> {
    check::check_backend(launch, backend)?;
    match backend {
        Backend::Single => Ok(Arc::new(SingleProcess)),
        #[cfg(feature = "mpi")]
        Backend::Mpi => Ok(Arc::new(mpi::MpiGroup::init(launch)?)),
        #[cfg(feature = "nccl")]
        Backend::Nccl => Ok(Arc::new(nccl::NcclGroup::init(launch)?)),
        #[allow(unreachable_patterns)]
        other => Err(DistError::NotCompiled(other)),
    }
}

/// The process group of this launch: `backend` (`--dist-backend`) or, without it, the
/// one the launch suggests on `device` ([`Backend::default_for`]).
pub fn open_group(
    launch: &Launch,
    backend: Option<Backend>,
    device: &str,
) -> anyhow::Result<Arc<dyn ProcessGroup>> {
    let backend = backend.unwrap_or_else(|| Backend::default_for(launch, device));
    init(launch, backend).with_context(|| {
        format!(
            "cannot start the {} process group (rank {} of {})",
            backend.name(),
            launch.rank,
            launch.world_size
        )
    })
}

#[cfg(test)]
mod tests {
    use super::testing::FakeGroup;
    use super::*;
    use candle_core::Device;

    fn t(n: usize, dtype: DType) -> Tensor {
        Tensor::zeros(n, dtype, &Device::Cpu).unwrap()
    }

    #[test]
    fn buckets_respect_the_byte_bound_and_dtype() {
        // 4-byte f32: 10, 10, 30 values; bound 80 bytes = 20 f32.
        let ts = [t(10, DType::F32), t(10, DType::F32), t(30, DType::F32)];
        assert_eq!(buckets(&ts, 80), vec![0..2, 2..3]);
        assert_eq!(buckets(&ts, 40), vec![0..1, 1..2, 2..3]);
        assert_eq!(buckets(&ts, 1 << 20), vec![0..3]);
        let mixed = [t(2, DType::F32), t(2, DType::F64), t(2, DType::F64)];
        assert_eq!(buckets(&mixed, 1 << 20), vec![0..1, 1..3]);
        assert!(buckets(&[], 10).is_empty());
    }

    /// A fake two-rank group whose all-reduce triples and whose broadcast adds one, so
    /// that a result shows it went through the collective.
    fn doubling() -> FakeGroup {
        FakeGroup {
            rank: 0,
            backend: Backend::Single,
            all_reduce: |_, flat| flat * 3.0,
            broadcast: |flat| flat + 1.0,
            bucket_bytes: 16,
            ..FakeGroup::mirrored(0, 2)
        }
    }

    #[test]
    fn bucketed_collectives_keep_shapes_and_order() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 6., &dev)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let b = Tensor::new(&[7f32], &dev).unwrap();
        let c = Tensor::arange(0f64, 4., &dev)
            .unwrap()
            .reshape((2, 2))
            .unwrap();
        let out = doubling().all_reduce_sum(&[a.clone(), b, c]).unwrap();
        assert_eq!(out[0].dims(), [2, 3]);
        assert_eq!(
            out[0].to_vec2::<f32>().unwrap(),
            vec![vec![0., 3., 6.], vec![9., 12., 15.]]
        );
        assert_eq!(out[1].to_vec1::<f32>().unwrap(), vec![21.]);
        assert_eq!(
            out[2].to_vec2::<f64>().unwrap(),
            vec![vec![0., 3.], vec![6., 9.]]
        );
        let avg = average(&doubling(), &[a]).unwrap();
        assert_eq!(avg[0].to_vec2::<f32>().unwrap()[1], vec![4.5, 6., 7.5]);
        let bc = doubling()
            .broadcast(&[Tensor::new(&[1f32, 2.], &dev).unwrap()])
            .unwrap();
        assert_eq!(bc[0].to_vec1::<f32>().unwrap(), vec![2., 3.]);
    }

    #[test]
    fn integer_tensors_are_refused() {
        let err = doubling()
            .all_reduce_sum(&[Tensor::new(&[1u32], &Device::Cpu).unwrap()])
            .unwrap_err();
        assert!(err.to_string().contains("f32 or f64"), "{err}");
    }

    #[test]
    fn gradients_are_averaged_in_place_and_missing_ones_count_as_zeros() {
        let dev = Device::Cpu;
        let a = Var::new(&[1f32, 2.], &dev).unwrap();
        let b = Var::new(&[3f32], &dev).unwrap();
        let c = Var::new(&[4f32], &dev).unwrap();
        let loss = (a.as_tensor().sum_all().unwrap() * 2.0).unwrap();
        let mut grads = loss.backward().unwrap();
        assert!(grads.get(b.as_tensor()).is_none());
        // `doubling()` multiplies by 3 and has 2 ranks: the "average" is 1.5 x local.
        // Its flag all-reduce says b and c have gradients elsewhere (3 x 0 = 0 would
        // not): a flag of 0 stays 0, so b and c keep no gradient here.
        average_grads(&doubling(), &[a.clone(), b.clone(), c.clone()], &mut grads).unwrap();
        assert_eq!(
            grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![3., 3.]
        );
        assert!(grads.get(b.as_tensor()).is_none());
        assert!(grads.get(c.as_tensor()).is_none());

        // A group whose flags say every variable has a gradient on some rank.
        let all_present = FakeGroup {
            rank: 1,
            backend: Backend::Single,
            // Flags (f64) become "present somewhere"; gradients (f32) double.
            all_reduce: |_, flat| match flat.dtype() {
                DType::F64 => flat.ones_like(),
                _ => flat * 2.0,
            },
            broadcast: |flat| flat.zeros_like(),
            ..FakeGroup::mirrored(1, 2)
        };
        let mut grads = loss.backward().unwrap();
        average_grads(&all_present, &[a.clone(), b.clone()], &mut grads).unwrap();
        assert_eq!(
            grads.get(a.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![2., 2.]
        );
        // b had none here: zeros went into the all-reduce, and b now has a gradient.
        assert_eq!(
            grads.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(),
            vec![0.]
        );
        // Broadcast sets the variables to "rank 0's" values (zeros here).
        broadcast_vars(&all_present, std::slice::from_ref(&a)).unwrap();
        assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), vec![0., 0.]);
    }

    #[test]
    fn one_process_leaves_gradients_and_variables_alone() {
        let dev = Device::Cpu;
        let a = Var::new(&[1f32, 2.], &dev).unwrap();
        let mut grads = a.as_tensor().sum_all().unwrap().backward().unwrap();
        let before = grads.get(a.as_tensor()).unwrap().id();
        average_grads(&SingleProcess, std::slice::from_ref(&a), &mut grads).unwrap();
        // The very same tensor: nothing was flattened, copied or replaced.
        assert_eq!(grads.get(a.as_tensor()).unwrap().id(), before);
        broadcast_vars(&SingleProcess, std::slice::from_ref(&a)).unwrap();
        assert_eq!(a.as_tensor().to_vec1::<f32>().unwrap(), vec![1., 2.]);
    }

    #[test]
    fn the_default_backend_follows_the_launch_and_the_device() {
        let one = Launch::single();
        assert_eq!(Backend::default_for(&one, "cuda"), Backend::Single);
        let two = Launch {
            source: LaunchSource::Mpi,
            rank: 1,
            world_size: 2,
            local_rank: 1,
            rendezvous: None,
        };
        assert_eq!(Backend::default_for(&two, "cpu"), Backend::Mpi);
        assert_eq!(Backend::default_for(&two, "cuda"), Backend::Nccl);
        assert_eq!(Backend::default_for(&two, "cuda:3"), Backend::Nccl);
    }

    #[test]
    fn single_process_is_the_identity() {
        let g = SingleProcess;
        let x = Tensor::new(&[1f32, 2.], &Device::Cpu).unwrap();
        let out = g.all_reduce_sum(std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0].to_vec1::<f32>().unwrap(), vec![1., 2.]);
        assert_eq!(
            average(&g, &[x]).unwrap()[0].to_vec1::<f32>().unwrap(),
            vec![1., 2.]
        );
        g.barrier().unwrap();
        assert_eq!((g.rank(), g.world_size()), (0, 1));
    }
}
