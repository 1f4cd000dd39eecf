//! Failure thresholds, halts, and what operators can do about them.

mod common;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

/// With half the deploys failing, the rollout halts in its first wave with a reason
/// naming the wave and the counts; nothing past the first wave is touched. After the
/// cause is fixed (fail rate lowered), resume retries the failed hosts and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_halt_the_first_wave_and_resume_finishes() {
    let h = Harness::start(
        1_000,
        SimulatorOptions {
            fail_rate: 0.5,
            ..Default::default()
        },
    )
    .await;
    let (sim, mut client) = (&h.sim, h.client.clone());

    submit(&mut client, plan("flaky-fix", &["10%", "50%", "100%"], "2%")).await;
    let seen = within(
        60,
        "the rollout to halt",
        watch_until(&mut client, "flaky-fix", halted_or_done),
    )
    .await;
    let halted = seen.last().unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert_eq!(halted.current_wave, 0);
    assert!(halted.halt_reason.starts_with("wave 1: "), "{}", halted.halt_reason);
    assert!(
        halted.halt_reason.contains("more than the 2 allowed"),
        "{}",
        halted.halt_reason
    );
    assert!(
        halted.halt_reason.contains("simulated deploy failure"),
        "{}",
        halted.halt_reason
    );
    // The same through GetRollout.
    let got = get(&mut client, "flaky-fix").await;
    assert_eq!(got.halt_reason, halted.halt_reason);
    assert_eq!(got.waves[1].succeeded + got.waves[1].failed, 0, "wave 2 untouched");
    assert!(
        got.hosts_succeeded + got.hosts_failed <= 100,
        "at most the first wave was dispatched"
    );
    assert_eq!(got.hosts_in_flight, 0);

    // Pause makes no sense while halted; the refusal says what would.
    let refused = client.pause_rollout(action("flaky-fix")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("resume it"), "{}", refused.message());

    sim.sim.set_fail_rate(0.0);
    client.resume_rollout(action("flaky-fix")).await.unwrap();
    let seen = within(
        60,
        "the resumed rollout to succeed",
        watch_until(&mut client, "flaky-fix", halted_or_done),
    )
    .await;
    let done = seen.last().unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!(done.percent_complete, 100.0);
    assert_eq!(done.hosts_failed, 0, "the failed hosts were retried");

    let again = client.resume_rollout(action("flaky-fix")).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    h.stop().await;
}

/// Aborting a halted rollout stops it for good: nothing more is dispatched, it stays
/// queryable, and it cannot be resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_after_a_halt_is_final() {
    let h = Harness::start(
        500,
        SimulatorOptions {
            fail_rate: 0.9,
            ..Default::default()
        },
    )
    .await;
    let (sim, mut client) = (&h.sim, h.client.clone());
    submit(&mut client, plan("doomed", &["10%", "100%"], "1")).await;
    within(
        60,
        "the rollout to halt",
        watch_until(&mut client, "doomed", halted_or_done),
    )
    .await;
    let aborted = client
        .abort_rollout(pb::RolloutActionRequest {
            name: "doomed".into(),
            reason: "the fix is bad; preparing another".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.state(), pb::RolloutState::Aborted);
    assert_eq!(aborted.halt_reason, "the fix is bad; preparing another");
    let touched = aborted.hosts_succeeded + aborted.hosts_failed;
    sim.sim.set_fail_rate(0.0);
    let refused = client.resume_rollout(action("doomed")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("submit a new plan"), "{}", refused.message());
    let later = get(&mut client, "doomed").await;
    assert_eq!(
        later.hosts_succeeded + later.hosts_failed,
        touched,
        "nothing dispatched after abort"
    );
    // The name is free again for a new rollout.
    let fresh = submit(&mut client, plan("doomed", &["100%"], "0")).await;
    assert_ne!(fresh.id, aborted.id);
    h.stop().await;
}

