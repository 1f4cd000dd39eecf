//! The host program (`host.sh`, POSIX sh) as the SSH driver sends it: the command
//! line that carries it and its arguments, and what its answers mean. Pure; its
//! tests run the program itself under `sh` (dash here) and busybox's when present.

use std::time::Duration;

/// The host program's text.
pub const PROGRAM: &str = include_str!("host.sh");

/// Quotes `s` for a POSIX shell: one word whatever it holds.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The exec command running `subcommand` with `args` on a host: the program goes in
/// an environment variable (so the detached runner can start it again) and `sh -c`
/// runs it. The login shell only has to be POSIX.
pub fn command_line(subcommand: &str, args: &[String]) -> String {
    let mut line = format!(
        "ROLLOUT_HOST_SH={}; export ROLLOUT_HOST_SH; exec sh -c \"$ROLLOUT_HOST_SH\" rollout-host {}",
        quote(PROGRAM),
        subcommand
    );
    for a in args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line
}

/// What an operation is, as the host program takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation<'a> {
    pub state_dir: &'a str,
    pub epoch: u64,
    pub operation_id: &'a str,
    /// deploy | rollback | restart
    pub action: &'a str,
    /// The version the host runs once it succeeded (deploy, rollback).
    pub target: &'a str,
    pub timeout: Duration,
    pub retain_days: u32,
    pub argv: &'a [String],
}

/// The arguments of `apply`.
pub fn apply_args(op: &Operation<'_>) -> Vec<String> {
    let mut args = vec![
        op.state_dir.to_string(),
        op.epoch.to_string(),
        op.operation_id.to_string(),
        op.action.to_string(),
        op.target.to_string(),
        op.timeout.as_secs().max(1).to_string(),
        op.retain_days.to_string(),
        "--".to_string(),
    ];
    args.extend(op.argv.iter().cloned());
    args
}

/// The arguments of `probe`, with a health check when `health` has a command.
pub fn probe_args(state_dir: &str, timeout: Duration, health: Option<&[String]>) -> Vec<String> {
    let mut args = vec![state_dir.to_string(), timeout.as_secs().max(1).to_string()];
    if let Some(argv) = health {
        args.push("--".to_string());
        args.extend(argv.iter().cloned());
    }
    args
}

/// An answer of the host program: its `key=value` lines and the output's tail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub fields: Vec<(String, String)>,
    pub tail: String,
}

impl Answer {
    pub fn parse(stdout: &str) -> Answer {
        let mut answer = Answer::default();
        let mut lines = stdout.split_inclusive('\n');
        for line in lines.by_ref() {
            let line = line.trim_end_matches('\n');
            if line == "--" {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                answer.fields.push((k.to_string(), v.to_string()));
            }
        }
        answer.tail = lines.collect::<String>().trim_end().to_string();
        answer
    }

    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn number(&self, key: &str) -> u64 {
        self.get(key).trim().parse().unwrap_or(0)
    }
}

/// What an Apply came to on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command ran (now, or before: `replayed`) and ended.
    Ended {
        ok: bool,
        replayed: bool,
        detail: String,
        version: String,
        previous: String,
    },
    /// Another apply of the id still runs it (a replay that outlived its wait).
    Running,
    /// A deposed controller's epoch: "stale controller epoch 7 < 9: ...".
    Refused(String),
    /// The program could not do its work (the state directory, its arguments).
    Error(String),
}

/// A command's output tail on one line: its lines joined with "; ".
fn lines(tail: &str) -> String {
    let joined: Vec<&str> = tail.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    crate::text::one_line(&joined.join("; ")).into_owned()
}

/// Reads an `apply` answer.
pub fn outcome(answer: &Answer) -> Outcome {
    let detail = |status: &str| {
        let tail = lines(&answer.tail);
        match status {
            "ok" if tail.is_empty() => "ok".to_string(),
            "failed" if tail.is_empty() => format!("exit status {}", answer.get("code")),
            "failed" => format!("exit status {}: {tail}", answer.get("code")),
            _ => tail,
        }
    };
    match answer.get("status") {
        "running" => Outcome::Running,
        "refused" => Outcome::Refused(answer.get("message").trim_start_matches("refused ").to_string()),
        status @ ("ok" | "failed" | "timeout" | "interrupted") => Outcome::Ended {
            ok: status == "ok",
            replayed: answer.get("replayed") == "1",
            detail: detail(status),
            version: answer.get("version").to_string(),
            previous: answer.get("previous").to_string(),
        },
        "error" => Outcome::Error(answer.get("message").to_string()),
        other => Outcome::Error(format!(
            "the host program answered what it should not ({}): is the login shell POSIX?",
            crate::text::one_line(if other.is_empty() { answer.tail.as_str() } else { other })
        )),
    }
}

#[cfg(test)]
mod tests;
