//! A wave whose agents never answer halts at its progress deadline, naming the hosts it
//! waited on, instead of hanging forever. Runs the engine with tokio's paused clock and
//! a fleet whose calls to two hosts never return.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rollout::engine::{self, CallError, Engine, Fleet, Key, SystemClock};
use rollout::inventory::{FleetFile, Inventory};
use rollout::plan::Plan;
use rollout::proto::v1 as pb;
use rollout::store::Store;
use tokio_util::sync::CancellationToken;

/// Answers at once, except for hosts named `stuck-*`, which never answer.
struct HangingFleet;

impl Fleet for HangingFleet {
    fn apply(&self, _: &str, request: pb::ApplyRequest) -> BoxFuture<'static, Result<pb::ApplyResponse, CallError>> {
        Box::pin(async move {
            if request.host_id.starts_with("stuck-") {
                std::future::pending::<()>().await;
            }
            Ok(pb::ApplyResponse {
                ok: true,
                version: request.version,
                healthy: true,
                ..Default::default()
            })
        })
    }

    fn probe(&self, _: &str, _: &str) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>> {
        Box::pin(async {
            Ok(pb::ProbeResponse {
                healthy: true,
                ..Default::default()
            })
        })
    }
}

/// The wave halts "stuck" after its 10-minute progress deadline (virtual time), with
/// the two silent hosts named and recorded as failed with an unknown outcome.
#[tokio::test(start_paused = true)]
async fn a_wave_with_silent_agents_halts_at_its_progress_deadline() {
    let mut fleet = FleetFile::default();
    for i in 0..20 {
        let id = if i < 2 {
            format!("stuck-{i}")
        } else {
            format!("host-{i:02}")
        };
        fleet.hosts.push(rollout::inventory::Host {
            id,
            address: "127.0.0.1:1".into(),
            labels: [("region".to_string(), "apac".to_string())].into(),
            customers: vec![],
            version: Some("1".into()),
            healthy: true,
        });
    }
    let token = CancellationToken::new();
    let engine = Engine::start(
        Store::temporary().unwrap(),
        Arc::new(Inventory::new(fleet).unwrap()),
        Arc::new(HangingFleet),
        Arc::new(SystemClock),
        engine::Options::default(),
        token.clone(),
    )
    .await
    .unwrap();
    let plan = Plan::from_yaml(
        "name: hang\nkind: fix\nselector: {region: apac}\nversion: \"2\"\nwaves: [100%]\nbake: 0s\nmax_parallel: 4\nprogress_deadline: 10m\n",
        "hang.yaml",
    )
    .unwrap();
    let actor = rollout::engine::audit::Actor::new("test", "operator", "SubmitPlan", "");
    engine.submit(plan, false, None, &actor).await.unwrap();
    let rx = engine.watch(Key { name: "hang", id: 0 }).unwrap();
    // Virtual time jumps whenever the runtime is idle (sled's flushes run on their own
    // threads), so the wait is bounded in real time instead.
    let real = std::time::Instant::now();
    let halted = loop {
        let r = rx.borrow().clone();
        if r.state() == pb::RolloutState::Halted {
            break r;
        }
        assert!(
            real.elapsed() < Duration::from_secs(60),
            "the stuck wave never halted: the progress deadline did not fire"
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    assert_eq!(
        halted.halt_reason,
        "wave 1 stuck: no progress for 10m; waiting on stuck-0, stuck-1"
    );
    assert_eq!(halted.hosts_failed, 2);
    assert_eq!(halted.hosts_in_flight, 0);
    token.cancel();
    engine.stopped().await;
}
