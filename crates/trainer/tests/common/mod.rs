//! What the end-to-end tests of the `trainer` binary share (cli.rs, own_data.rs,
//! mpi.rs): running it, and the text it printed where it had to succeed, or had to fail
//! without a panic.

// Each test binary compiles its own copy of this module and uses a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Debug;
use std::process::{Command, Output};

/// The `trainer` binary of this build (with this test's features).
pub const BIN: &str = env!("CARGO_BIN_EXE_trainer");

/// `trainer args...`, run to its end.
pub fn trainer<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().expect("run trainer")
}

/// What a run printed: its stdout, then its stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The text of a finished run that had to succeed.
pub fn ok(out: Output) -> String {
    let t = text(&out);
    assert!(out.status.success(), "trainer failed:\n{t}");
    t
}

/// The text of `trainer args...`, which has to succeed.
pub fn run_ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let out = trainer(args);
    let t = text(&out);
    assert!(out.status.success(), "trainer {args:?} failed:\n{t}");
    t
}

/// The text of `trainer args...`, which has to fail, and not by a panic.
pub fn fails<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    fails_with_env(args, &[])
}

/// [`fails`] with environment variables set (a launcher's).
pub fn fails_with_env<S: AsRef<OsStr> + Debug>(args: &[S], env: &[(&str, &str)]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run trainer");
    let t = text(&out);
    assert!(
        !out.status.success(),
        "trainer {args:?} {env:?} should fail:\n{t}"
    );
    assert!(!t.contains("panicked"), "trainer {args:?} panicked:\n{t}");
    t
}
