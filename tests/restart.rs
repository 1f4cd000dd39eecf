//! Targeted restarts over gRPC: the unhealthy hosts, customers in their working day
//! first, within each customer's disruption budget.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

const TIERS: [&str; 4] = ["in-hours", "starting-soon", "off-hours", "no-customer"];

async fn wait_job(client: &mut Client, id: u64) -> pb::RestartJob {
    let mut stream = client
        .watch_restart_job(pb::GetRestartJobRequest {
            id,
            include_hosts: false,
        })
        .await
        .unwrap()
        .into_inner();
    within(120, "the restart job to end", async {
        while let Some(job) = stream.message().await.unwrap() {
            if job.state() != pb::RestartJobState::Running {
                return;
            }
        }
    })
    .await;
    client
        .get_restart_job(pb::GetRestartJobRequest {
            id,
            include_hosts: true,
        })
        .await
        .unwrap()
        .into_inner()
}

/// 1,000 hosts, 30% unhealthy, the clock fixed at Tue 09:30 in Seoul (00:30 in
/// London, Mon 19:30 in New York): `unhealthy_only` restarts exactly the unhealthy
/// hosts, in-hours customers first (Seoul's among them), then starting-soon, then the
/// rest. A second job over healthy hosts never exceeds any customer's budget, as the
/// simulator saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_hosts_restart_in_business_hours_order_within_budget() {
    let sim = Sim::start(
        1_000,
        SimulatorOptions {
            unhealthy_rate: 0.3,
            latency_ms: (5, 15).into(),
            seed: 3,
            ..Default::default()
        },
    )
    .await;
    let unhealthy: BTreeSet<String> = sim.sim.unhealthy().await.into_iter().collect();
    assert!((200..400).contains(&unhealthy.len()), "{} unhealthy", unhealthy.len());
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at("2026-11-24T00:30");
    let controller = Controller::start_with_clock(&dir.path().join("data"), &sim.fleet, clock).await;
    let mut client = controller.client().await;

    // The dry run shows the order and changes nothing.
    let preview = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(preview.hosts.len(), unhealthy.len());
    assert!(preview.hosts[0].why.contains("in hours"), "{:?}", preview.hosts[0]);
    assert_eq!(
        sim.sim.unhealthy().await.len(),
        unhealthy.len(),
        "a dry run restarts nothing"
    );

    let started = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            max_parallel: 40,
            request_id: "restart-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let job = wait_job(&mut client, started.id).await;
    assert_eq!(job.state(), pb::RestartJobState::Succeeded, "{}", job.reason);
    let restarted: BTreeSet<String> = job.hosts.iter().map(|h| h.host_id.clone()).collect();
    assert_eq!(restarted, unhealthy, "exactly the unhealthy hosts");
    // The same hosts, a page at a time, through the per-host results of the job.
    let mut listed = BTreeSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_rollout_hosts(pb::ListRolloutHostsRequest {
                job_id: started.id,
                filter: pb::HostFilter::Succeeded as i32,
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for h in &page.hosts {
            assert_eq!(h.state, "restarted", "{h:?}");
            assert!(h.operation_id.starts_with('j') && h.finished_at_unix_ms > 0, "{h:?}");
        }
        listed.extend(page.hosts.into_iter().map(|h| h.host_id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(listed, unhealthy, "every restarted host, listed once");
    let failed = client
        .list_rollout_hosts(pb::ListRolloutHostsRequest {
            job_id: started.id,
            filter: pb::HostFilter::Failed as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(failed.hosts.is_empty());
    assert!(sim.sim.unhealthy().await.is_empty(), "all healthy after the restarts");

    // The order, from the job's record: tiers never go back, and the clock says who is where.
    let zone_of: HashMap<&str, &str> = sim
        .fleet
        .customers
        .iter()
        .map(|c| (c.id.as_str(), c.timezone.as_str()))
        .collect();
    let day_hours: HashMap<&str, bool> = sim
        .fleet
        .customers
        .iter()
        .map(|c| (c.id.as_str(), !c.hours.starts_with("22")))
        .collect();
    let mut previous = 0;
    for (i, h) in job.hosts.iter().enumerate() {
        assert_eq!(h.position as usize, i + 1);
        let rank = TIERS.iter().position(|t| *t == h.tier).unwrap();
        assert!(
            rank >= previous,
            "position {}: {} after a later tier",
            h.position,
            h.tier
        );
        previous = rank;
        let zone = zone_of.get(h.customer.as_str()).copied().unwrap_or("");
        if day_hours.get(h.customer.as_str()).copied().unwrap_or(false) {
            match zone {
                "Asia/Seoul" | "Asia/Tokyo" => assert_eq!(h.tier, "in-hours", "{h:?}"),
                "Europe/London" | "America/New_York" => {
                    assert_eq!(h.tier, "off-hours", "{h:?}")
                }
                _ => {}
            }
        }
    }
    assert_eq!(job.hosts[0].tier, "in-hours");
    let seoul = job
        .hosts
        .iter()
        .find(|h| zone_of.get(h.customer.as_str()) == Some(&"Asia/Seoul"))
        .unwrap();
    assert!(seoul.why.contains("Tue Asia/Seoul, in hours"), "{}", seoul.why);
    assert!(
        seoul.local_time.starts_with("2026-11-24 09:30 Tue"),
        "{}",
        seoul.local_time
    );
    let tiers: Vec<&str> = job.tiers.iter().map(|t| t.tier.as_str()).collect();
    assert_eq!(tiers[0], "in-hours");
    assert!(job.tiers.iter().all(|t| t.total == t.restarted));

    // The same request id returns the same job.
    let again = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            request_id: "restart-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed);
    assert_eq!(again.job.unwrap().id, job.id);
    // Nothing unhealthy is left: a new unhealthy-only job has nothing to do.
    let nothing = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(nothing.code(), tonic::Code::FailedPrecondition, "{}", nothing.message());

    // Healthy hosts: the budget (25% of each customer's hosts, at least one) holds.
    let budget_job = client
        .trigger_restart(pb::TriggerRestartRequest {
            selector: [(
                "region".to_string(),
                pb::LabelValues {
                    values: vec!["apac".into()],
                },
            )]
            .into(),
            max_parallel: 200,
            max_unavailable: "25%".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let done = wait_job(&mut client, budget_job.id).await;
    assert_eq!(done.state(), pb::RestartJobState::Succeeded, "{}", done.reason);
    assert!(done.hosts.iter().all(|h| h.was_healthy));
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for h in &sim.fleet.hosts {
        for c in &h.customers {
            *sizes.entry(&**c).or_default() += 1;
        }
    }
    let mut most = 0;
    for (customer, size) in &sizes {
        let allowed = (size / 4).max(1);
        let seen = sim.sim.max_concurrent_restarts(customer);
        assert!(
            seen <= allowed,
            "{customer}: {seen} healthy hosts down at once, budget {allowed} of {size}"
        );
        most = most.max(seen);
    }
    assert!(most > 1, "restarts did run in parallel");

    // Unknown hosts and empty requests are refused with the field named.
    let err = client
        .trigger_restart(pb::TriggerRestartRequest {
            host_ids: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("host_ids[0]"), "{}", err.message());
    let err = client
        .trigger_restart(pb::TriggerRestartRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            max_unavailable: "lots".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("max_unavailable"), "{}", err.message());
    controller.stop().await;
    sim.stop().await;
}

/// A host that an active rollout holds is skipped and reported, not restarted
/// behind the rollout's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_held_by_a_rollout_are_skipped() {
    let h = Harness::start(
        200,
        SimulatorOptions {
            unhealthy_rate: 0.5,
            latency_ms: (200, 200).into(),
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let mut spec = plan("slow", &["100%"], "0");
    spec.selector = [(
        "region".to_string(),
        pb::LabelValues {
            values: vec!["apac".into()],
        },
    )]
    .into();
    spec.max_parallel = 1;
    submit(&mut client, spec).await;
    let job = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert!(!job.skipped.is_empty());
    assert!(
        job.skipped
            .iter()
            .all(|s| s.reason.contains("held by active rollout `slow`")),
        "{:?}",
        job.skipped[0]
    );
    let apac: BTreeSet<&str> = h
        .sim
        .fleet
        .hosts
        .iter()
        .filter(|x| &x.labels["region"] == "apac")
        .map(|x| x.id.as_str())
        .collect();
    assert!(
        job.hosts.iter().all(|x| !apac.contains(x.host_id.as_str())),
        "no held host is restarted"
    );
    client.abort_rollout(action("slow")).await.unwrap();
    h.stop().await;
}

/// A business-hours-first plan fills its first wave with customers in their working
/// day (the dry run says so, per customer), and `kind: restart` plans restart in waves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_order_waves_by_business_hours_and_restart_in_waves() {
    let sim = Sim::start(
        600,
        SimulatorOptions {
            unhealthy_rate: 0.2,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Tue 09:30 in Seoul.
    let controller =
        Controller::start_with_clock(&dir.path().join("data"), &sim.fleet, FixedClock::at("2026-11-24T00:30")).await;
    let mut client = controller.client().await;
    let mut spec = plan("bh-fix", &["10%", "100%"], "0");
    spec.order = "business-hours-first".into();
    let preview = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec.clone())),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .preview;
    let first = &preview[0];
    assert!(!first.customers.is_empty());
    for c in &first.customers {
        assert_eq!(c.tier, "in-hours", "{c:?}");
        assert!(c.local_time.starts_with("2026-11-2"), "{c:?}");
    }
    assert!(preview[1].customers.iter().any(|c| c.tier == "off-hours"));
    // Off-hours-first is the reverse: the first wave is off hours.
    spec.order = "off-hours-first".into();
    let reverse = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec)),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .preview;
    assert!(
        reverse[0].customers.iter().all(|c| c.tier != "in-hours"),
        "{:?}",
        reverse[0].customers
    );

    // A restart plan: every selected host restarted, the unhealthy ones healed.
    let mut spec = plan("restart-all", &["25%", "100%"], "0");
    spec.kind = "restart".into();
    spec.version.clear();
    submit(&mut client, spec).await;
    let seen = within(
        60,
        "the restart plan to succeed",
        watch_until(&mut client, "restart-all", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    assert_eq!(seen.last().unwrap().hosts_succeeded, 600);
    assert!(sim.sim.unhealthy().await.is_empty());
    controller.stop().await;
    sim.stop().await;
}

/// Cancelling a job stops it: restarts in flight finish, nothing more is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_job_sends_nothing_more() {
    let h = Harness::start(
        300,
        SimulatorOptions {
            unhealthy_rate: 0.5,
            latency_ms: (100, 100).into(),
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let job = client
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            max_parallel: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let cancelled = client
        .cancel_restart_job(pb::CancelRestartJobRequest {
            id: job.id,
            reason: "wrong hosts".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state(), pb::RestartJobState::Cancelled);
    assert_eq!(cancelled.reason, "wrong hosts");
    let settled = restart_job_until(&mut client, job.id, |j| j.hosts_in_flight == 0).await;
    assert!(
        settled.hosts_restarted <= 8,
        "at most the batches already sent: {}",
        settled.hosts_restarted
    );
    assert!(settled.hosts_pending > 100);
    let again = client
        .cancel_restart_job(pb::CancelRestartJobRequest {
            id: job.id,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let missing = client
        .get_restart_job(pb::GetRestartJobRequest {
            id: 999,
            include_hosts: false,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    h.stop().await;
}

/// A restart job in `least-business-downtime` order through the real API, the clock
/// fixed at Tue 09:30 in Seoul: the dry run and the job explain each pick in the
/// order's terms (working day left, or the start to come), the job restarts exactly
/// the unhealthy hosts, and it says which order it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_least_business_downtime_job_explains_its_picks_and_restarts_the_unhealthy() {
    let sim = Sim::start(
        400,
        SimulatorOptions {
            unhealthy_rate: 0.3,
            seed: 3,
            ..Default::default()
        },
    )
    .await;
    let unhealthy: BTreeSet<String> = sim.sim.unhealthy().await.into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at("2026-11-24T00:30");
    let controller = Controller::start_with_clock(&dir.path().join("data"), &sim.fleet, clock).await;
    let mut client = controller.client().await;
    let request = |dry_run: bool| pb::TriggerRestartRequest {
        unhealthy_only: true,
        order: "least-business-downtime".into(),
        max_parallel: 20,
        dry_run,
        request_id: if dry_run { String::new() } else { "lbd-1".into() },
        ..Default::default()
    };
    let preview = client
        .trigger_restart(request(true))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(preview.order, "least-business-downtime");
    assert_eq!(preview.hosts.len(), unhealthy.len());
    let first = &preview.hosts[0];
    assert!(
        first.why.starts_with(&format!("{}: ", first.customer))
            && (first.why.contains("of its working day left now")
                || first.why.contains("restarted now, it loses none")),
        "{first:?}"
    );
    let bad = client
        .trigger_restart(pb::TriggerRestartRequest {
            order: "least-downtime".into(),
            ..request(true)
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("least-business-downtime"), "{}", bad.message());

    let started = client
        .trigger_restart(request(false))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let job = wait_job(&mut client, started.id).await;
    assert_eq!(job.state(), pb::RestartJobState::Succeeded, "{}", job.reason);
    let restarted: BTreeSet<String> = job.hosts.iter().map(|h| h.host_id.clone()).collect();
    assert_eq!(restarted, unhealthy, "exactly the unhealthy hosts");
    controller.stop().await;
    sim.stop().await;
}
