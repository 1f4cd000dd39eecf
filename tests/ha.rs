//! Highly available controllers on etcd, with real processes: etcd members (Debian's
//! `etcd-server`), `rollout serve --store etcd://...` controllers and a simulated fleet
//! with agent latency, all on loopback ports. One controller leads, the other stands
//! by and forwards calls to it. The leader killed (SIGKILL), then the new leader
//! paused (SIGSTOP) past its lease, then etcd's own leader killed: the rollout goes on
//! and every host is applied exactly once. Skipped without `etcd`, failing instead
//! with ROLLOUT_ETCD_TESTS=required.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::controllers::*;
use common::receiver::{Mode, Receiver, check_sequence};
use common::*;
use rollout::cli::process::Spawned;
use rollout::cli::{Credentials, connect, connect_with};
use rollout::proto::v1 as pb;
use rollout::proto::v1::agent_client::AgentClient;
use rollout::store::etcd_backend::local::LocalEtcd;
use tonic::Code;

/// Enough hosts that the rollout still runs when, after two takeovers, etcd's leader
/// is killed (about 2,500 are done by then, with `max_parallel: 20`); the failover
/// at 20,000 and 100,000 hosts is `cargo bench --bench scale -- failover`'s.
const HOSTS: usize = 6_000;

/// The simulator's counters (any host's probe says them): Apply calls received, and
/// those refused for a stale controller epoch.
async fn applies(agent: &mut AgentClient<tonic::transport::Channel>, host: &str) -> (u64, u64) {
    agent
        .probe(pb::ProbeRequest { host_id: host.into() })
        .await
        .map(|p| p.into_inner())
        .map(|p| (p.apply_calls, p.stale_applies_refused))
        .unwrap_or((0, 0))
}

/// etcd, a simulator and two controllers: `a` leads, `b` stands by.
struct Cluster {
    etcd: LocalEtcd,
    agent: Spawned,
    fleet: rollout::inventory::FleetFile,
    /// The controllers' fleet file.
    fleet_file: PathBuf,
    a: Spawned,
    b: Spawned,
    /// Each controller's log, and the simulator's.
    logs: [PathBuf; 3],
    _dir: tempfile::TempDir,
}

/// Starts the site in `dir`, the controllers with `extra` flags, the first one asked
/// whether it leads as `who` (at `scheme://`).
async fn site_in(
    dir: tempfile::TempDir,
    members: usize,
    hosts: usize,
    extra: &[&str],
    who: (&Credentials, &str),
) -> Option<Cluster> {
    let etcd = LocalEtcd::start_for_test(members).await?;
    let logs = ["a.log", "b.log", "agent.log"].map(|l| dir.path().join(l));
    let (agent, fleet, fleet_file) = spawn_simulator(dir.path(), hosts, "20..40", &logs[2]).await;
    let a = controller(&etcd, &fleet_file, &logs[0], extra).await;
    let (credentials, scheme) = who;
    let a_url = format!("{scheme}://{}", a.addr);
    until_role_as(&a_url, "leader", "the first controller to lead", credentials).await;
    let b = controller(&etcd, &fleet_file, &logs[1], extra).await;
    Some(Cluster {
        etcd,
        agent,
        fleet,
        fleet_file,
        a,
        b,
        logs,
        _dir: dir,
    })
}

async fn site(members: usize, hosts: usize, extra: &[&str]) -> Option<Cluster> {
    let dir = tempfile::tempdir().unwrap();
    site_in(dir, members, hosts, extra, (&Credentials::default(), "http")).await
}

