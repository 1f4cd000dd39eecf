//! `rollout restart` and `rollout hosts`: targeted restarts, customers in their
//! working day first, and the inventory with health.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::connect;
use crate::engine::restart_state_name as job_state;
use crate::proto::v1 as pb;
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Only hosts whose probe says unhealthy (probed when the job is created).
    #[arg(long)]
    pub unhealthy: bool,
    /// Hosts whose label matches, `key=value` or `key=v1,v2`; repeat for more keys.
    #[arg(long = "selector", value_name = "KEY=VALUE")]
    pub selector: Vec<String>,
    /// A host by id; repeat for more.
    #[arg(long = "host", value_name = "ID")]
    pub hosts: Vec<String>,
    /// Restarts in flight at once (default 50).
    #[arg(long)]
    pub max_parallel: Option<u32>,
    /// Per customer, healthy hosts down at once: a count (2) or a share (25%, the default).
    #[arg(long)]
    pub max_unavailable: Option<String>,
    /// business-hours-first (default), off-hours-first or stable.
    #[arg(long)]
    pub order: Option<String>,
    /// Show the order, with each host's customer, local time, tier and why; restart nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the job until it ends.
    #[arg(long)]
    pub watch: bool,
    /// Makes the request idempotent.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Hosts listed by a dry run or a finished job.
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    /// Show a job (with --watch, follow it) instead of starting one.
    #[arg(long, value_name = "ID")]
    pub job: Option<u64>,
    /// Cancel a job: nothing more is restarted; restarts in flight finish.
    #[arg(long, value_name = "ID")]
    pub cancel: Option<u64>,
    /// List restart jobs.
    #[arg(long)]
    pub list: bool,
}

/// Parses repeated `key=v1,v2` into a selector.
fn selector(items: &[String]) -> Result<BTreeMap<String, pb::LabelValues>> {
    let mut out: BTreeMap<String, pb::LabelValues> = BTreeMap::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            return Err(Error::Usage(format!(
                "--selector `{item}`: write it as key=value (e.g. region=apac)"
            )));
        };
        let values = &mut out.entry(k.trim().to_string()).or_default().values;
        values.extend(v.split(',').map(|x| x.trim().to_string()).filter(|x| !x.is_empty()));
    }
    Ok(out)
}

