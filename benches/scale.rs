//! Fleet-scale benchmarks, through the real binaries: a simulated fleet process, a
//! controller process with its sled store, and gRPC between them.
//!
//! ```sh
//! cargo bench --bench scale                    # 10,000 and 100,000 hosts
//! cargo bench --bench scale -- 10000 100000 1000000
//! ```
//!
//! For each size N, one line per figure:
//! - end to end: a fix over all N hosts, waves [1%, 10%, 50%, 100%], zero bake, zero
//!   agent latency, max_parallel 1000: hosts per second from SubmitPlan to success;
//! - the ceiling: raw Apply calls per second from this process to a `--noop` simulator
//!   (answers at once, touches nothing) on the same loopback, 1000 in flight, and the
//!   ratio of the two;
//! - the controller's peak RSS (VmHWM) per host, and the store's size per host;
//! - GetRollout latency p50/p99 from 32 concurrent clients (each a call every 5 ms),
//!   against the idle controller, then
//!   during a second rollout;
//! - resume: that second rollout is killed (SIGKILL) half-way; the time from starting a
//!   new controller on that store to the first Apply the simulator receives.
//!
//! With Debian's `etcd` (three members on loopback, started here):
//! - `-- etcd N`: the end-to-end rollout with the store in sled, then in etcd;
//! - `-- failover [N]`: failovers between two controllers on etcd (see [`failovers`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;
use rollout::proto::v1::agent_client::AgentClient;

#[path = "scale/stages.rs"]
mod stages;
mod support;

use support::{PARALLEL, fleet, ms, path, serving, simulated_fleet, spawn, submit, wait_for};

