//! Errors of distributed runs and the checks of user input that produce them.

use super::{Backend, Launch, LaunchSource};

/// What can go wrong setting up or configuring a distributed run. Each message names the
/// thing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("unknown process-group backend `{0}`: use single, mpi or nccl")]
    UnknownBackend(String),
    #[error(
        "this trainer was built without the `{}` backend: rebuild with `cargo build --release -p trainer --features {}`",
        .0.name(), .0.name()
    )]
    NotCompiled(Backend),
    #[error("environment variable {var}={value:?} is not valid: {why}")]
    BadVar {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("{source_name} launch: {var} is set but {missing} is not; set both (or neither)")]
    MissingVar {
        source_name: &'static str,
        var: &'static str,
        missing: &'static str,
    },
    #[error("rank {rank} is not below the world size {world_size} (from {var})")]
    RankOutOfRange {
        rank: usize,
        world_size: usize,
        var: &'static str,
    },
    #[error(
        "the global batch of {global} images does not divide into {world_size} ranks: use a multiple of {world_size} (each rank draws global/{world_size})"
    )]
    BatchNotDivisible { global: usize, world_size: usize },
    #[error(
        "--sync-bn needs a process group of several ranks (launch with `mpirun -np N`, `srun --mpi=pmix -n N` or torchrun-style RANK/WORLD_SIZE); on one process plain batch norm already uses the whole batch"
    )]
    SyncBnWithoutGroup,
    #[error(
        "the checkpoint was written by {saved} rank(s) but this run has {now}: resume with the same world size, or start a new run from its weights"
    )]
    ResumeWorldSize { saved: usize, now: usize },
    #[error(
        "launched as {world_size} ranks ({}) but the backend is `single`: pass --dist-backend mpi (CPU) or nccl (GPU)",
        .launcher.describe()
    )]
    SingleButLaunched {
        world_size: usize,
        launcher: LaunchSource,
    },
    #[error(
        "the mpi backend needs an MPI launch (`mpirun -np N trainer ...` or `srun --mpi=pmix -n N trainer ...`); this process was started {}",
        .0.describe()
    )]
    MpiNeedsMpirun(LaunchSource),
    #[error(
        "nccl under mpirun hands its unique id over MPI, which this build lacks: rebuild with `--features mpi,nccl`, or launch torchrun-style with RECO_RENDEZVOUS_FILE"
    )]
    NcclNeedsMpi,
    #[error(
        "nccl with a torchrun-style launch (or under srun in a build without mpi) needs a rendezvous file on a filesystem every rank sees: set RECO_RENDEZVOUS_FILE=/shared/path (MASTER_ADDR/MASTER_PORT are not used)"
    )]
    NcclNeedsRendezvous,
    #[error("MPI: {0}")]
    Mpi(String),
    #[error("NCCL: {0}")]
    Nccl(String),
    #[error("rendezvous file {path}: {why}")]
    Rendezvous { path: String, why: String },
}

/// The per-rank batch of a global batch split over `world_size` ranks.
pub fn split_global_batch(global: usize, world_size: usize) -> Result<usize, DistError> {
    if world_size == 0 || global == 0 || !global.is_multiple_of(world_size) {
        return Err(DistError::BatchNotDivisible { global, world_size });
    }
    Ok(global / world_size)
}

/// `--sync-bn` is meaningful only with several ranks.
pub fn check_sync_bn(sync_bn: bool, world_size: usize) -> Result<(), DistError> {
    if sync_bn && world_size < 2 {
        return Err(DistError::SyncBnWithoutGroup);
    }
    Ok(())
}

/// A resumed run continues the same data streams only with the same number of ranks.
pub fn check_resume_world_size(saved: usize, now: usize) -> Result<(), DistError> {
    if saved != now {
        return Err(DistError::ResumeWorldSize { saved, now });
    }
    Ok(())
}

