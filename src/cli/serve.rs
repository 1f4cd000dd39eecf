//! `rollout serve`: the controller process (`rollout agent` is [`super::agent`]).
//!
//! Both print `listening on ADDR` as their first line on standard output (scripts
//! and tests read the port from it when they ask for port 0): the agent once its
//! socket is bound, the controller once it is ready to serve (its store open, its
//! fleet loaded; a standby once it serves as one). Both log to standard error, and stop gracefully on SIGINT or SIGTERM; a second
//! signal exits at once.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Error, Result, cluster, server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Read the settings from this YAML file: each key a flag without its dashes
    /// (`max-in-flight: 8192`); a flag also given on the command line wins.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (the --config file's, the flags', the
    /// defaults) as a --config file, and exit: secrets are files, named, never shown.
    #[arg(long)]
    pub print_config: bool,
    /// Address of the gRPC API.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub listen: String,
    /// Directory of the store (sled; created if missing; one controller at a time).
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    pub data: Option<PathBuf>,
    /// The store in etcd instead, shared by every controller of the site (one leads,
    /// the others stand by): etcd://HOST:PORT[,HOST:PORT...][/PREFIX].
    #[arg(long)]
    pub store: Option<crate::store::etcd_backend::EtcdAddress>,
    /// etcd's CA certificate: speak TLS to etcd.
    #[arg(long, requires = "store")]
    pub etcd_ca: Option<PathBuf>,
    /// This controller's certificate for etcd (mutual TLS), with --etcd-key.
    #[arg(long, requires = "store")]
    pub etcd_cert: Option<PathBuf>,
    /// The private key of --etcd-cert (PEM).
    #[arg(long, requires = "store")]
    pub etcd_key: Option<PathBuf>,
    /// How clients and the other controllers reach this one (default: http(s)://
    /// and the --listen address).
    #[arg(long, requires = "store")]
    pub advertise: Option<String>,
    /// How people and the other controllers reach this one's dashboard (a standby
    /// shows the leader's); its name is the one Host the dashboard answers to besides
    /// its address (default: http(s)://, --http-listen's address).
    #[arg(long, requires = "http_listen")]
    pub http_advertise: Option<String>,
    /// The leader's etcd lease, kept alive while it runs: a standby takes over this
    /// long after the leader is gone at most; a leader that cannot renew it for this
    /// long stops.
    #[arg(long, default_value = "3s", value_parser = super::parse_duration)]
    pub leader_lease: Duration,
    /// Fleet file to load as the inventory; without it the stored inventory is used.
    #[arg(long)]
    pub fleet: Option<PathBuf>,
    /// Deadline of each operation on an agent, from its start (a detached one: no
    /// result by then; a held call: no answer by then).
    #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
    pub agent_timeout: Duration,
    /// Host actions in flight at once across this controller (every rollout and
    /// restart job together). A plan whose max_parallel is above it is limited to it,
    /// and its status says so. Each action in flight holds a call (or an SSH channel)
    /// until it ends.
    #[arg(long, default_value_t = 4_096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Tokens file: hashed bearer tokens and certificate subjects, each with a role.
    #[arg(long)]
    pub auth: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (dangerous).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Changes (submit, pause, restart...) each principal may make per second.
    #[arg(long, default_value_t = 10)]
    pub max_changes_per_second: u32,
    /// On SIGTERM/SIGINT, how long calls in flight may take to finish and be recorded.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub grace_period: Duration,
    /// Serve Prometheus metrics on this address (`GET /metrics`); off by default.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Serve the live dashboard on this address (plain HTTP, with `/metrics` beside
    /// it); same authentication as the API: a viewer token.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Allow a non-loopback --http-listen without TLS: tokens and session cookies
    /// would cross the network in clear (prefer --http-tls-cert, or a TLS proxy).
    #[arg(long)]
    pub http_insecure: bool,
    /// Take approvals from Slack's `Approve` buttons at `POST /slack/interactions` on
    /// the dashboard's listener: the Slack app's signing secret (its first line). Needs
    /// --http-listen and --auth (whose entries map Slack users: `slack_user:`).
    #[arg(long, requires = "http_listen")]
    pub slack_signing_secret_file: Option<PathBuf>,
    /// Sign people in to the dashboard through this OpenID provider (single sign-on):
    /// the file says the issuer, the client, and which claims name the person and
    /// map to roles (README, Single sign-on). Needs --http-listen and --auth (token
    /// sign-in stays, for scripts and break-glass).
    #[arg(long, value_name = "FILE", requires = "http_listen")]
    pub oidc: Option<PathBuf>,
    /// Serve the dashboard over TLS with this certificate chain (PEM), with
    /// --http-tls-key; its session cookie is then `Secure`.
    #[arg(long, requires_all = ["http_listen", "http_tls_key"])]
    pub http_tls_cert: Option<PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(long, requires_all = ["http_listen", "http_tls_cert"])]
    pub http_tls_key: Option<PathBuf>,
    /// Speak TLS to agents whose certificates chain to this CA (mutual TLS with
    /// --tls-cert and --tls-key as the controller's identity).
    #[arg(long)]
    pub agent_ca: Option<PathBuf>,
    /// Speak TLS to the other controllers whose certificates chain to this CA, when
    /// standing by and forwarding calls to an https:// leader (mutual TLS with
    /// --tls-cert and --tls-key as this controller's identity).
    #[arg(long, requires = "store")]
    pub peer_ca: Option<PathBuf>,
    /// The CA of the site's Prometheus (PEM), for plans whose analysis asks an
    /// https:// Prometheus signed by a private CA.
    #[arg(long)]
    pub prometheus_ca: Option<PathBuf>,
    /// File whose first line is a bearer token sent to Prometheus with every query.
    #[arg(long)]
    pub prometheus_token_file: Option<PathBuf>,
    /// Judge business hours by a drill clock that reads TIME (RFC 3339, e.g.
    /// 2024-11-25T17:33:00Z) when the controller starts and advances in real time: for
    /// game days and demos. Status, the dashboard and the audit log say it is in force.
    #[arg(long, value_name = "TIME", value_parser = super::parse_instant)]
    pub drill_clock: Option<i64>,
    /// An iCalendar file (RFC 5545, as calendar programs and AWS Change Calendar write
    /// it) whose events, recurring ones included, are freeze windows: no new
    /// operation starts during one but an approved emergency's. Read again at SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub freeze_calendar: Option<PathBuf>,
    /// Notify the sinks of this file (webhooks signed as Standard Webhooks, Slack,
    /// Alertmanager) of every rollout's and restart job's events; `rollout notify
    /// check FILE` validates it.
    #[arg(long, value_name = "FILE")]
    pub notify: Option<PathBuf>,
    /// This controller's site, in the notifications' source (`/rollout/SITE`) and the
    /// alerts' `site` label.
    #[arg(long, default_value = "default", value_parser = parse_site)]
    pub site: String,
    /// Reach hosts whose fleet address is ssh://USER@HOST[:PORT] over SSH, with
    /// nothing installed on them, as this file says (key, known_hosts, commands).
    #[arg(long, value_name = "FILE")]
    pub ssh: Option<PathBuf>,
}

