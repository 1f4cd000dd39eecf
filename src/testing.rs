//! For tests that need a program from outside (etcd, Prometheus, sshd, a browser...):
//! how they say they could not run. `cargo test` ignores them (`#[ignore]`, with what
//! they need); run with `--include-ignored` on a machine without the program, each
//! says so in one line that the test harness does not swallow, or fails when the
//! variable that requires the program is set (`.ci/run` sets them all).

use std::io::Write;

/// Fails the test when `required` (a variable such as `ROLLOUT_ETCD_TESTS`) is set to
/// `required`; otherwise prints `skipped TEST: why` to the terminal.
pub fn skip(required: &str, why: &str) {
    assert!(
        std::env::var(required).as_deref() != Ok("required"),
        "{required}=required: {why}"
    );
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    // Straight to the standard error, not eprintln!: the test harness captures the
    // print macros, and this line is for the person reading the run.
    let _ = writeln!(std::io::stderr(), "skipped {test}: {why}");
}
