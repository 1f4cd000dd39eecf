//! Test harness: a real controller and a real simulated fleet on 127.0.0.1:0, in
//! this process, reached through the real gRPC clients. Everything started here is
//! stopped by `Drop` or `stop()`.

#![allow(dead_code)]

pub mod agents;
pub mod browser;
pub mod certs;
pub mod controllers;
pub mod identity;
pub mod oidc;
pub mod prometheus;
pub mod python;
pub mod receiver;
pub mod scrape;
pub mod slack;
pub mod sshd;
pub mod stages;
pub mod web;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use agents::EXE;
#[allow(unused_imports)]
pub use identity::{as_person, as_token, as_who, bound_tokens_file, token, tokens_file, tokens_yaml};
use rollout::agent::simulator::{self, Simulator, SimulatorOptions};
pub use rollout::cli::Client;
use rollout::inventory::{FleetFile, GenerateOptions, generate};
use rollout::proto::v1 as pb;
use rollout::proto::v1::agent_client::AgentClient;
use rollout::server;
#[allow(unused_imports)]
pub use stages::{host_times, listed_hosts, stage, stage_of, staged_plan, stages_in_order};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// True while process `pid` runs (neither gone nor a zombie: a container without an
/// init may never reap one).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next())
            != Some('Z')
    })
}

/// Bounds a wait; the message names what would be stuck.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {secs}s waiting for {what}"),
    }
}

/// Runs the real `rollout` binary to its end (bounded) and returns what it printed.
pub async fn rollout(args: &[&str]) -> std::process::Output {
    within(
        120,
        "the rollout command to exit",
        // A command still running at the bound is killed with the test, not left behind.
        tokio::process::Command::new(agents::EXE)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("run rollout")
}

/// A port free now on loopback (for an address that must be known before the
/// process that binds it starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("its address")
        .port()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `rollout ARGS...` as a process of its own, its standard error appended to `log`,
/// once it has said where it listens (at most 60 s; `what` names it otherwise).
pub async fn spawn_rollout<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
    log: &Path,
    what: &str,
) -> rollout::cli::process::Spawned {
    let exe = Path::new(EXE);
    within(
        60,
        &format!("{what} to start"),
        rollout::cli::process::Spawned::start(exe, args, Some(log)),
    )
    .await
    .unwrap_or_else(|e| panic!("{what} does not start: {e}"))
}

/// `rollout serve` on a loopback port of its own over the store in `data` and the
/// fleet file `fleet`, with `extra` flags, its standard error appended to `log`.
pub async fn spawn_controller(
    data: &Path,
    fleet: &Path,
    extra: &[&std::ffi::OsStr],
    log: &Path,
) -> rollout::cli::process::Spawned {
    spawn_controller_on("127.0.0.1:0", data, fleet, extra, log).await
}

/// [`spawn_controller`] listening on `listen` (a restart keeping its address).
pub async fn spawn_controller_on(
    listen: &str,
    data: &Path,
    fleet: &Path,
    extra: &[&std::ffi::OsStr],
    log: &Path,
) -> rollout::cli::process::Spawned {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "serve".as_ref(),
        "--listen".as_ref(),
        listen.as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--fleet".as_ref(),
        fleet.as_os_str(),
    ];
    args.extend_from_slice(extra);
    spawn_rollout(args, log, "the controller").await
}

/// The rollout stopped for a person (halted) or ended.
pub fn halted_or_done(r: &pb::Rollout) -> bool {
    r.state() == pb::RolloutState::Halted || r.state().is_terminal()
}

/// A generated fleet whose agent address is the simulator's.
pub fn fleet(hosts: usize, agent: &str) -> FleetFile {
    generate(&GenerateOptions {
        hosts,
        agent: agent.to_string(),
        seed: 11,
        unhealthy_rate: 0.0,
    })
}

/// A simulated fleet served on a loopback port.
pub struct Sim {
    pub sim: Arc<Simulator>,
    pub addr: String,
    pub fleet: FleetFile,
    stop: CancellationToken,
    task: Option<JoinHandle<rollout::Result<()>>>,
}