/// A site name: letters, digits, dots, dashes and underscores (it goes in a URI).
fn parse_site(text: &str) -> std::result::Result<String, String> {
    let ok = !text.is_empty()
        && text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(text.to_string())
    } else {
        Err(format!(
            "`{}` is not a site name: use letters, digits, dots, dashes and underscores (like apac-1), at most 63",
            crate::text::one_line(text)
        ))
    }
}

/// The server side of TLS, for `serve` and `agent`.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Serve TLS with this certificate (PEM); needs --tls-key.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
}

impl TlsArgs {
    pub(super) fn files(&self) -> crate::tls::ServerFiles {
        crate::tls::ServerFiles {
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            client_ca: self.client_ca.clone(),
        }
    }
}

/// Binds `addr` and prints the line scripts read the port from.
pub async fn bind(addr: &str) -> Result<TcpListener> {
    let (listener, line) = bind_quietly(addr).await?;
    println!("{line}");
    let _ = std::io::stdout().flush();
    Ok(listener)
}

/// Binds `addr`; the line that says so is the caller's to print when it is ready.
async fn bind_quietly(addr: &str) -> Result<(TcpListener, String)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::io(
            format!("cannot listen on {addr} (pick another address with --listen)"),
            e,
        )
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;
    Ok((listener, format!("listening on {local}")))
}

/// Waits for SIGINT or SIGTERM.
async fn signal(term: &mut Option<tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = t.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Cancels `token` at the first SIGINT/SIGTERM; exits at once at the second.
pub(super) fn stop_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        signal(&mut term).await;
        info!("stopping: no new host actions; calls in flight finish (signal again to exit at once)");
        server::service::stopping();
        token.cancel();
        signal(&mut term).await;
        warn!("second signal: exiting at once");
        std::process::exit(130);
    });
}

