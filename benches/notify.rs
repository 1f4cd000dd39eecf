//! What notifying costs a rollout, through the real binaries: a simulated fleet
//! process, controller processes with their sled stores, and a webhook receiver in
//! this process that verifies every signature.
//!
//! ```sh
//! cargo bench --bench notify                   # 100,000 hosts
//! cargo bench --bench notify -- 10000
//! ```
//!
//! For each size N, in one run on one simulator: the end-to-end fix of the scale
//! benchmark (waves [1%, 10%, 50%, 100%], zero bake, zero agent latency, max_parallel
//! 1000) five times without sinks and five times with a webhook sink (every
//! event, signed), interleaved; hosts per second of each, the medians and their
//! ratio; and whether the receiver got every event the outbox holds (seq 1..=last,
//! each signature good).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use support::{fleet, path, spawn, submit, wait_for};

const ROUNDS: usize = 5;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() { vec![100_000] } else { sizes };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| hosts | figure | value |");
    println!("|------:|--------|------:|");
    for n in sizes {
        runtime.block_on(run(n));
    }
}

/// What the receiver got: the seqs of each subject, and any bad signature.
#[derive(Default)]
struct Got {
    seqs: BTreeMap<String, BTreeSet<u64>>,
    /// Rollouts whose `rollout.succeeded` came.
    ended: BTreeSet<String>,
    bad: usize,
    requests: usize,
}

struct Receiver {
    url: String,
    secret: String,
    got: Arc<Mutex<Got>>,
}

async fn receiver() -> Receiver {
    let secret = rollout::notify::sinks::new_secret();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("a secret");
    let got = Arc::new(Mutex::new(Got::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    let state = (key, got.clone());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(Arc::new(state));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver { url, secret, got }
}

type Shared = Arc<(Vec<u8>, Arc<Mutex<Got>>)>;

async fn receive(
    axum::extract::State(state): axum::extract::State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut mac = Hmac::<Sha256>::new_from_slice(&state.0).expect("any key");
    mac.update(format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).as_bytes());
    mac.update(&body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let mut got = state.1.lock().unwrap_or_else(|p| p.into_inner());
    got.requests += 1;
    if header("webhook-signature") != expected {
        got.bad += 1;
    }
    if let (Some(subject), Some(seq)) = (event["subject"].as_str(), event["data"]["seq"].as_u64()) {
        got.seqs.entry(subject.to_string()).or_default().insert(seq);
        if event["type"] == "rollout.succeeded" {
            got.ended.insert(subject.to_string());
        }
    }
    StatusCode::OK
}

async fn run(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("notify-{n}.log"));
    std::fs::remove_file(&log).ok();
    let (sim_fleet, fleet_path) = (dir.path().join("sim.yaml"), dir.path().join("fleet.yaml"));
    std::fs::write(&sim_fleet, fleet(n, "127.0.0.1:1").to_yaml()).expect("write");
    let mut agent = spawn(
        &["agent", "--simulate", path(&sim_fleet), "--listen", "127.0.0.1:0"],
        &log,
    )
    .await;
    std::fs::write(&fleet_path, fleet(n, &agent.addr.to_string()).to_yaml()).expect("write");
    let hook = receiver().await;
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, &hook.secret).expect("write");
    let sinks = dir.path().join("sinks.yaml");
    std::fs::write(
        &sinks,
        format!(
            "sinks:\n  - name: bench\n    kind: webhook\n    url: {}\n    secret_file: {}\n",
            hook.url,
            secret.display()
        ),
    )
    .expect("write");
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut told = Vec::new();
    for round in 0..ROUNDS * 2 {
        let notifying = round % 2 == 1;
        let data = dir.path().join(format!("data-{round}"));
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path(&data),
            "--fleet",
            path(&fleet_path),
        ];
        if notifying {
            args.extend(["--notify", path(&sinks)]);
        }
        let mut controller = spawn(&args, &log).await;
        let mut client = rollout::cli::connect(&format!("http://{}", controller.addr))
            .await
            .expect("connect");
        let name = format!("round-{round}");
        let started = Instant::now();
        submit(&mut client, &name, &format!("15.20.{round}.1")).await;
        wait_for(&mut client, &name, 100.0).await;
        let rate = n as f64 / started.elapsed().as_secs_f64();
        rates[usize::from(notifying)].push(rate);
        let sink = if notifying { "a webhook sink" } else { "no sink" };
        row(
            n,
            &format!("end to end with {sink}, round {}", round / 2 + 1),
            format!("{rate:.0} hosts/s"),
        );
        if notifying {
            ended(&name, &hook).await;
        }
        controller.terminate(Duration::from_secs(60)).await.ok();
        if notifying {
            let store = rollout::store::Store::open(&data).expect("the store");
            let id = store
                .rollouts()
                .expect("rollouts")
                .into_iter()
                .find(|r| r.name == name)
                .expect("the rollout")
                .id;
            let written = store
                .notices(rollout::store::Subject::Rollout(id), 0)
                .expect("notices")
                .len();
            told.push((name, written));
        }
    }
    let [without, with] = rates.map(median);
    row(n, "median without sinks", format!("{without:.0} hosts/s"));
    row(n, "median with a webhook sink", format!("{with:.0} hosts/s"));
    row(n, "with / without", format!("**{:.1}%**", with * 100.0 / without));
    {
        let got = hook.got.lock().unwrap_or_else(|p| p.into_inner());
        for (name, written) in told {
            let seqs = got.seqs.get(&name).cloned().unwrap_or_default();
            let all = seqs.iter().copied().eq(1..=written as u64);
            row(
                n,
                &format!("events of {name}: written / delivered (every seq, no gap)"),
                format!("{written} / {} ({})", seqs.len(), if all { "all" } else { "LOST SOME" }),
            );
        }
        row(n, "requests with a bad signature", got.bad.to_string());
    }
    agent.terminate(Duration::from_secs(30)).await.ok();
}

/// Waits (a minute at most) until the receiver got rollout `name`'s terminal event.
async fn ended(name: &str, hook: &Receiver) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !hook.got.lock().unwrap_or_else(|p| p.into_inner()).ended.contains(name) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row(n: usize, figure: &str, value: String) {
    println!("| {n} | {figure} | {value} |");
}