impl Sim {
    pub async fn start(hosts: usize, options: SimulatorOptions) -> Sim {
        Sim::start_fleet(options, |addr| fleet(hosts, addr)).await
    }

    /// A simulator of the fleet `make` builds for the simulator's address.
    pub async fn start_fleet(options: SimulatorOptions, make: impl FnOnce(&str) -> FleetFile) -> Sim {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind simulator");
        let addr = listener.local_addr().expect("address").to_string();
        let fleet = make(&addr);
        let sim = Arc::new(Simulator::new(&fleet, &options));
        let stop = CancellationToken::new();
        let task = tokio::spawn(simulator::serve(listener, sim.clone(), stop.clone()));
        Sim {
            sim,
            addr,
            fleet,
            stop,
            task: Some(task),
        }
    }

    pub async fn client(&self) -> AgentClient<Channel> {
        AgentClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to simulator")
    }

    /// Starts the simulator's shutdown without waiting for it.
    pub fn begin_stop(&self) {
        self.stop.cancel();
    }

    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            within(30, "the simulator to stop", task)
                .await
                .expect("join")
                .expect("serve");
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A controller (`server::run`, the code behind `rollout serve`) on a loopback port.
pub struct Controller {
    pub url: String,
    pub data: PathBuf,
    stop: CancellationToken,
    task: Option<JoinHandle<rollout::Result<()>>>,
}

impl Controller {
    pub async fn start(data: &Path, fleet: &FleetFile) -> Controller {
        Controller::start_with_clock(data, fleet, Arc::new(rollout::engine::SystemClock)).await
    }

    /// A controller whose wall clock (business hours, records) is `clock`.
    pub async fn start_with_clock(
        data: &Path,
        fleet: &FleetFile,
        clock: Arc<dyn rollout::engine::Clock>,
    ) -> Controller {
        Controller::start_with(data, fleet, clock, server::Security::default()).await
    }

    /// A controller with TLS and credentials: its URL is `https://` when TLS is on.
    pub async fn start_secured(data: &Path, fleet: &FleetFile, security: server::Security) -> Controller {
        Controller::start_with(data, fleet, Arc::new(rollout::engine::SystemClock), security).await
    }

    /// A controller notifying the sinks of `sinks_file`.
    pub async fn start_notifying(data: &Path, fleet: &FleetFile, sinks_file: &Path) -> Controller {
        let sinks = rollout::notify::Sinks::load(sinks_file).expect("a good sinks file");
        Controller::start_full(
            data,
            fleet,
            Arc::new(rollout::engine::SystemClock),
            Default::default(),
            sinks,
        )
        .await
    }

    async fn start_with(
        data: &Path,
        fleet: &FleetFile,
        clock: Arc<dyn rollout::engine::Clock>,
        security: server::Security,
    ) -> Controller {
        Controller::start_full(data, fleet, clock, security, Default::default()).await
    }

    /// A controller with `--max-in-flight max_in_flight` serving `/metrics`, and
    /// `--agent-timeout` at its default (10 minutes): the controller and the
    /// metrics' address.
    pub async fn start_measured(data: &Path, fleet: &FleetFile, max_in_flight: usize) -> (Controller, String) {
        let metrics = TcpListener::bind("127.0.0.1:0").await.expect("bind metrics");
        let addr = metrics.local_addr().expect("address").to_string();
        let controller = Controller::start_with_options(data, fleet, |o| {
            o.metrics = Some(metrics);
            o.max_in_flight = max_in_flight;
            o.agent_timeout = Duration::from_secs(600);
        })
        .await;
        (controller, addr)
    }

    async fn start_full(
        data: &Path,
        fleet: &FleetFile,
        clock: Arc<dyn rollout::engine::Clock>,
        security: server::Security,
        sinks: rollout::notify::Sinks,
    ) -> Controller {
        Controller::start_with_options(data, fleet, |o| {
            o.clock = clock;
            o.security = security;
            o.sinks = sinks;
        })
        .await
    }

