//! Which kernels the tensor code takes: the `RECO_OPS` environment variable.
//!
//! `reco-models` and `reco-loss` have fast CPU kernels (custom ops over host slices) and
//! a device-generic path built from candle ops, which is what CUDA executes. Setting
//! `RECO_OPS=generic` sends CPU tensors down the generic path too, so that the code a GPU
//! runs is tested on any machine (CI runs the fixture tests both ways). Any other value,
//! or none, keeps the CPU kernels. The variable is read once per process;
//! [`with_ops_path`] overrides it on one thread (to compare both paths in one test).
//!
//! [`record_host_copy`] counts device-to-host copies on the generic path (the number of
//! host round trips a GPU step waits for); [`host_copies`] reads the counter.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// The environment variable that selects the kernels.
pub const ENV_VAR: &str = "RECO_OPS";

/// The set of kernels the tensor code uses on CPU tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsPath {
    /// The fast CPU kernels (default).
    Cpu,
    /// The device-generic candle-op path, as on CUDA.
    Generic,
}

impl OpsPath {
    /// Parses a value of `RECO_OPS`; `None` for anything unrecognised.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "generic" | "device" => Some(Self::Generic),
            "" | "cpu" | "native" | "auto" => Some(Self::Cpu),
            _ => None,
        }
    }
}

thread_local! {
    static OVERRIDE: Cell<Option<OpsPath>> = const { Cell::new(None) };
}

/// The path in force on this thread: a [`with_ops_path`] override, else `RECO_OPS`.
pub fn ops_path() -> OpsPath {
    OVERRIDE.with(Cell::get).unwrap_or_else(env_ops_path)
}

/// Runs `f` with `path` in force on the calling thread (where the tensor code decides
/// which kernels to record), whatever `RECO_OPS` says: lets one process compare both
/// paths, e.g. a test of the generic path against the CPU kernels. Nests; restored when
/// `f` returns or panics.
pub fn with_ops_path<R>(path: OpsPath, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<OpsPath>);
    impl Drop for Restore {
        fn drop(&mut self) {
            OVERRIDE.with(|o| o.set(self.0));
        }
    }
    let _restore = Restore(OVERRIDE.with(|o| o.replace(Some(path))));
    f()
}

/// The path selected by `RECO_OPS` for this process (read once).
///
/// An unrecognised value is reported once on stderr and keeps the CPU kernels: a typo
/// must not silently test the wrong path, but a library cannot fail here either.
pub fn env_ops_path() -> OpsPath {
    static PATH: OnceLock<OpsPath> = OnceLock::new();
    *PATH.get_or_init(|| match std::env::var(ENV_VAR) {
        Err(_) => OpsPath::Cpu,
        Ok(v) => OpsPath::parse(&v).unwrap_or_else(|| {
            eprintln!(
                "warning: {ENV_VAR}={v:?} is not recognised (use `generic` or `cpu`); using the CPU kernels"
            );
            OpsPath::Cpu
        }),
    })
}

/// True when CPU tensors must take the device-generic path on this thread
/// (`RECO_OPS=generic`, or a [`with_ops_path`] override).
pub fn generic_forced() -> bool {
    ops_path() == OpsPath::Generic
}

static HOST_COPIES: AtomicU64 = AtomicU64::new(0);

/// Counts one device-to-host copy made by the generic path (statistics for bulk results,
/// scalars for logging, ...). Cheap; called where the code reads tensor data back.
pub fn record_host_copy() {
    HOST_COPIES.fetch_add(1, Ordering::Relaxed);
}

/// Device-to-host copies recorded so far in this process.
pub fn host_copies() -> u64 {
    HOST_COPIES.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_values_and_rejects_others() {
        assert_eq!(OpsPath::parse("generic"), Some(OpsPath::Generic));
        assert_eq!(OpsPath::parse(" Generic "), Some(OpsPath::Generic));
        assert_eq!(OpsPath::parse("cpu"), Some(OpsPath::Cpu));
        assert_eq!(OpsPath::parse(""), Some(OpsPath::Cpu));
        assert_eq!(OpsPath::parse("gnereic"), None);
    }

    #[test]
    fn override_wins_nests_and_is_restored() {
        let outer = ops_path();
        with_ops_path(OpsPath::Generic, || {
            assert!(generic_forced());
            with_ops_path(OpsPath::Cpu, || assert!(!generic_forced()));
            assert!(generic_forced());
        });
        assert_eq!(ops_path(), outer);
        let caught =
            std::panic::catch_unwind(|| with_ops_path(OpsPath::Generic, || panic!("boom")));
        assert!(caught.is_err());
        assert_eq!(ops_path(), outer);
    }

    #[test]
    fn host_copy_counter_counts() {
        let before = host_copies();
        record_host_copy();
        record_host_copy();
        assert!(host_copies() >= before + 2);
    }
}
