//! What is in flight, and what limits it, through real processes: a controller
//! started with `--max-in-flight` never has more host actions out than that, and a
//! plan whose max_parallel it cuts says so in one line (status, JSON, the dashboard's
//! API), instead of a silent cap.

mod common;

use common::*;
use rollout::cli::connect;
use rollout::proto::v1 as pb;

/// A plan asking for 100 in parallel on a controller with `--max-in-flight 10`:
/// never more than 10 host actions out at once, and `rollout status` says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_limited_by_max_in_flight_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_agent, _fleet, fleet_file) = spawn_simulator(dir.path(), 60, "100..100", &dir.path().join("agent.log")).await;
    let controller = spawn_controller(
        &dir.path().join("data"),
        &fleet_file,
        &["--max-in-flight".as_ref(), "10".as_ref()],
        &log,
    )
    .await;
    let server = format!("http://{}", controller.addr);
    let mut client = connect(&server).await.unwrap();
    let mut spec = plan("limited", &["100%"], "0");
    spec.max_parallel = 100;
    submit(&mut client, spec).await;
    let seen = within(
        120,
        "the rollout to succeed",
        watch_until(&mut client, "limited", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    // hosts_in_flight counts intents without a recorded result: the calls out, the
    // next batch written ahead, and answers come but not yet recorded (they are
    // within RESULT_FLUSH): three times the limit at most.
    let peak = seen.iter().map(|r| r.hosts_in_flight).max().unwrap_or(0);
    assert!(peak <= 30, "{peak} intents out with --max-in-flight 10");
    // Sixty 100 ms deploys ten at a time take six rounds at least: had the plan's
    // 100 gone out at once, one round would have done.
    let last = seen.last().unwrap();
    let took = last.finished_at_unix_ms - last.created_at_unix_ms;
    assert!(took >= 550, "took {took} ms: more than 10 were in flight at once");
    let line = "max_parallel 100 is limited to 10 by this controller's --max-in-flight";
    assert_eq!(seen.last().unwrap().limits, line);
    let out = rollout(&["--server", &server, "status", "limited"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&format!("limited    {line}")),
        "{}",
        text(&out.stdout)
    );
    drop(controller);
}

/// `max_parallel: 100%` with second-long deploys: the whole wave is in flight at
/// once (the status shows every host of it out), and the plan says what it was
/// given and what that came to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_100_percent_puts_the_whole_wave_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (_agent, _fleet, fleet_file) =
        spawn_simulator(dir.path(), 300, "1000..1000", &dir.path().join("agent.log")).await;
    let controller = spawn_controller(&dir.path().join("data"), &fleet_file, &[], &log).await;
    let server = format!("http://{}", controller.addr);
    let mut client = connect(&server).await.unwrap();
    let mut spec = plan("whole-wave", &["10%", "100%"], "0");
    spec.max_parallel = 0;
    spec.max_parallel_share = "100%".into();
    let submitted = submit(&mut client, spec).await;
    let stored = submitted.plan.unwrap();
    assert_eq!((stored.max_parallel, stored.max_parallel_share.as_str()), (300, "100%"));
    let seen = within(
        120,
        "the rollout to succeed",
        watch_until(&mut client, "whole-wave", |r| r.state() == pb::RolloutState::Succeeded),
    )
    .await;
    // The second wave's 270 hosts were all out at once.
    let peak = seen.iter().map(|r| r.hosts_in_flight).max().unwrap_or(0);
    assert_eq!(peak, 270, "the whole second wave in flight at once");
    assert!(seen.iter().all(|r| r.limits.is_empty()), "nothing limits it");
    drop(controller);
}

/// An agent of the protocol before detached operations, as a test double: Apply
/// holds the call until the operation ends (it knows nothing of `detach`), and
/// Results is a method it does not have (Unimplemented, as tonic answers for one).
#[derive(Default)]
struct Earlier {
    /// Apply calls per host, and how many ran at once at most.
    applied: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    running: std::sync::atomic::AtomicU32,
    peak: std::sync::atomic::AtomicU32,
}

#[derive(Clone, Default)]
struct EarlierAgent(std::sync::Arc<Earlier>);

#[tonic::async_trait]
impl pb::agent_server::Agent for EarlierAgent {
    async fn apply(
        &self,
        request: tonic::Request<pb::ApplyRequest>,
    ) -> Result<tonic::Response<pb::ApplyResponse>, tonic::Status> {
        use std::sync::atomic::Ordering::SeqCst;
        let req = request.into_inner();
        let this = &self.0;
        *this.applied.lock().unwrap().entry(req.host_id.clone()).or_default() += 1;
        let now = this.running.fetch_add(1, SeqCst) + 1;
        this.peak.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        this.running.fetch_sub(1, SeqCst);
        // The earlier answer: the result itself, never `running`.
        Ok(tonic::Response::new(pb::ApplyResponse {
            ok: true,
            version: req.version,
            healthy: true,
            ..Default::default()
        }))
    }

    async fn probe(
        &self,
        _: tonic::Request<pb::ProbeRequest>,
    ) -> Result<tonic::Response<pb::ProbeResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::ProbeResponse {
            healthy: true,
            ..Default::default()
        }))
    }

    async fn results(
        &self,
        _: tonic::Request<pb::ResultsRequest>,
    ) -> Result<tonic::Response<pb::ResultsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("unknown method Results"))
    }
}

