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

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};

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

#[cfg(test)]
mod tests {
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
    struct Doubling;
    impl ProcessGroup for Doubling {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn backend(&self) -> Backend {
            Backend::Single
        }
        fn all_reduce_flat(&self, flat: &Tensor) -> Result<Tensor> {
            flat * 3.0
        }
        fn broadcast_flat(&self, flat: &Tensor, _root: usize) -> Result<Tensor> {
            flat + 1.0
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn abort(&self, code: i32) -> ! {
            panic!("abort {code}")
        }
        fn bucket_bytes(&self) -> usize {
            16
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
        let out = Doubling.all_reduce_sum(&[a.clone(), b, c]).unwrap();
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
        let avg = average(&Doubling, &[a]).unwrap();
        assert_eq!(avg[0].to_vec2::<f32>().unwrap()[1], vec![4.5, 6., 7.5]);
        let bc = Doubling
            .broadcast(&[Tensor::new(&[1f32, 2.], &dev).unwrap()])
            .unwrap();
        assert_eq!(bc[0].to_vec1::<f32>().unwrap(), vec![2., 3.]);
    }

    #[test]
    fn integer_tensors_are_refused() {
        let err = Doubling
            .all_reduce_sum(&[Tensor::new(&[1u32], &Device::Cpu).unwrap()])
            .unwrap_err();
        assert!(err.to_string().contains("f32 or f64"), "{err}");
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
