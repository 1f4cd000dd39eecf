//! A Python venv made by a test, with packages from PyPI: libraries others wrote, to
//! judge our wire formats or to produce real inputs (ansible-inventory). Without
//! Python's venv or a package index the test says it skipped; with
//! ROLLOUT_PYTHON_TESTS=required it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const REQUIRED: &str = "ROLLOUT_PYTHON_TESTS";

/// A venv in `dir/venv` with `packages` installed: its `bin` directory, or None
/// (saying why) when it cannot be made.
pub fn venv(dir: &Path, packages: &[&str], what: &str) -> Option<PathBuf> {
    let skip = |why: String| {
        rollout::testing::skip(REQUIRED, &format!("{what}: {why}"));
        None
    };
    let venv = dir.join("venv");
    let made = Command::new("python3").args(["-m", "venv"]).arg(&venv).status();
    if !made.is_ok_and(|s| s.success()) {
        return skip("python3 -m venv failed (no Python 3 with venv)".into());
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(packages)
        .output()
        .expect("pip runs");
    if !pip.status.success() {
        return skip(format!("pip install failed: {}", String::from_utf8_lossy(&pip.stderr)));
    }
    Some(venv.join("bin"))
}