/// `in-hours 12/12, starting-soon 3/5, off-hours 0/20`
pub fn tiers_line(job: &pb::RestartJob) -> String {
    if job.tiers.is_empty() {
        return "no host picked yet".into();
    }
    job.tiers
        .iter()
        .map(|t| format!("{} {}/{}", t.tier, t.restarted, t.total))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per job.
pub fn job_line(job: &pb::RestartJob) -> String {
    let mut line = format!(
        "restart job {} {}: {}/{} restarted, {} failed, {} in flight, {} waiting, {} skipped; {} (batch {})",
        job.id,
        job_state(job.state()),
        job.hosts_restarted,
        job.hosts_total,
        job.hosts_failed,
        job.hosts_in_flight,
        job.hosts_pending,
        job.skipped.len(),
        tiers_line(job),
        job.batches
    );
    if !job.reason.is_empty() {
        line.push_str(&format!(" - {}", job.reason));
    }
    line
}

/// The ordered host list: position, host, customer, local time, tier, why.
pub fn host_table(hosts: &[pb::RestartHost], limit: usize) -> String {
    let mut out = format!(
        "{:>5}  {:<20} {:<6} {:<28} {:<14} why\n",
        "#", "HOST", "BATCH", "CUSTOMER", "TIER"
    );
    for h in hosts.iter().take(limit) {
        out.push_str(&format!(
            "{:>5}  {:<20} {:<6} {:<28} {:<14} {}\n",
            h.position,
            h.host_id,
            if h.batch == 0 {
                "-".to_string()
            } else {
                h.batch.to_string()
            },
            h.customer,
            h.tier,
            h.why
        ));
    }
    if hosts.len() > limit {
        out.push_str(&format!("  (+{} more; --limit N shows more)\n", hosts.len() - limit));
    }
    out
}

pub async fn restart(server: &str, args: RestartArgs) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    if args.list {
        let jobs = client
            .list_restart_jobs(pb::ListRestartJobsRequest {})
            .await?
            .into_inner()
            .jobs;
        if jobs.is_empty() {
            println!("no restart jobs yet; start one with `rollout restart --unhealthy`");
        }
        for j in &jobs {
            println!("{}", job_line(j));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(id) = args.cancel {
        let job = client
            .cancel_restart_job(pb::CancelRestartJobRequest {
                id,
                reason: String::new(),
            })
            .await?
            .into_inner();
        println!("{}", job_line(&job));
        return Ok(ExitCode::SUCCESS);
    }
    let id = match args.job {
        Some(id) => id,
        None => {
            let request = pb::TriggerRestartRequest {
                selector: selector(&args.selector)?.into_iter().collect(),
                host_ids: args.hosts.clone(),
                unhealthy_only: args.unhealthy,
                order: args.order.clone().unwrap_or_default(),
                max_parallel: args.max_parallel.unwrap_or(0),
                max_unavailable: args.max_unavailable.clone().unwrap_or_default(),
                dry_run: args.dry_run,
                request_id: args.request_id.clone().unwrap_or_default(),
            };
            let response = client.trigger_restart(request).await?.into_inner();
            let job = response.job.unwrap_or_default();
            if args.dry_run {
                println!(
                    "dry run: {} hosts would be restarted, order {}, max_parallel {}, max_unavailable {} per customer (nothing was restarted)",
                    job.hosts_total,
                    job.order,
                    if job.max_parallel == 0 { 50 } else { job.max_parallel },
                    if job.max_unavailable.is_empty() {
                        "25%"
                    } else {
                        &job.max_unavailable
                    }
                );
                print_skipped(&job);
                print!("{}", host_table(&job.hosts, args.limit));
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{} restart job {}: {} hosts, order {}",
                if response.replayed {
                    "already started:"
                } else {
                    "started"
                },
                job.id,
                job.hosts_total,
                job.order
            );
            print_skipped(&job);
            if !args.watch {
                println!("follow it with `rollout restart --job {} --watch`", job.id);
                return Ok(ExitCode::SUCCESS);
            }
            job.id
        }
    };
    let last = if args.watch {
        follow(&mut client, id).await?
    } else {
        get(&mut client, id, false).await?
    };
    println!("{}", job_line(&last));
    if !last.hosts.is_empty() || last.state() != pb::RestartJobState::Running {
        let detailed = get(&mut client, id, true).await?;
        println!("restart order (first {}):", args.limit.min(detailed.hosts.len()));
        print!("{}", host_table(&detailed.hosts, args.limit));
    }
    Ok(match last.state() {
        pb::RestartJobState::Succeeded | pb::RestartJobState::Running => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

fn print_skipped(job: &pb::RestartJob) {
    if job.skipped.is_empty() {
        return;
    }
    println!("skipped {} hosts:", job.skipped.len());
    for s in job.skipped.iter().take(10) {
        println!("  {}: {}", s.host_id, s.reason);
    }
    if job.skipped.len() > 10 {
        println!("  (+{} more)", job.skipped.len() - 10);
    }
}

async fn get(client: &mut super::Client, id: u64, include_hosts: bool) -> Result<pb::RestartJob> {
    Ok(client
        .get_restart_job(pb::GetRestartJobRequest { id, include_hosts })
        .await?
        .into_inner())
}

/// Follows a job to its end: a bar on a terminal, lines elsewhere.
pub async fn follow(client: &mut super::Client, id: u64) -> Result<pb::RestartJob> {
    let mut stream = client
        .watch_restart_job(pb::GetRestartJobRequest {
            id,
            include_hosts: false,
        })
        .await?
        .into_inner();
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("restarts [{bar:40.green/blue}] {pos:>6}/{len:<6} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    });
    let mut last_line = String::new();
    let mut last = None;
    while let Some(job) = stream.message().await? {
        match &bar {
            Some(b) => {
                b.set_length(job.hosts_total);
                b.set_position(job.hosts_restarted + job.hosts_failed);
                b.set_message(tiers_line(&job));
            }
            None => {
                let tenth = (job.hosts_restarted + job.hosts_failed) * 10 / job.hosts_total.max(1);
                let line = format!("{} {tenth} {}", job_state(job.state()), job.hosts_failed);
                if line != last_line {
                    println!("{}", job_line(&job));
                    last_line = line;
                }
            }
        }
        let done = job.state() != pb::RestartJobState::Running;
        last = Some(job);
        if done {
            break;
        }
    }
    if let Some(b) = &bar {
        b.abandon();
    }
    last.ok_or_else(|| Error::Usage(format!("restart job {id}: the controller ended the stream; try again")))
}

#[derive(Debug, Args)]
pub struct HostsArgs {
    /// Only hosts last seen unhealthy.
    #[arg(long)]
    pub unhealthy: bool,
    /// Probe every host now instead of showing what is known.
    #[arg(long)]
    pub probe: bool,
}

pub async fn hosts(server: &str, args: HostsArgs) -> Result<ExitCode> {
    let mut client = connect(server).await?;
    let hosts = client
        .list_hosts(pb::ListHostsRequest {
            unhealthy_only: args.unhealthy,
            probe: args.probe,
        })
        .await?
        .into_inner()
        .hosts;
    println!(
        "{:<22} {:<10} {:<16} {:<12} {:<30} detail",
        "HOST", "HEALTH", "VERSION", "CHECKED", "CUSTOMERS"
    );
    let now = crate::engine::now_ms();
    for h in &hosts {
        let ago = |ms: i64| {
            if ms == 0 {
                "never".to_string()
            } else {
                format!("{}s ago", (now - ms).max(0) / 1000)
            }
        };
        let health = match (h.reachable, h.healthy) {
            (false, _) => "UNREACHABLE",
            (true, true) => "healthy",
            (true, false) => "UNHEALTHY",
        };
        println!(
            "{:<22} {:<12} {:<16} {:<12} {:<12} {:<30} {}",
            h.id,
            health,
            h.version,
            ago(h.checked_at_unix_ms),
            ago(h.last_heartbeat_unix_ms),
            h.customers.join(","),
            h.detail
        );
    }
    println!("{} hosts", hosts.len());
    Ok(ExitCode::SUCCESS)
}
