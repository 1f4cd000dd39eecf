//! Highly available controllers on etcd, with real processes: a three-member etcd
//! cluster (Debian's `etcd-server`) and two `rollout serve --store etcd://...` on
//! loopback ports, a simulated fleet with agent latency. One leads, the other stands
//! by (forwarding calls to the leader); the leader killed (SIGKILL) or
//! paused (SIGSTOP) mid-wave, the standby takes over and finishes the rollout, and
//! every host is applied exactly once. Skipped without `etcd`, failing instead with
//! ROLLOUT_ETCD_TESTS=required.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rollout::cli::connect;
use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;
use rollout::proto::v1::agent_client::AgentClient;
use rollout::store::etcd_backend::local::LocalEtcd;

const EXE: &str = env!("CARGO_BIN_EXE_rollout");
const HOSTS: usize = 20_000;

async fn controller(etcd: &LocalEtcd, fleet: &Path, log: &Path) -> Spawned {
    let store = etcd.url("ha");
    let args = [
        "serve",
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--fleet",
        &fleet.display().to_string(),
        "--leader-lease",
        "3s",
    ];
    within(
        60,
        "a controller to start",
        Spawned::start(Path::new(EXE), args, Some(log)),
    )
    .await
    .expect("the controller starts")
}

/// True once `server` answers as the leader: it lists itself as such. A standby
/// forwards the question to the leader, which may be paused: a second at most.
async fn leads(server: &str) -> bool {
    let ask = async {
        let mut c = connect(server).await.ok()?;
        let listed = c.list_controllers(pb::ListControllersRequest {}).await.ok()?;
        Some(
            listed
                .into_inner()
                .controllers
                .iter()
                .any(|c| c.advertise == server && c.role == "leader"),
        )
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The simulator's count of Apply calls received (any host's probe says it).
async fn apply_calls(agent: &mut AgentClient<tonic::transport::Channel>, host: &str) -> u64 {
    agent
        .probe(pb::ProbeRequest { host_id: host.into() })
        .await
        .map(|p| p.into_inner().apply_calls)
        .unwrap_or(0)
}

/// Starts etcd, a simulator and two controllers; returns them with the leader first.
struct Site {
    etcd: LocalEtcd,
    agent: Spawned,
    fleet: rollout::fleet::FleetFile,
    leader: Spawned,
    standby: Spawned,
    /// Every process's log.
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn site() -> Option<Site> {
    let etcd = LocalEtcd::start_for_test(3).await?;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (agent, fleet, ctl_fleet) = spawn_simulator(dir.path(), HOSTS, "5..20", &log).await;
    let first = controller(&etcd, &ctl_fleet, &log).await;
    let first_url = format!("http://{}", first.addr);
    within(60, "the first controller to lead", async {
        while !leads(&first_url).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let second = controller(&etcd, &ctl_fleet, &log).await;
    Some(Site {
        etcd,
        agent,
        fleet,
        leader: first,
        standby: second,
        log,
        _dir: dir,
    })
}

impl Site {
    /// Submits the rollout to the leader and waits until it is `percent` done.
    async fn rollout_until(&self, percent: f64) -> Client {
        let mut client = connect(&format!("http://{}", self.leader.addr)).await.unwrap();
        let mut spec = plan("ha-fix", &["1%", "10%", "50%", "100%"], "0");
        spec.max_parallel = 200;
        submit(&mut client, spec).await;
        within(
            120,
            "the rollout to get going",
            watch_until(&mut client, "ha-fix", |r| r.percent_complete >= percent),
        )
        .await;
        client
    }

    /// Waits for the standby to lead, and for the rollout to succeed there; then
    /// checks that every host ran the fix exactly once.
    async fn finishes_on_the_standby(mut self) -> pb::Rollout {
        let url = format!("http://{}", self.standby.addr);
        within(60, "the standby to take over", async {
            while !leads(&url).await {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let mut client = connect(&url).await.unwrap();
        let done = within(
            300,
            "the rollout to finish on the new leader",
            watch_until(&mut client, "ha-fix", |r| r.state().is_terminal()),
        )
        .await
        .pop()
        .unwrap();
        assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
        assert_eq!(done.hosts_succeeded, HOSTS as u64);
        let mut twice = Vec::new();
        for (host, p) in probe_all(&self.agent.addr.to_string(), &self.fleet).await {
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
        assert_eq!(self.standby.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
        assert_eq!(self.agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
        self.etcd.stop();
        done
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_the_rollout_continues_exactly_once() {
    let Some(mut site) = site().await else {
        return;
    };
    site.rollout_until(20.0).await;
    // The standby forwards every call to the leader, streams included: a client may
    // be pointed at any controller.
    let mut via_standby = connect(&format!("http://{}", site.standby.addr)).await.unwrap();
    let listed = within(30, "the standby to forward to the leader", async {
        loop {
            match via_standby.list_rollouts(pb::ListRolloutsRequest::default()).await {
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
        watch_until(&mut via_standby, "ha-fix", |r| r.percent_complete >= 25.0),
    )
    .await;
    // `rollout controllers`, asked of the standby: both, the leader first.
    let standby_url = format!("http://{}", site.standby.addr);
    let listed = rollout(&["--server", &standby_url, "controllers", "--output", "json"]).await;
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let roles: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["advertise"].as_str().unwrap().into(),
                c["role"].as_str().unwrap().into(),
            )
        })
        .collect();
    let leader_url = format!("http://{}", site.leader.addr);
    assert_eq!(
        roles,
        [
            (leader_url, "leader".to_string()),
            (standby_url.clone(), "standby".to_string())
        ]
    );
    assert!(listed[0]["epoch"].as_u64().unwrap() > 0);
    let mut agent = AgentClient::connect(format!("http://{}", site.agent.addr))
        .await
        .unwrap();
    let host = site.fleet.hosts[0].id.clone();
    site.leader.kill9().await.unwrap();
    let killed = Instant::now();
    // Calls the dead leader had sent may still land: wait until the count settles.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = apply_calls(&mut agent, &host).await;
    let first = within(60, "the new leader's first Apply", async {
        loop {
            if apply_calls(&mut agent, &host).await > before {
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
    let logged = std::fs::read_to_string(&site.log).unwrap_or_default();
    for line in logged.lines().filter(|l| {
        [
            "leading",
            "standing by",
            "inventory loaded",
            "rollout loaded",
            "since_start_ms",
            "asking agents",
        ]
        .iter()
        .any(|w| l.contains(w))
    }) {
        eprintln!("  {line}");
    }
    // The target (under 5 s with the default lease) is a benchmark's, reported here;
    // the bound only catches a takeover that does not happen in reasonable time.
    assert!(first < Duration::from_secs(30), "failover took {first:?}");
    site.finishes_on_the_standby().await;
}

/// A leader paused past its lease gets nothing done when it resumes: its writes are
/// refused (it stops, saying it lost the leadership), and agents refuse its epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_gets_nothing_done_when_it_resumes() {
    let Some(mut site) = site().await else {
        return;
    };
    site.rollout_until(20.0).await;
    let pid = site.leader.pid().expect("the leader runs") as i32;
    // SAFETY: kill sends a signal to a child process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let url = format!("http://{}", site.standby.addr);
    within(60, "the standby to take over", async {
        while !leads(&url).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let code = site.leader.wait(Duration::from_secs(30)).await.unwrap();
    assert_ne!(code, Some(0), "the old leader stops with an error");
    let logged = std::fs::read_to_string(&site.log).unwrap_or_default();
    assert!(
        logged.contains("lost the leadership"),
        "the old leader says why it stopped"
    );
    site.finishes_on_the_standby().await;
}

/// A leader that loses etcd altogether cannot renew its lease: it stops dispatching
/// within the lease (it exits, saying why) and no Apply of its reaches a host after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_etcd_stops_within_its_lease() {
    let Some(site) = site().await else {
        return;
    };
    site.rollout_until(5.0).await;
    let Site {
        etcd,
        mut agent,
        fleet,
        mut leader,
        mut standby,
        log,
        _dir,
    } = site;
    etcd.stop();
    let cut = Instant::now();
    let code = leader.wait(Duration::from_secs(30)).await.unwrap();
    let took = cut.elapsed();
    eprintln!(
        "a leader cut off from etcd stopped {} ms after (lease 3 s)",
        took.as_millis()
    );
    assert!(
        code.is_some_and(|c| c != 0),
        "it exits by itself, with an error: {code:?}"
    );
    assert!(took < Duration::from_secs(15), "it stopped {took:?} after losing etcd");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("lost the leadership"), "it says why");
    let mut calls = AgentClient::connect(format!("http://{}", agent.addr)).await.unwrap();
    let host = fleet.hosts[0].id.clone();
    let after = apply_calls(&mut calls, &host).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(apply_calls(&mut calls, &host).await, after, "nothing sent once stopped");
    standby.kill9().await.unwrap();
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
