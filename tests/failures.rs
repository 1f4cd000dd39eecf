//! Which hosts failed, and why, through every interface an operator has; an honest
//! outcome when some did; and `rollout retry` once the causes are fixed. Real agent
//! processes, a real controller, the real CLI.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::agents::HostDir;
use common::*;
use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;

const HOSTS: usize = 6;
const HANG: usize = 0;
const DISK_FULL: usize = 1;
const KILLED: usize = 2;
const UNREACHABLE: usize = 3;

fn name(i: usize) -> String {
    format!("host-{i}")
}

/// Each host's deploy: a fault while `$DIR/fault` exists, then a normal deploy.
fn deploy_body(i: usize) -> String {
    let fault = match i {
        HANG => "sleep 60",
        DISK_FULL => "echo 'disk full on /var' >&2; exit 1",
        KILLED => "sleep 4",
        _ => "true",
    };
    format!("if [ -f $DIR/fault ]; then {fault}; fi\nsleep 0.1")
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

/// Every operation id in a host's runs.log ran once at most.
fn assert_no_operation_ran_twice(h: &HostDir, host: &str) {
    let log = std::fs::read_to_string(h.dir.join("runs.log")).unwrap_or_default();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for line in log.lines() {
        let op = line.split_whitespace().next().unwrap_or("");
        *seen.entry(op).or_default() += 1;
    }
    for (op, n) in seen {
        assert_eq!(n, 1, "{host} ran operation {op} {n} times:\n{log}");
    }
}

/// Six real agents: one deploy hangs past its 2 s timeout, one exits 1 with "disk full
/// on /var", one agent is killed (SIGKILL) mid-deploy and restarted, one is not
/// running at all. The rollout ends COMPLETED_WITH_FAILURES at 2/6 (never
/// "succeeded"), `watch` exits 4, and each failed host is found with its reason in
/// the RPC (paged), `rollout hosts --rollout NAME --failed` and `rollout status NAME
/// --output json` (grouped by reason). Once the faults are gone, `rollout retry`
/// brings it to SUCCEEDED at 100%, with new operation ids recorded in the same
/// rollout, and no agent ran any operation id twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_hosts_are_explained_and_retried() {
    let root = tempfile::tempdir().unwrap();
    let hosts: Vec<HostDir> = (0..HOSTS)
        .map(|i| {
            let h = HostDir::new(root.path(), &name(i), &deploy_body(i), "2s");
            if [HANG, DISK_FULL, KILLED].contains(&i) {
                std::fs::write(h.dir.join("fault"), "").unwrap();
            }
            h
        })
        .collect();
    let mut agents: Vec<Option<Spawned>> = Vec::new();
    let mut addresses = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        if i == UNREACHABLE {
            agents.push(None);
            addresses.push(closed_port().await);
        } else {
            let a = h.start("127.0.0.1:0").await;
            addresses.push(a.addr.to_string());
            agents.push(Some(a));
        }
    }
    let mut fleet = fleet(HOSTS, "unused");
    for (i, host) in fleet.hosts.iter_mut().enumerate() {
        host.id = name(i);
        host.address = addresses[i].as_str().into();
        host.labels.insert("region".into(), "apac".into());
    }
    let data = root.path().join("data");
    let controller = Controller::start(&data, &fleet).await;
    let mut client = controller.client().await;
    let mut spec = plan("disk-fix", &["100%"], "4");
    spec.max_parallel = 6;
    spec.bake = "1s".into();
    submit(&mut client, spec).await;

    // Kill the agent of KILLED while its deploy runs, and start it again on its port.
    within(60, "the deploy of host-2 to start", async {
        while !hosts[KILLED].dir.join("runs.log").exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut killed = agents[KILLED].take().unwrap();
    killed.kill9().await.unwrap();
    agents[KILLED] = Some(hosts[KILLED].start(&addresses[KILLED]).await);

    // `rollout watch` follows it to its end and exits with the outcome's own code.
    let watched = rollout(&["watch", "disk-fix", "--server", &controller.url]).await;
    assert_eq!(
        watched.status.code(),
        Some(4),
        "watch exits 4 for completed-with-failures: {}{}",
        text(&watched.stdout),
        text(&watched.stderr)
    );
    let done = get(&mut client, "disk-fix").await;
    assert_eq!(done.state(), pb::RolloutState::CompletedWithFailures, "{done:?}");
    assert_eq!((done.hosts_succeeded, done.hosts_failed), (2, 4));
    assert!(
        (done.percent_complete - 100.0 / 3.0).abs() < 0.1,
        "{}",
        done.percent_complete
    );
    assert!(
        done.halt_reason.contains("`rollout retry disk-fix`"),
        "{}",
        done.halt_reason
    );

    // Through the RPC, a page at a time.
    // One host per page: the paging itself is exercised.
    let failed = all_hosts(&mut client, "disk-fix", pb::HostFilter::Failed, 1).await;
    let ids: Vec<&str> = failed.iter().map(|h| h.host_id.as_str()).collect();
    assert_eq!(ids, ["host-0", "host-1", "host-2", "host-3"]);
    let reason = |i: usize| failed[i].reason.clone();
    assert!(
        reason(HANG).contains("timed out after 2s (process group killed)"),
        "{}",
        reason(HANG)
    );
    assert!(
        reason(DISK_FULL).contains("exit code 1: disk full on /var"),
        "{}",
        reason(DISK_FULL)
    );
    assert!(
        reason(KILLED).contains("interrupted") || reason(KILLED).contains("agent at "),
        "the agent's restart or the broken call: {}",
        reason(KILLED)
    );
    assert!(reason(UNREACHABLE).contains("Unavailable"), "{}", reason(UNREACHABLE));
    for h in &failed {
        assert_eq!(h.state, "failed");
        assert_eq!((h.wave, h.attempt), (1, 1), "{h:?}");
        assert!(h.operation_id.starts_with("r"), "{h:?}");
        assert!(
            h.started_at_unix_ms > 0 && h.finished_at_unix_ms >= h.started_at_unix_ms,
            "{h:?}"
        );
    }

    // `rollout hosts --rollout NAME --failed`, as text and as JSON.
    let out = rollout(&[
        "hosts",
        "--rollout",
        "disk-fix",
        "--failed",
        "--server",
        &controller.url,
    ])
    .await;
    let table = text(&out.stdout);
    assert!(out.status.success(), "{table}{}", text(&out.stderr));
    for i in [HANG, DISK_FULL, KILLED, UNREACHABLE] {
        assert!(table.contains(&name(i)), "{table}");
    }
    assert!(
        table.contains("disk full on /var") && table.contains("timed out after 2s"),
        "{table}"
    );
    assert!(!table.contains("host-4") && !table.contains("host-5"), "{table}");
    let out = rollout(&[
        "hosts",
        "--rollout",
        "disk-fix",
        "--failed",
        "--output",
        "json",
        "--server",
        &controller.url,
    ])
    .await;
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");

    // `rollout status NAME --output json`: the outcome and the failures by reason.
    let out = rollout(&["status", "disk-fix", "--output", "json", "--server", &controller.url]).await;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "completed-with-failures", "{status}");
    let groups = status["failures"].as_array().unwrap();
    let group_of = |host: &str| {
        groups
            .iter()
            .find(|g| g["host_ids"].as_array().unwrap().iter().any(|h| h == host))
            .unwrap_or_else(|| panic!("{host} in no group: {status}"))
    };
    assert!(
        group_of("host-1")["reason"]
            .as_str()
            .unwrap()
            .contains("disk full on /var")
    );
    assert!(
        group_of("host-0")["reason"]
            .as_str()
            .unwrap()
            .contains("timed out after 2s")
    );
    group_of("host-2");
    group_of("host-3");
    let grouped: u64 = groups.iter().map(|g| g["hosts"].as_u64().unwrap()).sum();
    assert_eq!(grouped, 4, "{status}");
    let out = rollout(&["status", "disk-fix", "--server", &controller.url]).await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("completed-with-failures") && shown.contains("failures by reason"),
        "{shown}"
    );

    // Fix the causes, then retry (twice with one request id: one retry).
    for h in &hosts {
        let _ = std::fs::remove_file(h.dir.join("fault"));
    }
    agents[UNREACHABLE] = Some(hosts[UNREACHABLE].start(&addresses[UNREACHABLE]).await);
    let out = rollout(&[
        "retry",
        "disk-fix",
        "--request-id",
        "retry-1",
        "--server",
        &controller.url,
    ])
    .await;
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let again = rollout(&[
        "retry",
        "disk-fix",
        "--request-id",
        "retry-1",
        "--server",
        &controller.url,
    ])
    .await;
    assert!(
        again.status.success(),
        "the same request id answers again: {}",
        text(&again.stderr)
    );
    let watched = rollout(&["watch", "disk-fix", "--server", &controller.url]).await;
    assert_eq!(watched.status.code(), Some(0), "{}", text(&watched.stdout));
    let done = get(&mut client, "disk-fix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!((done.hosts_succeeded, done.hosts_failed, done.retries), (6, 0, 1));
    assert_eq!(done.percent_complete, 100.0);
    assert!(done.failures.is_empty(), "{:?}", done.failures);
    // A succeeded rollout has nothing to retry.
    let out = rollout(&["retry", "disk-fix", "--server", &controller.url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nothing to retry"), "{}", text(&out.stderr));

    // The per-host history: attempt 2 with a new operation id, attempt 1 kept.
    let all = client
        .list_rollout_hosts(pb::ListRolloutHostsRequest {
            name: "disk-fix".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(all.len(), HOSTS);
    for h in &all {
        assert_eq!(h.state, "succeeded", "{h:?}");
        let i: usize = h.host_id.trim_start_matches("host-").parse().unwrap();
        if i < 4 {
            assert_eq!(h.attempt, 2, "{h:?}");
            assert_eq!(h.history.len(), 1, "{h:?}");
            assert_ne!(h.history[0].operation_id, h.operation_id);
            assert_eq!(h.history[0].state, "failed");
        } else {
            assert!(h.history.is_empty(), "{h:?}");
        }
        let version = std::fs::read_to_string(hosts[i].dir.join("version")).unwrap_or_default();
        assert_eq!(version.trim(), "15.20.8207.12", "{}", h.host_id);
        assert_no_operation_ran_twice(&hosts[i], &h.host_id);
    }
    // The timeline says what happened.
    let events = timeline(&mut client, "disk-fix").await;
    let lines: Vec<&str> = events.iter().map(|e| e.detail.as_str()).collect();
    assert!(
        lines.iter().any(|l| l.starts_with("completed with failures")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("retry 1: re-running 4 failed hosts")),
        "{lines:?}"
    );
    assert!(lines.contains(&"succeeded"), "{lines:?}");

    controller.stop().await;
    for a in agents.into_iter().flatten() {
        let mut a = a;
        let _ = a.terminate(Duration::from_secs(30)).await;
    }
}