/// Whether `backend` can run this launch with this build.
pub fn check_backend(launch: &Launch, backend: Backend) -> Result<(), DistError> {
    if !backend.compiled() {
        return Err(DistError::NotCompiled(backend));
    }
    match backend {
        Backend::Single if launch.world_size > 1 => Err(DistError::SingleButLaunched {
            world_size: launch.world_size,
            launcher: launch.source,
        }),
        Backend::Mpi if launch.source == LaunchSource::Torchrun => {
            Err(DistError::MpiNeedsMpirun(launch.source))
        }
        Backend::Nccl if launch.source == LaunchSource::Mpi && !Backend::Mpi.compiled() => {
            Err(DistError::NcclNeedsMpi)
        }
        Backend::Nccl if launch.source == LaunchSource::Torchrun && launch.rendezvous.is_none() => {
            Err(DistError::NcclNeedsRendezvous)
        }
        Backend::Nccl
            if launch.source == LaunchSource::Slurm
                && launch.rendezvous.is_none()
                && !Backend::Mpi.compiled() =>
        {
            Err(DistError::NcclNeedsRendezvous)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(source: LaunchSource, world_size: usize) -> Launch {
        Launch {
            source,
            rank: 0,
            world_size,
            local_rank: 0,
            rendezvous: None,
        }
    }

    #[test]
    fn global_batch_must_divide() {
        assert_eq!(split_global_batch(16, 4).unwrap(), 4);
        assert_eq!(split_global_batch(7, 1).unwrap(), 7);
        let err = split_global_batch(10, 4).unwrap_err();
        assert!(err.to_string().contains("multiple of 4"), "{err}");
        assert!(split_global_batch(0, 2).is_err());
        assert!(split_global_batch(4, 0).is_err());
    }

    #[test]
    fn sync_bn_needs_several_ranks() {
        check_sync_bn(false, 1).unwrap();
        check_sync_bn(true, 2).unwrap();
        let err = check_sync_bn(true, 1).unwrap_err();
        assert!(err.to_string().contains("mpirun -np N"), "{err}");
    }

    #[test]
    fn resume_needs_the_same_world_size() {
        check_resume_world_size(2, 2).unwrap();
        let err = check_resume_world_size(2, 4).unwrap_err();
        assert!(
            err.to_string()
                .contains("written by 2 rank(s) but this run has 4"),
            "{err}"
        );
    }

    #[test]
    fn backends_missing_from_the_build_are_named() {
        let single = launch(LaunchSource::Single, 1);
        check_backend(&single, Backend::Single).unwrap();
        for b in [Backend::Mpi, Backend::Nccl] {
            let r = check_backend(&single, b);
            if b.compiled() {
                assert!(r.is_ok(), "{b:?}: {r:?}");
            } else {
                let err = r.unwrap_err().to_string();
                assert!(err.contains(&format!("--features {}", b.name())), "{err}");
            }
        }
    }

    #[test]
    fn launches_and_backends_must_match() {
        let err = check_backend(&launch(LaunchSource::Mpi, 2), Backend::Single).unwrap_err();
        assert!(err.to_string().contains("--dist-backend"), "{err}");
        if Backend::Mpi.compiled() {
            let err = check_backend(&launch(LaunchSource::Torchrun, 2), Backend::Mpi).unwrap_err();
            assert!(err.to_string().contains("mpirun"), "{err}");
            check_backend(&launch(LaunchSource::Mpi, 2), Backend::Mpi).unwrap();
        }
        if Backend::Nccl.compiled() {
            let err = check_backend(&launch(LaunchSource::Torchrun, 2), Backend::Nccl).unwrap_err();
            assert!(err.to_string().contains("RECO_RENDEZVOUS_FILE"), "{err}");
        }
    }

    #[test]
    fn backend_names_parse() {
        assert_eq!("mpi".parse::<Backend>().unwrap(), Backend::Mpi);
        assert_eq!("nccl".parse::<Backend>().unwrap(), Backend::Nccl);
        assert_eq!("single".parse::<Backend>().unwrap(), Backend::Single);
        let err = "gloo".parse::<Backend>().unwrap_err();
        assert!(err.to_string().contains("single, mpi or nccl"), "{err}");
    }
}
