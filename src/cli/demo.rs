//! `rollout demo`: the incident, end to end, on one machine.
//!
//! A simulated fleet (10,000 hosts by default) serves the Agent protocol on a
//! loopback port; a real controller runs as a child process on a temporary store;
//! the retry-storm fix plan from `plans/` is submitted over gRPC with short bakes;
//! mid-rollout the controller is killed with SIGKILL and started again on the same
//! store; the rollout resumes and ends at 100%. The demo then checks every simulated
//! host ran the deploy exactly once and prints a summary.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::client::{connect, rollout_named};
use super::process::Spawned;
use super::render;
use super::watch::{Progress, follow};
use crate::agent::simulator::{self, Simulator, SimulatorOptions, parse_latency};
use crate::clock::{Clock, SystemClock};
use crate::inventory::{GenerateOptions, generate};
use crate::plan::Plan;
use crate::proto::v1 as pb;
use crate::text::format_duration;
use crate::{Error, Result};

/// The seed incident's moment (Monday 2024-11-25, 17:33 UTC): the fix had reached
/// ~90% and restarts were being prioritised by business hours. The demo's controller
/// judges business hours by a drill clock from here, so its restart phase shows
/// customers in hours (the Americas, Europe's evening), starting soon (New Zealand's
/// early risers, the Gulf's night shifts) and off hours (Asia), whatever day it runs.
pub const INCIDENT_MOMENT: &str = "2024-11-25T17:33:00Z";

/// The plan the demo deploys: the same file as in `plans/`.
const PLAN: &str = include_str!("../../plans/exo-retry-fix.yaml");
const PLAN_NAME: &str = "plans/exo-retry-fix.yaml";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Hosts in the simulated fleet.
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// Bake between waves (the plan says 5m; a demo cannot wait that long).
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub bake: Duration,
    /// Simulated deploy time per host, MIN..MAX milliseconds.
    #[arg(long, default_value = "20..80", value_parser = parse_latency)]
    pub latency_ms: simulator::Latency,
    /// The random seed of the fleet and its simulated latencies.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of hosts that stay unhealthy after the fix and need a restart.
    #[arg(long, default_value_t = 0.04)]
    pub unhealthy_rate: f64,
    /// Do not kill the controller mid-rollout.
    #[arg(long)]
    pub no_crash: bool,
    /// Serve the live dashboard here (loopback) and keep it open after the demo,
    /// until Ctrl-C.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Leave each approval gate to you: press `Approve` on the rollout's page of the
    /// dashboard (the demo says where) instead of the demo approving it itself.
    #[arg(long, requires = "http_listen")]
    pub approve_in_browser: bool,
    /// Judge business hours by the real clock, instead of replaying the incident's
    /// moment (Monday 2024-11-25 17:33 UTC) on a drill clock.
    #[arg(long)]
    pub now: bool,
}

/// `rollout serve`'s arguments; `drill`: the instant its drill clock reads at start.
fn controller_args(data: &Path, fleet: &Path, listen: &str, http: Option<&str>, drill: Option<i64>) -> Vec<String> {
    let mut args = vec![
        "serve".into(),
        "--listen".into(),
        listen.into(),
        "--data".into(),
        data.display().to_string(),
        "--fleet".into(),
        fleet.display().to_string(),
    ];
    if let Some(http) = http {
        args.extend(["--http-listen".into(), http.into()]);
    }
    if let Some(at) = drill {
        args.extend(["--drill-clock".into(), crate::clock::format_instant(at)]);
    }
    args
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}

