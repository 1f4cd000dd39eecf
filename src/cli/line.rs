//! The command line as parsed and shown: the connection flags where a command calls
//! the controller (and before any command, as scripts wrote them), `--log-format`
//! where a server logs, `serve --config`'s settings placed before the command line's
//! own, and clap's refusals in one line.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches};

use super::{Cli, Command, LogFormat, config};

/// The flags under the connection heading, which only the controller's clients use.
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
