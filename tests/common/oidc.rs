//! A real OpenID provider for the single sign-on tests: npm's `oidc-provider`
//! (certified by the OpenID Foundation), installed by the test with npm into its own
//! directory and run by Node.js (tests/oidc/provider.mjs). Without node, npm or the
//! registry the test says it skipped; with ROLLOUT_NODE_TESTS=required (`.ci/run`)
//! it fails instead.
//!
//! The provider listens on `::1` when the machine has IPv6 and the dashboard on
//! 127.0.0.1: two sites, as a real provider and a real dashboard are, so the
//! cookies' SameSite rules are tested as they apply there.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

pub const REQUIRED: &str = "ROLLOUT_NODE_TESTS";
/// The provider's version: the last of the 8 series, which runs on Debian
/// bookworm's Node.js 18 as on 20 and later.
const PACKAGE: &str = "oidc-provider@8.8.1";
const SCRIPT: &str = include_str!("../oidc/provider.mjs");

/// An oidc-provider process; killed when dropped.
pub struct Provider {
    /// `http://[::1]:PORT` (or 127.0.0.1 without IPv6).
    pub issuer: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

/// Installs oidc-provider into `dir/oidc` and starts it there, listening; None
/// (saying why) without node, npm or the registry.
pub async fn start(dir: &Path) -> Option<Provider> {
    let skip = |why: String| {
        rollout::testing::skip(REQUIRED, &format!("the OpenID provider: {why}"));
        None
    };
    let home = dir.join("oidc");
    std::fs::create_dir_all(&home).unwrap();
    let npm = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
        .arg(&home)
        .arg(PACKAGE)
        .output()
        .await;
    match npm {
        Err(e) => return skip(format!("npm: {e} (install Debian's nodejs and npm)")),
        Ok(out) if !out.status.success() => {
            return skip(format!(
                "npm install {PACKAGE} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(_) => {}
    }
    // ESM resolves `oidc-provider` beside the script, so the script goes there.
    std::fs::write(home.join("provider.mjs"), SCRIPT).unwrap();
    for host in ["::1", "127.0.0.1"] {
        let mut child = Command::new("node")
            .arg("provider.mjs")
            .arg(host)
            .current_dir(&home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await;
        if let Ok(Ok(Some(line))) = first
            && let Some(issuer) = line.strip_prefix("issuer ")
        {
            return Some(Provider {
                issuer: issuer.to_string(),
                child,
                stdin,
                stdout,
            });
        }
        let _ = child.kill().await;
    }
    skip("node provider.mjs did not start on ::1 nor on 127.0.0.1".into())
}

impl Provider {
    /// Registers the client and the accounts (`{login: {email, groups}}`); returns
    /// once the provider answers as its issuer.
    pub async fn serve(&mut self, client_id: &str, secret: &str, redirect_uri: &str, accounts: Value) {
        let site = serde_json::json!({
            "client_id": client_id,
            "client_secret": secret,
            "redirect_uri": redirect_uri,
            "accounts": accounts,
        });
        self.stdin.write_all(format!("{site}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("the provider to answer within 30 s")
            .unwrap();
        assert_eq!(line.as_deref(), Some("ready"), "the provider's answer");
    }

    /// Stops the provider (SIGTERM, then kill).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
