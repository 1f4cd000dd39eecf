//! What is in flight, and what limits it, through real processes: a controller
//! started with `--max-in-flight` never has more host actions out than that, and a
//! plan whose max_parallel it cuts says so in one line (status, JSON, the dashboard's
//! API), instead of a silent cap.

mod common;

use common::*;
use rollout::cli::connect;
use rollout::proto::v1 as pb;

/// A plan asking for 100 in parallel on a controller with `--max-in-flight 10`:
/// never more than 10 host actions out at once, and `rollout status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_limited_by_max_in_flight_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_agent, _fleet, fleet_file) = spawn_simulator(dir.path(), 60, "100..100", &dir.path().join("agent.log")).await;
    let controller = spawn_controller(
        &dir.path().join("data"),
        &fleet_file,
        &["--max-in-flight".as_ref(), "10".as_ref()],
        &log,
    )
    .await;
    let server = format!("http://{}", controller.addr);
    let mut client = connect(&server).await.unwrap();
    let mut spec = plan("limited", &["100%"], "0");
    spec.max_parallel = 100;
    submit(&mut client, spec).await;
    let seen = within(
        120,
        "the rollout to succeed",
        watch_until(&mut client, "limited", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    // hosts_in_flight counts intents without a recorded result: the calls out, the
    // next batch written ahead, and answers come but not yet recorded (they are
    // within RESULT_FLUSH): three times the limit at most.
    let peak = seen.iter().map(|r| r.hosts_in_flight).max().unwrap_or(0);
    assert!(peak <= 30, "{peak} intents out with --max-in-flight 10");
    // Sixty 100 ms deploys ten at a time take six rounds at least: had the plan's
    // 100 gone out at once, one round would have done.
    let last = seen.last().unwrap();
    let took = last.finished_at_unix_ms - last.created_at_unix_ms;
    assert!(took >= 550, "took {took} ms: more than 10 were in flight at once");
    let line = "max_parallel 100 is limited to 10 by this controller's --max-in-flight";
    assert_eq!(seen.last().unwrap().limits, line);
    let out = rollout(&["--server", &server, "status", "limited"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("limited    {line}")),
        "{}",
        text(&out.stdout)
    );
    drop(controller);
}

/// `max_parallel: 100%` with second-long deploys: the whole wave is in flight at
/// once (the status shows every host of it out), and the plan says what it was
/// given and what that came to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_100_percent_puts_the_whole_wave_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_agent, _fleet, fleet_file) =
        spawn_simulator(dir.path(), 300, "1000..1000", &dir.path().join("agent.log")).await;
    let controller = spawn_controller(&dir.path().join("data"), &fleet_file, &[], &log).await;
    let server = format!("http://{}", controller.addr);
    let mut client = connect(&server).await.unwrap();
    let mut spec = plan("whole-wave", &["10%", "100%"], "0");
    spec.max_parallel = 0;
    spec.max_parallel_share = "100%".into();
    let submitted = submit(&mut client, spec).await;
    let stored = submitted.plan.unwrap();
    assert_eq!((stored.max_parallel, stored.max_parallel_share.as_str()), (300, "100%"));
    let seen = within(
        120,
        "the rollout to succeed",
        watch_until(&mut client, "whole-wave", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    // The second wave's 270 hosts were all out at once.
    let peak = seen.iter().map(|r| r.hosts_in_flight).max().unwrap_or(0);
    assert_eq!(peak, 270, "the whole second wave in flight at once");
    assert!(seen.iter().all(|r| r.limits.is_empty()), "nothing limits it");
    drop(controller);
}
