//! `rollout restart` and `rollout hosts`: targeted restarts, customers in their
//! working day first, and the inventory with health.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::connect;
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
    /// business-hours-first (default), least-business-downtime, off-hours-first or stable.
    #[arg(long)]
    pub order: Option<String>,
    /// Show the order, with each host's customer, local time, tier and why; restart nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: the order and explanations as they would be at this instant
    /// (RFC 3339, e.g. 2026-11-30T09:00:00Z) instead of now.
    #[arg(long, value_name = "TIME", value_parser = super::parse_instant, requires = "dry_run")]
    pub at: Option<i64>,
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
    /// An emergency job: passes freezes once an admin other than you approves it
    /// (`--approve ID`); restarts nothing before.
    #[arg(long)]
    pub emergency: bool,
    /// Approve emergency restart job ID (an admin other than the one who asked).
    #[arg(long, value_name = "ID")]
    pub approve: Option<u64>,
    /// With --approve: why, kept with the approval and in the audit log.
    #[arg(long, default_value = "", requires = "approve")]
    pub comment: String,
    #[command(flatten)]
    pub output: super::OutputArg,
}

/// Parses repeated `key=v1,v2` into a selector.
pub(super) fn selector(items: &[String]) -> Result<BTreeMap<String, pb::LabelValues>> {
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
        job.state().label(),
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
    if !job.waiting.is_empty() {
        line.push_str(&format!(" - {}", job.waiting));
    }
    line
}

/// `rollout restart --list`: a line per job.
async fn list_jobs(client: &mut super::Client, json: bool) -> Result<ExitCode> {
    let jobs = client
        .list_restart_jobs(pb::ListRestartJobsRequest {})
        .await?
        .into_inner()
        .jobs;
    if json {
        super::json::print(&serde_json::Value::Array(jobs.iter().map(super::json::job).collect()));
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        println!("no restart jobs yet; start one with `rollout restart --unhealthy`");
    }
    for j in &jobs {
        println!("{}", job_line(j));
    }
    Ok(ExitCode::SUCCESS)
}

/// The ordered host list: position, host, customer, local time, tier, why.
pub fn host_table(hosts: &[pb::RestartHost], limit: usize) -> String {
    let rows = hosts.iter().take(limit).map(|h| {
        vec![
            h.position.to_string(),
            h.host_id.clone(),
            if h.batch == 0 { "-".into() } else { h.batch.to_string() },
            h.customer.clone(),
            h.tier.clone(),
            h.why.clone(),
        ]
    });
    let mut out = super::render::grid(&["#", "HOST", "BATCH", "CUSTOMER", "TIER", "WHY"], &[0, 2], rows);
    if hosts.len() > limit {
        out.push_str(&format!("  (+{} more; --limit N shows more)\n", hosts.len() - limit));
    }
    out
}

