//! `rollout hosts`: the inventory with what is known of each host's health, or what
//! happened to each host of a rollout or restart job.

use std::process::ExitCode;

use clap::Args;

use super::client::connect;
use crate::clock::{Clock, SystemClock};
use crate::proto::v1 as pb;
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct HostsArgs {
    /// Only hosts last seen unhealthy or unreachable (inventory view).
    #[arg(long)]
    pub unhealthy: bool,
    /// Probe every host now instead of showing what is known (inventory view).
    #[arg(long)]
    pub probe: bool,
    /// The hosts of this rollout, with what happened to each and why.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["job", "probe"])]
    pub rollout: Option<String>,
    /// The hosts of this restart job, with what happened to each and why.
    #[arg(long, value_name = "ID", conflicts_with = "probe")]
    pub job: Option<u64>,
    /// Only the hosts that failed (with --rollout or --job).
    #[arg(long)]
    pub failed: bool,
    /// Only hosts in this state (with --rollout or --job).
    #[arg(long, value_enum, conflicts_with = "failed")]
    pub state: Option<HostStateArg>,
    /// Hosts shown at most (pages are fetched until this many).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[command(flatten)]
    pub output: super::OutputArg,
}

/// The states `rollout hosts --rollout NAME --state S` filters on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HostStateArg {
    Failed,
    Succeeded,
    InFlight,
    Pending,
    /// Applied fine, then unhealthy or unreachable at a health gate.
    Unhealthy,
    /// Restart jobs: matched but left alone.
    Skipped,
}

impl HostStateArg {
    fn filter(self) -> pb::HostFilter {
        match self {
            HostStateArg::Failed => pb::HostFilter::Failed,
            HostStateArg::Succeeded => pb::HostFilter::Succeeded,
            HostStateArg::InFlight => pb::HostFilter::InFlight,
            HostStateArg::Pending => pb::HostFilter::Pending,
            HostStateArg::Unhealthy => pb::HostFilter::Unhealthy,
            HostStateArg::Skipped => pb::HostFilter::Skipped,
        }
    }
}

pub async fn hosts(server: &str, args: HostsArgs) -> Result<ExitCode> {
    if args.rollout.is_some() || args.job.is_some() {
        return host_results(server, &args).await;
    }
    if args.failed || args.state.is_some() {
        return Err(Error::Usage(
            "--failed and --state need --rollout NAME or --job ID: they filter a rollout's or job's hosts".into(),
        ));
    }
    let mut client = connect(server).await?;
    let hosts = client
        .list_hosts(pb::ListHostsRequest {
            unhealthy_only: args.unhealthy,
            probe: args.probe,
        })
        .await?
        .into_inner()
        .hosts;
    if args.output.output == super::Output::Json {
        let list: Vec<serde_json::Value> = hosts.iter().map(host_json).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    let now = SystemClock.now_ms();
    let ago = |ms: i64| {
        if ms == 0 {
            "never".to_string()
        } else {
            crate::text::format_duration(std::time::Duration::from_secs(((now - ms).max(0) / 1000) as u64)) + " ago"
        }
    };
    let rows = hosts.iter().map(|h| {
        vec![
            h.id.clone(),
            health_word(h).to_string(),
            h.version.clone(),
            ago(h.checked_at_unix_ms),
            ago(h.last_heartbeat_unix_ms),
            h.customers.join(","),
            h.detail.clone(),
        ]
    });
    print!(
        "{}",
        super::render::grid(
            &[
                "HOST",
                "HEALTH",
                "VERSION",
                "HEALTH KNOWN",
                "HEARTBEAT",
                "CUSTOMERS",
                "DETAIL"
            ],
            &[],
            rows
        )
    );
    let unknown = hosts.iter().filter(|h| h.health == "unknown").count();
    println!(
        "{} hosts{}",
        hosts.len(),
        if unknown > 0 {
            format!("; health of {unknown} unknown (never reported, or stale): `rollout hosts --probe` asks them now")
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// healthy, UNHEALTHY, UNREACHABLE or unknown: what the controller can honestly say.
fn health_word(h: &pb::HostStatus) -> &'static str {
    match h.health.as_str() {
        "healthy" => "healthy",
        "unhealthy" => "UNHEALTHY",
        "unreachable" => "UNREACHABLE",
        _ => "unknown",
    }
}

fn host_json(h: &pb::HostStatus) -> serde_json::Value {
    serde_json::json!({
        "id": h.id,
        "address": h.address,
        "health": h.health,
        "version": h.version,
        "customers": h.customers,
        "checked_at_unix_ms": h.checked_at_unix_ms,
        "last_heartbeat_unix_ms": h.last_heartbeat_unix_ms,
        "detail": h.detail,
    })
}

/// `rollout hosts --rollout NAME | --job ID [--failed | --state S]`: pages through the
/// hosts and prints what happened to each.
async fn host_results(server: &str, args: &HostsArgs) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let filter = match (args.failed, args.state) {
        (true, _) => pb::HostFilter::Failed,
        (false, Some(s)) => s.filter(),
        (false, None) => pb::HostFilter::All,
    };
    let mut hosts = Vec::new();
    let mut token = String::new();
    let mut more = false;
    loop {
        let page = client
            .list_rollout_hosts(pb::ListRolloutHostsRequest {
                name: args.rollout.clone().unwrap_or_default(),
                id: 0,
                job_id: args.job.unwrap_or(0),
                filter: filter as i32,
                page_size: (args.limit - hosts.len()).clamp(1, 10_000) as u32,
                page_token: token,
            })
            .await?
            .into_inner();
        hosts.extend(page.hosts);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        if hosts.len() >= args.limit {
            more = true;
            break;
        }
    }
    if args.output.output == super::Output::Json {
        let list: Vec<serde_json::Value> = hosts.iter().map(super::render::host_result_json).collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", super::render::host_results(&hosts));
    println!(
        "{} hosts{}",
        hosts.len(),
        if more {
            format!(" shown; more match (--limit {} shows more)", args.limit * 10)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}