/// Pause lets calls in flight finish and sends nothing more; resume goes on to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_and_resume_continues() {
    let h = Harness::start(
        1_000,
        SimulatorOptions {
            latency_ms: (20, 40).into(),
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let mut spec = plan("slow-fix", &["50%", "100%"], "0");
    spec.max_parallel = 20;
    submit(&mut client, spec).await;
    within(
        60,
        "some progress",
        watch_until(&mut client, "slow-fix", |r| r.hosts_succeeded >= 50),
    )
    .await;
    let pause = pb::RolloutActionRequest {
        name: "slow-fix".into(),
        request_id: "pause-1".into(),
        ..Default::default()
    };
    let paused = client.pause_rollout(pause.clone()).await.unwrap().into_inner();
    assert_eq!(paused.state(), pb::RolloutState::Paused);
    let drained = within(
        30,
        "calls in flight to finish",
        watch_until(&mut client, "slow-fix", |r| r.hosts_in_flight == 0),
    )
    .await;
    let settled = drained.last().unwrap().hosts_succeeded;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let still = get(&mut client, "slow-fix").await;
    assert_eq!(still.state(), pb::RolloutState::Paused);
    assert_eq!(still.hosts_succeeded, settled, "nothing was dispatched while paused");
    assert!(still.hosts_succeeded < 1_000);
    client.resume_rollout(action("slow-fix")).await.unwrap();
    let seen = within(
        60,
        "the rollout to succeed",
        watch_until(&mut client, "slow-fix", halted_or_done),
    )
    .await;
    assert_eq!(seen.last().unwrap().state(), pb::RolloutState::Succeeded);
    assert_eq!(seen.last().unwrap().hosts_succeeded, 1_000);
    h.stop().await;
}

/// A change that breaks hosts: deploys succeed but leave a third of the hosts
/// unhealthy. The health gate at the end of the first bake halts the rollout, naming
/// the wave, the counts and example hosts; hosts already unhealthy before the wave are
/// not blamed on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_that_turn_unhealthy_during_the_bake_halt_the_rollout() {
    let h = Harness::start(
        1_000,
        SimulatorOptions {
            break_rate: 0.33,
            unhealthy_rate: 0.05,
            seed: 9,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let mut spec = plan("breaking-fix", &["10%", "100%"], "5%");
    spec.bake = "200ms".into();
    submit(&mut client, spec).await;
    let seen = within(
        60,
        "the health gate to halt",
        watch_until(&mut client, "breaking-fix", halted_or_done),
    )
    .await;
    let halted = seen.last().unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(halted.halt_reason.starts_with("wave 1: "), "{}", halted.halt_reason);
    assert!(
        halted.halt_reason.contains("unhealthy after the bake"),
        "{}",
        halted.halt_reason
    );
    assert!(
        halted.halt_reason.contains("unhealthy (unhealthy (simulated))"),
        "{}",
        halted.halt_reason
    );
    assert_eq!(halted.waves[0].failed, 0, "every apply succeeded");
    assert_eq!(
        halted.waves[1].succeeded + halted.waves[1].failed,
        0,
        "wave 2 untouched"
    );

    // Hosts unhealthy before the change do not trip the gate.
    let h2 = Harness::start(
        1_000,
        SimulatorOptions {
            unhealthy_rate: 0.2,
            seed: 9,
            ..Default::default()
        },
    )
    .await;
    let mut client = h2.client.clone();
    let mut spec = plan("harmless-fix", &["10%", "100%"], "5%");
    spec.bake = "100ms".into();
    submit(&mut client, spec).await;
    let seen = within(
        60,
        "the rollout to succeed",
        watch_until(&mut client, "harmless-fix", halted_or_done),
    )
    .await;
    assert_eq!(
        seen.last().unwrap().state(),
        pb::RolloutState::Succeeded,
        "{}",
        seen.last().unwrap().halt_reason
    );
    h2.stop().await;
    h.stop().await;
}

/// `on_failure.action: rollback`: when the second wave fails, the rollout ends and a
/// rollback rollout returns every host it touched to its previous version, which the
/// simulator confirms; `abort --rollback` does the same by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_wave_rolls_back_every_touched_host() {
    let h = Harness::start(
        400,
        SimulatorOptions {
            seed: 4,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let mut spec = plan("risky-fix", &["25%", "100%"], "2%");
    spec.bake = "300ms".into();
    spec.on_failure = Some(pb::OnFailureSpec {
        max_failed: "2%".into(),
        action: "rollback".into(),
    });
    submit(&mut client, spec).await;
    within(
        60,
        "the first wave to bake",
        watch_until(&mut client, "risky-fix", |r| r.state() == pb::RolloutState::Baking),
    )
    .await;
    h.sim.sim.set_fail_rate(0.5);
    let seen = within(
        60,
        "the rollout to fail",
        watch_until(&mut client, "risky-fix", |r| {
            matches!(r.state(), pb::RolloutState::Failed | pb::RolloutState::Succeeded)
        }),
    )
    .await;
    let failed = seen.last().unwrap();
    assert_eq!(failed.state(), pb::RolloutState::Failed);
    assert!(
        failed.halt_reason.contains("rolling back every host it touched"),
        "{}",
        failed.halt_reason
    );
    let touched = failed.hosts_succeeded;
    assert!(touched >= 100, "wave 1 and part of wave 2: {touched}");
    h.sim.sim.set_fail_rate(0.0);
    let seen = within(60, "the rollback to succeed", async {
        loop {
            let list = client
                .list_rollouts(pb::ListRolloutsRequest::default())
                .await
                .unwrap()
                .into_inner();
            if list.rollouts.iter().any(|r| r.name == "risky-fix-rollback") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        watch_until(&mut client, "risky-fix-rollback", halted_or_done).await
    })
    .await;
    let rollback = seen.last().unwrap();
    assert_eq!(
        rollback.state(),
        pb::RolloutState::Succeeded,
        "{}",
        rollback.halt_reason
    );
    assert_eq!(rollback.kind, "rollback");
    assert_eq!(rollback.rolls_back, "15.20.8207.12");
    let says = format!(
        "The rollback of build 15.20.8207.12 to the previous version has reached 100% of the affected environment ({touched} of {touched} hosts;"
    );
    assert!(rollback.summary.starts_with(&says), "{}", rollback.summary);
    assert_eq!(rollback.hosts_selected, touched, "every touched host, and only those");
    assert_eq!(rollback.waves.len(), 1, "one fast wave by default");
    let mut agent = h.sim.client().await;
    for host in &h.sim.fleet.hosts {
        let p = agent
            .probe(pb::ProbeRequest {
                host_id: host.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            p.version, "15.20.8207.11",
            "{} is back on its previous version",
            host.id
        );
    }

    // By hand: abort --rollback.
    let mut spec = plan("manual-fix", &["50%", "100%"], "0");
    spec.bake = "5s".into();
    submit(&mut client, spec).await;
    within(
        60,
        "the first wave to bake",
        watch_until(&mut client, "manual-fix", |r| r.state() == pb::RolloutState::Baking),
    )
    .await;
    let aborted = client
        .abort_rollout(pb::RolloutActionRequest {
            name: "manual-fix".into(),
            rollback: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(aborted.state(), pb::RolloutState::Aborted);
    let seen = within(
        60,
        "the manual rollback to succeed",
        watch_until(&mut client, "manual-fix-rollback", halted_or_done),
    )
    .await;
    assert_eq!(seen.last().unwrap().state(), pb::RolloutState::Succeeded);
    assert_eq!(seen.last().unwrap().hosts_selected, 200);
    for host in &h.sim.fleet.hosts {
        let p = agent
            .probe(pb::ProbeRequest {
                host_id: host.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.version, "15.20.8207.11", "{}", host.id);
    }
    h.stop().await;
}

/// `on_failure.action: continue`: failed hosts are left behind and the rollout goes on
/// through every wave while the failures of the whole rollout stay within max_failed of
/// the whole selection; past it, the rollout halts anyway, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_goes_past_failures_until_the_rollout_wide_threshold() {
    let h = Harness::start(
        1_000,
        SimulatorOptions {
            fail_rate: 0.1,
            seed: 3,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let continuing = |name: &str, max_failed: &str| {
        let mut spec = plan(name, &["1%", "10%", "100%"], max_failed);
        spec.on_failure = Some(pb::OnFailureSpec {
            max_failed: max_failed.into(),
            action: "continue".into(),
        });
        spec
    };
    submit(&mut client, continuing("tolerant-fix", "20%")).await;
    let seen = within(
        60,
        "the rollout to end",
        watch_until(&mut client, "tolerant-fix", halted_or_done),
    )
    .await;
    let done = seen.last().unwrap();
    // Every wave ran, but failed hosts were left behind: not a success.
    assert_eq!(
        done.state(),
        pb::RolloutState::CompletedWithFailures,
        "{}",
        done.halt_reason
    );
    assert!(
        (50..=200).contains(&done.hosts_failed),
        "about a tenth failed and were left behind: {}",
        done.hosts_failed
    );
    assert_eq!(done.hosts_succeeded + done.hosts_failed, 1_000, "every wave ran");

    // A restarted controller loads the ended rollout from the counters stored with its
    // final state (no host read): it shows the same, and a retry from there re-runs
    // exactly the failed hosts.
    let h = h
        .restart_controller(|data| {
            let store = rollout::store::Store::open(data).expect("the data dir opens");
            let ended = store.rollouts().expect("rollouts");
            let summary = ended[0].summary.as_ref().expect("stored with its final state");
            let failed: u64 = summary.tally.chunks(6).map(|c| c[pb::HostState::Failed as usize]).sum();
            assert_eq!(failed, done.hosts_failed);
        })
        .await;
    let mut client = h.client.clone();
    let again = get(&mut client, "tolerant-fix").await;
    assert_eq!(again.state(), pb::RolloutState::CompletedWithFailures);
    assert_eq!(
        (again.hosts_succeeded, again.hosts_failed, again.percent_complete),
        (done.hosts_succeeded, done.hosts_failed, done.percent_complete)
    );
    assert_eq!(again.waves, done.waves, "per-wave counts");
    assert_eq!(again.failures, done.failures, "failure groups");
    assert_eq!(again.customers_mitigated, done.customers_mitigated);
    client.retry_rollout(action("tolerant-fix")).await.expect("retry");
    let seen = within(
        60,
        "the retry to end",
        watch_until(&mut client, "tolerant-fix", |r| {
            r.retries == 1
                && matches!(
                    r.state(),
                    pb::RolloutState::Succeeded | pb::RolloutState::CompletedWithFailures
                )
        }),
    )
    .await;
    let retried = seen.last().unwrap();
    assert_eq!(retried.hosts_succeeded + retried.hosts_failed, 1_000);
    assert!(
        retried.hosts_failed < done.hosts_failed,
        "a tenth of the {} failed hosts fail again: {}",
        done.hosts_failed,
        retried.hosts_failed
    );
    let total = all_hosts(&mut client, "tolerant-fix", pb::HostFilter::Failed, 100)
        .await
        .len() as u64;
    assert_eq!(total, retried.hosts_failed, "the counters equal a recount of the hosts");
    h.stop().await;

    let h = Harness::start(
        1_000,
        SimulatorOptions {
            fail_rate: 0.5,
            seed: 3,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    submit(&mut client, continuing("hopeless-fix", "20%")).await;
    let seen = within(
        60,
        "the rollout to halt",
        watch_until(&mut client, "hopeless-fix", halted_or_done),
    )
    .await;
    let halted = seen.last().unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(
        halted
            .halt_reason
            .contains("so far, of 1000 selected, more than the 200 allowed")
            && halted.halt_reason.contains("(action: continue)"),
        "{}",
        halted.halt_reason
    );
    assert!(halted.hosts_failed > 200, "{}", halted.hosts_failed);
    assert!(
        halted.waves[0].failed + halted.waves[1].failed <= 110,
        "the first two waves (110 hosts) went on despite their failures"
    );
    assert_eq!(halted.current_wave, 2, "it halted in the last wave");
    h.stop().await;
}

/// `min_healthy`: at the end of every bake the whole selection is probed, and the
/// rollout halts when fewer than that share are healthy, even when the change itself
/// broke nothing (here a fifth of the fleet was already down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selection_below_min_healthy_halts_after_the_bake() {
    let h = Harness::start(
        1_000,
        SimulatorOptions {
            unhealthy_rate: 0.2,
            seed: 9,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let floored = |name: &str, floor: &str| {
        let mut spec = plan(name, &["10%", "100%"], "5%");
        spec.bake = "100ms".into();
        spec.min_healthy = floor.into();
        spec
    };
    submit(&mut client, floored("floored-fix", "90%")).await;
    let seen = within(
        60,
        "the rollout to halt",
        watch_until(&mut client, "floored-fix", halted_or_done),
    )
    .await;
    let halted = seen.last().unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(
        halted.halt_reason.starts_with("wave 1: ")
            && halted
                .halt_reason
                .contains("of 1000 selected hosts healthy after the bake")
            && halted.halt_reason.contains("below min_healthy 90% (900 needed)")
            && halted.halt_reason.contains("unhealthy (simulated)"),
        "{}",
        halted.halt_reason
    );
    assert_eq!(halted.waves[1].succeeded, 0, "wave 2 untouched");
    client.abort_rollout(action("floored-fix")).await.unwrap();

    submit(&mut client, floored("lenient-fix", "70%")).await;
    let seen = within(
        60,
        "the rollout to succeed",
        watch_until(&mut client, "lenient-fix", halted_or_done),
    )
    .await;
    let done = seen.last().unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    h.stop().await;
}

/// `rollout retry` on a halted rollout: every failed host so far runs again with a
/// new operation id (attempt 2, its first attempt kept in its history), the rollout
/// goes on from the halted wave, and it ends SUCCEEDED once the cause is gone. A
/// retry while it runs is refused, saying what would work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_reruns_the_failed_hosts_of_a_halted_rollout() {
    let h = Harness::start(
        500,
        SimulatorOptions {
            fail_rate: 0.5,
            ..Default::default()
        },
    )
    .await;
    let (sim, mut client) = (&h.sim, h.client.clone());
    submit(&mut client, plan("retried-fix", &["10%", "100%"], "1%")).await;
    let seen = within(
        60,
        "the rollout to halt",
        watch_until(&mut client, "retried-fix", halted_or_done),
    )
    .await;
    let halted = seen.last().unwrap().clone();
    assert_eq!(halted.state(), pb::RolloutState::Halted, "{}", halted.halt_reason);
    assert!(halted.hosts_failed > 0);
    assert!(!halted.failures.is_empty(), "the failures are grouped by reason");

    sim.sim.set_fail_rate(0.0);
    let retried = client.retry_rollout(action("retried-fix")).await.unwrap().into_inner();
    assert_eq!(retried.retries, 1);
    // Again at once: refused while it runs (or, if it already ended, nothing to retry).
    let refused = client.retry_rollout(action("retried-fix")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("wait for it") || refused.message().contains("nothing to retry"),
        "{}",
        refused.message()
    );
    let seen = within(
        60,
        "the retried rollout to succeed",
        watch_until(&mut client, "retried-fix", halted_or_done),
    )
    .await;
    let done = seen.last().unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!((done.hosts_succeeded, done.hosts_failed), (500, 0));
    let hosts = client
        .list_rollout_hosts(pb::ListRolloutHostsRequest {
            name: "retried-fix".into(),
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert_eq!(hosts.len(), 500);
    let second: Vec<&pb::HostResult> = hosts.iter().filter(|h| h.attempt == 2).collect();
    assert_eq!(
        second.len() as u64,
        halted.hosts_failed,
        "each failed host ran once more"
    );
    for h in second {
        assert_eq!(h.history.len(), 1, "{h:?}");
        assert!(
            h.operation_id.ends_with("-a2") && h.history[0].operation_id.ends_with("-a1"),
            "{h:?}"
        );
        assert_eq!(h.history[0].state, "failed");
    }
    h.stop().await;
}

/// A retry the state machine refuses takes nothing: the failed hosts of an aborted
/// rollout are free at once for the next rollout (a refused retry once left them
/// leased to the finished rollout until the controller restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_retry_leaves_the_failed_hosts_free() {
    let h = Harness::start(
        200,
        SimulatorOptions {
            fail_rate: 0.5,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    submit(&mut client, plan("aborted-fix", &["10%", "100%"], "1%")).await;
    let seen = within(
        60,
        "the rollout to halt",
        watch_until(&mut client, "aborted-fix", halted_or_done),
    )
    .await;
    let halted = seen.last().unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted, "{}", halted.halt_reason);
    assert!(halted.hosts_failed > 0);
    client.abort_rollout(action("aborted-fix")).await.unwrap();
    let refused = client.retry_rollout(action("aborted-fix")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{}", refused.message());
    assert!(refused.message().contains("aborted"), "{}", refused.message());

    h.sim.sim.set_fail_rate(0.0);
    let next = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(plan("next-fix", &["100%"], "1%"))),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("the next rollout was refused: {}", e.message()));
    assert_eq!(next.into_inner().rollout.unwrap().hosts_selected, 200);
    let seen = within(
        60,
        "the next rollout to succeed",
        watch_until(&mut client, "next-fix", halted_or_done),
    )
    .await;
    assert_eq!(seen.last().unwrap().state(), pb::RolloutState::Succeeded);
}
