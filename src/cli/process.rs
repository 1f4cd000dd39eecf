//! Child processes of `rollout` itself (`serve`, `agent`), started and stopped for
//! the demo and the tests: read the bound address from the first line, stop with
//! SIGTERM (graceful) or SIGKILL (a crash), never leave one behind.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::{Error, Result};

/// A running `rollout serve` or `rollout agent`.
pub struct Spawned {
    child: Child,
    /// Where it listens, read from its `listening on ADDR` line.
    pub addr: SocketAddr,
    /// Its standard output, kept open so the child's later writes do not fail.
    stdout: BufReader<ChildStdout>,
}

impl Spawned {
    /// Starts `program args...`, with standard error appended to `log` (or dropped),
    /// and waits (at most 60 s) for the line that gives its address.
    pub async fn start<I, S>(program: &Path, args: I, log: Option<&Path>) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Spawned::start_with(program, args, log, &[]).await
    }

    /// [`Spawned::start`], with these environment variables set for it too.
    pub async fn start_with<I, S>(
        program: &Path,
        args: I,
        log: Option<&Path>,
        env: &[(&str, &OsStr)],
    ) -> Result<Spawned>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let stderr = match log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| Error::io(format!("cannot open log {}", path.display()), e))?,
            ),
            None => Stdio::null(),
        };
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::io(format!("cannot start {}", program.display()), e))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Usage("child has no stdout".into()))?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(60), reader.read_line(&mut line)).await;
        let addr = match read {
            Ok(Ok(n)) if n > 0 => line.trim().strip_prefix("listening on ").and_then(|a| a.parse().ok()),
            _ => None,
        };
        let Some(addr) = addr else {
            let _ = child.start_kill();
            let status = child.wait().await.ok();
            return Err(Error::Usage(format!(
                "{} did not start (exit {:?}, first line {:?}); see its log",
                program.display(),
                status.and_then(|s| s.code()),
                line.trim()
            )));
        };
        Ok(Spawned {
            child,
            addr,
            stdout: reader,
        })
    }

    /// Reads its standard output up to a line starting with `prefix` (at most 60 s)
    /// and returns the rest of that line: `dashboard on ` gives the dashboard's URL.
    pub async fn line_after(&mut self, prefix: &str) -> Result<String> {
        let read = async {
            let mut line = String::new();
            loop {
                line.clear();
                if self.stdout.read_line(&mut line).await.ok()? == 0 {
                    return None;
                }
                if let Some(rest) = line.trim().strip_prefix(prefix) {
                    return Some(rest.to_string());
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .ok()
            .flatten()
            .ok_or_else(|| Error::Usage(format!("the child process never printed `{prefix}...`; see its log")))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, as a crash would: no chance to flush or say goodbye.
    pub async fn kill9(&mut self) -> Result<()> {
        let _ = self.child.start_kill();
        self.child
            .wait()
            .await
            .map_err(|e| Error::io("cannot reap the killed process", e))?;
        Ok(())
    }

    /// SIGTERM, then waits up to `grace` for a clean exit (SIGKILL after that).
    /// Returns the exit code when it exited by itself.
    pub async fn terminate(&mut self, grace: Duration) -> Result<Option<i32>> {
        self.signal_term();
        self.wait(grace).await
    }

    /// Sends SIGTERM (a graceful stop) and returns at once.
    pub fn signal_term(&self) {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }

    /// Waits up to `grace` for the process to exit (SIGKILL after that); its exit
    /// code when it exited by itself.
    pub async fn wait(&mut self, grace: Duration) -> Result<Option<i32>> {
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(status) => Ok(status.map_err(|e| Error::io("cannot reap the process", e))?.code()),
            Err(_) => {
                self.kill9().await?;
                Ok(None)
            }
        }
    }
}
