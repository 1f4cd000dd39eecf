//! Crash safety with real processes: the controller is killed with SIGKILL in the
//! middle of a wave, a new one starts on the same store, and the rollout finishes
//! with every host applied exactly once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rollout::cli::connect;
use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;

/// Starts `rollout agent --simulate` over a generated fleet of `hosts` (with `extra`
/// flags) and writes the controller's fleet file, pointing at it. Returns the agent
/// process and the fleet.
async fn start_fleet(dir: &Path, hosts: usize, extra: &[&str]) -> (Spawned, rollout::inventory::FleetFile) {
    let (sim_fleet, ctl_fleet) = (dir.join("sim.yaml"), dir.join("fleet.yaml"));
    std::fs::write(&sim_fleet, fleet(hosts, "127.0.0.1:1").to_yaml()).unwrap();
    let mut args: Vec<std::ffi::OsString> = vec!["agent".into(), "--simulate".into(), sim_fleet.into_os_string()];
    args.extend(["--listen", "127.0.0.1:0"].iter().chain(extra).map(Into::into));
    let agent = within(
        60,
        "the agent to start",
        Spawned::start(Path::new(EXE), args, Some(&dir.join("log"))),
    )
    .await
    .expect("agent starts");
    let fleet = fleet(hosts, &agent.addr.to_string());
    std::fs::write(&ctl_fleet, fleet.to_yaml()).unwrap();
    (agent, fleet)
}

/// The store, the controllers' log and the controller's fleet file of a test in `dir`.
fn paths(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    (dir.join("data"), dir.join("log"), dir.join("fleet.yaml"))
}

/// kill -9 mid-wave, twice per rollout (a fix, then a rollback); each new controller
/// resumes from the store; both rollouts reach 100% and the simulator (a separate
/// process) ran each host exactly once per rollout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_resumes_and_applies_each_host_once() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log, ctl_fleet) = paths(dir.path());
    let (mut agent, fleet) = start_fleet(dir.path(), 2_000, &["--latency-ms", "5..25"]).await;

    let mut controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    let mut client = connect(&format!("http://{}", controller.addr)).await.unwrap();

    // The fix: a probe after the restart may confirm a host already has the version.
    let mut spec = plan("crash-fix", &["10%", "40%", "70%", "100%"], "0");
    spec.max_parallel = 50;
    submit(&mut client, spec).await;
    kill_twice_then_finish(
        &mut controller,
        &mut client,
        "crash-fix",
        2_000,
        &data,
        &ctl_fleet,
        &log,
    )
    .await;
    check_hosts(&agent, &fleet, "15.20.8207.12", 1).await;
    // Each restart is on the rollout's timeline (the dashboard shows it).
    let events = timeline(&mut client, "crash-fix").await;
    let resumed: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "resumed" && e.principal == "controller")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(resumed.len(), 2, "one line per restart: {resumed:?}");
    assert!(
        resumed[0].starts_with("controller restarted: resuming, "),
        "{resumed:?}"
    );

    // The rollback: nothing to confirm by probe, so only the reused operation_id
    // keeps an in-doubt host from running twice.
    let mut spec = plan("crash-rollback", &["10%", "40%", "70%", "100%"], "0");
    spec.kind = "rollback".into();
    spec.version.clear();
    spec.max_parallel = 50;
    submit(&mut client, spec).await;
    kill_twice_then_finish(
        &mut controller,
        &mut client,
        "crash-rollback",
        2_000,
        &data,
        &ctl_fleet,
        &log,
    )
    .await;
    check_hosts(&agent, &fleet, "15.20.8207.11", 2).await;

    assert_eq!(
        controller.terminate(Duration::from_secs(30)).await.unwrap(),
        Some(0),
        "graceful exit"
    );
    assert_eq!(
        agent.terminate(Duration::from_secs(30)).await.unwrap(),
        Some(0),
        "graceful exit"
    );
}

