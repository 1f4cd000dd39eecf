//! The notification outbox: every transition of a rollout is written to the store
//! with the change itself, one event per thing that happened, numbered 1, 2, 3...
//! with no gap, and nothing repeats while the rollout waits.

mod common;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;
use rollout::store::{Store, Subject};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_holds_each_transition_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sim = Sim::start(50, SimulatorOptions::default()).await;
    let controller = Controller::start(&data, &sim.fleet).await;
    let mut client = controller.client().await;
    let mut spec = plan("outboxed", &["10%", "50%", "100%"], "0");
    spec.bake = "1s".into();
    spec.gates = vec![pb::GateSpec {
        after: "10%".into(),
        ..Default::default()
    }];
    let r = submit(&mut client, spec).await;
    let waiting = within(
        60,
        "the gate",
        watch_until(&mut client, "outboxed", |r| {
            r.state() == pb::RolloutState::AwaitingApproval
        }),
    )
    .await
    .pop()
    .unwrap();
    // Waiting says nothing more.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    client
        .approve_rollout(pb::ApproveRolloutRequest {
            name: "outboxed".into(),
            gate_id: waiting.gate.unwrap().gate_id,
            ..Default::default()
        })
        .await
        .unwrap();
    let done = within(
        60,
        "the end",
        watch_until(&mut client, "outboxed", |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded);
    controller.stop().await;
    sim.stop().await;

    let store = Store::open(&data).unwrap();
    let notices = store.notices(Subject::Rollout(r.id), 0).unwrap();
    let kinds: Vec<&str> = notices.iter().map(|n| n.r#type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "rollout.submitted",
            "rollout.wave.started",
            "rollout.wave.completed",
            "rollout.awaiting_approval",
            "rollout.approved",
            "rollout.wave.started",
            "rollout.wave.completed",
            "rollout.wave.started",
            "rollout.wave.completed",
            "rollout.succeeded",
        ]
    );
    let seqs: Vec<u64> = notices.iter().map(|n| n.seq).collect();
    assert_eq!(seqs, (1..=notices.len() as u64).collect::<Vec<_>>(), "no gap");
    let last: serde_json::Value = serde_json::from_str(&notices.last().unwrap().data_json).unwrap();
    assert_eq!(last["state"], "succeeded");
    assert_eq!(last["hosts_succeeded"], 50);
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .starts_with("The fix (build 15.20.8207.12) has been deployed to 100% of the affected environment"),
        "{last}"
    );
    assert_eq!(notices[0].id, format!("rollout-{}-1", r.id));
    // Written with the rollout's record: the selection as submitted.
    let first: serde_json::Value = serde_json::from_str(&notices[0].data_json).unwrap();
    assert_eq!(
        (first["state"].as_str(), first["hosts_selected"].as_u64()),
        (Some("pending"), Some(50))
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .starts_with("The fix (build 15.20.8207.12) has not started yet: 50 hosts of "),
        "{first}"
    );
}