fn main() {
    let etcd = std::env::args().any(|a| a == "etcd");
    let failover = std::env::args().any(|a| a == "failover");
    let staged = std::env::args().any(|a| a == "stages");
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = match (sizes.is_empty(), failover) {
        (false, _) => sizes,
        (true, true) => vec![20_000],
        (true, false) => vec![10_000, 100_000],
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| hosts | figure | value |");
    println!("|------:|--------|------:|");
    for n in sizes {
        if staged {
            runtime.block_on(stages::stages_against_one(n));
        } else if failover {
            runtime.block_on(failovers(n));
        } else if etcd {
            runtime.block_on(etcd_against_sled(n));
        } else {
            runtime.block_on(run(n));
        }
    }
}

/// `cargo bench --bench scale -- etcd N`: the end-to-end rollout with the store in a
/// sled directory, then in a three-member etcd cluster on loopback (Debian's `etcd`),
/// in the same run on the same simulator; the ratio of the two.
async fn etcd_against_sled(n: usize) {
    use rollout::store::etcd_backend::local::LocalEtcd;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scale-etcd-{n}.log"));
    std::fs::remove_file(&log).ok();
    let (mut agent, fleet_path) = simulated_fleet(n, dir.path(), &log).await;
    let etcd = LocalEtcd::start(3)
        .await
        .expect("a three-member etcd cluster starts (is etcd installed?)");
    let (data, url) = (dir.path().join("data"), etcd.url("bench"));
    let mut rates = Vec::new();
    for (store, flag, at, version) in [
        ("sled", "--data", path(&data), "15.20.8207.12"),
        ("etcd (3 members)", "--store", url.as_str(), "15.20.8207.13"),
    ] {
        let (mut controller, mut client) = serving(flag, at, &fleet_path, &log).await;
        let name = if store == "sled" { "on-sled" } else { "on-etcd" };
        let started = Instant::now();
        submit(&mut client, name, version).await;
        wait_for(&mut client, name, 100.0).await;
        let elapsed = started.elapsed();
        let rate = n as f64 / elapsed.as_secs_f64();
        rates.push(rate);
        row(
            n,
            &format!("end to end with the store in {store}, hosts/s"),
            format!("{rate:.0} ({:.2} s)", elapsed.as_secs_f64()),
        );
        if let Some(writes) = store_writes(&log, name).await {
            row(
                n,
                &format!("store writes per host, {store}"),
                format!("{:.4} ({writes} batches)", writes as f64 / n as f64),
            );
        }
        controller.terminate(Duration::from_secs(60)).await.ok();
    }
    row(n, "etcd / sled", format!("{:.0}%", rates[1] * 100.0 / rates[0]));
    agent.terminate(Duration::from_secs(30)).await.ok();
    etcd.stop();
}

/// Failovers measured: `cargo bench --bench scale -- failover [N]`.
const FAILOVERS: usize = 5;

/// Two controllers on a three-member etcd cluster (lease 3 s), a rollout of `n` hosts
/// with 20-40 ms agent latency and 10 calls in flight, and [`FAILOVERS`] times: the
/// leader killed (SIGKILL), the time until the simulator receives the new leader's
/// first Apply; then the killed one started again (it stands by) for the next round.
async fn failovers(n: usize) {
    use rollout::store::etcd_backend::local::LocalEtcd;
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scale-failover-{n}.log"));
    std::fs::remove_file(&log).ok();
    let (sim_fleet, fleet_path) = (dir.path().join("sim.yaml"), dir.path().join("fleet.yaml"));
    std::fs::write(&sim_fleet, fleet(n, "127.0.0.1:1").to_yaml()).unwrap();
    let sim = [
        "agent",
        "--simulate",
        path(&sim_fleet),
        "--listen",
        "127.0.0.1:0",
        "--latency-ms",
        "20..40",
    ];
    let mut agent = spawn(&sim, &log).await;
    std::fs::write(&fleet_path, fleet(n, &agent.addr.to_string()).to_yaml()).unwrap();
    let etcd = LocalEtcd::start(3)
        .await
        .expect("a three-member etcd cluster starts (is etcd installed?)");
    let store = etcd.url("failover");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        &store,
        "--fleet",
        path(&fleet_path),
    ];
    let mut controllers = [spawn(&args, &log).await, spawn(&args, &log).await];
    let urls = |c: &[Spawned; 2]| c.each_ref().map(|c| format!("http://{}", c.addr));
    let mut leader = wait_for_leader(&urls(&controllers), None).await;
    let mut client = rollout::cli::connect(&urls(&controllers)[leader])
        .await
        .expect("connect");
    let plan = "name: failover\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: 15.20.8207.14\nwaves: [1%, 10%, 50%, 100%]\nmax_parallel: 10\nbake: 0s\n";
    client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Yaml(plan.into())),
            ..Default::default()
        })
        .await
        .expect("submit");
    wait_for(&mut client, "failover", 1.0).await;
    let mut probe = AgentClient::connect(format!("http://{}", agent.addr))
        .await
        .expect("agent");
    let host = pb::ProbeRequest {
        host_id: fleet(1, "x").hosts[0].id.clone(),
    };
    let mut calls = async || {
        probe
            .probe(host.clone())
            .await
            .map_or(0, |p| p.into_inner().apply_calls)
    };
    let mut times = Vec::new();
    for _ in 0..FAILOVERS {
        controllers[leader].kill9().await.expect("kill the leader");
        let killed = Instant::now();
        // Calls the dead leader had sent may still land: wait until the count settles.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = calls().await;
        while calls().await == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(killed.elapsed());
        let dead = leader;
        controllers[dead] = spawn(&args, &log).await;
        leader = wait_for_leader(&urls(&controllers), Some(1 - dead)).await;
        let mut client = rollout::cli::connect(&urls(&controllers)[leader])
            .await
            .expect("connect");
        let r = client
            .get_rollout(pb::GetRolloutRequest {
                name: "failover".into(),
                id: 0,
            })
            .await
            .expect("get")
            .into_inner();
        if r.state().is_terminal() {
            eprintln!("the rollout ended after {} failovers: give more hosts", times.len());
            break;
        }
    }
    let listed: Vec<String> = times.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect();
    row(
        n,
        "failover: SIGKILL of the leader to the new leader's first Apply (lease 3 s), s",
        listed.join(", "),
    );
    times.sort();
    if let Some(median) = times.get(times.len() / 2) {
        row(n, "failover, median", format!("{:.2} s", median.as_secs_f64()));
    }
    for c in &mut controllers {
        c.terminate(Duration::from_secs(30)).await.ok();
    }
    agent.terminate(Duration::from_secs(30)).await.ok();
    etcd.stop();
}

