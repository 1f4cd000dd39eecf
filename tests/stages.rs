//! Stages through the real controller and simulator: a plan canary -> apac -> rest
//! takes each stage's hosts only once every host of the stage before it finished
//! (per-host start and finish times from `rollout hosts --rollout NAME --output
//! json`), its waves are shares of each stage, a gate holds at a stage's end, an empty
//! stage is skipped and says so, and a restart mid-stage goes on where it was.

mod common;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

fn staged(name: &str) -> pb::PlanSpec {
    staged_plan(name, 20)
}

/// The stages run in order: no host of a later stage started before every host of
/// the earlier ones finished; the status says each stage's hosts and state, the
/// waves their stage and the wave's share of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_host_of_a_later_stage_starts_before_the_earlier_stage_finished() {
    let mut h = Harness::start(
        600,
        SimulatorOptions {
            latency_ms: rollout::agent::simulator::Latency::Uniform { min_ms: 5, max_ms: 40 },
            ..Default::default()
        },
    )
    .await;
    submit(&mut h.client, staged("netfix")).await;
    let done = ended(&mut h.client, "netfix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    assert_eq!(done.hosts_succeeded, 600);

    let of = stage_of(&h.sim.fleet);
    let sizes: Vec<u64> = (0..3)
        .map(|s| of.values().filter(|&&x| x == s).count() as u64)
        .collect();
    assert!(sizes.iter().all(|&n| n > 20), "every stage has hosts: {sizes:?}");
    let stages: Vec<(&str, u64, &str)> = done
        .stages
        .iter()
        .map(|s| (s.name.as_str(), s.hosts, s.state.as_str()))
        .collect();
    assert_eq!(
        stages,
        [
            ("canary", sizes[0], "done"),
            ("apac", sizes[1], "done"),
            ("rest", sizes[2], "done")
        ]
    );
    let waves: Vec<(&str, &str, u64)> = done
        .waves
        .iter()
        .map(|w| (w.stage.as_str(), w.percent.as_str(), w.target_hosts))
        .collect();
    let apac_half = sizes[0] + (sizes[1] * 5).div_ceil(10);
    assert_eq!(waves[2], ("apac", "50%", apac_half), "{waves:?}");
    assert_eq!(waves.len(), 6);

    let times = host_times(&h.controller.url, "netfix").await;
    assert_eq!(times.len(), 600);
    stages_in_order(&times, &of);
    h.stop().await;
}

/// A gate at a stage's end holds before the next stage; a stage no host matches is
/// skipped and says so; a controller restarted mid-stage goes on inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_holds_at_a_stage_end_an_empty_stage_is_skipped_and_a_restart_resumes_mid_stage() {
    let h = Harness::start(300, SimulatorOptions::default()).await;
    let mut spec = staged("ringfix");
    spec.stages
        .insert(1, stage("moon", &[("region", &["moon"])], &["100%"]));
    spec.gates = vec![pb::GateSpec {
        after: "apac/50%".into(),
        ..Default::default()
    }];
    // "moon" is no value of the plan's selector: a stage narrows, never widens.
    let mut client = h.client.clone();
    let refused = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        refused
            .message()
            .contains("stages[1].selector: region: `moon` is outside"),
        "{refused:?}"
    );
    spec.stages[1] = stage("lab", &[("ring", &["9"])], &["100%"]);
    submit(&mut client, spec).await;
    within(
        60,
        "the gate inside apac",
        watch_until(&mut client, "ringfix", |r| {
            r.state() == pb::RolloutState::AwaitingApproval || r.state().is_terminal()
        }),
    )
    .await;
    let held = get(&mut client, "ringfix").await;
    assert_eq!(held.state(), pb::RolloutState::AwaitingApproval);
    let gate = held.gate.clone().unwrap();
    assert_eq!(gate.after, "apac/50%");
    let lab = held.stages.iter().find(|s| s.name == "lab").unwrap();
    assert_eq!((lab.hosts, lab.state.as_str()), (0, "skipped"));
    // The status text says the stage and the whole; `rollout status` a row of stages.
    let apac = held.stages.iter().find(|s| s.name == "apac").unwrap();
    let stage_text = format!(
        "stage apac: {}% ({} of {} hosts); ",
        apac.succeeded * 100 / apac.hosts,
        apac.succeeded,
        apac.hosts
    );
    assert!(held.summary.contains(&stage_text), "{}", held.summary);
    assert!(held.summary.contains("of the affected environment"), "{}", held.summary);
    let out = rollout(&["status", "ringfix", "--server", &h.controller.url]).await;
    let shown = text(&out.stdout);
    assert!(
        shown.contains("stages     canary done (") && shown.contains("> lab skipped (0) > apac running ("),
        "{shown}"
    );
    assert!(shown.contains("apac/50%"), "{shown}");
    let events = timeline(&mut client, "ringfix").await;
    assert!(
        events.iter().any(|e| e.detail.contains("lab: none, skipped")),
        "the submission says the empty stage is skipped: {events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.detail.contains("skipped: its stage has no hosts")),
        "{events:#?}"
    );
    // Restart the controller while the rollout waits inside apac: it goes on there.
    let mut h = h.restart_controller(|_| {}).await;
    let again = get(&mut h.client, "ringfix").await;
    assert_eq!(again.state(), pb::RolloutState::AwaitingApproval);
    assert_eq!(again.current_wave, held.current_wave);
    h.client
        .approve_rollout(pb::ApproveRolloutRequest {
            name: "ringfix".into(),
            gate_id: gate.gate_id.clone(),
            request_id: "approve-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = ended(&mut h.client, "ringfix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    assert_eq!(done.hosts_succeeded, 300);
    h.stop().await;
}

/// The dry run shows each stage's waves by name, as shares of their stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_names_each_stages_waves() {
    let h = Harness::start(200, SimulatorOptions::default()).await;
    let mut client = h.client.clone();
    let preview = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(staged("preview"))),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let labels: Vec<&str> = preview.preview.iter().map(|w| w.percent.as_str()).collect();
    assert_eq!(
        labels,
        [
            "canary/100%",
            "apac/10%",
            "apac/50%",
            "apac/100%",
            "rest/30%",
            "rest/100%"
        ]
    );
    let added: u64 = preview.preview.iter().map(|w| w.new_hosts).sum();
    assert_eq!(added, 200, "every host in exactly one wave");
    let canary = &preview.preview[0];
    let per_region: u64 = canary.regions.iter().map(|r| r.count).sum();
    assert_eq!(per_region, canary.new_hosts, "{:?}", canary.regions);
    assert!(!canary.tiers.is_empty(), "customers by tier");

    // The sample safe-deployment plan, through the CLI: each stage, the fault
    // domains, and per wave its regions, its zones with their budgets, its tiers.
    let plan = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/safe-network-change.yaml");
    let out = rollout(&["submit", plan, "--dry-run", "--server", &h.controller.url]).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    for line in [
        "stage canary: ",
        "stage pilot: ",
        "stage rest: ",
        "fault domains: zone: at most 10% of each zone's hosts in flight, one zone at a time",
        "wave 1 (canary/100%)",
        "    regions: ",
        "    fault domains: ",
        "(at most 1 at once)",
        "    customers by tier now: ",
        "then hold for approval: gate after canary: 1 approval",
        "then hold for approval: gate after pilot/50%: 1 approval",
    ] {
        assert!(shown.contains(line), "`{line}` in:\n{shown}");
    }
    h.stop().await;
}
