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
mod notify;
pub mod process;
pub mod render;
pub mod restart;
mod rollouts;
use rollouts::Act;
mod serve;
mod shell;
mod store;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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

/// The flags of [`CONNECTION`], which only the controller's clients use.
const CONNECTION_FLAGS: [&str; 5] = ["server", "ca", "cert", "key", "token_file"];

/// The commands that do not talk to a controller (paths of subcommand names): they
/// take no connection flags, and their help does not show them.
const OFFLINE: [&[&str]; 12] = [
    &["serve"],
    &["agent"],
    &["demo"],
    &["plan"],
    &["notify", "check"],
    &["notify", "secret"],
    &["fleet"],
    &["token"],
    &["store"],
    &["completions"],
    &["man"],
    &["help"],
];

/// The commands that log as servers do (`--log-format`).
const LOGGING: [&str; 3] = ["serve", "agent", "demo"];

/// The command line as parsed and shown. The connection flags (and `--log-format`)
/// are the top level's, given before the command (`rollout --server URL status`), and
/// also each command's that uses them, given after it (`rollout status --server
/// URL`): a command's help lists only the flags it uses.
pub fn command() -> clap::Command {
    let top = Cli::command();
    let shared = |ids: &[&str]| -> Vec<clap::Arg> {
        top.get_arguments()
            .filter(|a| ids.contains(&a.get_id().as_str()))
            .cloned()
            .collect()
    };
    let (connection, logging) = (shared(&CONNECTION_FLAGS), shared(&["log_format"]));
    let names: Vec<String> = top.get_subcommands().map(|s| s.get_name().to_string()).collect();
    // `--config`'s settings come first as flags: the command line's own win.
    let mut command = top.clone().mut_subcommand("serve", |c| c.args_override_self(true));
    for name in names {
        let logs = LOGGING.contains(&name.as_str());
        command = command.mut_subcommand(&name, |sub| {
            let sub = if logs { sub.args(logging.clone()) } else { sub };
            if name == "agent" {
                // Its heartbeats go where its configuration says, with these credentials.
                let credentials = connection.iter().filter(|a| a.get_id() != "server").cloned();
                return sub.args(credentials);
            }
            with_connection(sub, &[name.as_str()], &connection)
        });
    }
    command
}

/// `sub` (at `path`) with the connection flags on each of its commands that calls
/// a controller.
fn with_connection(sub: clap::Command, path: &[&str], connection: &[clap::Arg]) -> clap::Command {
    if OFFLINE.contains(&path) {
        return sub;
    }
    let names: Vec<String> = sub.get_subcommands().map(|s| s.get_name().to_string()).collect();
    if names.is_empty() {
        return sub.args(connection.iter().cloned());
    }
    let mut sub = sub;
    for name in names {
        let mut deeper = path.to_vec();
        deeper.push(name.as_str());
        sub = sub.mut_subcommand(&name, |s| with_connection(s, &deeper, connection));
    }
    sub
}

/// Parses the process's command line (exits with clap's message on a bad one).
pub fn parse() -> Cli {
    parse_from(std::env::args_os())
}

/// Parses `args` as the command line: a flag given after the command wins over the
/// same flag given before it, either over its environment variable and default.
pub fn parse_from<I, T>(args: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let command = command();
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let serve = command.find_subcommand("serve").cloned().unwrap_or_default();
    let (args, read) = config::expanded(args, &serve).unwrap_or_else(|e| {
        eprintln!("error: {e}");
        std::process::exit(1)
    });
    let matches = command.try_get_matches_from(args).unwrap_or_else(|e| {
        if let Some(line) = read.as_ref().and_then(|r| r.blame(&e)) {
            eprintln!("error: {line}");
            std::process::exit(2)
        }
        usage_error(e)
    });
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Serve(serve_args) = &cli.command
        && serve_args.print_config
        && let Some(("serve", given)) = matches.subcommand()
    {
        print!("{}", config::effective(&serve, given, serve_args.config.as_deref()));
        std::process::exit(0);
    }
    let mut leaf = &matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    let given = |id: &str| {
        leaf.try_contains_id(id).unwrap_or(false)
            && leaf.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
    };
    if given("server")
        && let Some(v) = leaf.get_one::<String>("server")
    {
        cli.server = v.clone();
    }
    for (id, field) in [
        ("ca", &mut cli.ca),
        ("cert", &mut cli.cert),
        ("key", &mut cli.key),
        ("token_file", &mut cli.token_file),
    ] {
        if given(id) {
            *field = leaf.get_one::<PathBuf>(id).cloned();
        }
    }
    if given("log_format")
        && let Some(v) = leaf.get_one::<LogFormat>("log_format")
    {
        cli.log_format = *v;
    }
    cli
}