/// A controller of this protocol with agents of the earlier one: the rollout
/// completes, each host's deploy is sent once, and the calls are held in parallel
/// as that protocol needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_the_earlier_protocol_still_completes_a_rollout() {
    let agent = EarlierAgent::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::agent_server::AgentServer::new(agent.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    let dir = tempfile::tempdir().unwrap();
    let hosts = fleet(60, &addr);
    let controller = Controller::start(&dir.path().join("data"), &hosts).await;
    let mut client = controller.client().await;
    let mut spec = plan("earlier-agents", &["10%", "100%"], "0");
    spec.max_parallel = 30;
    submit(&mut client, spec).await;
    let seen = within(
        120,
        "the rollout over agents of the earlier protocol to succeed",
        watch_until(&mut client, "earlier-agents", |r| {
            r.state() == pb::RolloutState::Succeeded
        }),
    )
    .await;
    assert_eq!(seen.last().unwrap().hosts_succeeded, 60);
    let applied = agent.0.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 60, "every host got its deploy");
    assert!(applied.values().all(|&n| n == 1), "once each: {applied:?}");
    let peak = agent.0.peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        peak > 1 && peak <= 30,
        "held calls in parallel, within max_parallel: {peak}"
    );
    controller.stop().await;
    stop.cancel();
    let _ = server.await;
}

/// 20,000 operations in flight on one agent endpoint (a simulator process), which
/// is killed and started again on its address (100,000 in release mode: BENCHMARKS.md,
/// `scripts/endpoint-restart.sh`): the controller learns that the new
/// agent knows nothing (a reset), asks each awaited operation again, paced, and the
/// rollout finishes. Retries stay within the budget (10% of first attempts), the
/// re-asks are one per operation, and the new agent saw no storm: about one Apply
/// per host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_the_agent_endpoint_restarts() {
    use common::scrape::{http_get, scrape, value};
    const HOSTS: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    // Deploys long enough that every host is still deploying when the agent dies.
    let (mut agent, hosts, _) = spawn_simulator(dir.path(), HOSTS, "300000..300000", &log).await;
    let addr = agent.addr.to_string();
    let (controller, metrics) = Controller::start_measured(&dir.path().join("data"), &hosts, HOSTS).await;
    let mut client = controller.client().await;
    let mut spec = plan("endpoint-restart", &["100%"], "0");
    spec.max_parallel = 0;
    spec.max_parallel_share = "100%".into();
    submit(&mut client, spec).await;
    let gauge = |s: &prometheus_parse::Scrape, m: &str| value(s, m, &[]).unwrap_or(0.0);
    within(300, "every operation to be started and awaited", async {
        loop {
            let s = scrape(&http_get(&metrics, "/metrics").await);
            if gauge(&s, "rollout_agent_operations_awaited") >= HOSTS as f64 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    agent.kill9().await.unwrap();
    let sim_fleet = dir.path().join("sim.yaml");
    let args = [
        "agent",
        "--simulate",
        sim_fleet.to_str().unwrap(),
        "--listen",
        &addr,
        "--latency-ms",
        "1000..1000",
    ];
    let again = spawn_rollout(args, &log, "the simulator, again").await;
    let seen = within(
        600,
        "the rollout to succeed after the agent's restart",
        watch_until(&mut client, "endpoint-restart", |r| {
            r.hosts_in_flight == 0 && r.state() != pb::RolloutState::Running
        }),
    )
    .await;
    let last = seen.last().unwrap();
    assert_eq!(
        last.state(),
        pb::RolloutState::Succeeded,
        "{}: {:?}",
        last.halt_reason,
        last.failures
    );
    let s = scrape(&http_get(&metrics, "/metrics").await);
    let first = gauge(&s, "rollout_agent_first_attempts_total");
    let retries = gauge(&s, "rollout_agent_retries_total");
    let reasked = gauge(&s, "rollout_agent_operations_reasked_total");
    assert_eq!(first, HOSTS as f64, "one first attempt per host");
    assert!(retries <= 0.1 * first, "{retries} retries for {first} first attempts");
    assert_eq!(reasked, HOSTS as f64, "each awaited operation asked again once");
    assert_eq!(gauge(&s, "rollout_agent_operations_awaited"), 0.0);
    // The new agent: about one Apply per host, and each ran its deploy once.
    let mut probe = rollout::proto::v1::agent_client::AgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut executed = 0;
    for host in hosts.hosts.iter().step_by(100) {
        let p = probe
            .probe(pb::ProbeRequest {
                host_id: host.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.version, "15.20.8207.12", "{}", host.id);
        executed += p.operations_executed;
        if host.id == hosts.hosts[0].id {
            let calls = p.apply_calls as f64;
            assert!(
                calls >= HOSTS as f64 && calls <= 1.1 * HOSTS as f64,
                "{calls} Apply calls on the restarted agent for {HOSTS} operations"
            );
        }
    }
    assert_eq!(executed, (HOSTS / 100) as u64, "each sampled host ran once");
    controller.stop().await;
    drop(again);
}
