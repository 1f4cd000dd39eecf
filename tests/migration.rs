//! A data dir written by an older controller (schema 2: a sled tree per record kind)
//! with a rollout half done opens in a new controller, is migrated to one key space,
//! and the rollout finishes with every host applied exactly once: those done before
//! are not touched again, those in doubt are asked again with their operation id.

mod common;

use std::path::Path;

use common::*;
use prost::Message;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

const HOSTS: usize = 200;

/// Writes the old layout the way the old controller did: one sled tree per kind.
fn write_schema_2(dir: &Path, rollout: &pb::RolloutRecord, rows: &[(String, pb::RolloutHostRecord)]) {
    let db = sled::open(dir).unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("schema_version", &2u32.to_be_bytes()).unwrap();
    meta.insert("next_id", &rollout.id.to_be_bytes()).unwrap();
    db.open_tree("rollouts")
        .unwrap()
        .insert(rollout.id.to_be_bytes(), rollout.encode_to_vec())
        .unwrap();
    let hosts = db.open_tree("rollout_hosts").unwrap();
    let leases = db.open_tree("leases").unwrap();
    let lease = pb::LeaseRecord {
        kind: pb::lease_record::Kind::Rollout as i32,
        id: rollout.id,
        name: rollout.name.clone(),
    };
    for (host, row) in rows {
        let mut key = rollout.id.to_be_bytes().to_vec();
        key.extend_from_slice(host.as_bytes());
        hosts.insert(key, row.encode_to_vec()).unwrap();
        leases.insert(host.as_bytes(), lease.encode_to_vec()).unwrap();
    }
    let event = pb::EventRecord {
        at_unix_ms: 1,
        rollout_id: rollout.id,
        rollout_name: rollout.name.clone(),
        kind: "SubmitPlan".into(),
        detail: format!("{} hosts selected", rows.len()),
        principal: "alice".into(),
        result: "ok".into(),
        ..Default::default()
    };
    db.open_tree("events")
        .unwrap()
        .insert(7u64.to_be_bytes(), event.encode_to_vec())
        .unwrap();
    db.flush().unwrap();
}

/// A half-done rollout of an old data dir: wave 1 (20 hosts) done, 10 intents of wave
/// 2 without a result (5 of them ran on their agents before the crash), the rest not
/// started. The new controller migrates the dir, finishes the rollout, and every
/// host ran the deploy exactly once; the audit log kept its old line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_data_dir_migrates_and_finishes_its_rollout_exactly_once() {
    let sim = Sim::start(HOSTS, SimulatorOptions::default()).await;
    let mut agent = sim.client().await;
    let spec = plan("old-fix", &["10%", "50%", "100%"], "0");
    let version = spec.version.clone();
    let mut hosts: Vec<String> = sim.fleet.hosts.iter().map(|h| h.id.clone()).collect();
    hosts.sort();
    let mut rows = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let op = format!("r1-{host}-a1");
        let mut row = pb::RolloutHostRecord {
            operation_id: op.clone(),
            attempt: 1,
            previous_version: "15.20.8207.11".into(),
            ..Default::default()
        };
        let ran = i < 20 || (20..25).contains(&i);
        if ran {
            let answer = agent
                .apply(pb::ApplyRequest {
                    host_id: host.clone(),
                    operation_id: op,
                    action: pb::Action::Deploy as i32,
                    version: version.clone(),
                    epoch: 0,
                    detach: false,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(answer.ok, "{}", answer.detail);
        }
        match i {
            0..20 => {
                row.wave = 1;
                row.set_state(pb::HostState::Succeeded);
                row.version = version.clone();
            }
            20..30 => {
                row.wave = 2;
                row.set_state(pb::HostState::Dispatched);
            }
            _ => {
                row.set_state(pb::HostState::Pending);
                row.operation_id.clear();
                row.attempt = 0;
            }
        }
        rows.push((host.clone(), row));
    }
    let mut record = pb::RolloutRecord {
        id: 1,
        name: "old-fix".into(),
        plan: Some(spec),
        hosts_selected: HOSTS as u64,
        created_at_unix_ms: 1,
        updated_at_unix_ms: 1,
        current_wave: 1,
        ..Default::default()
    };
    record.set_state(pb::RolloutState::Running);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_schema_2(&data, &record, &rows);

    let controller = Controller::start(&data, &sim.fleet).await;
    let mut client = controller.client().await;
    let seen = within(
        120,
        "the migrated rollout to finish",
        watch_until(&mut client, "old-fix", |r| r.state().is_terminal()),
    )
    .await;
    let done = seen.last().unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!((done.hosts_succeeded, done.percent_complete), (HOSTS as u64, 100.0));
    for host in &hosts {
        assert_eq!(sim.sim.executed(host).await, Some(1), "{host} ran the deploy once");
    }
    // The old audit line is still there, before the new ones.
    let events = timeline(&mut client, "old-fix").await;
    assert_eq!(events[0].principal, "alice", "{events:?}");
    assert!(events.iter().any(|e| e.detail == "succeeded"), "{events:?}");
    // A new rollout gets a new id, after the old one.
    let again = submit(&mut client, plan("new-fix", &["100%"], "0")).await;
    assert_eq!(again.id, 2);
    controller.stop().await;
    sim.stop().await;
}