    async fn start_with_options(data: &Path, fleet: &FleetFile, set: impl FnOnce(&mut server::Options)) -> Controller {
        let fleet_path = data.with_extension("fleet.yaml");
        std::fs::write(&fleet_path, fleet.to_yaml()).expect("write fleet");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind controller");
        let stop = CancellationToken::new();
        let mut options = server::Options {
            store: server::StoreAt::Dir(data.to_path_buf()),
            fleet: Some(fleet_path),
            agent_timeout: Duration::from_secs(30),
            max_in_flight: 4_096,
            clock: Arc::new(rollout::engine::SystemClock),
            security: server::Security::default(),
            metrics: None,
            http: None,
            grace: Duration::from_secs(30),
            drill_from_ms: None,
            sinks: Default::default(),
            sinks_file: None,
            freeze_calendar: None,
            ready_lines: Vec::new(),
            dashboard_url: None,
            site: "test-site".into(),
            ssh: None,
        };
        set(&mut options);
        let scheme = if options.security.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", listener.local_addr().expect("address"));
        let task = tokio::spawn(server::run(listener, options, stop.clone()));
        Controller {
            url,
            data: data.to_path_buf(),
            stop,
            task: Some(task),
        }
    }

    pub async fn client(&self) -> Client {
        within(30, "the controller to accept connections", async {
            loop {
                if let Ok(c) = rollout::cli::connect(&self.url).await {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Graceful stop: calls in flight finish, the store is flushed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            within(60, "the controller to stop", task)
                .await
                .expect("join")
                .expect("run");
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A plan over every host of a generated fleet.
pub fn plan(name: &str, waves: &[&str], max_failed: &str) -> pb::PlanSpec {
    pb::PlanSpec {
        name: name.into(),
        kind: "fix".into(),
        description: "test".into(),
        selector: [(
            "region".to_string(),
            pb::LabelValues {
                values: vec!["apac".into(), "emea".into(), "amer".into()],
            },
        )]
        .into(),
        version: "15.20.8207.12".into(),
        waves: waves.iter().map(|w| w.to_string()).collect(),
        order: "stable".into(),
        max_parallel: 100,
        bake: "0s".into(),
        on_failure: Some(pb::OnFailureSpec {
            max_failed: max_failed.into(),
            action: "halt".into(),
        }),
        preempt: String::new(),
        rollback: None,
        progress_deadline: String::new(),
        min_healthy: String::new(),
        analysis: None,
        gates: Vec::new(),
        max_parallel_share: String::new(),
        stages: Vec::new(),
        fault_domain: None,
        windows: None,
        emergency: false,
    }
}

/// [`plan`] selecting the hosts whose `service` label is `service`.
pub fn plan_for_service(name: &str, waves: &[&str], max_failed: &str, service: &str) -> pb::PlanSpec {
    pb::PlanSpec {
        selector: [(
            "service".to_string(),
            pb::LabelValues {
                values: vec![service.into()],
            },
        )]
        .into(),
        ..plan(name, waves, max_failed)
    }
}

/// A simulated fleet of `hosts` in a process of its own (`rollout agent --simulate`,
/// Apply latency `latency_ms` as "MIN..MAX", logging to `log`), and the fleet file a
/// controller is given for it (every host at the simulator's address), written in
/// `dir`: the process, the fleet and that file's path.
pub async fn spawn_simulator(
    dir: &Path,
    hosts: usize,
    latency_ms: &str,
    log: &Path,
) -> (rollout::cli::process::Spawned, FleetFile, PathBuf) {
    spawn_simulator_with(dir, hosts, latency_ms, log, &[]).await
}

/// [`spawn_simulator`] with `extra` flags (`--fail-rate 0.3`).
pub async fn spawn_simulator_with(
    dir: &Path,
    hosts: usize,
    latency_ms: &str,
    log: &Path,
    extra: &[&str],
) -> (rollout::cli::process::Spawned, FleetFile, PathBuf) {
    let (sim_fleet, ctl_fleet) = (dir.join("sim.yaml"), dir.join("fleet.yaml"));
    std::fs::write(&sim_fleet, fleet(hosts, "127.0.0.1:1").to_yaml()).expect("write the simulator's fleet");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "agent".as_ref(),
        "--simulate".as_ref(),
        sim_fleet.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--latency-ms".as_ref(),
        latency_ms.as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let agent = spawn_rollout(args, log, "the simulator").await;
    let fleet = fleet(hosts, &agent.addr.to_string());
    std::fs::write(&ctl_fleet, fleet.to_yaml()).expect("write the controller's fleet");
    (agent, fleet, ctl_fleet)
}

pub async fn submit(client: &mut Client, spec: pb::PlanSpec) -> pb::Rollout {
    client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec)),
            source_name: String::new(),
            dry_run: false,
            request_id: String::new(),
            at_unix_ms: 0,
        })
        .await
        .expect("submit")
        .into_inner()
        .rollout
        .expect("rollout")
}

/// The audit log of one rollout, oldest first.
pub async fn timeline(client: &mut Client, rollout: &str) -> Vec<pb::EventRecord> {
    client
        .list_events(pb::ListEventsRequest {
            rollout: rollout.into(),
            ..Default::default()
        })
        .await
        .expect("list events")
        .into_inner()
        .events
}

/// Submits through `client` rollout `name` over every host in two waves (10%, 100%)
/// with a gate after the first that needs two approvals, four-eyes; returns the open
/// gate once the rollout waits at it.
pub async fn gated_at_ten_percent(client: &mut Client, name: &str) -> pb::Gate {
    let mut spec = plan(name, &["10%", "100%"], "0");
    spec.max_parallel = 50;
    spec.bake = "1s".into();
    spec.gates = vec![pb::GateSpec {
        after: "10%".into(),
        approvals: 2,
        four_eyes: true,
        timeout: "1h".into(),
        ..Default::default()
    }];
    submit(client, spec).await;
    within(
        120,
        "the gate to open",
        watch_until(client, name, |r| {
            r.state() == pb::RolloutState::AwaitingApproval || r.state().is_terminal()
        }),
    )
    .await;
    get(client, name).await.gate.expect("the open gate")
}

/// Rollout `name` once it ended (watched, at most 120 s).
/// The rollout's snapshot once `done` holds (watched, at most `secs`).
pub async fn until(
    client: &mut Client,
    name: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&pb::Rollout) -> bool,
) -> pb::Rollout {
    let mut seen = within(secs, what, watch_until(client, name, done)).await;
    seen.pop().expect("a snapshot")
}

pub async fn ended(client: &mut Client, name: &str) -> pb::Rollout {
    let seen = within(
        120,
        "the rollout to finish",
        watch_until(client, name, |r| r.state().is_terminal()),
    )
    .await;
    seen.into_iter().last().expect("a snapshot")
}

/// The whole audit log, oldest first, once `done` holds for it (polled, at most 30 s):
/// for lines written just after what the test saw happen.
pub async fn audit_until(
    client: &mut Client,
    what: &str,
    done: impl Fn(&[pb::EventRecord]) -> bool,
) -> Vec<pb::EventRecord> {
    within(30, what, async {
        loop {
            let events = timeline(client, "").await;
            if done(&events) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Polls restart job `id` until `done` says so (at most 60 s), and returns it.
pub async fn restart_job_until(client: &mut Client, id: u64, done: impl Fn(&pb::RestartJob) -> bool) -> pb::RestartJob {
    within(60, "the restart job to reach the awaited state", async {
        loop {
            let job = client
                .get_restart_job(pb::GetRestartJobRequest {
                    id,
                    include_hosts: false,
                })
                .await
                .expect("get the restart job")
                .into_inner();
            if done(&job) {
                return job;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Watches a rollout until `done` says so, returning every snapshot seen.
pub async fn watch_until(client: &mut Client, name: &str, done: impl Fn(&pb::Rollout) -> bool) -> Vec<pb::Rollout> {
    let mut stream = client
        .watch_rollout(pb::GetRolloutRequest {
            name: name.into(),
            id: 0,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut seen = Vec::new();
    while let Some(r) = stream.message().await.expect("stream") {
        let stop = done(&r);
        seen.push(r);
        if stop {
            return seen;
        }
    }
    panic!(
        "the watch stream ended before the condition held; last: {:?}",
        seen.last().map(|r| r.state())
    );
}

pub async fn get(client: &mut Client, name: &str) -> pb::Rollout {
    client
        .get_rollout(pb::GetRolloutRequest {
            name: name.into(),
            id: 0,
        })
        .await
        .expect("get")
        .into_inner()
}

/// Every host of rollout `name` that `filter` selects, read `page_size` at a time
/// through `ListRolloutHosts`.
pub async fn all_hosts(client: &mut Client, name: &str, filter: pb::HostFilter, page_size: u32) -> Vec<pb::HostResult> {
    let mut hosts = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_rollout_hosts(pb::ListRolloutHostsRequest {
                name: name.into(),
                filter: filter as i32,
                page_size,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("a page of hosts")
            .into_inner();
        hosts.extend(page.hosts);
        token = page.next_page_token;
        if token.is_empty() {
            return hosts;
        }
    }
}

pub fn action(name: &str) -> pb::RolloutActionRequest {
    pb::RolloutActionRequest {
        name: name.into(),
        ..Default::default()
    }
}

/// A simulator and a controller on it, with a connected client.
pub struct Harness {
    pub sim: Sim,
    pub controller: Controller,
    pub client: Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start(hosts: usize, options: SimulatorOptions) -> Harness {
        let sim = Sim::start(hosts, options).await;
        let dir = tempfile::tempdir().expect("temp dir");
        let controller = Controller::start(&dir.path().join("data"), &sim.fleet).await;
        let client = controller.client().await;
        Harness {
            sim,
            controller,
            client,
            _dir: dir,
        }
    }

    /// Stops the controller (gracefully), runs `between` on its data dir (no controller
    /// holds it then), and starts a new one on it.
    pub async fn restart_controller(self, between: impl FnOnce(&Path)) -> Harness {
        let Harness {
            sim, controller, _dir, ..
        } = self;
        let data = controller.data.clone();
        controller.stop().await;
        between(&data);
        let controller = Controller::start(&data, &sim.fleet).await;
        let client = controller.client().await;
        Harness {
            sim,
            controller,
            client,
            _dir,
        }
    }

    pub async fn stop(self) {
        self.controller.stop().await;
        self.sim.stop().await;
    }
}

/// A wall clock that stands still where a test puts it.
pub struct FixedClock(pub std::sync::atomic::AtomicI64);

impl FixedClock {
    /// At a UTC instant written `2026-11-24T00:30`.
    pub fn at(utc: &str) -> Arc<FixedClock> {
        let ms = format!("{utc}:00Z")
            .parse::<jiff::Timestamp>()
            .expect("instant")
            .as_millisecond();
        Arc::new(FixedClock(std::sync::atomic::AtomicI64::new(ms)))
    }
}

impl rollout::engine::Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the agent at `addr` says of every host of `fleet`, in fleet order.
pub async fn probe_all(addr: &str, fleet: &FleetFile) -> Vec<(String, pb::ProbeResponse)> {
    let mut agent = AgentClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the agent");
    let mut answers = Vec::with_capacity(fleet.hosts.len());
    for host in &fleet.hosts {
        let p = agent
            .probe(pb::ProbeRequest {
                host_id: host.id.clone(),
            })
            .await
            .expect("probe")
            .into_inner();
        answers.push((host.id.clone(), p));
    }
    answers
}