pub async fn run(args: DemoArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the rollout executable", e))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temporary directory", e))?;
    let (data, fleet_path, log) = (
        dir.path().join("data"),
        dir.path().join("fleet.yaml"),
        dir.path().join("controller.log"),
    );

    println!("rollout demo: a change multiplied retried requests; the fix (build 15.20.8207.12) goes out in waves.");
    if args.now {
        println!("business hours: the real clock, now");
    } else {
        println!(
            "business hours: a drill clock replays the incident's moment, Monday {INCIDENT_MOMENT} (Seoul past 2 a.m., London's day ending, New York's midday); --now for the real clock"
        );
    }

    // The simulated fleet, on a loopback port.
    let sim_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::io("cannot listen on 127.0.0.1", e))?;
    let agent_addr = sim_listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the bound address", e))?;
    let fleet = generate(&GenerateOptions {
        hosts: args.hosts,
        agent: agent_addr.to_string(),
        seed: args.seed,
        unhealthy_rate: 0.0,
    });
    super::write_atomically(&fleet_path, fleet.to_yaml().as_bytes())?;
    let zones: std::collections::HashSet<&str> = fleet.customers.iter().map(|c| c.timezone.as_str()).collect();
    // The simulator's fleet: the same, with a few hosts of each business-hours tier
    // (at the moment the demo's clock starts) among those the fix leaves unhealthy,
    // so that the restart phase shows how every tier is ordered.
    let hours_at = if args.now {
        SystemClock.now_ms()
    } else {
        super::parse_instant(INCIDENT_MOMENT).map_err(Error::Usage)?
    };
    let mut simulated = fleet.clone();
    unhealthy_in_every_tier(&mut simulated, hours_at, 3)?;
    let sim = Arc::new(Simulator::new(
        &simulated,
        &SimulatorOptions {
            fail_rate: 0.0,
            latency_ms: args.latency_ms,
            seed: args.seed,
            unhealthy_rate: args.unhealthy_rate,
            unavailable_rate: 0.0,
            break_rate: 0.0,
            noop: false,
        },
    ));
    let sim_stop = CancellationToken::new();
    let sim_task = tokio::spawn(simulator::serve(sim_listener, sim.clone(), sim_stop.clone()));
    println!(
        "fleet: {} hosts, {} customers in {} time zones, simulated agents on {agent_addr} ({} per deploy)",
        fleet.hosts.len(),
        fleet.customers.len(),
        zones.len(),
        args.latency_ms
    );

    // The controller, as a real process.
    let http = args.http_listen.as_deref();
    // The drill clock goes on where it was when the controller is restarted.
    let (drill_from, drill_started) = ((!args.now).then_some(hours_at), Instant::now());
    let drill_now = || drill_from.map(|at| at + drill_started.elapsed().as_millis() as i64);
    let mut controller = Spawned::start(
        &exe,
        controller_args(&data, &fleet_path, "127.0.0.1:0", http, drill_now()),
        Some(&log),
    )
    .await?;
    let addr = controller.addr;
    let server = format!("http://{addr}");
    println!(
        "controller: pid {} on {server}, store in {}",
        controller.pid().unwrap_or(0),
        data.display()
    );
    // The dashboard's bound address: a restarted controller serves it on the same one.
    let dashboard = match http {
        Some(_) => {
            let url = controller.line_after("dashboard on ").await?;
            println!("dashboard: {url} (live; open it now, it stays open after the demo until Ctrl-C)");
            Some(url)
        }
        None => None,
    };
    let http_addr = dashboard
        .as_deref()
        .map(|u| u.trim_start_matches("http://").trim_end_matches('/').to_string());

    // The plan from plans/, with the bake shortened.
    let mut spec = Plan::spec_from_yaml(PLAN, PLAN_NAME)?;
    spec.bake = format_duration(args.bake);
    let plan = Plan::from_spec(&spec)?;
    let mut client = connect(&server).await?;
    let submitted = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec)),
            source_name: PLAN_NAME.into(),
            dry_run: false,
            request_id: format!("demo-{}", args.seed),
            at_unix_ms: 0,
        })
        .await?
        .into_inner()
        .rollout
        .unwrap_or_default();
    println!(
        "submitted `{}`: {} hosts selected ({}), waves {}, max_parallel {}, bake {}",
        submitted.name,
        submitted.hosts_selected,
        plan.selector
            .iter()
            .map(|(k, v)| format!("{k}={}", v.join("|")))
            .collect::<Vec<_>>()
            .join(" "),
        plan.waves
            .iter()
            .map(|w| w.to_string())
            .collect::<Vec<_>>()
            .join(" -> "),
        plan.max_parallel,
        format_duration(args.bake)
    );

    // Watch; meanwhile, crash the controller in the middle of a wave and restart it.
    let mut progress = Progress::new();
    let printer = progress.printer();
    let crash = async {
        if args.no_crash {
            return Ok(None);
        }
        let mut poll = connect(&server).await?;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let r = rollout_named(&mut poll, &submitted.name).await?;
            if render::is_terminal(r.state()) {
                return Ok(None);
            }
            // Mid-wave: wave 4 (or a later one) a third done, calls in flight.
            let wave = r.waves.get(r.current_wave as usize);
            let mid_wave = wave.is_some_and(|w| w.succeeded * 3 >= w.size && w.succeeded < w.size);
            if r.state() == pb::RolloutState::Running && r.current_wave >= 3 && mid_wave && r.hosts_in_flight > 0 {
                let pid = controller.pid().unwrap_or(0);
                // Said first: the watcher notices the loss as soon as it happens.
                printer.line(&format!(
                    "** kill -9 controller (pid {pid}) at {:.1}%, {} in flight, {} running",
                    r.percent_complete,
                    r.hosts_in_flight,
                    render::wave_label(&r)
                ));
                controller.kill9().await?;
                let t = Instant::now();
                let again = controller_args(&data, &fleet_path, &addr.to_string(), http_addr.as_deref(), drill_now());
                controller = Spawned::start(&exe, again, Some(&log)).await?;
                printer.line(&format!(
                    "** controller restarted (pid {}) in {} ms on the same store; the rollout resumes where it was",
                    controller.pid().unwrap_or(0),
                    t.elapsed().as_millis()
                ));
                return Ok::<_, Error>(Some(r.percent_complete));
            }
        }
    };
    let page = dashboard
        .as_deref()
        .map(|url| format!("{url}rollouts/{}", submitted.name));
    let approving = approve_gates(
        &server,
        &submitted.name,
        progress.printer(),
        page.as_deref(),
        args.approve_in_browser,
    );
    let (last, crashed_at) = {
        let watching = follow(&server, &submitted.name, Duration::from_secs(60), false, &mut progress);
        let (last, crashed, approved) = tokio::join!(watching, crash, approving);
        approved?;
        (last?, crashed?)
    };
    let elapsed = started.elapsed();

    // Check exactly-once on every selected host.
    let selected: Vec<&str> = fleet
        .hosts
        .iter()
        .filter(|h| h.matches(&plan.selector))
        .map(|h| h.id.as_str())
        .collect();
    let (mut once, mut twice, mut never) = (0u64, 0u64, 0u64);
    for id in &selected {
        match sim.executed(id).await.unwrap_or(0) {
            0 => never += 1,
            1 => once += 1,
            _ => twice += 1,
        }
    }

    println!("\nsummary");
    let rows = last.waves.iter().map(|w| {
        vec![
            (w.index + 1).to_string(),
            w.percent.clone(),
            w.size.to_string(),
            w.succeeded.to_string(),
            w.failed.to_string(),
        ]
    });
    for line in render::grid(
        &["wave", "share", "hosts", "succeeded", "failed"],
        &[0, 1, 2, 3, 4],
        rows,
    )
    .lines()
    {
        println!("  {line}");
    }
    println!(
        "  {}: {:.1}% of {} selected hosts deployed, {} of {} customers fully mitigated, in {:.1} s",
        render::state_name(last.state()),
        last.percent_complete,
        last.hosts_selected,
        last.customers_mitigated,
        last.customers_affected,
        elapsed.as_secs_f64()
    );
    match crashed_at {
        Some(p) => {
            println!("  the controller was killed once at {p:.1}% and resumed from its store")
        }
        None => {
            println!("  the controller was not killed (--no-crash, or the rollout ended first)")
        }
    }
    println!(
        "  exactly-once check on the simulator: {once} hosts deployed once, {twice} more than once, {never} never"
    );

    // Act two: the hosts the fix did not heal get restarted, customers in their
    // working day (by their own clock, now) first.
    let unhealthy_before = sim.unhealthy().await.len();
    let restarts_ok = if unhealthy_before == 0 {
        println!("\nno host stayed unhealthy; nothing to restart");
        true
    } else {
        restart_unhealthy(&server, unhealthy_before, &sim).await?
    };

    if let Some(url) = &dashboard {
        println!("\nthe dashboard stays open on {url}; Ctrl-C to stop");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        interrupted().await;
    }
    let code = controller.terminate(Duration::from_secs(30)).await?;
    sim_stop.cancel();
    let _ = sim_task.await;
    let ok = last.state() == pb::RolloutState::Succeeded && twice == 0 && never == 0 && restarts_ok && code == Some(0);
    if !ok {
        println!(
            "  the demo did NOT go as it should; the controller's log was {}",
            log.display()
        );
        let _ = dir.keep();
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Marks the first `n` hosts (by id) of each business-hours tier at `at_ms` unhealthy.
fn unhealthy_in_every_tier(fleet: &mut crate::inventory::FleetFile, at_ms: i64, n: usize) -> Result<()> {
    let calendar = crate::hours::Calendar::new(&fleet.customers).map_err(Error::Usage)?;
    let snapshot = calendar.snapshot(at_ms);
    let mut marked: std::collections::HashMap<crate::hours::Tier, usize> = std::collections::HashMap::new();
    let mut order: Vec<usize> = (0..fleet.hosts.len()).collect();
    order.sort_by(|a, b| fleet.hosts[*a].id.cmp(&fleet.hosts[*b].id));
    for i in order {
        let host = &mut fleet.hosts[i];
        let tier = crate::hours::Calendar::place(&snapshot, &host.id, &host.customers)
            .key
            .0;
        let count = marked.entry(tier).or_default();
        if *count < n {
            *count += 1;
            host.healthy = false;
        }
    }
    Ok(())
}

/// The first `n` hosts of each tier, in restart order: what each tier looked like.
fn first_of_each_tier(hosts: &[pb::RestartHost], n: usize) -> Vec<pb::RestartHost> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for h in hosts {
        let count = seen.entry(h.tier.as_str()).or_default();
        if *count < n {
            *count += 1;
            out.push(h.clone());
        }
    }
    out
}

