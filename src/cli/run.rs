//! Running a parsed command line: logging set up, the runtime started, the command
//! handed to its module, and every error said in one line with an exit code.

use std::process::ExitCode;

use super::rollouts::{self, Act};
use super::*;

/// Runs the command line and turns every error into one line and an exit code.
pub fn main(cli: Cli) -> ExitCode {
    let server_side = matches!(cli.command, Command::Serve(_) | Command::Agent(_));
    init_logging(if server_side { "info" } else { "warn" }, cli.log_format);
    if !server_side {
        quiet_when_stdout_closes();
    }
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

/// `rollout hosts | head` ends quietly when head has read enough, as Unix tools do:
/// Rust ignores SIGPIPE, so the next write to standard output fails, and `println!`
/// panics on it; that panic exits with 141 (128 + SIGPIPE, as a shell says it) and
/// says nothing. SIGPIPE itself stays ignored: a write to a socket the other side
/// closed must be an error the command reports, not a silent death.
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let said = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if said.starts_with("failed printing to stdout") && said.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
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
            command:
                PlanCommand::Check {
                    files,
                    output: OutputArg { output },
                },
        } => files::plan_check(&files, output),
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
            command: NotifyCommand::Status {
                output: OutputArg { output },
            },
        } => notify::status(server, output).await,
        Command::Notify {
            command:
                NotifyCommand::Test {
                    sink,
                    output: OutputArg { output },
                },
        } => notify::test(server, &sink, output).await,
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
            output: OutputArg { output },
        } => {
            let submission = rollouts::Submission {
                dry_run,
                at,
                request_id: request_id.unwrap_or_default(),
                output,
            };
            rollouts::submit(server, &file, submission).await
        }
        Command::Status {
            name,
            output: OutputArg { output },
            summary,
        } => rollouts::status(server, name.as_deref(), output, summary).await,
        Command::Watch {
            name,
            exit_on_gate,
            reconnect,
            output: OutputArg { output },
        } => {
            let mut progress = match output {
                Output::Text => watch::Progress::new(),
                Output::Json => watch::Progress::json(),
            };
            let last = watch::follow(server, &name, reconnect, exit_on_gate, &mut progress).await?;
            if output == Output::Json {
                return Ok(watch_exit(last.state()));
            }
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
        Command::Hosts(args) => hosts::hosts(server, args).await,
        Command::Audit(args) => audit::audit(server, args).await,
        Command::Token { command } => audit::token(command),
        Command::Store { command } => store::run(command),
        Command::Controllers {
            output: OutputArg { output },
        } => controllers::list(server, output).await,
        Command::Approve {
            name,
            comment,
            yes,
            request_id,
            output: OutputArg { output },
        } => approve::approve(server, &name, comment, yes, request_id.unwrap_or_default(), output).await,
        Command::Freeze {
            reason,
            until,
            selector,
            request_id,
            output: OutputArg { output },
        } => {
            let asked = freeze::Asked {
                reason,
                until,
                request_id: request_id.unwrap_or_default(),
            };
            freeze::freeze(server, asked, &selector, output).await
        }
        Command::Unfreeze {
            id,
            request_id,
            output: OutputArg { output },
        } => freeze::unfreeze(server, id, request_id.unwrap_or_default(), output).await,
        Command::Freezes {
            all,
            output: OutputArg { output },
        } => freeze::list(server, all, output).await,
        Command::Pause {
            name,
            request_id,
            output: OutputArg { output },
        } => rollouts::act(server, &name, Act::Pause, request_id.unwrap_or_default(), output).await,
        Command::Resume {
            name,
            request_id,
            output: OutputArg { output },
        } => rollouts::act(server, &name, Act::Resume, request_id.unwrap_or_default(), output).await,
        Command::Retry {
            name,
            request_id,
            output: OutputArg { output },
        } => rollouts::retry(server, &name, request_id.unwrap_or_default(), output).await,
        Command::Abort {
            name,
            reason,
            rollback,
            yes,
            request_id,
            output: OutputArg { output },
        } => {
            let act = Act::Abort {
                reason,
                rollback,
                asked: !yes,
            };
            rollouts::act(server, &name, act, request_id.unwrap_or_default(), output).await
        }
    }
}
