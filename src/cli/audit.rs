//! `rollout audit` (the event log: who changed what, when, and how it ended) and
//! `rollout token` (making the bearer tokens a tokens file lists by hash).

use std::io::Read;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use rand::RngCore;

use super::{Output, connect};
use crate::proto::v1 as pb;
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only events this recent (`2h`, `30m`) or since this time (`2026-11-22T06:00:00Z`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events of this rollout.
    #[arg(long)]
    pub rollout: Option<String>,
    /// At most this many, the newest.
    #[arg(long, default_value_t = 1_000)]
    pub limit: u32,
    #[command(flatten)]
    pub output: super::OutputArg,
}

/// `--since` as unix milliseconds: a duration back from now, or a timestamp.
fn since_ms(text: &str) -> Result<i64> {
    if let Ok(d) = crate::text::parse_duration(text) {
        let now = jiff::Timestamp::now().as_millisecond();
        return Ok(now - d.as_millis() as i64);
    }
    text.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            Error::Usage(format!(
                "--since `{text}` is neither a duration (2h) nor a time (2026-11-22T06:00:00Z)"
            ))
        })
}

pub async fn audit(server: &str, args: AuditArgs) -> Result<ExitCode> {
    let since = args.since.as_deref().map(since_ms).transpose()?.unwrap_or(0);
    let mut client = connect(server).await?;
    let events = client
        .list_events(pb::ListEventsRequest {
            since_unix_ms: since,
            rollout: args.rollout.clone().unwrap_or_default(),
            limit: args.limit,
        })
        .await?
        .into_inner()
        .events;
    if args.output.output == Output::Json {
        for e in &events {
            let line = serde_json::json!({
                "at_unix_ms": e.at_unix_ms,
                "principal": e.principal,
                "role": e.role,
                "kind": e.kind,
                "rollout": e.rollout_name,
                "rollout_id": e.rollout_id,
                "job_id": e.job_id,
                "request_id": e.request_id,
                "result": e.result,
                "detail": e.detail,
                "controller": e.controller,
            });
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if events.is_empty() {
        println!("no events{}", if since > 0 { " in that time" } else { "" });
    }
    let rows = events.iter().map(|e| {
        let target = match (e.rollout_name.as_str(), e.job_id) {
            ("", 0) => "-".to_string(),
            ("", job) => format!("restart job {job}"),
            (name, _) => name.to_string(),
        };
        let result = if e.result == "ok" { "ok" } else { "refused" };
        let mut detail = e.detail.clone();
        if e.result != "ok" && !e.result.is_empty() {
            detail = if detail.is_empty() {
                e.result.clone()
            } else {
                format!("{detail}: {}", e.result)
            };
        }
        if !e.request_id.is_empty() {
            detail.push_str(&format!(" [request {}]", e.request_id));
        }
        // With controllers sharing etcd, which one acted.
        if !e.controller.is_empty() {
            detail.push_str(&format!(" [by {}]", e.controller));
        }
        vec![
            super::render::when(e.at_unix_ms),
            e.principal.clone(),
            e.role.clone(),
            e.kind.clone(),
            target,
            result.to_string(),
            detail,
        ]
    });
    print!(
        "{}",
        super::render::grid(
            &["TIME", "WHO", "ROLE", "WHAT", "TARGET", "RESULT", "DETAIL"],
            &[],
            rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random token: prints the token (give it to its holder) and the
    /// line for the controller's tokens file (which keeps only its hash).
    New {
        /// Who holds it: a person's or a host's name, as the audit log will say it.
        #[arg(long)]
        principal: String,
        /// viewer | operator | admin | agent
        #[arg(long)]
        role: String,
        /// For an agent: the host ids (or `*` globs, quoted) it may speak for;
        /// without it, only the host id equal to --principal.
        #[arg(long = "hosts", value_name = "HOST_OR_GLOB")]
        hosts: Vec<String>,
        /// Write the token to this new file, readable by its owner only (0600),
        /// instead of printing it; refused if the file exists.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Read a token on standard input and print the hash a tokens file lists.
    Hash,
}

pub fn token(command: TokenCommand) -> Result<ExitCode> {
    match command {
        TokenCommand::New {
            principal,
            role,
            hosts,
            out,
        } => {
            let Some(parsed) = crate::auth::Role::parse(&role) else {
                return Err(Error::Usage(format!(
                    "--role `{}` is not a role: use viewer, operator, admin or agent",
                    crate::ident::escaped(&role)
                )));
            };
            if principal.trim().is_empty() || principal.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
                return Err(Error::Usage(format!(
                    "--principal `{}` is not a name: use letters, digits, . _ - : @",
                    crate::ident::escaped(&principal)
                )));
            }
            if parsed == crate::auth::Role::Agent && hosts.is_empty() {
                crate::ident::host_id(&principal).map_err(|e| {
                    Error::Usage(format!(
                        "--principal: an agent without --hosts speaks for the host id equal to its name, and {e}; give --hosts"
                    ))
                })?;
            }

            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            // Checked as the controller will read it, before anything is printed.
            let entry = crate::auth::token_entry(&principal, parsed, &hosts, &crate::auth::hash_token(&token))
                .map_err(Error::Usage)?;
            match out {
                Some(path) => {
                    write_private(&path, &format!("{token}\n"))?;
                    eprintln!("# the token is in {} (0600); add to the tokens file:", path.display());
                }
                None => {
                    println!("{token}");
                    eprintln!("# add to the tokens file (the token itself is shown once, above):");
                }
            }
            eprint!("{entry}");
        }
        TokenCommand::Hash => {
            let mut token = String::new();
            std::io::stdin()
                .read_to_string(&mut token)
                .map_err(|e| Error::io("cannot read the token on standard input", e))?;
            if token.trim().is_empty() {
                return Err(Error::Usage("no token on standard input".into()));
            }
            println!("{}", crate::auth::hash_token(&token));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to a new file at `path` that only its owner may read (0600).
fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::Usage(format!(
                "-o {}: the file exists; remove it or name another (a token is never overwritten)",
                path.display()
            )),
            _ => Error::io(format!("-o {}: cannot create it", path.display()), e),
        })?;
    file.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("-o {}: cannot write it", path.display()), e))
}
