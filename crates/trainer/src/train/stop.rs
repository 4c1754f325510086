//! Stopping a run cleanly when the scheduler or the user asks: SIGTERM (SLURM's
//! `scancel`, the end of a time limit, a preemption), SIGINT (Ctrl-C) and SIGUSR1
//! (`sbatch --signal=USR1@T`, sent ahead of the end).
//!
//! The handler only records the signal; the training loop looks at it after each step
//! ([`StopSignal::agreed`]), so the step in flight, an evaluation or a checkpoint being
//! written always finishes. On several ranks the ranks agree with one small all-reduce
//! per step, so that a signal delivered to any rank stops all of them after the same
//! step. A second signal while the first is pending exits at once with `128 + signal`.
//!
//! Handlers come from `signal-hook` (its `low_level::register`), which chains with any
//! handler installed before and keeps the closure async-signal-safe: an atomic swap and
//! `_exit`.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Once;

use candle_core::{Device, Tensor};

use crate::distributed::ProcessGroup;

/// The signals that stop a run, in the order the ranks' agreement picks one when
/// several arrived on different ranks.
pub const STOP_SIGNALS: [i32; 3] = [
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGUSR1,
];

/// The first stop signal this process received (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);
static INSTALL: Once = Once::new();

/// The name schedulers and `kill -l` use.
pub fn signal_name(signal: i32) -> String {
    match signal {
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGUSR1 => "SIGUSR1".into(),
        other => format!("signal {other}"),
    }
}

/// The exit status a process stopped by `signal` reports, as shells and schedulers
/// expect (`128 + signal`: 143 for SIGTERM, 130 for SIGINT, 138 for SIGUSR1).
pub fn exit_code(signal: i32) -> i32 {
    128 + signal
}

/// Watches for the stop signals of this process.
#[derive(Clone, Copy, Debug, Default)]
pub struct StopSignal;

impl StopSignal {
    /// Installs the handlers (once per process; later calls are free).
    pub fn install() -> anyhow::Result<Self> {
        let mut result = Ok(());
        INSTALL.call_once(|| {
            for sig in STOP_SIGNALS {
                // SAFETY: the closure only touches an atomic and calls `_exit`, both
                // async-signal-safe.
                let registered = unsafe {
                    signal_hook::low_level::register(sig, move || {
                        if PENDING
                            .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                            .is_err()
                        {
                            signal_hook::low_level::exit(exit_code(sig) as _);
                        }
                    })
                };
                if let Err(e) = registered {
                    result = Err(anyhow::anyhow!(
                        "cannot install the {} handler: {e}",
                        signal_name(sig)
                    ));
                    return;
                }
            }
        });
        result.map(|_| StopSignal)
    }

    /// The signal this process received, if any.
    pub fn local(&self) -> Option<i32> {
        match PENDING.load(Ordering::SeqCst) {
            0 => None,
            s => Some(s),
        }
    }

    /// The signal that stops every rank after this step, agreed over `group` (one
    /// all-reduce of three numbers; nothing with one process): the first of
    /// [`STOP_SIGNALS`] that any rank received.
    pub fn agreed(&self, group: &dyn ProcessGroup) -> anyhow::Result<Option<i32>> {
        let local = self.local();
        if group.world_size() == 1 {
            return Ok(local);
        }
        let flags: Vec<f64> = STOP_SIGNALS
            .iter()
            .map(|&s| f64::from(u8::from(local == Some(s))))
            .collect();
        let flags = Tensor::from_vec(flags, STOP_SIGNALS.len(), &Device::Cpu)?;
        let any: Vec<f64> = group.all_reduce_flat(&flags)?.to_vec1()?;
        Ok(STOP_SIGNALS
            .iter()
            .zip(any)
            .find(|(_, n)| *n > 0.0)
            .map(|(&s, _)| s))
    }
}

/// A run that stopped on a signal after writing its state: the error `trainer train`
/// turns into the exit status [`exit_code`] and the command that resumes.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped by {} after step {step}: the run's state is in {}",
    signal_name(*.signal),
    .state.display()
)]
pub struct Interrupted {
    pub signal: i32,
    pub step: usize,
    pub state: std::path::PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::testing::FakeGroup;

    #[test]
    fn ranks_agree_on_the_first_signal_in_a_fixed_order() {
        // This rank saw nothing; its peer's SIGUSR1 arrives through the all-reduce.
        let peer_usr1 = FakeGroup {
            all_reduce: |_, flat| flat + Tensor::new(&[0f64, 0., 1.], &Device::Cpu)?,
            ..FakeGroup::mirrored(0, 2)
        };
        let stop = StopSignal;
        if stop.local().is_none() {
            assert_eq!(
                stop.agreed(&peer_usr1).unwrap(),
                Some(signal_hook::consts::SIGUSR1)
            );
        }
        assert_eq!(exit_code(signal_hook::consts::SIGTERM), 143);
        assert_eq!(signal_name(signal_hook::consts::SIGINT), "SIGINT");
    }
}