/// The API's security from the flags. A non-loopback address needs `--auth` (or an
/// explicit `--insecure-no-auth`, which is logged loudly).
fn security(args: &ServeArgs) -> Result<server::Security> {
    let tls = args.tls.files().config()?;
    let credentials = match &args.auth {
        Some(path) => Some(Arc::new(crate::auth::Credentials::load(path)?)),
        None => None,
    };
    let loopback = is_loopback(&args.listen);
    let http_tls = match (&args.http_tls_cert, &args.http_tls_key) {
        (Some(cert), Some(key)) => Some(server::web::tls_config(cert, key)?),
        _ => None,
    };
    // The dashboard answers to its address, and to the name it is advertised by.
    let http_names = args
        .http_advertise
        .iter()
        .filter_map(|url| url::Url::parse(url).ok())
        .filter_map(|u| {
            let host = u.host_str()?.to_ascii_lowercase();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .collect();
    if let Some(http) = &args.http_listen
        && !is_loopback(http)
    {
        if !args.http_insecure && http_tls.is_none() {
            return Err(Error::Usage(format!(
                "--http-listen {http} is not a loopback address and the dashboard would speak plain HTTP: give --http-tls-cert and --http-tls-key, serve it on 127.0.0.1 behind a TLS proxy, or add --http-insecure"
            )));
        }
        if credentials.is_none() && !args.insecure_no_auth {
            return Err(Error::Usage(format!(
                "--http-listen {http} is not a loopback address: give --auth tokens.yaml, or --insecure-no-auth to serve it open"
            )));
        }
        if http_tls.is_none() {
            warn!(http = %http, "the dashboard is served in plain HTTP on a non-loopback address (--http-insecure)");
        }
    }
    if credentials.is_none() && !loopback {
        if !args.insecure_no_auth {
            return Err(Error::Usage(format!(
                "--listen {} is not a loopback address: give --auth tokens.yaml (see README, Security), or --insecure-no-auth to serve it open",
                args.listen
            )));
        }
        warn!(
            listen = %args.listen,
            "SERVING WITHOUT AUTHENTICATION on a non-loopback address (--insecure-no-auth): anyone who can reach it can change the fleet"
        );
    }
    let slack = match &args.slack_signing_secret_file {
        None => None,
        Some(_) if credentials.is_none() => {
            return Err(Error::Usage(
                "--slack-signing-secret-file needs --auth: the tokens file says which Slack user is which principal (`slack_user:` on an entry)".into(),
            ));
        }
        Some(path) => Some(crate::dashboard::slack::SigningSecret::load(path).map_err(Error::Usage)?),
    };
    let sso = match &args.oidc {
        None => None,
        Some(_) if credentials.is_none() => {
            return Err(Error::Usage(
                "--oidc needs --auth: with authentication off the dashboard is open and nobody signs in".into(),
            ));
        }
        Some(path) => {
            let config = crate::sso::Config::load(path)?;
            Some(Arc::new(crate::sso::Sso::new(config).map_err(Error::Internal)?))
        }
    };
    // TLS to the agents and to the other controllers: their CA, this controller's
    // certificate as its identity.
    let as_client = |ca: &Option<PathBuf>| match ca {
        None => Ok(None),
        Some(ca) => crate::tls::ClientFiles {
            ca: Some(ca.clone()),
            cert: args.tls.tls_cert.clone(),
            key: args.tls.tls_key.clone(),
        }
        .config(),
    };
    let agents = as_client(&args.agent_ca)?;
    let peers = as_client(&args.peer_ca)?;
    use crate::telemetry::prometheus::{Access, Prometheus};
    let access = Access::load(args.prometheus_ca.as_deref(), args.prometheus_token_file.as_deref())
        .map_err(|e| Error::Usage(e.to_string()))?;
    let prometheus = Prometheus::new(&access).map_err(|e| Error::Usage(e.to_string()))?;
    Ok(server::Security {
        tls,
        credentials,
        tokens_file: args.auth.clone(),
        http_tls,
        http_names,
        slack,
        sso,
        agents,
        peers,
        prometheus: Some(Arc::new(prometheus)),
        rate: crate::auth::RateLimit {
            per_second: args.max_changes_per_second,
            burst: args.max_changes_per_second.saturating_mul(5),
        },
    })
}

/// True for 127.0.0.0/8, ::1 and `localhost:PORT`.
fn is_loopback(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or_else(|_| addr.starts_with("localhost:"))
}

/// Binds an HTTP listener and prints where it serves `path` (scripts read the line).
pub(super) async fn bind_http(addr: &str, flag: &str, what: &str, path: &str, scheme: &str) -> Result<TcpListener> {
    let (listener, line) = bind_http_quietly(addr, flag, what, path, scheme).await?;
    println!("{line}");
    let _ = std::io::stdout().flush();
    Ok(listener)
}

/// Binds an HTTP listener; the line saying where it serves `path` is the caller's.
async fn bind_http_quietly(
    addr: &str,
    flag: &str,
    what: &str,
    path: &str,
    scheme: &str,
) -> Result<(TcpListener, String)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {addr} for {what} (pick another {flag})"), e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;
    Ok((listener, format!("{what} on {scheme}://{local}{path}")))
}

/// The dashboard's scheme: https with --http-tls-cert.
fn http_scheme(args: &ServeArgs) -> &'static str {
    if args.http_tls_cert.is_some() { "https" } else { "http" }
}

