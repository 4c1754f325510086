//! Who this process is in a distributed run, from the launcher's environment.
//!
//! Supported launchers (docs/distributed.md):
//! - `mpirun -np N trainer ...` (Open MPI: `OMPI_COMM_WORLD_RANK`, `_SIZE`, `_LOCAL_RANK`;
//!   MPICH/Hydra: `PMI_RANK`, `PMI_SIZE`, `MPI_LOCALRANKID`). With the `mpi` backend the
//!   MPI library's own rank and size are used and checked against these.
//! - torchrun-style variables `RANK`, `WORLD_SIZE`, `LOCAL_RANK` (one process per GPU,
//!   `nccl` backend). NCCL's unique id then travels through a file on a filesystem every
//!   rank sees, `RECO_RENDEZVOUS_FILE`; `MASTER_ADDR`/`MASTER_PORT` are not used.
//! - `srun` (SLURM): `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`; one task is
//!   one rank. The step's task count is read, not `SLURM_NTASKS`: a batch script itself
//!   sees `SLURM_PROCID=0` and the allocation's `SLURM_NTASKS`, and must stay one process.
//!   MPI then needs `srun --mpi=pmix`; NCCL takes its id from `RECO_RENDEZVOUS_FILE`, else
//!   over MPI when built with both.
//! - nothing set: one process.
//!
//! The first launcher whose variables are set wins, in the order Open MPI, MPICH,
//! torchrun, SLURM: `mpirun` and `torchrun` inside a SLURM job set their own variables,
//! and their processes inherit SLURM's.

use std::path::PathBuf;

use super::DistError;

/// Which launcher started this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchSource {
    Single,
    Mpi,
    Torchrun,
    Slurm,
}

impl LaunchSource {
    pub fn describe(self) -> &'static str {
        match self {
            LaunchSource::Single => "as a single process",
            LaunchSource::Mpi => "by mpirun",
            LaunchSource::Torchrun => "with torchrun-style RANK/WORLD_SIZE",
            LaunchSource::Slurm => "by srun",
        }
    }
}

/// This process's place in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub source: LaunchSource,
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine: selects the GPU.
    pub local_rank: usize,
    /// NCCL unique-id rendezvous file (torchrun-style launches).
    pub rendezvous: Option<PathBuf>,
}

/// Name of the variable holding the NCCL rendezvous file.
pub const RENDEZVOUS_VAR: &str = "RECO_RENDEZVOUS_FILE";

struct Vars {
    rank: &'static str,
    size: &'static str,
    local: &'static str,
    source: LaunchSource,
    name: &'static str,
}

const LAUNCHERS: [Vars; 4] = [
    Vars {
        rank: "OMPI_COMM_WORLD_RANK",
        size: "OMPI_COMM_WORLD_SIZE",
        local: "OMPI_COMM_WORLD_LOCAL_RANK",
        source: LaunchSource::Mpi,
        name: "Open MPI",
    },
    Vars {
        rank: "PMI_RANK",
        size: "PMI_SIZE",
        local: "MPI_LOCALRANKID",
        source: LaunchSource::Mpi,
        name: "MPICH",
    },
    Vars {
        rank: "RANK",
        size: "WORLD_SIZE",
        local: "LOCAL_RANK",
        source: LaunchSource::Torchrun,
        name: "torchrun-style",
    },
    Vars {
        rank: "SLURM_PROCID",
        size: "SLURM_STEP_NUM_TASKS",
        local: "SLURM_LOCALID",
        source: LaunchSource::Slurm,
        name: "SLURM (srun)",
    },
];

impl Launch {
    /// One process.
    pub fn single() -> Self {
        Launch {
            source: LaunchSource::Single,
            rank: 0,
            world_size: 1,
            local_rank: 0,
            rendezvous: None,
        }
    }