/// Restarts the hosts left unhealthy, business-hours first, and shows who went first and why.
async fn restart_unhealthy(server: &str, unhealthy: usize, sim: &Simulator) -> Result<bool> {
    println!(
        "\n{unhealthy} hosts are still unhealthy after the fix: restarting them, customers in their working day first"
    );
    let mut client = connect(server).await?;
    let job = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            max_parallel: 50,
            max_unavailable: "25%".into(),
            request_id: "demo-restart".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap_or_default();
    println!(
        "restart job {}: {} hosts, order {}, at most 25% of a customer's healthy hosts down at once",
        job.id, job.hosts_total, job.order
    );
    let last = super::restart::follow(&mut client, job.id, false).await?;
    let detailed = client
        .get_restart_job(pb::GetRestartJobRequest {
            id: job.id,
            include_hosts: true,
        })
        .await?
        .into_inner();
    println!("who was restarted first, and why (the first of each tier, in restart order):");
    print!(
        "{}",
        super::restart::host_table(&first_of_each_tier(&detailed.hosts, 3), 12)
    );
    let left = sim.unhealthy().await.len();
    println!("  {}", super::restart::job_line(&last));
    println!("  per tier (restarted/picked): {}", super::restart::tiers_line(&last));
    println!("  unhealthy hosts left on the simulator: {left}");
    Ok(last.state() == pb::RestartJobState::Succeeded && left == 0)
}