/// Where people find this controller's dashboard: `--http-advertise`, else the
/// dashboard's own address; None without a dashboard.
fn dashboard_url(args: &ServeArgs, http: Option<&TcpListener>) -> Result<Option<String>> {
    Ok(match (&args.http_advertise, http) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(http)) => Some(
            http.local_addr()
                .map(|a| format!("{}://{a}", http_scheme(args)))
                .map_err(|e| Error::io("cannot read the dashboard's listening address", e))?,
        ),
        (None, None) => None,
    })
}

/// Where the store is: a data dir, or etcd with this controller's leadership settings.
fn store_at(args: &ServeArgs, listener: &TcpListener, http: Option<&TcpListener>) -> Result<cluster::StoreAt> {
    let Some(address) = &args.store else {
        let dir = args
            .data
            .clone()
            .ok_or_else(|| Error::Usage("say where the store is: --data DIR or --store etcd://...".into()))?;
        return Ok(cluster::StoreAt::Dir(dir));
    };
    let tls = crate::tls::ClientFiles {
        ca: args.etcd_ca.clone(),
        cert: args.etcd_cert.clone(),
        key: args.etcd_key.clone(),
    }
    .config()?;
    let advertise = match &args.advertise {
        Some(url) => {
            // Named to clients in messages and forwarded to: one grammar first.
            crate::ident::controller_url(url).map_err(|e| Error::Usage(format!("--advertise: {e}")))?;
            url.clone()
        }
        None => {
            let local = listener
                .local_addr()
                .map_err(|e| Error::io("cannot read the listening address", e))?;
            let scheme = if args.tls.tls_cert.is_some() { "https" } else { "http" };
            format!("{scheme}://{local}")
        }
    };
    let dashboard = dashboard_url(args, http)?.unwrap_or_default();
    Ok(cluster::StoreAt::Etcd(Box::new(cluster::Etcd {
        address: address.clone(),
        tls,
        advertise,
        dashboard,
        lease: args.leader_lease,
    })))
}

pub async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let security = security(&args)?;
    let sinks = match &args.notify {
        Some(path) => crate::notify::Sinks::load(path)?,
        None => crate::notify::Sinks::default(),
    };
    if let Some(path) = &args.freeze_calendar {
        // Refused at start with the reason; a re-read at SIGHUP keeps the one in force.
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Usage(format!("--freeze-calendar {}: cannot read it: {e}", path.display())))?;
        crate::freeze::calendar::Calendar::parse(&text)
            .map_err(|e| Error::Usage(format!("--freeze-calendar {}: {e}", path.display())))?;
    }
    let ssh = args
        .ssh
        .as_deref()
        .map(crate::reach::ssh::config::SshConfig::load)
        .transpose()?;
    // Bound now (a taken port is refused at once), said when the controller is ready
    // to serve: the store open and the fleet loaded (scripts wait for these lines).
    let (listener, listening) = bind_quietly(&args.listen).await?;
    let mut ready_lines = vec![listening];
    let http = match &args.http_listen {
        Some(addr) => {
            let (l, line) = bind_http_quietly(addr, "--http-listen", "dashboard", "/", http_scheme(&args)).await?;
            ready_lines.push(line);
            Some(l)
        }
        None => None,
    };
    // The same address for both: one server, which serves /metrics beside the pages.
    let metrics = match &args.metrics_listen {
        Some(addr) if args.http_listen.as_deref() != Some(addr.as_str()) => {
            let (l, line) = bind_http_quietly(addr, "--metrics-listen", "metrics", "/metrics", "http").await?;
            ready_lines.push(line);
            Some(l)
        }
        _ => None,
    };
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let store = store_at(&args, &listener, http.as_ref())?;
    let dashboard_url = dashboard_url(&args, http.as_ref())?;
    server::run(
        listener,
        server::Options {
            store,
            fleet: args.fleet,
            agent_timeout: args.agent_timeout,
            max_in_flight: args.max_in_flight as usize,
            clock: Arc::new(crate::clock::SystemClock),
            security,
            metrics,
            http,
            grace: args.grace_period,
            drill_from_ms: args.drill_clock,
            sinks,
            sinks_file: args.notify.clone(),
            freeze_calendar: args.freeze_calendar.clone(),
            ready_lines,
            site: args.site,
            ssh,
            dashboard_url,
        },
        token,
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}