/// Which of `urls` leads (`expected`, when given, must), asking until one does.
async fn wait_for_leader(urls: &[String; 2], expected: Option<usize>) -> usize {
    loop {
        for (i, url) in urls.iter().enumerate() {
            let Ok(mut c) = rollout::cli::connect(url).await else {
                continue;
            };
            let Ok(listed) = c.list_controllers(pb::ListControllersRequest {}).await else {
                continue;
            };
            let leads = listed
                .into_inner()
                .controllers
                .iter()
                .any(|c| &c.advertise == url && c.role == "leader");
            if leads && expected.is_none_or(|e| e == i) {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GetRollout `name` from 32 clients, each a call every 5 ms, until `until` is done:
/// every call's latency, sorted.
async fn read_latency(server: &str, name: &str, until: impl std::future::Future<Output = ()>) -> Vec<Duration> {
    let reading = Arc::new(AtomicBool::new(true));
    let mut readers = Vec::new();
    for _ in 0..32 {
        let (server, reading, name) = (server.to_string(), reading.clone(), name.to_string());
        readers.push(tokio::spawn(async move {
            let mut c = rollout::cli::connect(&server).await.expect("connect");
            let mut took = Vec::new();
            while reading.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = c
                    .get_rollout(pb::GetRolloutRequest {
                        name: name.clone(),
                        id: 0,
                    })
                    .await;
                took.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            took
        }));
    }
    until.await;
    reading.store(false, Ordering::Relaxed);
    let mut latencies: Vec<Duration> = Vec::new();
    for r in readers {
        latencies.extend(r.await.unwrap_or_default());
    }
    latencies.sort();
    latencies
}

fn latency_row(n: usize, figure: &str, latencies: &[Duration]) {
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    if let (Some(p50), Some(p99)) = (pct(0.50), pct(0.99)) {
        row(
            n,
            figure,
            format!("{:.2} ms / {:.2} ms ({} calls)", ms(*p50), ms(*p99), latencies.len()),
        );
    }
}

/// The store batches the controller says rollout `name`'s driver wrote (its log's
/// "driver done" line, written just after the rollout ends).
async fn store_writes(log: &Path, name: &str) -> Option<u64> {
    let span = format!("name={name} ");
    for _ in 0..50 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let found = text
            .lines()
            .filter(|l| l.contains(&span) && l.contains("driver done"))
            .find_map(|l| l.split("store_writes=").nth(1)?.split(' ').next()?.parse().ok());
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

fn row(n: usize, figure: &str, value: String) {
    println!("| {n} | {figure} | {value} |");
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Kept after the run: the controllers' own timings (store open, inventory, resume).
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scale-{n}.log"));
    std::fs::remove_file(&log).ok();
    let sim_fleet = dir.path().join("sim.yaml");
    let fleet_path = dir.path().join("fleet.yaml");
    let sim = fleet(n, "127.0.0.1:1");
    std::fs::write(&sim_fleet, sim.to_yaml()).unwrap();
    // Any host: a probe's answer carries the simulator's count of Apply calls.
    let first_host = sim.hosts[0].id.clone();
    drop(sim);

    // The ceiling: raw Apply calls to a simulator that does nothing.
    let mut noop = spawn(
        &[
            "agent",
            "--simulate",
            path(&sim_fleet),
            "--listen",
            "127.0.0.1:0",
            "--noop",
        ],
        &log,
    )
    .await;
    let ceiling = raw_calls(&noop.addr.to_string(), n).await;
    noop.terminate(Duration::from_secs(30)).await.ok();

    let mut agent = spawn(
        &["agent", "--simulate", path(&sim_fleet), "--listen", "127.0.0.1:0"],
        &log,
    )
    .await;
    std::fs::write(&fleet_path, fleet(n, &agent.addr.to_string()).to_yaml()).unwrap();
    let data = dir.path().join("data");
    let serve = |with_fleet: bool| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data", path(&data)];
        if with_fleet {
            args.extend(["--fleet", path(&fleet_path)]);
        }
        args
    };
    let mut controller = spawn(&serve(true), &log).await;
    let server = format!("http://{}", controller.addr);
    let mut client = rollout::cli::connect(&server).await.expect("connect");
    // The controller prints its address when it binds, before it loads the fleet file
    // (12.8 s at a million hosts): the clock starts once it answers.
    let loading = Instant::now();
    client
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .expect("the controller answers");
    row(
        n,
        "controller ready (fleet file loaded), s",
        format!("{:.2}", loading.elapsed().as_secs_f64()),
    );

    // Throughput: the rollout alone.
    let started = Instant::now();
    submit(&mut client, "all", "15.20.8207.12").await;
    wait_for(&mut client, "all", 100.0).await;
    let elapsed = started.elapsed();
    let rate = n as f64 / elapsed.as_secs_f64();
    row(
        n,
        "end to end, hosts/s",
        format!("{rate:.0} ({:.2} s)", elapsed.as_secs_f64()),
    );
    row(n, "raw gRPC ceiling, calls/s", format!("{ceiling:.0}"));
    row(n, "end to end / ceiling", format!("{:.0}%", rate * 100.0 / ceiling));
    if let Some(writes) = store_writes(&log, "all").await {
        row(
            n,
            "store writes per host (batches written while the rollout ran / hosts)",
            format!("{:.4} ({writes} batches)", writes as f64 / n as f64),
        );
    }
    if let Some(peak) = peak_rss(&controller) {
        row(
            n,
            "controller peak RSS per host",
            format!("{:.1} KiB ({} MiB)", peak as f64 / 1024.0 / n as f64, peak >> 20),
        );
    }

    // Reads: 32 clients, each a GetRollout every 5 ms, while a second rollout runs
    // to half-way (where the resume measurement below kills it).
    // Read latency: first against the idle controller (the rollout above is done),
    // then during a second rollout, up to its half-way point.
    let idle = read_latency(&server, "all", tokio::time::sleep(Duration::from_secs(3))).await;
    latency_row(n, "GetRollout p50 / p99 (32 clients, idle controller)", &idle);
    let during = read_latency(&server, "again", async {
        submit(&mut client, "again", "15.20.8207.13").await;
        wait_for(&mut client, "again", 50.0).await;
    })
    .await;
    latency_row(n, "GetRollout p50 / p99 (32 clients, during a rollout)", &during);

    // Resume: the second rollout killed half-way, then a new controller on the store.
    controller.kill9().await.expect("kill");
    if let Some(keep) = std::env::var_os("SCALE_KEEP_DATA") {
        // A copy of the killed controller's store, to profile a resume on.
        let status = std::process::Command::new("cp")
            .args(["-r", path(&data)])
            .arg(&keep)
            .status();
        println!("<!-- store of the killed controller copied to {keep:?}: {status:?} -->");
    }
    let mut probe = AgentClient::connect(format!("http://{}", agent.addr))
        .await
        .expect("agent");
    let calls = || pb::ProbeRequest {
        host_id: first_host.clone(),
    };
    let before = probe
        .probe(calls())
        .await
        .map(|p| p.into_inner().apply_calls)
        .unwrap_or(0);
    let restarted = Instant::now();
    let mut controller = spawn(&serve(false), &log).await;
    let first = loop {
        let now = probe
            .probe(calls())
            .await
            .map(|p| p.into_inner().apply_calls)
            .unwrap_or(0);
        if now > before {
            break restarted.elapsed();
        }
        if restarted.elapsed() > Duration::from_secs(600) {
            break Duration::MAX;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    row(
        n,
        "resume: restart to first dispatch (half-done rollout)",
        format!("{:.0} ms", ms(first)),
    );
    let server = format!("http://{}", controller.addr);
    let mut client = rollout::cli::connect(&server).await.expect("connect");
    wait_for(&mut client, "again", 100.0).await;
    controller.terminate(Duration::from_secs(120)).await.ok();
    let size = dir_size(&data);
    row(
        n,
        "store size per host (after two rollouts)",
        format!("{:.0} B ({} MiB)", size as f64 / n as f64, size >> 20),
    );
    agent.terminate(Duration::from_secs(30)).await.ok();
}

/// `n` Apply calls with PARALLEL in flight over one channel, as the controller makes
/// them; calls per second.
async fn raw_calls(addr: &str, n: usize) -> f64 {
    let client = AgentClient::connect(format!("http://{addr}")).await.expect("agent");
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..PARALLEL {
        let (mut client, next) = (client.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let request = pb::ApplyRequest {
                    host_id: format!("host-{i}"),
                    operation_id: format!("op-{i}"),
                    action: pb::Action::Deploy as i32,
                    version: "2".into(),
                    epoch: 0,
                    detach: false,
                };
                let _ = client.apply(request).await;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn peak_rss(p: &Spawned) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.pid()?)).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