/// kill -9 during an *automatic* rollback: a fix whose first wave breaks hosts fails
/// its health gate and starts `NAME-rollback`. The controller is killed the moment the
/// fix is seen failed (before or just after the rollback is created: the rollback is
/// still started after the restart), then twice during the rollback. The rollback ends
/// at 100%, every touched host is back on its previous version, and each ran exactly
/// one deploy and one rollback; untouched hosts ran nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_finishes_an_automatic_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log, ctl_fleet) = paths(dir.path());
    let (mut agent, fleet) = start_fleet(dir.path(), 2_000, &["--latency-ms", "10..30", "--break-rate", "0.2"]).await;
    let mut controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    let mut client = connect(&format!("http://{}", controller.addr)).await.unwrap();

    let mut spec = plan("auto-fix", &["25%", "100%"], "2%");
    spec.max_parallel = 100;
    spec.bake = "200ms".into();
    spec.on_failure = Some(pb::OnFailureSpec {
        max_failed: "2%".into(),
        action: "rollback".into(),
    });
    spec.rollback = Some(pb::RollbackSpec {
        waves: vec!["100%".into()],
        max_parallel: 10,
    });
    submit(&mut client, spec).await;
    let failed = within(
        120,
        "the health gate to fail the fix",
        watch_until(&mut client, "auto-fix", |r| {
            matches!(r.state(), pb::RolloutState::Failed | pb::RolloutState::Succeeded)
        }),
    )
    .await;
    controller.kill9().await.unwrap();
    let failed = failed.last().unwrap().clone();
    assert_eq!(failed.state(), pb::RolloutState::Failed, "{}", failed.halt_reason);
    assert_eq!(failed.hosts_succeeded, 500, "wave 1 applied, then the gate closed");
    let created = rollout::store::Store::open(&data).unwrap().rollouts().unwrap().len() > 1;
    eprintln!(
        "killed the controller as the fix failed ({}): {}",
        if created {
            "its rollback already created"
        } else {
            "before its rollback was created"
        },
        failed.halt_reason
    );

    controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    client = connect(&format!("http://{}", controller.addr)).await.unwrap();
    let rollback = "auto-fix-rollback";
    within(60, "the rollback to exist after the restart", async {
        loop {
            let list = client
                .list_rollouts(pb::ListRolloutsRequest::default())
                .await
                .unwrap()
                .into_inner();
            if list.rollouts.iter().any(|r| r.name == rollback) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    kill_twice_then_finish(&mut controller, &mut client, rollback, 500, &data, &ctl_fleet, &log).await;

    let mut wrong = Vec::new();
    let mut touched = 0;
    for (host, p) in probe_all(&agent.addr.to_string(), &fleet).await {
        assert_eq!(p.version, "15.20.8207.11", "{} is on its previous version", host);
        touched += u64::from(p.operations_executed > 0);
        if p.operations_executed != 0 && p.operations_executed != 2 {
            wrong.push((host.clone(), p.operations_executed));
        }
    }
    assert_eq!(touched, 500, "only the first wave's hosts were touched");
    assert!(wrong.is_empty(), "hosts not run exactly deploy + rollback: {wrong:?}");
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

async fn kill_twice_then_finish(
    controller: &mut Spawned,
    client: &mut Client,
    name: &str,
    hosts: u64,
    data: &Path,
    fleet: &Path,
    log: &Path,
) {
    for kill_at in [20.0, 55.0] {
        let at = within(120, "the rollout to be mid-wave", async {
            loop {
                let r = get(client, name).await;
                if r.percent_complete >= kill_at && r.hosts_in_flight > 0 && r.state() == pb::RolloutState::Running {
                    return r;
                }
                assert_ne!(
                    r.state(),
                    pb::RolloutState::Succeeded,
                    "finished before the kill at {kill_at}%"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        controller.kill9().await.unwrap();
        eprintln!(
            "{name}: killed the controller at {:.1}% with {} in flight",
            at.percent_complete, at.hosts_in_flight
        );
        *controller = spawn_controller(data, fleet, &[], log).await;
        *client = connect(&format!("http://{}", controller.addr)).await.unwrap();
        let resumed = get(client, name).await;
        assert!(
            resumed.hosts_succeeded >= at.hosts_succeeded,
            "no finished host is forgotten"
        );
    }
    let seen = within(
        120,
        "the resumed rollout to succeed",
        watch_until(client, name, |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    let done = seen.last().unwrap();
    assert_eq!(done.percent_complete, 100.0);
    assert_eq!(done.hosts_succeeded, hosts);
}

async fn check_hosts(agent: &Spawned, fleet: &rollout::inventory::FleetFile, version: &str, runs: u64) {
    let mut wrong = Vec::new();
    for (host, p) in probe_all(&agent.addr.to_string(), fleet).await {
        assert_eq!(p.version, version, "{}", host);
        if p.operations_executed != runs {
            wrong.push((host.clone(), p.operations_executed));
        }
    }
    assert!(
        wrong.is_empty(),
        "hosts that did not run exactly {runs} operations: {wrong:?}"
    );
}

/// A restart job survives kill -9 of its controller: the new controller resumes it,
/// every unhealthy host ends healthy, and none was restarted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_resumes_a_restart_job_without_restarting_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log, ctl_fleet) = paths(dir.path());
    let (mut agent, fleet) = start_fleet(
        dir.path(),
        1_500,
        &["--latency-ms", "10..30", "--unhealthy-rate", "0.4"],
    )
    .await;
    let mut controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    let mut client = connect(&format!("http://{}", controller.addr)).await.unwrap();

    let job = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            max_parallel: 20,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert!(job.hosts_total > 400, "{} unhealthy", job.hosts_total);
    let get = |id| pb::GetRestartJobRequest {
        id,
        include_hosts: false,
    };
    for share in [0.25, 0.6] {
        let at = within(120, "the job to be under way", async {
            loop {
                let j = client.get_restart_job(get(job.id)).await.unwrap().into_inner();
                if j.hosts_restarted as f64 >= share * j.hosts_total as f64 && j.hosts_in_flight > 0 {
                    return j;
                }
                assert_eq!(j.state(), pb::RestartJobState::Running, "ended before the kill");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        controller.kill9().await.unwrap();
        eprintln!(
            "killed the controller with {}/{} restarted, {} in flight",
            at.hosts_restarted, at.hosts_total, at.hosts_in_flight
        );
        controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
        client = connect(&format!("http://{}", controller.addr)).await.unwrap();
    }
    let done = within(120, "the resumed job to end", async {
        loop {
            let j = client.get_restart_job(get(job.id)).await.unwrap().into_inner();
            if j.state() != pb::RestartJobState::Running {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(done.state(), pb::RestartJobState::Succeeded, "{}", done.reason);
    assert_eq!(done.hosts_restarted, job.hosts_total);

    let detailed = client
        .get_restart_job(pb::GetRestartJobRequest {
            id: job.id,
            include_hosts: true,
        })
        .await
        .unwrap()
        .into_inner();
    let in_job: std::collections::HashSet<String> = detailed.hosts.iter().map(|h| h.host_id.clone()).collect();
    let mut wrong = Vec::new();
    for (host, p) in probe_all(&agent.addr.to_string(), &fleet).await {
        assert!(p.healthy, "{} still unhealthy", host);
        let expected = u64::from(in_job.contains(&host));
        if p.operations_executed != expected {
            wrong.push((host.clone(), p.operations_executed));
        }
    }
    assert!(wrong.is_empty(), "hosts restarted a wrong number of times: {wrong:?}");
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// SIGTERM mid-rollout: health turns NOT_SERVING while calls in flight finish and are
/// recorded, the process exits 0 with nothing left in doubt, and the next controller
/// finishes the rollout with every host applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log, ctl_fleet) = paths(dir.path());
    let (mut agent, fleet) = start_fleet(dir.path(), 2_000, &["--latency-ms", "300..700"]).await;
    let mut controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    let mut client = connect(&format!("http://{}", controller.addr)).await.unwrap();
    let mut spec = plan("drained-fix", &["10%", "100%"], "0");
    spec.max_parallel = 200;
    submit(&mut client, spec).await;
    let at = within(120, "the rollout to be mid-wave", async {
        loop {
            let r = get(&mut client, "drained-fix").await;
            if r.percent_complete >= 30.0 && r.hosts_in_flight > 0 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    controller.signal_term();
    let health_url = format!("http://{}", controller.addr);
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let Ok(channel) = tonic::transport::Endpoint::from_shared(health_url.clone())
            .unwrap()
            .connect()
            .await
        else {
            break; // the port closed: the controller has stopped serving
        };
        match tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
        {
            Ok(r) => statuses.push(r.into_inner().status()),
            Err(_) => break,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let code = controller.wait(Duration::from_secs(60)).await.unwrap();
    assert_eq!(code, Some(0), "a graceful stop exits 0");
    assert!(
        statuses.contains(&tonic_health::pb::health_check_response::ServingStatus::NotServing),
        "health said NOT_SERVING while draining: {statuses:?}"
    );
    let store = rollout::store::Store::open(&data).unwrap();
    let id = store.rollouts().unwrap()[0].id;
    let (mut in_doubt, mut succeeded) = (0, 0);
    for row in store.rollout_hosts(id) {
        let (_, r) = row.unwrap();
        in_doubt += u64::from(r.state() == pb::HostState::Dispatched);
        succeeded += u64::from(r.state() == pb::HostState::Succeeded);
    }
    drop(store);
    assert_eq!(in_doubt, 0, "every call in flight finished and was recorded");
    assert!(
        succeeded > at.hosts_succeeded,
        "calls in flight at the signal were recorded"
    );
    eprintln!(
        "SIGTERM at {:.1}% with {} in flight: exit 0, {succeeded} recorded, none in doubt",
        at.percent_complete, at.hosts_in_flight
    );

    controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    client = connect(&format!("http://{}", controller.addr)).await.unwrap();
    let seen = within(
        120,
        "the resumed rollout to succeed",
        watch_until(&mut client, "drained-fix", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    assert_eq!(seen.last().unwrap().hosts_succeeded, 2_000);
    check_hosts(&agent, &fleet, "15.20.8207.12", 1).await;
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// kill -9 with thousands of operations in flight (`max_parallel: 100%`, deploys of
/// a second): the new controller resumes tracking them from the store, and every
/// host ran its deploy exactly once (the simulator's own count, a separate process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_with_thousands_in_flight_runs_each_host_once() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log, ctl_fleet) = paths(dir.path());
    let (mut agent, fleet) = start_fleet(dir.path(), 3_000, &["--latency-ms", "1000..1000"]).await;
    let mut controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    let mut client = connect(&format!("http://{}", controller.addr)).await.unwrap();
    let mut spec = plan("crash-wide", &["10%", "100%"], "0");
    spec.max_parallel = 0;
    spec.max_parallel_share = "100%".into();
    submit(&mut client, spec).await;
    let at = within(120, "thousands of hosts in flight", async {
        loop {
            let r = get(&mut client, "crash-wide").await;
            if r.hosts_in_flight >= 2_000 {
                return r;
            }
            assert_ne!(r.state(), pb::RolloutState::Succeeded, "finished before the kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    controller.kill9().await.unwrap();
    eprintln!("killed the controller with {} hosts in flight", at.hosts_in_flight);
    controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    client = connect(&format!("http://{}", controller.addr)).await.unwrap();
    let seen = within(
        120,
        "the resumed rollout to succeed",
        watch_until(&mut client, "crash-wide", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    assert_eq!(seen.last().unwrap().hosts_succeeded, 3_000);
    check_hosts(&agent, &fleet, "15.20.8207.12", 1).await;
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// A plan in stages with a fault domain per zone, its controller killed with SIGKILL
/// inside the canary stage and again inside a later one: each new controller resumes
/// inside the stage, every host runs exactly once, and no host of a later stage
/// started before the earlier stage finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_controller_resumes_a_staged_zoned_rollout_inside_its_stage() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log, ctl_fleet) = paths(dir.path());
    let (mut agent, fleet) = start_fleet(dir.path(), 2_000, &["--latency-ms", "5..25"]).await;
    let mut controller = spawn_controller(&data, &ctl_fleet, &[], &log).await;
    let mut client = connect(&format!("http://{}", controller.addr)).await.unwrap();
    let mut spec = staged_plan("staged-crash", 50);
    spec.fault_domain = Some(pb::FaultDomainSpec {
        label: "zone".into(),
        max_unavailable: "10%".into(),
        domains_at_once: 0,
    });
    submit(&mut client, spec).await;
    kill_twice_then_finish(
        &mut controller,
        &mut client,
        "staged-crash",
        2_000,
        &data,
        &ctl_fleet,
        &log,
    )
    .await;
    check_hosts(&agent, &fleet, "15.20.8207.12", 1).await;
    let url = format!("http://{}", controller.addr);
    let times = host_times(&url, "staged-crash").await;
    stages_in_order(&times, &stage_of(&fleet));
    controller.terminate(Duration::from_secs(30)).await.unwrap();
    agent.terminate(Duration::from_secs(30)).await.unwrap();
}
