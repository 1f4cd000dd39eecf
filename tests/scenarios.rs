//! The engine's behaviour as specifications: whole rollouts run in this process on
//! tokio's paused clock, against a fake fleet, with a wall clock that follows tokio's.
//! Bakes of ten minutes, gates that time out after an hour and progress deadlines
//! pass in virtual time, so each scenario takes well under a second of real time;
//! what needs real processes (crashes, SIGKILL, etcd, sshd, browsers) is tested in
//! the other files.
//!
//! Each scenario reads as the operator would see it: the states the rollout went
//! through, its reason, its counts, and what every host ran.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use rollout::engine::audit::Actor;
use rollout::engine::{self, Action, CallError, Clock, Engine, Fleet, Key};
use rollout::inventory::{FleetFile, Host, Inventory};
use rollout::plan::Plan;
use rollout::proto::v1 as pb;
use rollout::store::Store;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Wall-clock time that follows tokio's (paused) clock: bakes, gate deadlines and
/// every timestamp move with virtual time.
struct TokioClock {
    wall_ms: i64,
    started: Instant,
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.wall_ms + self.started.elapsed().as_millis() as i64
    }
}

/// What the fake fleet's hosts do, and what they ran.
#[derive(Default)]
struct Hosts {
    /// Hosts whose deploy fails (until taken out of the set).
    failing: Vec<String>,
    /// Hosts that never answer an Apply.
    silent: Vec<String>,
    /// Hosts a probe finds unhealthy.
    unhealthy: Vec<String>,
    /// Each host's version now.
    version: HashMap<String, String>,
    /// Each host's operations, in the order they ran: (operation id, version).
    ran: HashMap<String, Vec<(String, String)>>,
}

/// A fleet whose deploys take `deploy` of virtual time and do what [`Hosts`] says.
/// Like an agent, a host runs an operation id once and answers a repeat with the
/// first result.
#[derive(Clone)]
struct FakeFleet {
    deploy: Duration,
    hosts: Arc<Mutex<Hosts>>,
}

impl FakeFleet {
    fn hosts(&self) -> std::sync::MutexGuard<'_, Hosts> {
        self.hosts.lock().unwrap()
    }

    /// How many operations `host` ran.
    fn runs(&self, host: &str) -> usize {
        self.hosts().ran.get(host).map_or(0, Vec::len)
    }
}

impl Fleet for FakeFleet {
    fn apply(&self, _: &str, request: pb::ApplyRequest) -> BoxFuture<'static, Result<pb::ApplyResponse, CallError>> {
        let (hosts, deploy) = (self.hosts.clone(), self.deploy);
        Box::pin(async move {
            let host = request.host_id.clone();
            if hosts.lock().unwrap().silent.contains(&host) {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(deploy).await;
            let mut h = hosts.lock().unwrap();
            let previous = h.version.get(&host).cloned().unwrap_or_default();
            let ran = h.ran.entry(host.clone()).or_default();
            if ran.iter().any(|(op, _)| *op == request.operation_id) {
                return Ok(pb::ApplyResponse {
                    ok: true,
                    version: previous,
                    replayed: true,
                    healthy: true,
                    ..Default::default()
                });
            }
            ran.push((request.operation_id.clone(), request.version.clone()));
            if h.failing.contains(&host) {
                return Ok(pb::ApplyResponse {
                    ok: false,
                    version: previous,
                    detail: "deploy.sh exited 1".into(),
                    ..Default::default()
                });
            }
            h.version.insert(host, request.version.clone());
            Ok(pb::ApplyResponse {
                ok: true,
                version: request.version,
                previous_version: previous,
                detail: "deployed".into(),
                healthy: true,
                ..Default::default()
            })
        })
    }

    fn probe(&self, _: &str, host_id: &str) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>> {
        let h = self.hosts();
        let response = pb::ProbeResponse {
            healthy: !h.unhealthy.iter().any(|u| u == host_id),
            version: h.version.get(host_id).cloned().unwrap_or_default(),
            ..Default::default()
        };
        Box::pin(async move { Ok(response) })
    }
}

/// An engine over `n` hosts (`host-00`...) on version 1, on a temporary store.
struct Scene {
    engine: Arc<Engine>,
    fleet: FakeFleet,
    stop: CancellationToken,
}

