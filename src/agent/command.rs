//! Running an operator's command: argv (no shell), a few environment variables, a
//! timeout after which the whole process group is killed, and the last lines of its
//! output kept for the result.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

/// Lines of output kept for the result.
const TAIL_LINES: usize = 20;
/// Bytes of one line kept.
const LINE_BYTES: usize = 512;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// None when it was killed (timeout) or died of a signal.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    /// The last lines of standard output and standard error, interleaved.
    pub tail: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// "exit code 1: <tail>", "timed out after 1s (process group killed): <tail>".
    pub fn describe(&self, timeout: Duration) -> String {
        let head = match (self.timed_out, self.exit_code) {
            (true, _) => format!(
                "timed out after {} (process group killed)",
                crate::text::format_duration(timeout)
            ),
            (false, Some(0)) => "exit code 0".to_string(),
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "killed by a signal".to_string(),
        };
        if self.tail.is_empty() {
            head
        } else {
            format!("{head}: {}", self.tail)
        }
    }
}

fn collect<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    tail: Arc<Mutex<VecDeque<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(mut line)) = lines.next_line().await {
            line.truncate(line.floor_char_boundary(LINE_BYTES));
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line);
        }
    })
}

/// Runs `argv` with `env` added, killing its process group after `timeout`.
pub async fn run(argv: &[String], env: &[(&str, &str)], timeout: Duration) -> std::io::Result<Outcome> {
    let Some((program, args)) = argv.split_first() else {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"));
    };
    let mut child = Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let readers = [
        child.stdout.take().map(|o| collect(o, tail.clone())),
        child.stderr.take().map(|e| collect(e, tail.clone())),
    ];
    let (exit_code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status?.code(), false),
        Err(_) => {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            (None, true)
        }
    };
    // A descendant that escaped the group could hold the pipes open: do not wait long.
    for reader in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    }
    let tail = tail
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ");
    Ok(Outcome {
        exit_code,
        timed_out,
        tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn exit_codes_output_and_environment_are_captured() {
        let out = run(
            &argv(&["sh", "-c", "echo start; echo \"v=$ROLLOUT_VERSION\" >&2; exit 3"]),
            &[("ROLLOUT_VERSION", "2.0")],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(out.exit_code, Some(3));
        assert!(out.tail.contains("start") && out.tail.contains("v=2.0"), "{}", out.tail);
        assert!(out.describe(Duration::from_secs(10)).starts_with("exit code 3: "));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
        let started = std::time::Instant::now();
        let out = run(&argv(&["sh", "-c", &script]), &[], Duration::from_millis(300))
            .await
            .unwrap();
        assert!(out.timed_out && !out.success());
        assert!(started.elapsed() < Duration::from_secs(5), "did not wait for the sleep");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        // The grandchild (sleep) is dead too: no such process, or a zombie waiting
        // for whichever process adopted it to reap it.
        let mut gone = false;
        for _ in 0..50 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "sleep {pid} survived the timeout");
        assert!(
            out.describe(Duration::from_millis(300))
                .starts_with("timed out after 300ms")
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_an_error() {
        assert!(
            run(&argv(&["/nonexistent/deploy"]), &[], Duration::from_secs(1))
                .await
                .is_err()
        );
    }
}
