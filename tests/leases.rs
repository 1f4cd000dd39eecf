//! Host leases: a host belongs to at most one active rollout or restart job.

mod common;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

fn only(key: &str, values: &[&str]) -> std::collections::HashMap<String, pb::LabelValues> {
    [(
        key.to_string(),
        pb::LabelValues {
            values: values.iter().map(|v| v.to_string()).collect(),
        },
    )]
    .into()
}

fn done(r: &pb::Rollout) -> bool {
    matches!(
        r.state(),
        pb::RolloutState::Succeeded | pb::RolloutState::Halted | pb::RolloutState::Aborted
    )
}

/// A plan overlapping an active rollout is refused, naming it and the shared count;
/// the dry run shows the conflict; `preempt` pauses the other, which cannot resume
/// until the preempting rollout has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_plans_are_refused_and_preempt_pauses_the_other() {
    let h = Harness::start(
        300,
        SimulatorOptions {
            latency_ms: (20, 20).into(),
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let mut slow = plan("slow-apac", &["100%"], "0");
    slow.selector = only("region", &["apac"]);
    slow.max_parallel = 2;
    let a = submit(&mut client, slow).await;

    let wide = plan("wide", &["50%", "100%"], "0");
    let refused = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(wide.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let expected = format!(
        "{} of its 300 hosts are held by active rollout `slow-apac` (id {})",
        a.hosts_selected, a.id
    );
    assert!(refused.message().starts_with(&expected), "{}", refused.message());
    assert!(refused.message().contains("preempt"), "{}", refused.message());
    let dry = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(wide.clone())),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.conflicts.len(), 1);
    assert_eq!(dry.conflicts[0].shared_hosts, a.hosts_selected);
    let list = client
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.rollouts.len(), 1, "nothing stored for the refused plan");

    let mut preempting = wide;
    preempting.preempt = "slow-apac".into();
    submit(&mut client, preempting).await;
    let paused = get(&mut client, "slow-apac").await;
    assert_eq!(paused.state(), pb::RolloutState::Paused, "preempted");
    let refused = client.resume_rollout(action("slow-apac")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("held by active rollout `wide`"),
        "{}",
        refused.message()
    );

    let seen = within(
        60,
        "the preempting rollout to end",
        watch_until(&mut client, "wide", done),
    )
    .await;
    assert_eq!(seen.last().unwrap().state(), pb::RolloutState::Succeeded);
    client.resume_rollout(action("slow-apac")).await.unwrap();
    let seen = within(
        60,
        "the preempted rollout to end",
        watch_until(&mut client, "slow-apac", done),
    )
    .await;
    assert_eq!(seen.last().unwrap().state(), pb::RolloutState::Succeeded);
    h.stop().await;
}

/// A plan overlapping an active restart job is refused too (preempt is for rollouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_job_holds_its_hosts() {
    let h = Harness::start(
        200,
        SimulatorOptions {
            latency_ms: (300, 300).into(),
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let job = client
        .trigger_restart(pb::TriggerRestartRequest {
            selector: only("region", &["emea"]),
            max_parallel: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let mut spec = plan("emea-fix", &["100%"], "0");
    spec.selector = only("region", &["emea"]);
    let refused = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused
            .message()
            .contains(&format!("held by active restart job {}", job.id)),
        "{}",
        refused.message()
    );
    client
        .cancel_restart_job(pb::CancelRestartJobRequest {
            id: job.id,
            reason: String::new(),
        })
        .await
        .unwrap();
    h.stop().await;
}