/// Exits on a command line clap refused: help and the version as clap prints them;
/// a mistake in one line, `error: ...` with clap's tip, exit code 2.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit()
    }
    eprintln!("{}", one_line_usage(&e.render().to_string()));
    std::process::exit(2)
}

/// clap's rendered error as one line: its first line, the indented lines that
/// continue it (the missing arguments), and its tips in brackets; the usage and the
/// pointer to --help left out.
fn one_line_usage(rendered: &str) -> String {
    let mut lines = rendered.lines();
    let mut said = lines
        .next()
        .unwrap_or("error: the command line is not valid")
        .trim_end()
        .to_string();
    let mut tips = Vec::new();
    let mut continued = true;
    for line in lines {
        let trimmed = line.trim();
        if let Some(tip) = trimmed.strip_prefix("tip: ") {
            tips.push(tip.to_string());
        } else if trimmed.is_empty() {
            continued = false;
        } else if continued && line.starts_with(' ') {
            said = format!("{} {trimmed}", said.trim_end_matches(':').to_string() + ":");
        }
    }
    for tip in tips {
        said.push_str(&format!(" ({tip})"));
    }
    said
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
    },
    /// Show one rollout in detail, or list them all.
    Status {
        /// The rollout's name; without it, every rollout, one line each.
        name: Option<String>,
        /// `text` for people; `json` for scripts (stable: README, "Output as JSON").
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
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
    },
    /// End a freeze now (admin).
    Unfreeze {
        /// The freeze's id (`rollout freezes` lists them).
        id: u64,
        /// Makes the unfreeze idempotent: the same id acts once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Freezes in force, and the freeze calendar's next windows.
    Freezes {
        /// Freezes that ended too.
        #[arg(long)]
        all: bool,
        /// `text` for people; `json` for scripts (stable: README, "Output as JSON").
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Stop dispatching; calls in flight finish.
    Pause {
        /// The rollout's name.
        name: String,
        /// Makes the pause idempotent: the same id acts once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Continue a paused rollout, or retry a halted wave's failed hosts and go on.
    Resume {
        /// The rollout's name.
        name: String,
        /// Makes the resume idempotent: the same id acts once.
        #[arg(long)]
        request_id: Option<String>,
    },
    /// Re-run the failed hosts of a halted rollout, or of one that completed with
    /// failures, with new operation ids, in the same rollout (attempt 2, 3, ...).
    Retry {
        /// The rollout's name.
        name: String,
        /// Makes the retry idempotent: the same id returns the first answer.
        #[arg(long)]
        request_id: Option<String>,
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
        /// Also return every host it touched to its previous version (a new rollout,
        /// `NAME-rollback`, shown by `rollout watch NAME-rollback`).
        #[arg(long)]
        rollback: bool,
    },
    /// Restart hosts, customers in their working day first, within a disruption budget.
    Restart(restart::RestartArgs),
    /// List hosts with their health and version.
    Hosts(restart::HostsArgs),
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
        /// `text` for people; `json` for scripts (stable: README, "Output as JSON").
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
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
        /// `text` for people; `json` for scripts (stable: README, "Output as JSON").
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Send one test event to a sink of the controller now and say how it answered.
    Test {
        /// The sink's name in the controller's sinks file.
        sink: String,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    crate::text::parse_duration(s)
}

/// Runs the command line and turns every error into one line and an exit code.
pub fn main(cli: Cli) -> ExitCode {
    let server_side = matches!(cli.command, Command::Serve(_) | Command::Agent(_));
    init_logging(if server_side { "info" } else { "warn" }, cli.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Serve(_)) {
        // The engine's threads yield to the API's (its own runtime, normal priority):
        // a rollout saturating the cores does not delay the reads of the operators
        // watching it.
        builder.on_thread_start(crate::server::lower_priority);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = cli.server.clone();
    match runtime.block_on(async { run(cli).await.map_err(|e| (e, server)) }) {
        Ok(code) => code,
        Err((e, server)) => {
            let e = runtime.block_on(client::explain(e, &server));
            eprintln!("error: {}", e.to_string().replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default: `default` for our own
/// lines, warnings for the libraries'), as text or JSON.
fn init_logging(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},sled=warn,h2=warn,tower=warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let credentials = client::Credentials {
        tls: crate::tls::ClientFiles {
            ca: cli.ca.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
        },
        token: None,
    }
    .with_token_file(cli.token_file.as_deref())?;
    client::set_credentials(credentials);
    let server = cli.server.as_str();
    match cli.command {
        Command::Serve(args) => serve::serve(args).await,
        Command::Agent(args) => agent::agent(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Completions { shell } => shell::completions(shell),
        Command::Man { dir } => shell::man(&dir),
        Command::Plan {
            command: PlanCommand::Check { files },
        } => files::plan_check(&files),
        Command::Fleet {
            command: FleetCommand::Generate(args),
        } => files::fleet_generate(&args),
        Command::Fleet {
            command: FleetCommand::Import(args),
        } => files::fleet_import(&args),
        Command::Notify {
            command: NotifyCommand::Check { files },
        } => files::notify_check(&files),
        Command::Notify {
            command: NotifyCommand::Status { output },
        } => notify::status(server, output).await,
        Command::Notify {
            command: NotifyCommand::Test { sink },
        } => notify::test(server, &sink).await,
        Command::Notify {
            command: NotifyCommand::Secret,
        } => {
            println!("{}", crate::notify::sinks::new_secret());
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit {
            file,
            dry_run,
            request_id,
            at,
        } => rollouts::submit(server, &file, dry_run, at, request_id.unwrap_or_default()).await,
        Command::Status { name, output, summary } => rollouts::status(server, name.as_deref(), output, summary).await,
        Command::Watch {
            name,
            exit_on_gate,
            reconnect,
        } => {
            let mut progress = watch::Progress::new();
            let last = watch::follow(server, &name, reconnect, exit_on_gate, &mut progress).await?;
            if progress.has_bars() {
                println!("{}", render::one_line(&last));
            }
            if !last.failures.is_empty() {
                println!(
                    "failures by reason (`rollout hosts --rollout {} --failed` lists every host):",
                    last.name
                );
                print!("{}", render::failure_groups(&last.failures));
            }
            Ok(watch_exit(last.state()))
        }
        Command::Restart(args) => restart::restart(server, args).await,
        Command::Hosts(args) => restart::hosts(server, args).await,
        Command::Audit(args) => audit::audit(server, args).await,
        Command::Token { command } => audit::token(command),
        Command::Store { command } => store::run(command),
        Command::Controllers { output } => controllers::list(server, output).await,
        Command::Approve {
            name,
            comment,
            yes,
            request_id,
        } => approve::approve(server, &name, comment, yes, request_id.unwrap_or_default()).await,
        Command::Freeze {
            reason,
            until,
            selector,
            request_id,
        } => freeze::freeze(server, reason, until, &selector, request_id.unwrap_or_default()).await,
        Command::Unfreeze { id, request_id } => freeze::unfreeze(server, id, request_id.unwrap_or_default()).await,
        Command::Freezes { all, output } => freeze::list(server, all, output).await,
        Command::Pause { name, request_id } => {
            rollouts::act(server, &name, Act::Pause, request_id.unwrap_or_default()).await
        }
        Command::Resume { name, request_id } => {
            rollouts::act(server, &name, Act::Resume, request_id.unwrap_or_default()).await
        }
        Command::Retry { name, request_id } => rollouts::retry(server, &name, request_id.unwrap_or_default()).await,
        Command::Abort {
            name,
            reason,
            rollback,
            yes,
            request_id,
        } => {
            let act = Act::Abort {
                reason,
                rollback,
                asked: !yes,
            };
            rollouts::act(server, &name, act, request_id.unwrap_or_default()).await
        }
    }
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