impl Scene {
    async fn start(n: usize, deploy: Duration, hosts: Hosts) -> Scene {
        let mut file = FleetFile::default();
        let mut hosts = hosts;
        for i in 0..n {
            let id = format!("host-{i:02}");
            hosts.version.insert(id.clone(), "1".into());
            file.hosts.push(Host {
                id,
                address: "127.0.0.1:1".into(),
                labels: [("region".to_string(), "apac".to_string())].into(),
                customers: vec![],
                version: Some("1".into()),
                healthy: true,
            });
        }
        let fleet = FakeFleet {
            deploy,
            hosts: Arc::new(Mutex::new(hosts)),
        };
        let clock = TokioClock {
            wall_ms: 1_764_000_000_000,
            started: Instant::now(),
        };
        let stop = CancellationToken::new();
        let engine = Engine::start(
            Store::temporary().unwrap(),
            Arc::new(Inventory::new(file).unwrap()),
            Arc::new(fleet.clone()),
            Arc::new(clock),
            engine::Options::default(),
            stop.clone(),
        )
        .await
        .unwrap();
        Scene { engine, fleet, stop }
    }

    /// [`Scene::start`] with the deploys of `failing` failing.
    async fn failing(n: usize, deploy: Duration, failing: &[&str]) -> Scene {
        let failing = failing.iter().map(|h| h.to_string()).collect();
        Scene::start(
            n,
            deploy,
            Hosts {
                failing,
                ..Default::default()
            },
        )
        .await
    }

    /// Submits the plan: `rest` follows its name, kind and selector.
    async fn submit(&self, name: &str, rest: &str) {
        let yaml = format!("name: {name}\nkind: fix\nselector: {{region: apac}}\n{rest}");
        let plan = Plan::from_yaml(&yaml, "scenario.yaml").unwrap();
        let actor = Actor::new("alice", "operator", "SubmitPlan", "");
        self.engine.submit(plan, false, None, &actor).await.unwrap();
    }

