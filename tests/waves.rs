//! A plan rolled over 2,000 simulated hosts through the real controller and client.

mod common;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

/// Waves [1%, 10%, 50%, 100%] over 2,000 hosts cover 20, 200, 1,000 and 2,000 hosts,
/// the rollout ends at 100%, and every host reports the new version through Probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_cover_their_share_and_every_host_gets_the_fix() {
    let h = Harness::start(2_000, SimulatorOptions::default()).await;
    let (sim, mut client) = (&h.sim, h.client.clone());

    let created = submit(&mut client, plan("big-fix", &["1%", "10%", "50%", "100%"], "0")).await;
    assert_eq!(created.hosts_selected, 2_000);
    let targets: Vec<u64> = created.waves.iter().map(|w| w.target_hosts).collect();
    assert_eq!(targets, [20, 200, 1_000, 2_000]);

    let seen = within(
        120,
        "the rollout to succeed",
        watch_until(&mut client, "big-fix", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    let last = seen.last().unwrap();
    assert_eq!(last.percent_complete, 100.0);
    assert_eq!(last.hosts_succeeded, 2_000);
    let sizes: Vec<(u64, u64)> = last.waves.iter().map(|w| (w.size, w.succeeded)).collect();
    assert_eq!(sizes, [(20, 20), (180, 180), (800, 800), (1_000, 1_000)]);
    // Progress seen by a watcher never goes backwards, and no wave starts before the
    // previous one is complete.
    for pair in seen.windows(2) {
        assert!(
            pair[1].percent_complete >= pair[0].percent_complete,
            "percent went down"
        );
    }
    for r in &seen {
        let w = r.current_wave as usize;
        let before: u64 = r.waves[..w].iter().map(|w| w.succeeded).sum();
        let expected = if w == 0 { 0 } else { r.waves[w - 1].target_hosts };
        assert_eq!(before, expected, "waves before {} are complete", w + 1);
    }

    let mut agent = sim.client().await;
    for host in &sim.fleet.hosts {
        let p = agent
            .probe(pb::ProbeRequest {
                host_id: host.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.version, "15.20.8207.12", "{}", host.id);
        assert_eq!(p.operations_executed, 1, "{} ran once", host.id);
    }
    h.stop().await;
}

/// A dry run lists each wave's hosts and creates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_previews_waves_and_stores_nothing() {
    let h = Harness::start(300, SimulatorOptions::default()).await;
    let (sim, mut client) = (&h.sim, h.client.clone());
    let response = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(plan(
                "preview",
                &["10%", "100%"],
                "0",
            ))),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let preview = response.preview;
    assert_eq!(preview.len(), 2);
    assert_eq!((preview[0].new_hosts, preview[0].cumulative_hosts), (30, 30));
    assert_eq!((preview[1].new_hosts, preview[1].cumulative_hosts), (270, 300));
    assert_eq!(preview[0].host_ids.len(), 20, "capped listing");
    let list = client
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.rollouts.is_empty(), "a dry run stores nothing");
    let mut agent = sim.client().await;
    let p = agent
        .probe(pb::ProbeRequest {
            host_id: preview[0].host_ids[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.operations_executed, 0, "a dry run touches no host");
    h.stop().await;
}

/// The same request_id returns the same rollout; a second active rollout with the
/// same name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_are_idempotent_and_names_unique() {
    let h = Harness::start(
        200,
        SimulatorOptions {
            latency_ms: (50, 50).into(),
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let request = |id: &str| pb::SubmitPlanRequest {
        plan: Some(pb::submit_plan_request::Plan::Spec(plan("same", &["50%", "100%"], "0"))),
        request_id: id.into(),
        ..Default::default()
    };
    let first = client.submit_plan(request("r-1")).await.unwrap().into_inner();
    let again = client.submit_plan(request("r-1")).await.unwrap().into_inner();
    assert!(again.replayed);
    assert_eq!(first.rollout.unwrap().id, again.rollout.unwrap().id);
    let clash = client.submit_plan(request("r-2")).await.unwrap_err();
    assert_eq!(clash.code(), tonic::Code::AlreadyExists, "{clash:?}");
    assert!(clash.message().contains("already active"), "{}", clash.message());
    let missing = client
        .get_rollout(pb::GetRolloutRequest {
            name: "nope".into(),
            id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    client.abort_rollout(action("same")).await.unwrap();
    h.stop().await;
}

/// A controller on a store made afresh (a wiped data dir, a second site's
/// controller) over hosts an earlier store already deployed to: its rollout 1 is not
/// the earlier rollout 1. Its operations carry the store's own instance name, so the
/// agents run them instead of replaying the earlier results, and every host really
/// runs the new version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_made_afresh_never_reuses_an_operation_id_the_hosts_ran() {
    let h = Harness::start(20, SimulatorOptions::default()).await;
    let mut client = h.client.clone();
    let mut first = plan("fix", &["100%"], "0");
    first.version = "2.0".into();
    submit(&mut client, first).await;
    let done = watch_until(&mut client, "fix", |r| r.state().is_terminal())
        .await
        .pop()
        .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);

    let fresh = tempfile::tempdir().unwrap();
    let other = Controller::start(&fresh.path().join("data"), &h.sim.fleet).await;
    let mut client = other.client().await;
    let mut second = plan("fix", &["100%"], "0");
    second.version = "3.0".into();
    let created = submit(&mut client, second).await;
    assert_eq!(created.id, 1, "the fresh store numbers its rollouts from 1 again");
    let done = watch_until(&mut client, "fix", |r| r.state().is_terminal())
        .await
        .pop()
        .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    for (host, p) in probe_all(&h.sim.addr, &h.sim.fleet).await {
        assert_eq!(p.version, "3.0", "{host} runs the fresh store's version");
    }
    other.stop().await;
    h.stop().await;
}
