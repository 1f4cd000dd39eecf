//! `rollout agent`: the long-running agent process, for one real host (`--config`,
//! repeatable) or a whole simulated fleet (`--simulate`). Like `rollout serve` it
//! prints `listening on ADDR` first and stops gracefully on SIGINT or SIGTERM.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::serve::{TlsArgs, bind, bind_http, stop_on_signals};
use crate::agent::config::AgentConfig;
use crate::agent::host::{self, HostAgent};
use crate::agent::simulator::{self, Simulator, SimulatorOptions, parse_latency};
use crate::inventory::FleetFile;
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent of a real host, configured by this file (commands, state file).
    /// Repeat it to serve several hosts from one process (each its own config, state
    /// and heartbeats; the first one's `listen` unless --listen).
    #[arg(long, conflicts_with = "simulate")]
    pub config: Vec<PathBuf>,
    /// Serve every host of this fleet file (a simulated fleet).
    #[arg(long)]
    pub simulate: Option<PathBuf>,
    /// Address to serve the Agent protocol on (default: the config's `listen`, or
    /// 127.0.0.1:7070 for a simulator).
    #[arg(long)]
    pub listen: Option<String>,
    /// Share of Apply calls that fail (simulator).
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,
    /// Latency of each Apply (simulator): `MIN..MAX` milliseconds, uniform; or
    /// `lognormal:MEDIAN,p99=P99` (like `lognormal:60s,p99=5m`), most deploys near the
    /// median and one in a hundred past the p99.
    #[arg(long, default_value = "0..0", value_parser = parse_latency)]
    pub latency_ms: simulator::Latency,
    /// Seed of the simulator's randomness: the same seed fails the same operations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of hosts that start unhealthy, besides those marked `healthy: false` (simulator).
    #[arg(long, default_value_t = 0.0)]
    pub unhealthy_rate: f64,
    /// Share of hosts whose agent is down: every call gets Unavailable (simulator).
    #[arg(long, default_value_t = 0.0)]
    pub unavailable_rate: f64,
    /// Share of deploys that succeed but leave the host unhealthy (simulator).
    #[arg(long, default_value_t = 0.0)]
    pub break_rate: f64,
    /// Answer every Apply at once, touching nothing (simulator; the gRPC ceiling for
    /// benchmarks).
    #[arg(long)]
    pub noop: bool,
    /// Serve the simulated service's traffic as Prometheus metrics on this address
    /// (`GET /metrics`: rollout_sim_requests_total and
    /// rollout_sim_retried_requests_total by version; simulator).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Label the traffic metrics by host too (simulator).
    #[arg(long, requires = "metrics_listen")]
    pub metrics_per_host: bool,
    /// Hosts running VERSION retry FACTOR times as many requests (default 20): the
    /// retry storm (repeatable; simulator).
    #[arg(long, value_name = "VERSION[:FACTOR]", requires = "metrics_listen")]
    pub faulty_version: Vec<String>,
    /// TLS for a host agent (the simulator serves plaintext).
    #[command(flatten)]
    pub tls: TlsArgs,
}

pub async fn agent(args: AgentArgs) -> Result<ExitCode> {
    let tls = args.tls.files().config()?;
    if !args.config.is_empty() {
        return host_agent(&args.config, args.listen.as_deref(), tls).await;
    }
    if tls.is_some() {
        return Err(Error::Usage(
            "the simulator serves plaintext only; TLS is for --config agents".into(),
        ));
    }
    let Some(fleet_path) = args.simulate else {
        return Err(Error::Usage(
            "say what to run: --config agent.yaml for this host, or --simulate FLEET.yaml for a simulated fleet".into(),
        ));
    };
    if !(0.0..=1.0).contains(&args.fail_rate) {
        return Err(Error::Usage("--fail-rate must be between 0 and 1 (e.g. 0.05)".into()));
    }
    if !(0.0..=1.0).contains(&args.unhealthy_rate) {
        return Err(Error::Usage(
            "--unhealthy-rate must be between 0 and 1 (e.g. 0.05)".into(),
        ));
    }
    let faulty = args
        .faulty_version
        .iter()
        .map(|f| crate::agent::traffic::parse_faulty(f))
        .collect::<std::result::Result<HashMap<_, _>, _>>()
        .map_err(Error::Usage)?;
    let fleet = FleetFile::load(&fleet_path)?;
    let mut sim = Simulator::new(
        &fleet,
        &SimulatorOptions {
            fail_rate: args.fail_rate,
            latency_ms: args.latency_ms,
            seed: args.seed,
            unhealthy_rate: args.unhealthy_rate,
            unavailable_rate: args.unavailable_rate,
            break_rate: args.break_rate,
            noop: args.noop,
        },
    );
    let listener = bind(args.listen.as_deref().unwrap_or("127.0.0.1:7070")).await?;
    let token = CancellationToken::new();
    if let Some(addr) = &args.metrics_listen {
        let hosts = fleet
            .hosts
            .iter()
            .map(|h| (h.id.as_str(), h.version.as_deref().unwrap_or_default()));
        let traffic = Arc::new(crate::agent::traffic::Traffic::new(
            hosts,
            faulty,
            args.metrics_per_host,
        ));
        sim = sim.with_traffic(traffic.clone());
        let metrics = bind_http(addr, "--metrics-listen", "traffic metrics", "/metrics", "http").await?;
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = crate::agent::traffic::render(&traffic);
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        );
        let stop = token.clone();
        tokio::spawn(async move {
            let served = axum::serve(metrics, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "the traffic metrics server failed");
            }
        });
    }
    let sim = Arc::new(sim);
    info!(
        hosts = fleet.hosts.len(),
        fail_rate = args.fail_rate,
        "simulating a fleet"
    );
    stop_on_signals(token.clone());
    simulator::serve(listener, sim, token).await?;
    Ok(ExitCode::SUCCESS)
}

async fn host_agent(
    paths: &[PathBuf],
    listen: Option<&str>,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> Result<ExitCode> {
    let mut agents = Vec::with_capacity(paths.len());
    for path in paths {
        let config = AgentConfig::load(path)?;
        if agents
            .iter()
            .any(|a: &Arc<HostAgent>| a.config().host_id == config.host_id)
        {
            return Err(Error::Usage(format!(
                "{}: host `{}` is configured twice",
                path.display(),
                config.host_id
            )));
        }
        let agent = HostAgent::new(config.clone())
            .map_err(|e| Error::io(format!("cannot read the state file {}", config.state_file.display()), e))?;
        agents.push(Arc::new(agent));
    }
    let first = agents[0].config().listen.clone();
    let listener = bind(listen.unwrap_or(&first)).await?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;
    let token = CancellationToken::new();
    stop_on_signals(token.clone());
    let credentials = super::client::credentials();
    for agent in &agents {
        info!(host = %agent.config().host_id, version = %agent.version(), "host agent ready");
        tokio::spawn(crate::agent::heartbeat::run(
            agent.clone(),
            bound,
            credentials.clone(),
            token.clone(),
        ));
    }
    host::serve(listener, agents, tls, token).await?;
    Ok(ExitCode::SUCCESS)
}