    /// Follows `name` until `done`, noting each state it passes through; bounded in
    /// real time (virtual time jumps while the store flushes on its own threads).
    async fn until(&self, name: &str, done: impl Fn(&pb::Rollout) -> bool) -> (pb::Rollout, Vec<pb::RolloutState>) {
        let real = std::time::Instant::now();
        // A rollback is created just after its rollout ends: wait for it to exist.
        let mut rx = loop {
            match self.engine.watch(Key { name, id: 0 }) {
                Ok(rx) => break rx,
                Err(e) => assert!(real.elapsed() < Duration::from_secs(60), "{name}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut states = Vec::new();
        loop {
            let r = rx.borrow_and_update().as_ref().clone();
            if states.last() != Some(&r.state()) {
                states.push(r.state());
            }
            if done(&r) {
                return (r, states);
            }
            assert!(
                real.elapsed() < Duration::from_secs(60),
                "{name} never got there; it went through {states:?} and is {:?}: {}",
                r.state(),
                r.halt_reason
            );
            let _ = tokio::time::timeout(Duration::from_secs(60), rx.changed()).await;
        }
    }

    async fn act(&self, name: &str, action: Action) -> Result<Arc<pb::Rollout>, engine::Error> {
        let actor = Actor::new("alice", "operator", action.method(), "");
        self.engine.control(Key { name, id: 0 }, action, &actor).await
    }

    async fn stop(self) {
        self.stop.cancel();
        self.engine.stopped().await;
    }
}

fn ended(r: &pb::Rollout) -> bool {
    r.state().is_terminal()
}

fn halted_or_ended(r: &pb::Rollout) -> bool {
    r.state() == pb::RolloutState::Halted || r.state().is_terminal()
}

/// Too many failures in the first wave halt it with a reason naming the wave and the
/// counts; no host of a later wave is touched.
#[tokio::test(start_paused = true)]
async fn a_wave_over_its_threshold_halts_and_touches_nothing_after_it() {
    // Every deploy fails: the first wave (2 hosts of 20) is over its threshold.
    let failing = (0..20).map(|i| format!("host-{i:02}")).collect();
    let scene = Scene::start(
        20,
        Duration::from_secs(30),
        Hosts {
            failing,
            ..Default::default()
        },
    )
    .await;
    scene
        .submit(
            "halting",
            "version: \"2\"\nwaves: [10%, 100%]\nbake: 0s\non_failure: {max_failed: 0}\n",
        )
        .await;
    let (r, states) = scene.until("halting", halted_or_ended).await;
    assert_eq!(r.state(), pb::RolloutState::Halted, "{states:?}");
    assert!(r.halt_reason.starts_with("wave 1"), "{}", r.halt_reason);
    assert!(r.halt_reason.contains("2 of 2 hosts failed"), "{}", r.halt_reason);
    let touched = (0..20)
        .filter(|i| scene.fleet.runs(&format!("host-{i:02}")) > 0)
        .count();
    assert_eq!(touched, 2, "only the first wave's hosts ran anything");
    scene.stop().await;
}

/// A wave bakes for the plan's bake, then the next wave starts; the rollout succeeds
/// after the last bake, and takes (in virtual time) the deploys plus the bakes.
#[tokio::test(start_paused = true)]
async fn each_wave_bakes_then_the_next_starts() {
    let scene = Scene::start(20, Duration::from_secs(60), Hosts::default()).await;
    let started = Instant::now();
    scene
        .submit(
            "baking",
            "version: \"2\"\nwaves: [10%, 50%, 100%]\nbake: 10m\nmax_parallel: 100%\n",
        )
        .await;
    let (r, states) = scene.until("baking", ended).await;
    assert_eq!(r.state(), pb::RolloutState::Succeeded, "{states:?}: {}", r.halt_reason);
    use pb::RolloutState::{Baking, Pending, Running, Succeeded};
    assert_eq!(
        states,
        [Pending, Running, Baking, Running, Baking, Running, Baking, Succeeded]
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(3 * 60 + 3 * 600),
        "three deploys and three bakes take at least 33 minutes: {took:?}"
    );
    assert!(took < Duration::from_secs(40 * 60), "{took:?}");
    for i in 0..20 {
        assert_eq!(scene.fleet.runs(&format!("host-{i:02}")), 1, "host-{i:02} ran once");
    }
    scene.stop().await;
}

/// A gate after the first wave holds the rollout until two operators other than the
/// submitter approve (one is not enough); a gate nobody approves aborts at its
/// timeout, as its on_timeout says.
#[tokio::test(start_paused = true)]
async fn a_gate_opens_on_its_quorum_and_aborts_at_its_timeout() {
    let scene = Scene::start(20, Duration::from_secs(5), Hosts::default()).await;
    let gated = "version: \"2\"\nwaves: [10%, 100%]\nbake: 0s\ngates:\n  - after: 10%\n    approvals: 2\n    four_eyes: true\n    timeout: 1h\n    on_timeout: abort\n";
    scene.submit("approved", gated).await;
    let (r, _) = scene
        .until("approved", |r| r.state() == pb::RolloutState::AwaitingApproval)
        .await;
    let gate = r.gate.clone().expect("the open gate");
    let approve = |who: &'static str| {
        let actor = Actor::new(who, "operator", "ApproveRollout", who);
        let gate_id = gate.gate_id.clone();
        let engine = &scene.engine;
        async move {
            engine
                .approve(
                    Key {
                        name: "approved",
                        id: 0,
                    },
                    &gate_id,
                    "looks good",
                    &actor,
                )
                .await
        }
    };
    assert!(
        approve("alice").await.is_err(),
        "the submitter may not approve under four_eyes"
    );
    approve("bob").await.unwrap();
    let (r, _) = scene.until("approved", |_| true).await;
    assert_eq!(
        r.state(),
        pb::RolloutState::AwaitingApproval,
        "one approval of two holds it"
    );
    approve("carol").await.unwrap();
    let (r, _) = scene.until("approved", ended).await;
    assert_eq!(r.state(), pb::RolloutState::Succeeded, "{}", r.halt_reason);

    let waited = Instant::now();
    scene.submit("unapproved", &gated.replace("\"2\"", "\"3\"")).await;
    let (r, states) = scene.until("unapproved", ended).await;
    assert_eq!(r.state(), pb::RolloutState::Aborted, "{states:?}");
    assert!(waited.elapsed() >= Duration::from_secs(3600), "{:?}", waited.elapsed());
    assert_eq!(
        scene.fleet.runs("host-19"),
        1,
        "the aborted rollout never reached the second wave's hosts"
    );
    scene.stop().await;
}

/// A halted rollout retried after the cause is fixed re-runs its failed hosts, each
/// with a new operation id, and succeeds; the hosts that had succeeded run nothing
/// again.
#[tokio::test(start_paused = true)]
async fn a_retry_reruns_the_failed_hosts_once_the_cause_is_fixed() {
    let scene = Scene::failing(10, Duration::from_secs(10), &["host-00"]).await;
    scene
        .submit(
            "retried",
            "version: \"2\"\nwaves: [100%]\nbake: 0s\non_failure: {max_failed: 0}\n",
        )
        .await;
    let (r, _) = scene.until("retried", halted_or_ended).await;
    assert_eq!(r.state(), pb::RolloutState::Halted);
    scene.fleet.hosts().failing.clear();
    scene.act("retried", Action::Retry).await.unwrap();
    let (r, _) = scene.until("retried", ended).await;
    assert_eq!(r.state(), pb::RolloutState::Succeeded, "{}", r.halt_reason);
    let ran = scene.fleet.hosts().ran.clone();
    let ops: Vec<&str> = ran["host-00"].iter().map(|(op, _)| op.as_str()).collect();
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_ne!(ops[0], ops[1], "a retry is a new operation");
    for i in 1..10 {
        assert_eq!(scene.fleet.runs(&format!("host-{i:02}")), 1);
    }
    // Retrying a rollout that succeeded is refused, and changes nothing.
    assert!(scene.act("retried", Action::Retry).await.is_err());
    scene.stop().await;
}

/// A plan that rolls back on failure ends failed at the first bad wave and starts
/// `NAME-rollback`, which returns every host it touched to its own previous version.
#[tokio::test(start_paused = true)]
async fn a_bad_wave_rolls_back_every_host_it_touched() {
    let scene = Scene::failing(10, Duration::from_secs(10), &["host-05"]).await;
    scene
        .submit(
            "risky",
            "version: \"2\"\nwaves: [50%, 100%]\nbake: 0s\nmax_parallel: 1\non_failure: {max_failed: 0, action: rollback}\n",
        )
        .await;
    let (r, _) = scene.until("risky", ended).await;
    assert_eq!(r.state(), pb::RolloutState::Failed, "{}", r.halt_reason);
    let (back, _) = scene.until("risky-rollback", ended).await;
    assert_eq!(back.state(), pb::RolloutState::Succeeded, "{}", back.halt_reason);
    {
        let h = scene.fleet.hosts();
        for i in 0..10 {
            let host = format!("host-{i:02}");
            assert_eq!(h.version[&host], "1", "{host} is back on its previous version");
        }
        let untouched = (0..10).filter(|i| !h.ran.contains_key(&format!("host-{i:02}"))).count();
        assert!(
            untouched > 0,
            "the hosts after the failure ran nothing, not even the rollback"
        );
    }
    scene.stop().await;
}

/// A wave whose agents never answer halts at its progress deadline, naming the hosts
/// it waited on, recorded as failed with an unknown outcome, instead of hanging.
#[tokio::test(start_paused = true)]
async fn a_wave_with_silent_agents_halts_at_its_progress_deadline() {
    let silent = vec!["host-00".to_string(), "host-01".to_string()];
    let scene = Scene::start(
        20,
        Duration::from_secs(1),
        Hosts {
            silent,
            ..Default::default()
        },
    )
    .await;
    scene
        .submit(
            "hang",
            "version: \"2\"\nwaves: [100%]\nbake: 0s\nmax_parallel: 4\nprogress_deadline: 10m\n",
        )
        .await;
    let (r, _) = scene.until("hang", halted_or_ended).await;
    assert_eq!(r.state(), pb::RolloutState::Halted);
    assert_eq!(
        r.halt_reason,
        "wave 1 stuck: no progress for 10m; waiting on host-00, host-01"
    );
    assert_eq!(r.hosts_failed, 2);
    assert_eq!(r.hosts_in_flight, 0);
    scene.stop().await;
}
