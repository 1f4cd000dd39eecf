//! Real host agents as real processes: commands run from argv with their timeouts,
//! results carry exit codes and output, and an operation never runs twice, even when
//! the agent is killed in the middle of it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::agents::{EXE, HostDir};
use common::*;
use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;
use rollout::proto::v1::agent_client::AgentClient;
use tonic::transport::Channel;

async fn client_for(agent: &Spawned) -> AgentClient<Channel> {
    client(agent).await
}

async fn client(agent: &Spawned) -> AgentClient<Channel> {
    AgentClient::connect(format!("http://{}", agent.addr)).await.unwrap()
}

fn deploy(host: &str, op: &str, version: &str) -> pb::ApplyRequest {
    pb::ApplyRequest {
        host_id: host.into(),
        operation_id: op.into(),
        action: pb::Action::Deploy as i32,
        version: version.into(),
        epoch: 0,
        detach: false,
    }
}

/// An agent killed (SIGKILL) while its deploy command runs, then restarted on the same
/// state file, does not run that operation again when the controller repeats it; it
/// says it was interrupted. New operations run; finished ones replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_never_runs_an_operation_twice() {
    let root = tempfile::tempdir().unwrap();
    let host = HostDir::new(root.path(), "h1", "sleep 2", "30s");
    let mut agent = host.start("127.0.0.1:0").await;
    let mut c = client(&agent).await;
    let call = tokio::spawn({
        let mut c = c.clone();
        async move { c.apply(deploy("h1", "op-1", "2.0")).await }
    });
    within(30, "the deploy command to start", async {
        while host.runs("op-1") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    agent.kill9().await.unwrap();
    assert!(call.await.unwrap().is_err(), "the caller saw the agent die");

    let mut agent = host.start("127.0.0.1:0").await;
    c = client(&agent).await;
    let again = c.apply(deploy("h1", "op-1", "2.0")).await.unwrap().into_inner();
    assert!(!again.ok, "an interrupted operation is not reported done");
    assert!(again.detail.starts_with("interrupted"), "{}", again.detail);
    // The orphaned command finishes on its own; still only one run.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(host.runs("op-1"), 1, "op-1 ran exactly once");
    let replay = c.apply(deploy("h1", "op-1", "2.0")).await.unwrap().into_inner();
    assert!(replay.replayed && !replay.ok);

    let fresh = c.apply(deploy("h1", "op-2", "2.0")).await.unwrap().into_inner();
    assert!(fresh.ok, "{}", fresh.detail);
    assert_eq!(fresh.version, "2.0");
    let replay = c.apply(deploy("h1", "op-2", "2.0")).await.unwrap().into_inner();
    assert!(replay.replayed && replay.ok);
    assert_eq!(host.runs("op-2"), 1);

    // It refuses calls meant for another host.
    let wrong = c.apply(deploy("h2", "op-3", "2.0")).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition);
    // Fencing: once a leader of epoch 9 reached it, an older leader's call is refused,
    // also after the agent restarts (the epoch is in its state file).
    let leader = pb::ApplyRequest {
        epoch: 9,
        ..deploy("h1", "op-4", "2.0")
    };
    assert!(c.apply(leader).await.unwrap().into_inner().ok);
    agent.kill9().await.unwrap();
    let mut agent = host.start("127.0.0.1:0").await;
    c = client(&agent).await;
    let deposed = pb::ApplyRequest {
        epoch: 7,
        ..deploy("h1", "op-5", "2.1")
    };
    let refused = c.apply(deposed).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().starts_with("stale controller epoch 7 < 9"),
        "{}",
        refused.message()
    );
    assert_eq!(host.runs("op-5"), 0);
    // Probe runs the health command and reports the version kept in the state file.
    let p = c
        .probe(pb::ProbeRequest { host_id: "h1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(p.healthy && p.version == "2.0", "{p:?}");
    std::fs::write(host.dir.join("sick"), "").unwrap();
    let p = c
        .probe(pb::ProbeRequest { host_id: "h1".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!p.healthy && p.detail.starts_with("exit code 1"), "{p:?}");
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// Twenty real agents behind a real controller, with faults: one killed during the
/// rollout, one whose deploy hangs past its timeout, one whose deploy exits 1, one
/// restarted. The healthy ones end on the new version; the faulty ones are failed
/// with their reason; the rollout continues as its threshold (3 per wave) allows; and
/// deploy commands ran at most once per host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_real_agents_with_faults() {
    let root = tempfile::tempdir().unwrap();
    let mut hosts = Vec::new();
    for i in 0..20 {
        let (body, timeout) = match i {
            5 => ("sleep 30", "1s"),
            7 => ("echo 'disk full on /var' >&2; exit 1", "30s"),
            _ => ("sleep 0.2", "30s"),
        };
        hosts.push(HostDir::new(root.path(), &format!("host-{i:02}"), body, timeout));
    }
    let mut agents = Vec::new();
    for h in &hosts {
        agents.push(h.start("127.0.0.1:0").await);
    }
    let mut fleet = fleet(20, "unused");
    for (i, host) in fleet.hosts.iter_mut().enumerate() {
        host.id = format!("host-{i:02}");
        host.address = agents[i].addr.to_string().into();
        host.labels.insert("region".into(), "apac".into());
    }
    let data = root.path().join("data");
    let controller = Controller::start(&data, &fleet).await;
    let mut client = controller.client().await;
    let mut spec = plan("real-fix", &["50%", "100%"], "3");
    spec.max_parallel = 4;
    spec.bake = "2s".into();
    submit(&mut client, spec).await;

    // During the first bake: kill one agent that has not deployed yet, restart another.
    within(
        60,
        "the first wave to bake",
        watch_until(&mut client, "real-fix", |r| r.state() == pb::RolloutState::Baking),
    )
    .await;
    let waiting: Vec<usize> = (0..20)
        .filter(|&i| ![5, 7].contains(&i) && !hosts[i].dir.join("version").exists())
        .collect();
    assert!(waiting.len() >= 2, "hosts left for wave 2: {waiting:?}");
    let (killed, restarted) = (waiting[0], waiting[1]);
    agents[killed].kill9().await.unwrap();
    let port = agents[restarted].addr.to_string();
    assert_eq!(
        agents[restarted].terminate(Duration::from_secs(30)).await.unwrap(),
        Some(0)
    );
    agents[restarted] = hosts[restarted].start(&port).await;

    let seen = within(
        120,
        "the rollout to end",
        watch_until(&mut client, "real-fix", |r| {
            r.state().is_terminal() || r.state() == pb::RolloutState::Halted
        }),
    )
    .await;
    let done = seen.last().unwrap();
    // Every wave ran, but three hosts failed: not a success.
    assert_eq!(
        done.state(),
        pb::RolloutState::CompletedWithFailures,
        "{}",
        done.halt_reason
    );
    assert_eq!((done.hosts_succeeded, done.hosts_failed), (17, 3));

    for (i, h) in hosts.iter().enumerate() {
        let version = std::fs::read_to_string(h.dir.join("version")).unwrap_or_default();
        if [5, 7, killed].contains(&i) {
            continue;
        }
        assert_eq!(version.trim(), "15.20.8207.12", "host-{i:02}");
    }
    // The reasons, from the store, through a fresh controller on the same data.
    controller.stop().await;
    let store = rollout::store::Store::open(&data).unwrap();
    let rollout_id = store.rollouts().unwrap()[0].id;
    let detail = |host: &str| {
        store
            .rollout_hosts(rollout_id)
            .map(|r| r.unwrap())
            .find(|(h, _)| h == host)
            .map(|(_, r)| (r.state(), r.detail))
            .unwrap()
    };
    let (state, why) = detail("host-05");
    assert_eq!(state, pb::HostState::Failed);
    assert!(why.contains("timed out after 1s (process group killed)"), "{why}");
    let (_, why) = detail("host-07");
    assert!(why.contains("exit code 1: disk full on /var"), "{why}");
    let (_, why) = detail(&format!("host-{killed:02}"));
    assert!(why.contains("Unavailable"), "{why}");
    // Apply calls the agents received stay within first attempts + 10% (one first
    // attempt per host; the killed agent received none after its death).
    let mut received = 0;
    for (i, a) in agents.iter().enumerate() {
        if i == killed {
            continue;
        }
        let p = client_for(a)
            .await
            .probe(pb::ProbeRequest {
                host_id: format!("host-{i:02}"),
            })
            .await
            .unwrap()
            .into_inner();
        received += p.apply_calls;
    }
    assert!(received as f64 <= 20.0 * 1.1, "{received} Apply calls for 20 hosts");
    // Each deploy command ran at most once per host: no retry storm, no repeats.
    for (i, h) in hosts.iter().enumerate() {
        let runs = std::fs::read_to_string(h.dir.join("runs.log"))
            .unwrap_or_default()
            .lines()
            .count();
        assert!(runs <= 1, "host-{i:02} ran its deploy {runs} times");
    }
    for mut a in agents {
        let _ = a.terminate(Duration::from_secs(30)).await;
    }
}

/// Agents register themselves by heartbeat: a controller with an empty fleet file
/// learns their hosts (labels, address, version), deploys to them, keeps them across
/// its own restart, and marks an agent unreachable once it misses three heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_register_hosts_and_silent_ones_turn_unreachable() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let controller = Controller::start(&data, &rollout::inventory::FleetFile::default()).await;
    let mut client = controller.client().await;
    let mut hosts = Vec::new();
    let mut agents = Vec::new();
    for name in ["hb-1", "hb-2"] {
        let h = HostDir::new(root.path(), name, "true", "30s");
        let mut config = std::fs::read_to_string(&h.config).unwrap();
        config.push_str(&format!(
            "controller: {}\nheartbeat: 200ms\nlabels: {{region: emea, service: heartbeat-demo}}\n",
            controller.url
        ));
        std::fs::write(&h.config, config).unwrap();
        agents.push(h.start("127.0.0.1:0").await);
        hosts.push(h);
    }
    let list = |unhealthy_only| pb::ListHostsRequest {
        unhealthy_only,
        probe: false,
    };
    let registered = within(30, "both agents to register", async {
        loop {
            let hosts = client.list_hosts(list(false)).await.unwrap().into_inner().hosts;
            if hosts.len() == 2 && hosts.iter().all(|h| h.last_heartbeat_unix_ms > 0) {
                return hosts;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for (h, a) in registered.iter().zip(&agents) {
        assert_eq!(h.address, a.addr.to_string());
        assert_eq!(h.labels["service"], "heartbeat-demo");
        assert!(h.healthy && h.reachable);
    }
    let mut spec = plan("hb-fix", &["100%"], "0");
    spec.selector = [(
        "service".to_string(),
        pb::LabelValues {
            values: vec!["heartbeat-demo".into()],
        },
    )]
    .into();
    submit(&mut client, spec).await;
    let seen = within(
        60,
        "the rollout to succeed",
        watch_until(&mut client, "hb-fix", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    assert_eq!(seen.last().unwrap().hosts_succeeded, 2);
    assert_eq!(
        std::fs::read_to_string(hosts[0].dir.join("version")).unwrap().trim(),
        "15.20.8207.12"
    );
    // The next heartbeat reports the new version.
    within(10, "the version to come back by heartbeat", async {
        loop {
            let hosts = client.list_hosts(list(false)).await.unwrap().into_inner().hosts;
            if hosts.iter().all(|h| h.version == "15.20.8207.12") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    agents[0].kill9().await.unwrap();
    let silent = within(10, "the killed agent to turn unreachable", async {
        loop {
            let hosts = client.list_hosts(list(true)).await.unwrap().into_inner().hosts;
            if let Some(h) = hosts.iter().find(|h| !h.reachable) {
                return h.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(silent.id, "hb-1");
    let all = client.list_hosts(list(false)).await.unwrap().into_inner().hosts;
    assert!(all.iter().any(|h| h.id == "hb-2" && h.reachable));

    // A restarted controller (same store, no fleet file) still knows both hosts.
    controller.stop().await;
    let controller = Controller::start(&data, &rollout::inventory::FleetFile::default()).await;
    let mut client = controller.client().await;
    let known = client.list_hosts(list(false)).await.unwrap().into_inner().hosts;
    assert_eq!(
        known.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        ["hb-1", "hb-2"]
    );
    controller.stop().await;
    for mut a in agents {
        let _ = a.terminate(Duration::from_secs(30)).await;
    }
}

/// One agent process can serve several hosts, each with its own config, commands and
/// state: calls are dispatched by host id, and a host it does not serve is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_serves_several_hosts() {
    let root = tempfile::tempdir().unwrap();
    let hosts: Vec<HostDir> = ["multi-1", "multi-2", "multi-3"]
        .iter()
        .map(|h| HostDir::new(root.path(), h, "true", "30s"))
        .collect();
    let mut args: Vec<std::ffi::OsString> = vec!["agent".into()];
    for h in &hosts {
        args.push("--config".into());
        args.push(h.config.clone().into());
    }
    args.extend(["--listen".into(), "127.0.0.1:0".into()]);
    let mut agent = within(
        60,
        "the agent to start",
        Spawned::start(Path::new(EXE), args, Some(&root.path().join("agent.log"))),
    )
    .await
    .unwrap();
    let mut client = client(&agent).await;
    for (i, name) in ["multi-1", "multi-2", "multi-3"].iter().enumerate() {
        let op = format!("op-{i}");
        let answer = client.apply(deploy(name, &op, "7.0")).await.unwrap().into_inner();
        assert!(answer.ok, "{}", answer.detail);
        assert_eq!(hosts[i].runs(&op), 1, "{name} ran its own deploy once");
        for (j, other) in hosts.iter().enumerate() {
            if j != i {
                assert_eq!(other.runs(&op), 0, "not on the other hosts");
            }
        }
        let probed = client
            .probe(pb::ProbeRequest {
                host_id: name.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(probed.version, "7.0");
    }
    let refused = client.apply(deploy("elsewhere", "op-x", "7.0")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("serves 3 hosts, not `elsewhere`"),
        "{}",
        refused.message()
    );
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