/// Plays the incident's people: after each wave the status text is posted (what the
/// seed's operators wrote by hand), and each gate that opens is approved (the demo
/// says it does so, and what a person would run), with the gate id the rollout
/// shows; with `by_hand`, it says where to press `Approve` on the dashboard (`page`)
/// and leaves it to the person. Rides over the controller the demo kills; ends when
/// the rollout does.
async fn approve_gates(
    server: &str,
    name: &str,
    printer: super::watch::Printer,
    page: Option<&str>,
    by_hand: bool,
) -> Result<()> {
    let mut approved = String::new();
    let mut posted: Option<(u32, i32)> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(mut client) = connect(server).await else {
            continue;
        };
        let Ok(r) = rollout_named(&mut client, name).await else {
            continue;
        };
        // A wave ended (it bakes, waits at a gate, or the rollout ended): the update.
        let settled = matches!(r.state(), pb::RolloutState::Baking | pb::RolloutState::AwaitingApproval)
            || render::is_terminal(r.state());
        if settled && posted != Some((r.current_wave, r.state)) {
            posted = Some((r.current_wave, r.state));
            printer.line(&format!("** status: {}", r.summary));
        }
        if render::is_terminal(r.state()) {
            return Ok(());
        }
        let waiting = r.state() == pb::RolloutState::AwaitingApproval;
        let Some(gate) = r.gate.filter(|g| waiting && g.gate_id != approved) else {
            continue;
        };
        if let (true, Some(page)) = (by_hand, page) {
            printer.line(&format!(
                "** the gate after {} (gate {}) waits for you: press Approve at {page}",
                gate.after, gate.gate_id
            ));
            approved = gate.gate_id;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let or_there = match page {
            Some(page) => {
                format!(" or presses Approve at {page} (run the demo with --approve-in-browser to do it yourself)")
            }
            None => String::new(),
        };
        printer.line(&format!(
            "** the demo approves the gate after {} itself (gate {}); in an incident a person runs `rollout approve {name}`{or_there}",
            gate.after, gate.gate_id
        ));
        let answer = client
            .approve_rollout(pb::ApproveRolloutRequest {
                name: name.to_string(),
                id: r.id,
                gate_id: gate.gate_id.clone(),
                comment: "approved by rollout demo".into(),
                request_id: format!("demo-approve-{}", gate.gate_id),
            })
            .await;
        match answer {
            Ok(a) => {
                printer.line(&format!("** {}", a.into_inner().message));
                approved = gate.gate_id;
            }
            Err(e) => printer.line(&format!(
                "** the approval did not go through ({}); trying again",
                e.message()
            )),
        }
    }
}