    /// Reads this process's environment.
    pub fn from_env() -> Result<Self, DistError> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Reads the launch from `get` (the environment, or a map in tests). The first
    /// launcher whose rank or size variable is set wins, in the order Open MPI, MPICH,
    /// torchrun, SLURM.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, DistError> {
        let parse = |var: &'static str| -> Result<Option<usize>, DistError> {
            match get(var) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|e| DistError::BadVar {
                        var,
                        value: v.clone(),
                        why: format!("expected a non-negative integer ({e})"),
                    }),
            }
        };
        for l in &LAUNCHERS {
            // A SLURM batch script (no job step) has SLURM_PROCID but no step task count:
            // it is one process.
            if l.source == LaunchSource::Slurm && get(l.size).is_none() {
                continue;
            }
            let (rank, size) = (parse(l.rank)?, parse(l.size)?);
            let (rank, world_size) = match (rank, size) {
                (None, None) => continue,
                (Some(r), Some(s)) => (r, s),
                (Some(_), None) => {
                    return Err(DistError::MissingVar {
                        source_name: l.name,
                        var: l.rank,
                        missing: l.size,
                    })
                }
                (None, Some(_)) => {
                    return Err(DistError::MissingVar {
                        source_name: l.name,
                        var: l.size,
                        missing: l.rank,
                    })
                }
            };
            if world_size == 0 || rank >= world_size {
                return Err(DistError::RankOutOfRange {
                    rank,
                    world_size,
                    var: l.rank,
                });
            }
            // One machine when the launcher does not say: the local rank is the rank.
            let local_rank = parse(l.local)?.unwrap_or(rank);
            return Ok(Launch {
                source: l.source,
                rank,
                world_size,
                local_rank,
                rendezvous: get(RENDEZVOUS_VAR)
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from),
            });
        }
        Ok(Launch::single())
    }

    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// The device this rank trains on: `cuda` becomes `cuda:$LOCAL_RANK` (one process
    /// per GPU); `cpu` and an explicit `cuda:K` are kept.
    pub fn device_name(&self, requested: &str) -> String {
        if requested == "cuda" {
            format!("cuda:{}", self.local_rank)
        } else {
            requested.to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Launch, DistError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_one_process() {
        let l = from(&[]).unwrap();
        assert_eq!(l, Launch::single());
        assert!(!l.is_distributed());
        assert_eq!(l.device_name("cuda"), "cuda:0");
    }

    #[test]
    fn open_mpi_variables() {
        let l = from(&[
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_LOCAL_RANK", "1"),
            // torchrun variables lose to the MPI launcher's.
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
        ])
        .unwrap();
        assert_eq!(
            (l.source, l.rank, l.world_size, l.local_rank),
            (LaunchSource::Mpi, 3, 4, 1)
        );
        assert_eq!(l.device_name("cuda"), "cuda:1");
        assert_eq!(l.device_name("cpu"), "cpu");
        assert_eq!(l.device_name("cuda:5"), "cuda:5");
    }

    #[test]
    fn mpich_and_torchrun_variables() {
        let l = from(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")]).unwrap();
        assert_eq!((l.source, l.rank, l.local_rank), (LaunchSource::Mpi, 1, 1));
        let l = from(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            (RENDEZVOUS_VAR, "/shared/run1.id"),
        ])
        .unwrap();
        assert_eq!(
            (l.source, l.rank, l.world_size, l.local_rank),
            (LaunchSource::Torchrun, 5, 8, 1)
        );
        assert_eq!(l.rendezvous, Some(PathBuf::from("/shared/run1.id")));
    }

    #[test]
    fn srun_tasks_are_ranks_and_a_batch_script_is_one_process() {
        let l = from(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_NODEID", "1"),
        ])
        .unwrap();
        assert_eq!(
            (l.source, l.rank, l.world_size, l.local_rank),
            (LaunchSource::Slurm, 3, 4, 1)
        );
        assert_eq!(l.device_name("cuda"), "cuda:1");
        // sbatch -n 4's batch script itself.
        let l = from(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "0"),
        ])
        .unwrap();
        assert_eq!(l, Launch::single());
        // mpirun and torchrun inside a SLURM job win over the variables they inherit.
        let l = from(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            ("SLURM_PROCID", "0"),
            ("SLURM_STEP_NUM_TASKS", "1"),
        ])
        .unwrap();
        assert_eq!((l.source, l.rank, l.world_size), (LaunchSource::Mpi, 1, 2));
        let l = from(&[
            ("RANK", "5"),
            ("WORLD_SIZE", "8"),
            ("SLURM_PROCID", "1"),
            ("SLURM_STEP_NUM_TASKS", "2"),
        ])
        .unwrap();
        assert_eq!(l.source, LaunchSource::Torchrun);
    }

    #[test]
    fn bad_variables_are_named() {
        let err = from(&[("RANK", "x"), ("WORLD_SIZE", "2")]).unwrap_err();
        assert!(err.to_string().contains("RANK=\"x\""), "{err}");
        let err = from(&[("RANK", "0")]).unwrap_err();
        assert!(err.to_string().contains("WORLD_SIZE is not"), "{err}");
        let err =
            from(&[("OMPI_COMM_WORLD_RANK", "2"), ("OMPI_COMM_WORLD_SIZE", "2")]).unwrap_err();
        assert!(
            err.to_string().contains("not below the world size 2"),
            "{err}"
        );
        let err = from(&[("RANK", "0"), ("WORLD_SIZE", "0")]).unwrap_err();
        assert!(matches!(err, DistError::RankOutOfRange { .. }), "{err}");
    }
}
