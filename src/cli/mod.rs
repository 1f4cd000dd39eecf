//! The operator's command line: `rollout <verb>`. Every verb but `serve`, `agent`,
//! `plan`, `fleet` and `demo` is a gRPC client of the controller.
//!
//! Errors are printed as one line, `error: ...`, with a non-zero exit; never a panic
//! or a backtrace.

mod agent;
mod approve;
mod ask;
mod audit;
mod client;
mod config;
mod controllers;
mod demo;
mod files;
mod freeze;
mod hosts;
mod json;
mod line;
pub use line::{command, parse, parse_from};
mod notify;
pub mod process;
pub mod render;
pub mod restart;
mod rollouts;
mod run;
pub use run::main;
mod serve;
mod shell;
mod store;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use client::{Client, Credentials, connect, connect_with};

use crate::plan::Plan;
use crate::proto::v1 as pb;
use crate::{Error, Result};

/// The heading of the flags every client command shares, apart from each command's own.
const CONNECTION: &str = "Connection options";

/// What `rollout --version` says: the release, the commit built, the store schema it
/// reads and writes.
pub static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (commit {}, store schema {})",
        env!("CARGO_PKG_VERSION"),
        env!("ROLLOUT_COMMIT"),
        crate::store::SCHEMA_VERSION
    )
});

