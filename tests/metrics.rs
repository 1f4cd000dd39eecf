//! `/metrics` scraped during a real rollout and parsed with a Prometheus text parser.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::scrape::{http_get, scrape, value};
use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;
use rollout::server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// `/metrics` is scraped by a Prometheus parser during a rollout (part-way, with
/// calls in flight) and after it: the rollout's progress, wave and hosts by state,
/// and the agent calls' counters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_during_a_rollout() {
    let sim = Sim::start(
        1_000,
        SimulatorOptions {
            latency_ms: (5, 15).into(),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fleet_path = dir.path().join("fleet.yaml");
    std::fs::write(&fleet_path, sim.fleet.to_yaml()).unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", api.local_addr().unwrap());
    let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let controller = tokio::spawn(server::run(
        api,
        server::Options {
            store: server::StoreAt::Dir(dir.path().join("data")),
            fleet: Some(fleet_path),
            agent_timeout: Duration::from_secs(30),
            max_in_flight: 4_096,
            clock: Arc::new(rollout::engine::SystemClock),
            security: Default::default(),
            metrics: Some(metrics),
            http: None,
            grace: Duration::from_secs(30),
            drill_from_ms: None,
            sinks: Default::default(),
            sinks_file: None,
            freeze_calendar: None,
            ready_lines: Vec::new(),
            dashboard_url: None,
            site: "default".into(),
            ssh: None,
        },
        stop.clone(),
    ));
    let mut client = within(30, "the controller", async {
        loop {
            if let Ok(c) = rollout::cli::connect(&url).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut spec = plan("scraped-fix", &["10%", "50%", "100%"], "0");
    spec.max_parallel = 20;
    submit(&mut client, spec).await;

    // During the rollout: part-way, with calls in flight.
    let during = within(60, "a scrape mid-rollout", async {
        loop {
            let s = scrape(&http_get(&metrics_addr, "/metrics").await);
            let done = value(
                &s,
                "rollout_hosts",
                &[("rollout", "scraped-fix"), ("state", "succeeded")],
            );
            if done.is_some_and(|d| d > 0.0 && d < 1_000.0) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let percent = value(&during, "rollout_percent_complete", &[("rollout", "scraped-fix")]).unwrap();
    assert!(percent > 0.0 && percent < 100.0, "{percent}");
    assert!(value(&during, "rollout_current_wave", &[("rollout", "scraped-fix")]).unwrap() >= 1.0);

    watch_until(&mut client, "scraped-fix", |r| r.state() == pb::RolloutState::Succeeded).await;
    let text = http_get(&metrics_addr, "/metrics").await;
    let after = scrape(&text);
    assert_eq!(
        value(
            &after,
            "rollout_hosts",
            &[("rollout", "scraped-fix"), ("state", "succeeded")]
        ),
        Some(1_000.0)
    );
    assert_eq!(
        value(&after, "rollout_percent_complete", &[("rollout", "scraped-fix")]),
        Some(100.0)
    );
    assert_eq!(
        value(&after, "rollout_current_wave", &[("rollout", "scraped-fix")]),
        Some(0.0)
    );
    // The outcome, as its own series: 1 for the state the rollout is in.
    assert_eq!(
        value(
            &after,
            "rollout_state",
            &[("rollout", "scraped-fix"), ("state", "succeeded")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &after,
            "rollout_state",
            &[("rollout", "scraped-fix"), ("state", "completed-with-failures")]
        ),
        None
    );
    assert_eq!(value(&after, "rollout_agent_first_attempts_total", &[]), Some(1_000.0));
    assert_eq!(value(&after, "rollout_agent_retries_total", &[]), Some(0.0));
    assert_eq!(
        value(&after, "rollout_agent_retry_budget_exhausted_total", &[]),
        Some(0.0)
    );
    assert_eq!(value(&after, "rollout_agent_breakers_open", &[]), Some(0.0));
    // Operations in flight as data: deploys of 5 to 15 ms end within the agent's quick
    // window and are answered with their result; any longer came in batches through
    // the simulator's one long poll; none is awaited now.
    assert_eq!(value(&after, "rollout_agent_operations_awaited", &[]), Some(0.0));
    assert_eq!(value(&after, "rollout_agent_operations_reasked_total", &[]), Some(0.0));
    let polls = value(&after, "rollout_agent_result_polls_total", &[]).unwrap_or(0.0);
    assert!(
        polls < 500.0,
        "{polls} Results calls for 1,000 operations: they come in batches"
    );
    // With a data dir, this controller alone, leading with no epoch.
    assert_eq!(value(&after, "rollout_controllers", &[("role", "leader")]), Some(1.0));
    assert_eq!(value(&after, "rollout_leader_epoch", &[]), Some(0.0));
    assert!(
        text.contains("rollout_agent_call_duration_seconds_bucket"),
        "the latency histogram is exposed"
    );
    let submits = value(
        &after,
        "rollout_grpc_requests_total",
        &[("method", "SubmitPlan"), ("code", "Ok")],
    );
    assert_eq!(submits, Some(1.0));
    // A refused call is counted with its code.
    let _ = client
        .get_rollout(pb::GetRolloutRequest {
            name: "nope".into(),
            id: 0,
        })
        .await;
    let again = scrape(&http_get(&metrics_addr, "/metrics").await);
    assert_eq!(
        value(
            &again,
            "rollout_grpc_requests_total",
            &[("method", "GetRollout"), ("code", "NotFound")]
        ),
        Some(1.0)
    );
    stop.cancel();
    within(60, "the controller to stop", controller).await.unwrap().unwrap();
    sim.stop().await;
}
