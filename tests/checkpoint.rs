//! A running rollout's counters checkpoint: written when a wave starts, it lets a
//! restarted controller read only the hosts of the later waves and those in no wave
//! yet, and shows exactly what a re-count of every host shows; a retry that re-runs
//! hosts of settled waves clears it first, and the next restart counts every host.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;
use rollout::store::Store;

const HOSTS: u64 = 2_000;

/// The stored record of the only rollout, and whether its checkpoint (if any) still
/// holds, read as a restart reads it, with how many hosts that read returns.
fn stored(data: &Path) -> (pb::RolloutRecord, Option<(bool, usize)>) {
    let store = Store::open(data).expect("the data dir opens");
    let record = store.rollouts().expect("rollouts").remove(0);
    let read = record.checkpoint.as_ref().map(|c| {
        let mut rows = store.rollout_hosts_unsettled(record.id, c.through_wave, c.since_update);
        let n = rows.by_ref().inspect(|r| assert!(r.is_ok(), "a row: {r:?}")).count();
        (rows.checkpoint_holds(), n)
    });
    (record, read)
}

/// Per 1-based wave: (succeeded, failed), counted host by host through the API.
async fn recount(client: &mut Client, name: &str) -> BTreeMap<u32, (u64, u64)> {
    let mut per_wave = BTreeMap::new();
    for h in all_hosts(client, name, pb::HostFilter::All, 500).await {
        let e = per_wave.entry(h.wave).or_insert((0, 0));
        match h.state.as_str() {
            "succeeded" => e.0 += 1,
            "failed" => e.1 += 1,
            _ => {}
        }
    }
    per_wave.retain(|w, _| *w > 0);
    per_wave
}

fn groups(r: &pb::Rollout) -> Vec<(String, String, u64)> {
    r.failures
        .iter()
        .map(|g| (g.reason.clone(), g.kind.clone(), g.hosts))
        .collect()
}

fn shown(r: &pb::Rollout) -> BTreeMap<u32, (u64, u64)> {
    r.waves
        .iter()
        .filter(|w| w.succeeded + w.failed > 0)
        .map(|w| (w.index + 1, (w.succeeded, w.failed)))
        .collect()
}

/// A controller restarted while a rollout is paused in its second wave's bake reads
/// the settled first wave from its checkpoint, not host by host, and shows the same
/// per-wave counts and failure groups as before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_starts_from_the_counters_of_the_settled_waves() {
    let h = Harness::start(
        HOSTS as usize,
        SimulatorOptions {
            fail_rate: 0.03,
            seed: 11,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let mut spec = plan("checkpointed-fix", &["5%", "20%", "50%", "100%"], "10%");
    spec.bake = "1s".into();
    submit(&mut client, spec).await;
    // Paused in the second wave's bake: the first wave is settled.
    within(
        60,
        "the second wave's bake",
        watch_until(&mut client, "checkpointed-fix", |r| {
            r.current_wave == 1 && r.state() == pb::RolloutState::Baking
        }),
    )
    .await;
    client.pause_rollout(action("checkpointed-fix")).await.expect("pause");
    let paused = within(
        60,
        "the pause",
        watch_until(&mut client, "checkpointed-fix", |r| {
            r.state() == pb::RolloutState::Paused
        }),
    )
    .await
    .pop()
    .unwrap();
    let early_failures = paused.waves[0].failed + paused.waves[1].failed;
    assert!(early_failures > 0, "some hosts of the first waves failed (3%)");

    let h = h
        .restart_controller(|data| {
            let (record, read) = stored(data);
            let checkpoint = record
                .checkpoint
                .as_ref()
                .expect("written when the second wave started");
            assert_eq!(checkpoint.through_wave, 1);
            let (holds, read) = read.unwrap();
            assert!(holds, "nothing touched the first wave since");
            assert_eq!(read as u64, HOSTS - 100, "the first wave's 100 hosts are not read");
        })
        .await;
    let mut client = h.client.clone();
    let again = get(&mut client, "checkpointed-fix").await;
    assert_eq!(again.state(), pb::RolloutState::Paused);
    assert_eq!(again.waves, paused.waves, "per-wave counts");
    // The same groups and counts; the hosts quoted may be other failed ones (a load
    // meets them in another order than the answers came).
    assert_eq!(groups(&again), groups(&paused), "failure groups");
    let failed: Vec<String> = all_hosts(&mut client, "checkpointed-fix", pb::HostFilter::Failed, 500)
        .await
        .into_iter()
        .map(|h| h.host_id)
        .collect();
    assert!(
        again
            .failures
            .iter()
            .flat_map(|g| &g.host_ids)
            .all(|h| failed.contains(h))
    );
    assert_eq!(
        (again.hosts_succeeded, again.hosts_failed, again.customers_mitigated),
        (paused.hosts_succeeded, paused.hosts_failed, paused.customers_mitigated)
    );
    assert_eq!(shown(&again), recount(&mut client, "checkpointed-fix").await);

    // The third wave fails wholesale: halted, with a checkpoint through the second.
    h.sim.sim.set_fail_rate(0.9);
    client.resume_rollout(action("checkpointed-fix")).await.expect("resume");
    let halted = within(
        60,
        "the third wave to halt",
        watch_until(&mut client, "checkpointed-fix", halted_or_done),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted, "{}", halted.halt_reason);
    assert_eq!(halted.current_wave, 2);
    // A retry re-runs the failed hosts of every wave so far, the settled ones too: the
    // checkpoint is cleared before they are written, and they fail again.
    client.retry_rollout(action("checkpointed-fix")).await.expect("retry");
    let again = within(
        60,
        "the retry to halt",
        watch_until(&mut client, "checkpointed-fix", |r| r.retries == 1 && halted_or_done(r)),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(again.state(), pb::RolloutState::Halted, "{}", again.halt_reason);
    let h = h
        .restart_controller(|data| {
            let (record, read) = stored(data);
            assert!(read.is_none(), "cleared by the retry: {:?}", record.checkpoint);
        })
        .await;
    let mut client = h.client.clone();
    let restarted = get(&mut client, "checkpointed-fix").await;
    assert_eq!(restarted.waves, again.waves);
    assert_eq!(shown(&restarted), recount(&mut client, "checkpointed-fix").await);

    // Fixed: a retry finishes it, every host once more at most.
    h.sim.sim.set_fail_rate(0.0);
    client.retry_rollout(action("checkpointed-fix")).await.expect("retry");
    let done = within(
        60,
        "the rollout to finish",
        watch_until(&mut client, "checkpointed-fix", |r| r.retries == 2 && halted_or_done(r)),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!(done.hosts_succeeded, HOSTS);
    assert_eq!(shown(&done), recount(&mut client, "checkpointed-fix").await);
    h.stop().await;
}