/// Mitigation rollouts: fixes and rollbacks in percentage waves, resumable, explained.
#[derive(Debug, Parser)]
#[command(name = "rollout", version = VERSION.as_str(), about, max_term_width = 100)]
pub struct Cli {
    /// The controller to talk to.
    #[arg(
        long,
        help_heading = CONNECTION,
        env = "ROLLOUT_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// CA certificate (PEM) to trust for a TLS controller; turns TLS on.
    #[arg(long, help_heading = CONNECTION, env = "ROLLOUT_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, help_heading = CONNECTION, env = "ROLLOUT_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, help_heading = CONNECTION, env = "ROLLOUT_KEY")]
    pub key: Option<PathBuf>,
    /// File whose first line is the bearer token (else the ROLLOUT_TOKEN variable).
    #[arg(long, help_heading = CONNECTION, env = "ROLLOUT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Log lines as text or as JSON objects (one per line).
    #[arg(long, help_heading = "Logging options", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How `serve` and `agent` write their logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

// Parsed once per process: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (gRPC API, engine, store).
    Serve(serve::ServeArgs),
    /// Run an agent; `--simulate FLEET.yaml` serves every host of a fleet file.
    Agent(agent::AgentArgs),
    /// Submit a plan (or preview it with --dry-run).
    Submit {
        /// The plan file.
        file: PathBuf,
        /// Validate and show which hosts each wave would take; start nothing.
        #[arg(long)]
        dry_run: bool,
        /// Makes the submission idempotent: the same id returns the same rollout.
        #[arg(long)]
        request_id: Option<String>,
        /// With --dry-run: order and explain the waves as they would be at this instant
        /// (RFC 3339, e.g. 2026-11-30T09:00:00Z) instead of now.
        #[arg(long, value_name = "TIME", value_parser = parse_instant, requires = "dry_run")]
        at: Option<i64>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Show one rollout in detail, or list them all.
    Status {
        /// The rollout's name; without it, every rollout, one line each.
        name: Option<String>,
        #[command(flatten)]
        output: OutputArg,
        /// Print only the status text: one plain-English paragraph (what, how far,
        /// what next and when, what failed), as every notification says it.
        #[arg(long, requires = "name")]
        summary: bool,
    },
    /// Follow a rollout live until it ends. Exit 0: succeeded; 4: completed with
    /// failures (every wave ran, some hosts failed); 3: halted; 5: awaiting approval
    /// (with --exit-on-gate); 1: otherwise (failed, aborted, or an error).
    Watch {
        /// The rollout's name.
        name: String,
        /// Exit (with code 5) when the rollout awaits approval at a gate, instead of
        /// showing the gate and watching on.
        #[arg(long)]
        exit_on_gate: bool,
        /// How long to wait for a controller that went away (restarting) before giving up.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        reconnect: Duration,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Approve the open gate of a rollout awaiting approval: shows the gate (how the
    /// wave went, what the next wave will take, who approved), asks, and approves
    /// exactly the gate it showed.
    Approve {
        /// The rollout's name.
        name: String,
        /// Why you approve, kept with the approval and in the audit log.
        #[arg(long, default_value = "")]
        comment: String,
        /// Approve without asking (scripts); the gate is still shown.
        #[arg(long)]
        yes: bool,
        /// Makes the approval idempotent: the same id counts once, even sent again.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Stop the line (admin): no new operation starts on the hosts it covers (every
    /// host without --selector) for any rollout or restart job but an approved
    /// emergency; operations in flight finish.
    Freeze {
        /// Why: an incident id, said on every rollout it holds and in every notification.
        #[arg(long)]
        reason: String,
        /// When it ends by itself: a span (2h) or an RFC 3339 instant. Without it, it
        /// lasts until `rollout unfreeze`.
        #[arg(long, value_name = "TIME", value_parser = freeze::parse_until)]
        until: Option<i64>,
        /// Only hosts with these labels (key=value, repeated; values comma-separated).
        #[arg(long = "selector", value_name = "KEY=VALUE")]
        selector: Vec<String>,
        /// Makes the freeze idempotent: the same id sets it once.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// End a freeze now (admin).
    Unfreeze {
        /// The freeze's id (`rollout freezes` lists them).
        id: u64,
        /// Makes the unfreeze idempotent: the same id acts once.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Freezes in force, and the freeze calendar's next windows.
    Freezes {
        /// Freezes that ended too.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Stop dispatching; calls in flight finish.
    Pause {
        /// The rollout's name.
        name: String,
        /// Makes the pause idempotent: the same id acts once.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Continue a paused rollout, or retry a halted wave's failed hosts and go on.
    Resume {
        /// The rollout's name.
        name: String,
        /// Makes the resume idempotent: the same id acts once.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Re-run the failed hosts of a halted rollout, or of one that completed with
    /// failures, with new operation ids, in the same rollout (attempt 2, 3, ...).
    Retry {
        /// The rollout's name.
        name: String,
        /// Makes the retry idempotent: the same id returns the first answer.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Stop a rollout for good: shows it, asks, and aborts.
    Abort {
        /// The rollout's name.
        name: String,
        /// Why: kept with the rollout, in the audit log and every notification (an
        /// incident id, "wrong build").
        #[arg(long)]
        reason: String,
        /// Abort without asking (scripts); the rollout is still shown.
        #[arg(long)]
        yes: bool,
        /// Makes the abort idempotent: the same id acts once.
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        output: OutputArg,
        /// Also return every host it touched to its previous version (a new rollout,
        /// `NAME-rollback`, shown by `rollout watch NAME-rollback`).
        #[arg(long)]
        rollback: bool,
    },
    /// Restart hosts, customers in their working day first, within a disruption budget.
    Restart(restart::RestartArgs),
    /// List hosts with their health and version.
    Hosts(hosts::HostsArgs),
    /// The audit log: who changed what, when, and how it ended.
    Audit(audit::AuditArgs),
    /// Make bearer tokens for a tokens file (`rollout serve --auth`).
    Token {
        #[command(subcommand)]
        command: audit::TokenCommand,
    },
    /// Work with plan files offline.
    Plan {
        #[command(subcommand)]
        command: PlanCommand,
    },
    /// Work with notification sinks files.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Work with fleet files.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Controller + simulated fleet + the retry-storm fix, with a controller crash, end to end.
    Demo(demo::DemoArgs),
    /// Every controller sharing the store, and which one leads.
    Controllers {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Work with a controller's store.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Print the completion script of a shell: `source <(rollout completions bash)`,
    /// or save it where the shell loads completions from.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (rollout.1, rollout-serve.1, ...) into a directory:
    /// `rollout man --dir /usr/local/share/man/man1`.
    Man {
        /// The directory to write them into (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Validate plan files without a controller.
    Check {
        /// The plan files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Validate sinks files (`rollout serve --notify`) without a controller: their
    /// fields, secrets and CAs.
    Check {
        /// The sinks files (YAML).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print a new webhook signing secret (`whsec_` and base64, as Standard Webhooks
    /// makes them) for a sink's secret_file and its receiver.
    Secret,
    /// Each sink of the controller: delivered, pending and the oldest pending, the
    /// last error, undeliverable.
    Status {
        #[command(flatten)]
        output: OutputArg,
    },
    /// Send one test event to a sink of the controller now and say how it answered.
    Test {
        /// The sink's name in the controller's sinks file.
        sink: String,
        #[command(flatten)]
        output: OutputArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Write a realistic fleet file (regions, services, customers in 15+ time zones).
    Generate(GenerateArgs),
    /// Turn an Ansible inventory into a fleet file of SSH hosts (`rollout serve --ssh`).
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON `ansible-inventory -i INVENTORY --list` prints.
    #[arg(long, value_name = "FILE")]
    pub ansible: PathBuf,
    /// A fleet file whose `customers:` the hosts' `rollout_customers` name.
    #[arg(long, value_name = "FILE")]
    pub customers: PathBuf,
    /// The SSH user of hosts without ansible_user.
    #[arg(long)]
    pub user: Option<String>,
    /// A host variable to copy as a label (repeat it).
    #[arg(long = "label-var", value_name = "VAR")]
    pub label_vars: Vec<String>,
    /// Where to write it; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// How many hosts.
    #[arg(long)]
    pub hosts: usize,
    /// The agent address written on every host (a simulator serves them all).
    #[arg(long)]
    pub agent: String,
    /// The random seed: the same seed and size make the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of hosts that start unhealthy.
    #[arg(long, default_value_t = 0.0)]
    pub unhealthy_rate: f64,
    /// Where to write it; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `--output`, the same on every command that prints a result or a table.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArg {
    /// `text` for people; `json` for scripts (stable: README, "Output as JSON").
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    crate::text::parse_duration(s)
}

fn read(path: &std::path::Path, what: &str) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(format!("cannot read {what} {}", path.display()), e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::Usage(format!(
            "{}: {what} is not UTF-8 text (bad byte at offset {}): save it as UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Writes a file whole or not at all (temp file in the same directory, then rename).
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let context = || format!("cannot write {}", path.display());
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(context(), e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| Error::io(context(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(context(), e))?;
    tmp.persist(path).map_err(|e| Error::io(context(), e.error))?;
    Ok(())
}

/// `rollout watch`'s exit code for the state a rollout ended in (documented in its help).
pub fn watch_exit(state: pb::RolloutState) -> ExitCode {
    match state {
        pb::RolloutState::Succeeded => ExitCode::SUCCESS,
        pb::RolloutState::CompletedWithFailures => ExitCode::from(4),
        pb::RolloutState::Halted => ExitCode::from(3),
        pb::RolloutState::AwaitingApproval => ExitCode::from(5),
        _ => ExitCode::FAILURE,
    }
}

/// An RFC 3339 instant (`2026-11-30T09:00:00Z`, or with an offset) as unix ms.
pub fn parse_instant(s: &str) -> std::result::Result<i64, String> {
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("`{s}` is not an RFC 3339 instant ({e}); write it like 2026-11-30T09:00:00Z"))
}