pub async fn restart(server: &str, args: RestartArgs) -> Result<ExitCode> {
    if args.job.is_none()
        && !args.list
        && args.cancel.is_none()
        && args.approve.is_none()
        && args.selector.is_empty()
        && args.hosts.is_empty()
        && !args.unhealthy
    {
        return Err(Error::Usage(
            "say which hosts to restart: --selector KEY=VALUE, --host ID (repeat either), or --unhealthy (alone: every unhealthy host)".into(),
        ));
    }
    let json = args.output.output == super::Output::Json;
    let mut client = connect(server).await?;
    if args.list {
        return list_jobs(&mut client, json).await;
    }
    // Acting on a job: one line saying how it stands after.
    let acted = match (args.approve, args.cancel) {
        (Some(id), _) => Some(
            client
                .approve_restart_job(pb::ApproveRestartJobRequest {
                    id,
                    comment: args.comment.clone(),
                    request_id: args.request_id.clone().unwrap_or_default(),
                })
                .await?,
        ),
        (None, Some(id)) => Some(
            client
                .cancel_restart_job(pb::CancelRestartJobRequest {
                    id,
                    reason: String::new(),
                })
                .await?,
        ),
        (None, None) => None,
    };
    if let Some(job) = acted {
        let job = job.into_inner();
        match json {
            true => super::json::print(&super::json::job(&job)),
            false => println!("{}", job_line(&job)),
        }
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
                at_unix_ms: args.at.unwrap_or(0),
                emergency: args.emergency,
            };
            let response = client.trigger_restart(request).await?.into_inner();
            let job = response.job.unwrap_or_default();
            if json && (args.dry_run || !args.watch) {
                let mut shown = super::json::job(&job);
                shown["dry_run"] = args.dry_run.into();
                shown["replayed"] = response.replayed.into();
                super::json::print(&shown);
                return Ok(ExitCode::SUCCESS);
            }
            if args.dry_run {
                if let Some(at) = args.at {
                    println!(
                        "what-if: ordered and explained as at {} (not now)",
                        crate::clock::format_instant(at)
                    );
                }
                if !job.drill_clock.is_empty() {
                    println!("{}", job.drill_clock);
                }
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
                if let Some(line) = price_line(&job.prices) {
                    println!("{line}");
                }
                print!("{}", host_table(&job.hosts, args.limit));
                return Ok(ExitCode::SUCCESS);
            }
            if !json {
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
            }
            if !args.watch {
                println!("follow it with `rollout restart --job {} --watch`", job.id);
                return Ok(ExitCode::SUCCESS);
            }
            job.id
        }
    };
    let last = if args.watch {
        follow(&mut client, id, json).await?
    } else {
        get(&mut client, id, false).await?
    };
    if json {
        super::json::print(&super::json::job(&get(&mut client, id, true).await?));
        return Ok(job_exit(&last));
    }
    println!("{}", job_line(&last));
    if !last.hosts.is_empty() || last.state() != pb::RestartJobState::Running {
        let detailed = get(&mut client, id, true).await?;
        println!("restart order (first {}):", args.limit.min(detailed.hosts.len()));
        print!("{}", host_table(&detailed.hosts, args.limit));
    }
    Ok(job_exit(&last))
}

/// 0 for a job that succeeded or still runs, 1 otherwise.
fn job_exit(job: &pb::RestartJob) -> ExitCode {
    match job.state() {
        pb::RestartJobState::Succeeded | pb::RestartJobState::Running => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
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

/// Follows a job to its end: a bar on a terminal, lines elsewhere, JSON lines with
/// `json`.
pub async fn follow(client: &mut super::Client, id: u64, json: bool) -> Result<pb::RestartJob> {
    let mut stream = client
        .watch_restart_job(pb::GetRestartJobRequest {
            id,
            include_hosts: false,
        })
        .await?
        .into_inner();
    let bar = (std::io::stdout().is_terminal() && !json).then(|| {
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
                let line = format!("{} {tenth} {}", job.state().label(), job.hosts_failed);
                if line != last_line {
                    match json {
                        true => super::json::print(&super::json::job(&job)),
                        false => println!("{}", job_line(&job)),
                    }
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

/// The price of each order, as the dry run says it: "expected, at 50 restarts a
/// minute: this order (least-business-downtime): 1.9M customer-minutes in working
/// hours; business-hours-first: 2.4M; stable: 6.3M".
pub fn price_line(prices: &[pb::OrderPrice]) -> Option<String> {
    price_line_of(prices, "restart")
}

/// [`price_line`] for a plan, whose hosts each take an `act` ("deploy", "rollback",
/// "restart") a minute: "expected, at 200 deploys a minute: ...".
pub fn price_line_of(prices: &[pb::OrderPrice], act: &str) -> Option<String> {
    let chosen = prices.iter().find(|p| p.chosen)?;
    let amount = |n: u64| match n {
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.0}k", n as f64 / 1e3),
        n => n.to_string(),
    };
    let mut line = format!(
        "expected, at {} {act}{} a minute: this order ({}): {} customer-minutes in working hours",
        chosen.per_minute,
        if chosen.per_minute == 1 { "" } else { "s" },
        chosen.order,
        amount(chosen.working_minutes)
    );
    for p in prices.iter().filter(|p| !p.chosen) {
        line.push_str(&format!("; {}: {}", p.order, amount(p.working_minutes)));
    }
    Some(line)
}