fn log_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The whole story of the issue: a 6,000-host rollout with agent latency; the leader
/// SIGKILLed mid-wave (the standby takes over, the time to its first Apply reported);
/// the killed one restarted, as a standby; the new leader SIGSTOPped past its lease
/// (the other takes over) and SIGCONTed (it finds itself deposed, gets nothing done
/// and stands by); then etcd's own leader killed. The rollout reaches 100% and every
/// host ran the fix exactly once.
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollout_survives_its_leaders_and_an_etcd_member_and_runs_each_host_once() {
    let Some(mut site) = site(3, HOSTS, &[]).await else {
        return;
    };
    let (a, b) = (url(&site.a), url(&site.b));
    let mut client = connect(&a).await.unwrap();
    let mut spec = plan("ha-fix", &["1%", "10%", "50%", "100%"], "0");
    spec.max_parallel = 20;
    submit(&mut client, spec).await;
    within(
        120,
        "the rollout to get going",
        watch_until(&mut client, "ha-fix", |r| r.percent_complete >= 5.0),
    )
    .await;

    // The standby forwards every call to the leader, streams included.
    let mut via_b = connect(&b).await.unwrap();
    let listed = within(30, "the standby to forward to the leader", async {
        loop {
            match via_b.list_rollouts(pb::ListRolloutsRequest::default()).await {
                Ok(listed) => return listed.into_inner(),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(listed.rollouts.len(), 1, "the leader's rollout, through the standby");
    within(
        60,
        "a watch through the standby to see progress",
        watch_until(&mut via_b, "ha-fix", |r| r.percent_complete >= 8.0),
    )
    .await;
    // `rollout controllers`, asked of the standby: both, the leader first.
    let listed = rollout(&["--server", &b, "controllers", "--output", "json"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let roles: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["advertise"].as_str().unwrap(), c["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [(a.as_str(), "leader"), (b.as_str(), "standby")]);
    assert!(listed[0]["epoch"].as_u64().unwrap() > 0);

    // 1. SIGKILL the leader: the standby takes over.
    let mut agent = AgentClient::connect(format!("http://{}", site.agent.addr))
        .await
        .unwrap();
    let host = site.fleet.hosts[0].id.clone();
    site.a.kill9().await.unwrap();
    let killed = Instant::now();
    // Calls the dead leader had sent may still land: wait until the count settles.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (before, _) = applies(&mut agent, &host).await;
    let first = within(60, "the new leader's first Apply", async {
        loop {
            if applies(&mut agent, &host).await.0 > before {
                return killed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    eprintln!(
        "failover: {} ms from SIGKILL of the leader to the first Apply by the new one (lease 3 s)",
        first.as_millis()
    );
    for line in log_of(&site.logs[1]).lines().filter(|l| {
        ["leading", "inventory loaded", "rollouts and restart jobs loaded"]
            .iter()
            .any(|w| l.contains(w))
    }) {
        eprintln!("  {line}");
    }
    // The target (under 5 s with the default lease) is a benchmark's, reported here;
    // the bound only catches a takeover that does not happen in reasonable time.
    assert!(first < Duration::from_secs(30), "failover took {first:?}");
    until_role(&b, "leader", "the standby to lead").await;

    // 2. The killed controller comes back (as systemd would start it): a standby.
    site.a = controller(&site.etcd, &site.fleet_file, &site.logs[0], &[]).await;
    let a = url(&site.a);
    until_role(&a, "standby", "the restarted controller to stand by").await;

    // 3. SIGSTOP the leader past its lease: the other takes over. SIGCONT it: it finds
    // itself deposed, gets nothing done (its writes and Applies are refused) and
    // stands by, without exiting.
    let (_, stale_before) = applies(&mut agent, &host).await;
    signal(&site.b, libc::SIGSTOP);
    until_role(&a, "leader", "the restarted controller to take over").await;
    let a_leads_since = controllers(&a)
        .await
        .and_then(|all| all.into_iter().find(|c| c.advertise == a))
        .expect("the new leader lists itself")
        .since_unix_ms;
    signal(&site.b, libc::SIGCONT);
    until_role(&b, "standby", "the deposed leader to stand by").await;
    assert!(
        running(site.b.pid().unwrap()),
        "the deposed leader stays up, as a standby"
    );
    assert!(
        log_of(&site.logs[1]).contains("lost the leadership"),
        "the deposed leader says why it stopped dispatching"
    );

    // It wrote nothing once the other led.
    let mut client = connect(&a).await.unwrap();
    let late: Vec<_> = timeline(&mut client, "ha-fix")
        .await
        .into_iter()
        .filter(|e| e.controller == b && e.at_unix_ms >= a_leads_since)
        .collect();
    assert!(
        late.is_empty(),
        "the deposed leader wrote after it was deposed: {late:?}"
    );

    // 4. etcd's own leader dies: the other two members carry on.
    let now = get(&mut client, "ha-fix").await;
    assert!(
        !now.state().is_terminal(),
        "the rollout still runs when etcd's leader is killed ({}%)",
        now.percent_complete
    );
    let member = within(30, "etcd to name its leader", async {
        loop {
            if let Some(i) = site.etcd.leader().await {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    site.etcd.kill(member);
    eprintln!(
        "etcd member {member} (its raft leader) killed at {:.1}%",
        now.percent_complete
    );
    // Watched through either controller: should etcd's election have cost the leader
    // its lease, the other takes over and the watch is asked again.
    let done = within(300, "the rollout to finish", async {
        loop {
            for server in [&a, &b] {
                let Ok(mut c) = connect(server).await else { continue };
                let Ok(watch) = c
                    .watch_rollout(pb::GetRolloutRequest {
                        name: "ha-fix".into(),
                        id: 0,
                    })
                    .await
                else {
                    continue;
                };
                let mut watch = watch.into_inner();
                while let Ok(Some(r)) = watch.message().await {
                    if r.state().is_terminal() {
                        return r;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    for (name, log) in [("first", &site.logs[0]), ("second", &site.logs[1])] {
        let lost = log_of(log).matches("lost the leadership").count();
        eprintln!("the {name} controller lost the leadership {lost} time(s)");
    }
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!(done.hosts_succeeded, HOSTS as u64);
    let mut twice = Vec::new();
    for (host, p) in probe_all(&site.agent.addr.to_string(), &site.fleet).await {
        if p.operations_executed != 1 || p.version != "15.20.8207.12" {
            twice.push((host, p.operations_executed, p.version));
        }
    }
    assert!(
        twice.is_empty(),
        "{} hosts not applied exactly once: {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    // The audit log names the controller that wrote each line: each leader wrote some.
    let mut client = connect(&a).await.unwrap();
    let events = timeline(&mut client, "ha-fix").await;
    let by = |c: &str| events.iter().filter(|e| e.controller == c).count();
    assert!(by(&b) > 0 && by(&a) > 0, "both leaders are named in the audit log");
    let (_, stale_after) = applies(&mut agent, &host).await;
    eprintln!(
        "Applies of the deposed leader refused by the agents (stale epoch): {}",
        stale_after - stale_before
    );
    for (c, log) in [(&mut site.a, &site.logs[0]), (&mut site.b, &site.logs[1])] {
        let code = c.terminate(Duration::from_secs(30)).await.unwrap();
        let said = log_of(log);
        let tail: Vec<&str> = said.lines().rev().take(15).collect();
        assert_eq!(
            code,
            Some(0),
            "the controller's last lines, newest first:\n{}",
            tail.join("\n")
        );
    }
    assert_eq!(site.agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// A leader that loses etcd altogether cannot renew its lease: it stops dispatching
/// within the lease, says why, and no Apply of its reaches a host after.
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_etcd_stops_dispatching_within_its_lease() {
    let Some(site) = site(3, HOSTS, &[]).await else {
        return;
    };
    let mut client = connect(&url(&site.a)).await.unwrap();
    let mut spec = plan("ha-fix", &["1%", "10%", "50%", "100%"], "0");
    spec.max_parallel = 50;
    submit(&mut client, spec).await;
    within(
        120,
        "the rollout to get going",
        watch_until(&mut client, "ha-fix", |r| r.percent_complete >= 2.0),
    )
    .await;
    let Cluster {
        etcd,
        mut agent,
        fleet,
        mut a,
        mut b,
        logs,
        ..
    } = site;
    etcd.stop();
    let cut = Instant::now();
    let stopped = within(30, "the leader to say it lost the leadership", async {
        while !log_of(&logs[0]).contains("lost the leadership") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cut.elapsed()
    })
    .await;
    eprintln!(
        "a leader cut off from etcd stopped dispatching {} ms after (lease 3 s)",
        stopped.as_millis()
    );
    assert!(
        stopped < Duration::from_secs(15),
        "it stopped {stopped:?} after losing etcd"
    );
    let mut calls = AgentClient::connect(format!("http://{}", agent.addr)).await.unwrap();
    let host = fleet.hosts[0].id.clone();
    // Calls already sent may still be answered: then nothing more.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (after, _) = applies(&mut calls, &host).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(applies(&mut calls, &host).await.0, after, "nothing sent once stopped");
    // It stands by, answering that it cannot reach a leader, and stops cleanly.
    let err = connect(&url(&a))
        .await
        .unwrap()
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    for c in [&mut a, &mut b] {
        assert_eq!(c.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    }
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// A standby answers submit, status, watch, pause and restart by forwarding, with the
/// caller's identity and role checked as on the leader; the audit log names the
/// principal and the controller that acted. Its metrics say it stands by, and its
/// dashboard shows the leader's, where an operator signed in through it acts (Resume).
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forwards_calls_with_the_callers_identity_and_shows_the_leaders_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = tokens_file(dir.path(), &[("vera", "viewer"), ("otto", "operator")])
        .display()
        .to_string();
    let extra = ["--auth", &tokens, "--http-listen", "127.0.0.1:0"];
    let viewer = Credentials {
        token: Some(token("vera")),
        ..Default::default()
    };
    let Some(mut site) = site_in(dir, 1, 200, &extra, (&viewer, "http")).await else {
        return;
    };
    let (a, b) = (url(&site.a), url(&site.b));
    until_role_as(&b, "standby", "the second controller to stand by", &viewer).await;

    // A viewer may read through the standby, not change anything: refused there.
    let mut vera = as_who(&b, "vera").await;
    let mut spec = plan("fwd-fix", &["10%", "100%"], "0");
    spec.bake = "1h".into();
    spec.selector = [(
        "region".to_string(),
        pb::LabelValues {
            values: vec!["apac".into()],
        },
    )]
    .into();
    let elsewhere = site
        .fleet
        .hosts
        .iter()
        .find(|h| h.labels.get("region").is_some_and(|r| r != "apac"))
        .expect("a host outside the rollout")
        .id
        .clone();
    let refused = vera
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // No token at all: refused too.
    let mut nobody = connect(&b).await.unwrap();
    let err = nobody
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    // An operator submits, watches, pauses and restarts through the standby.
    let mut otto = as_who(&b, "otto").await;
    submit(&mut otto, spec).await;
    within(
        60,
        "the first wave to bake",
        watch_until(&mut vera, "fwd-fix", |r| {
            r.hosts_succeeded > 0 && r.bake_until_unix_ms > 0
        }),
    )
    .await;
    let paused = otto.pause_rollout(action("fwd-fix")).await.unwrap().into_inner();
    assert_eq!(paused.state(), pb::RolloutState::Paused);
    assert_eq!(get(&mut vera, "fwd-fix").await.state(), pb::RolloutState::Paused);
    let job = otto
        .trigger_restart(pb::TriggerRestartRequest {
            host_ids: vec![elsewhere],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let job = restart_job_until(&mut vera, job.id, |j| {
        j.hosts_restarted + j.hosts_failed == j.hosts_total
    })
    .await;
    assert_eq!(job.hosts_restarted, 1);

    // The audit log, asked of the standby: who did it, and which controller acted.
    let events = timeline(&mut vera, "fwd-fix").await;
    for kind in ["SubmitPlan", "PauseRollout"] {
        let e = events
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("{kind} in {events:?}"));
        assert_eq!((e.principal.as_str(), e.role.as_str()), ("otto", "operator"), "{e:?}");
        assert_eq!(e.controller, a, "the leader acted: {e:?}");
    }

    // The standby's metrics say who leads; its dashboard is the leader's.
    let b_dashboard = site.b.line_after("dashboard on ").await.unwrap();
    let a_dashboard = site.a.line_after("dashboard on ").await.unwrap();
    let client = reqwest::Client::new();
    // Beside the dashboard, /metrics needs a viewer's token.
    let refused = client.get(format!("{}metrics", b_dashboard)).send().await.unwrap();
    assert_eq!(refused.status(), 401, "the standby's /metrics without a token");
    let metrics = client
        .get(format!("{}metrics", b_dashboard))
        .bearer_auth(token("vera"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rollout_leading 0"), "{metrics}");
    assert!(
        metrics.contains(&format!("rollout_controllers{{advertise=\"{a}\",role=\"leader\"}} 1")),
        "{metrics}"
    );
    let page = |path: &str| {
        client
            .get(format!("{b_dashboard}{path}"))
            .bearer_auth(token("vera"))
            .send()
    };
    let rollouts = page("").await.unwrap();
    assert_eq!(rollouts.status(), 200);
    let rollouts = rollouts.text().await.unwrap();
    assert!(rollouts.contains("Shown by the standby at"), "{rollouts}");
    assert!(rollouts.contains("fwd-fix"), "the leader's rollouts: {rollouts}");
    // Its live updates come through too: the leader's event stream.
    let mut live = page("live/rollouts").await.unwrap();
    assert_eq!(live.status(), 200);
    let first = within(30, "the first live update through the standby", async {
        let mut seen = String::new();
        while !seen.contains("\n\n") {
            let chunk = live.chunk().await.unwrap().expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        seen
    })
    .await;
    assert!(first.starts_with("event: html") && first.contains("fwd-fix"), "{first}");
    drop(live);
    let listed = page("controllers").await.unwrap().text().await.unwrap();
    assert!(
        listed.contains(&a) && listed.contains(&b) && listed.contains("standby"),
        "{listed}"
    );
    assert!(listed.contains(a_dashboard.trim_end_matches('/')), "{listed}");
    // Without a token the leader's sign-in page comes back, through the standby.
    let anonymous = client
        .get(format!("{b_dashboard}rollouts/fwd-fix"))
        .send()
        .await
        .unwrap();
    assert_ne!(anonymous.status(), 200);
    // An operator signed in on the standby's dashboard acts there: the sign-in, the
    // page and the form's post go to the leader as they came (cookie, CSRF token).
    let otto_web = common::web::Browser::sign_in(&b_dashboard, "otto").await;
    let page = otto_web.page("rollouts/fwd-fix").await;
    assert!(
        page.contains(">Resume</button>"),
        "the operator's buttons, through the standby"
    );
    let csrf = common::web::field(&page, "csrf").expect("the form's CSRF token");
    let (status, said) = otto_web
        .post(
            "rollouts/fwd-fix/resume",
            &[("csrf", &csrf), ("request_id", "web-resume")],
        )
        .await;
    assert_eq!(status, 200, "{said}");
    assert_ne!(get(&mut vera, "fwd-fix").await.state(), pb::RolloutState::Paused);

    for c in [&mut site.a, &mut site.b] {
        assert_eq!(c.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    }
    assert_eq!(site.agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// A gate on etcd: an approval sent to the standby is forwarded and counted under
/// the caller's name (never the standby's); the leader SIGKILLed, the new one waits
/// at the same gate with that approval, and the second approval starts the next wave.
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_through_a_standby_counts_for_the_caller_and_survives_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let people = [("alice", "operator"), ("bob", "operator"), ("carol", "operator")];
    let tokens = tokens_file(dir.path(), &people).display().to_string();
    let extra = ["--auth", &tokens];
    let alice_token = Credentials {
        token: Some(token("alice")),
        ..Default::default()
    };
    let Some(mut site) = site_in(dir, 1, 100, &extra, (&alice_token, "http")).await else {
        return;
    };
    let (a, b) = (url(&site.a), url(&site.b));
    until_role_as(&b, "standby", "the second controller to stand by", &alice_token).await;
    let mut spec = plan("ha-gate", &["10%", "100%"], "0");
    spec.gates = vec![pb::GateSpec {
        after: "10%".into(),
        approvals: 2,
        four_eyes: true,
        ..Default::default()
    }];
    let mut alice = as_who(&b, "alice").await;
    submit(&mut alice, spec).await;
    let open = within(
        60,
        "the gate to open",
        watch_until(&mut alice, "ha-gate", |r| {
            r.state() == pb::RolloutState::AwaitingApproval
        }),
    )
    .await
    .pop()
    .unwrap()
    .gate
    .unwrap();
    let approve = |client: &mut Client, gate_id: &str| {
        let request = pb::ApproveRolloutRequest {
            name: "ha-gate".into(),
            gate_id: gate_id.into(),
            ..Default::default()
        };
        let mut client = client.clone();
        async move { client.approve_rollout(request).await.map(|r| r.into_inner()) }
    };
    // Through the standby, as alice herself: four-eyes still knows her.
    let err = approve(&mut alice, &open.gate_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("four-eyes: alice submitted"), "{err:?}");
    let mut bob = as_who(&b, "bob").await;
    let first = approve(&mut bob, &open.gate_id).await.unwrap();
    assert!(first.counted, "{}", first.message);
    let r = first.rollout.unwrap();
    assert_eq!(r.gate.as_ref().unwrap().approvals[0].principal, "bob");
    let events = timeline(&mut bob, "ha-gate").await;
    let approved = events
        .iter()
        .find(|e| e.kind == "ApproveRollout" && e.result == "ok")
        .expect("the approval is audited");
    assert_eq!(
        (approved.principal.as_str(), approved.controller.as_str()),
        ("bob", a.as_str())
    );

    // The leader dies; the standby takes over and still waits, with bob's approval.
    site.a.kill9().await.unwrap();
    until_role_as(&b, "leader", "the standby to take over", &alice_token).await;
    let mut carol = as_who(&b, "carol").await;
    let r = get(&mut carol, "ha-gate").await;
    assert_eq!(r.state(), pb::RolloutState::AwaitingApproval);
    let kept = r.gate.unwrap();
    assert_eq!(kept.gate_id, open.gate_id);
    assert_eq!(
        kept.approvals.iter().map(|a| a.principal.as_str()).collect::<Vec<_>>(),
        ["bob"]
    );
    let second = approve(&mut carol, &open.gate_id).await.unwrap();
    assert!(
        second.counted && second.message.contains("wave 2 starts now"),
        "{}",
        second.message
    );
    let done = within(
        120,
        "the rollout to finish",
        watch_until(&mut carol, "ha-gate", |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!(done.hosts_succeeded, 100);
    assert_eq!(site.b.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(site.agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// Controllers whose API speaks mutual TLS with a private CA: a standby forwards to
/// the leader over TLS (`--peer-ca`, its own certificate as its identity), with the
/// caller's token. A caller known only by its client certificate is attributed at
/// the leader to that certificate, never to the standby: what it submits through a
/// standby is recorded under its name, and four-eyes refuses its own approval at the
/// leader and through the standby; the leader takes a forwarded identity only from a
/// controller (a client sending the header is refused).
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_forwards_to_a_leader_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::certs::Ca::new(dir.path(), "site");
    let server = ca.issue("controller");
    let cli = ca.issue("otto-laptop");
    let tokens = tokens_file(dir.path(), &[("otto", "operator"), ("vera", "operator")])
        .display()
        .to_string();
    let mut listed = std::fs::read_to_string(&tokens).unwrap();
    // The standby's certificate is that of a controller (it may only forward); the
    // laptop's is an operator's. Were the standby's an admin's, as it could be
    // before, the leader would have taken its calls as the standby's own.
    listed.push_str(
        "certificates:\n  - subject: otto-laptop\n    role: operator\n  - subject: controller\n    role: controller\n",
    );
    std::fs::write(&tokens, listed).unwrap();
    let paths = [&server.cert, &server.key, &ca.cert].map(|p| p.display().to_string());
    let extra = [
        "--auth",
        &tokens,
        "--tls-cert",
        &paths[0],
        "--tls-key",
        &paths[1],
        "--client-ca",
        &paths[2],
        "--peer-ca",
        &paths[2],
    ];
    let otto = Credentials {
        tls: rollout::tls::ClientFiles {
            ca: Some(ca.cert.clone()),
            cert: Some(cli.cert.clone()),
            key: Some(cli.key.clone()),
        },
        token: Some(token("otto")),
    };
    let Some(mut site) = site_in(dir, 1, 50, &extra, (&otto, "https")).await else {
        return;
    };
    let (a, b) = (format!("https://{}", site.a.addr), format!("https://{}", site.b.addr));
    until_role_as(&b, "standby", "the second controller to stand by", &otto).await;
    let mut via_b = connect_with(&b, &otto).await.unwrap();
    let done = submit(&mut via_b, plan("tls-fix", &["100%"], "0")).await;
    assert_eq!(done.name, "tls-fix");
    let events = timeline(&mut via_b, "tls-fix").await;
    let submitted = events
        .iter()
        .find(|e| e.kind == "SubmitPlan")
        .expect("the submit is audited");
    assert_eq!(
        (submitted.principal.as_str(), submitted.controller.as_str()),
        ("otto", a.as_str())
    );

    within(
        120,
        "the first rollout to end",
        watch_until(&mut via_b, "tls-fix", |r| r.state().is_terminal()),
    )
    .await;
    // Known only by its certificate, through the standby: recorded under its name.
    let cert_only = Credentials {
        token: None,
        ..otto.clone()
    };
    let mut laptop = connect_with(&b, &cert_only).await.unwrap();
    let mut spec = plan("tls-gate", &["10%", "100%"], "0");
    spec.gates = vec![pb::GateSpec {
        after: "10%".into(),
        approvals: 1,
        four_eyes: true,
        ..Default::default()
    }];
    submit(&mut laptop, spec).await;
    let events = timeline(&mut via_b, "tls-gate").await;
    let submitted = events.iter().find(|e| e.kind == "SubmitPlan").unwrap();
    assert_eq!(submitted.principal, "otto-laptop", "{submitted:?}");
    let open = within(
        60,
        "the gate to open",
        watch_until(&mut laptop, "tls-gate", |r| {
            r.state() == pb::RolloutState::AwaitingApproval
        }),
    )
    .await
    .pop()
    .unwrap()
    .gate
    .unwrap();
    let approval = || pb::ApproveRolloutRequest {
        name: "tls-gate".into(),
        gate_id: open.gate_id.clone(),
        ..Default::default()
    };
    // Four-eyes knows the laptop at the leader and through the standby.
    let mut at_leader = connect_with(&a, &cert_only).await.unwrap();
    for (client, at) in [(&mut at_leader, "leader"), (&mut laptop, "standby")] {
        let err = client.approve_rollout(approval()).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{at}: {err:?}");
        assert!(
            err.message().contains("four-eyes: otto-laptop submitted"),
            "{at}: {err:?}"
        );
    }
    // A client cannot claim to be forwarded: the leader refuses the header.
    let mut forged = tonic::Request::new(approval());
    forged
        .metadata_mut()
        .insert(rollout::auth::FORWARDED_SUBJECT, "vera".parse().unwrap());
    let mut otto_at_leader = connect_with(&a, &cert_only).await.unwrap();
    let err = otto_at_leader.approve_rollout(forged).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // Another operator approves, through the standby; it counts under her name.
    let vera = Credentials {
        token: Some(token("vera")),
        ..cert_only.clone()
    };
    let mut vera = connect_with(&b, &vera).await.unwrap();
    let counted = vera.approve_rollout(approval()).await.unwrap().into_inner();
    assert!(counted.counted, "{}", counted.message);
    let events = timeline(&mut vera, "tls-gate").await;
    let approved: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "ApproveRollout" && e.result == "ok")
        .map(|e| e.principal.as_str())
        .collect();
    assert_eq!(approved, ["vera"], "{events:#?}");
    // Without --peer-ca a standby cannot check the leader's certificate: it says so.
    let mut plain = controller(&site.etcd, &site.fleet_file, &site.logs[1], &extra[..extra.len() - 2]).await;
    let mut via_plain = connect_with(&format!("https://{}", plain.addr), &otto).await.unwrap();
    let err = within(30, "the standby without --peer-ca to see the leader", async {
        loop {
            let err = via_plain
                .list_rollouts(pb::ListRolloutsRequest::default())
                .await
                .unwrap_err();
            if err.message().contains("leader is") {
                return err;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("give --peer-ca"), "{err:?}");
    for c in [&mut site.a, &mut site.b, &mut plain] {
        assert_eq!(c.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    }
    assert_eq!(site.agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// On etcd, the leader SIGKILLed with the rollout's events undelivered (its sink
/// failing): the new leader delivers every one of them, in order, with the ids the
/// old leader wrote, and says it leads (`controller.leader_changed`).
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_delivers_what_the_killed_one_had_not() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(Mode::Status(503)).await;
    let sinks = receiver.sinks_file(dir.path(), "bridge", "");
    let sinks = sinks.display().to_string();
    let Some(mut site) = site_in(dir, 1, 100, &["--notify", &sinks], (&Credentials::default(), "http")).await else {
        return;
    };
    let (a, b) = (url(&site.a), url(&site.b));
    until_role(&b, "standby", "the second controller to stand by").await;
    let mut client = connect(&a).await.unwrap();
    submit(&mut client, plan("ha-told", &["10%", "100%"], "0")).await;
    let done = within(
        120,
        "the rollout to finish",
        watch_until(&mut client, "ha-told", |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    let pending = client
        .notify_status(pb::NotifyStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        pending.sinks[0].pending >= 5,
        "undelivered at the old leader: {pending:?}"
    );
    assert!(receiver.delivered().is_empty());

    site.a.kill9().await.unwrap();
    receiver.set(Mode::Ok);
    until_role(&b, "leader", "the standby to take over").await;
    receiver
        .until(60, "the new leader to deliver the terminal event", |e| {
            e["subject"] == "ha-told" && e["type"] == "rollout.succeeded"
        })
        .await;
    let requests = receiver.requests();
    let last = requests
        .iter()
        .filter(|r| r.event["type"] == "rollout.succeeded")
        .filter_map(|r| r.event["data"]["seq"].as_u64())
        .max()
        .unwrap();
    check_sequence(&requests, "ha-told", last);
    // Acted on by the old leader, delivered by the new.
    let succeeded = receiver
        .delivered()
        .into_iter()
        .find(|e| e["type"] == "rollout.succeeded")
        .unwrap();
    assert_eq!(succeeded["data"]["controller"], a.as_str());
    receiver
        .until(30, "the new leader to say it leads", |e| {
            e["type"] == "controller.leader_changed" && e["data"]["leader"] == b.as_str()
        })
        .await;
    assert_eq!(site.b.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(site.agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// A takeover with thousands of operations in flight: 3,000 hosts whose deploys take
/// 3 s, `max_parallel: 100%`, the leader SIGKILLed while they run. The standby takes
/// over, finds the operations in the store, asks their agent (the operations still
/// running there answer "running", those done their recorded result) and the rollout
/// finishes with every host's deploy run exactly once, by the simulator's own count.
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_with_thousands_in_flight_runs_each_host_once() {
    const MANY: usize = 3_000;
    let Some(etcd) = LocalEtcd::start_for_test(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let logs = ["a.log", "b.log", "agent.log"].map(|l| dir.path().join(l));
    let (agent, fleet, fleet_file) = spawn_simulator(dir.path(), MANY, "3000..3000", &logs[2]).await;
    let mut a = controller(&etcd, &fleet_file, &logs[0], &[]).await;
    until_role(&url(&a), "leader", "the first controller to lead").await;
    let b = controller(&etcd, &fleet_file, &logs[1], &[]).await;
    let mut client = connect(&url(&a)).await.unwrap();
    let mut spec = plan("takeover-in-flight", &["100%"], "0");
    spec.max_parallel = 0;
    spec.max_parallel_share = "100%".into();
    submit(&mut client, spec).await;
    within(
        120,
        "thousands of operations in flight",
        watch_until(&mut client, "takeover-in-flight", |r| r.hosts_in_flight >= 2_000),
    )
    .await;
    a.kill9().await.unwrap();
    until_role(&url(&b), "leader", "the standby to take over").await;
    let mut client = connect(&url(&b)).await.unwrap();
    let seen = within(
        180,
        "the rollout to finish under the new leader",
        watch_until(&mut client, "takeover-in-flight", |r| {
            r.state() == pb::RolloutState::Succeeded || r.state() == pb::RolloutState::Halted
        }),
    )
    .await;
    let last = seen.last().unwrap();
    assert_eq!(last.state(), pb::RolloutState::Succeeded, "{}", last.halt_reason);
    assert_eq!(last.hosts_succeeded, MANY as u64);
    for (host, p) in probe_all(&agent.addr.to_string(), &fleet).await {
        assert_eq!(p.operations_executed, 1, "{host} ran its deploy once");
        assert_eq!(p.version, "15.20.8207.12", "{host}");
    }
    drop(b);
    drop(etcd);
}
