//! What the benchmarks share: the fleet they generate, the processes they start, the
//! plan they submit and how they wait for it.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use rollout::cli::process::Spawned;
use rollout::inventory::{GenerateOptions, generate};
use rollout::proto::v1 as pb;

pub const EXE: &str = env!("CARGO_BIN_EXE_rollout");
/// Calls in flight of the benchmarks' plans.
pub const PARALLEL: usize = 1_000;

pub fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn fleet(n: usize, agent: &str) -> rollout::inventory::FleetFile {
    generate(&GenerateOptions {
        hosts: n,
        seed: 1,
        agent: agent.to_string(),
        unhealthy_rate: 0.0,
    })
}

pub async fn spawn(args: &[&str], log: &Path) -> Spawned {
    Spawned::start(Path::new(EXE), args, Some(log))
        .await
        .expect("start a process")
}

pub async fn submit(client: &mut rollout::cli::Client, name: &str, version: &str) {
    let plan = format!(
        "name: {name}\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: {version}\nwaves: [1%, 10%, 50%, 100%]\nmax_parallel: {PARALLEL}\nbake: 0s\n"
    );
    client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Yaml(plan)),
            ..Default::default()
        })
        .await
        .expect("submit");
}

/// Polls until the rollout reaches `percent` (and, at 100, succeeds).
pub async fn wait_for(client: &mut rollout::cli::Client, name: &str, percent: f64) {
    loop {
        let r = client
            .get_rollout(pb::GetRolloutRequest {
                name: name.into(),
                id: 0,
            })
            .await
            .expect("get")
            .into_inner();
        let done = r.state() == pb::RolloutState::Succeeded;
        assert!(
            !matches!(r.state(), pb::RolloutState::Halted | pb::RolloutState::Failed),
            "{}",
            r.halt_reason
        );
        if r.percent_complete >= percent && (percent < 100.0 || done) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A simulated fleet of `n` generated hosts in a process of its own (`rollout agent
/// --simulate`, logging to `log`) and the fleet file a controller is given for it,
/// written in `dir`: the process and that file's path.
pub async fn simulated_fleet(n: usize, dir: &Path, log: &Path) -> (Spawned, std::path::PathBuf) {
    let (sim_fleet, fleet_path) = (dir.join("sim.yaml"), dir.join("fleet.yaml"));
    std::fs::write(&sim_fleet, fleet(n, "127.0.0.1:1").to_yaml()).unwrap();
    let agent = spawn(
        &["agent", "--simulate", path(&sim_fleet), "--listen", "127.0.0.1:0"],
        log,
    )
    .await;
    std::fs::write(&fleet_path, fleet(n, &agent.addr.to_string()).to_yaml()).unwrap();
    (agent, fleet_path)
}

/// `rollout serve` on a loopback port with the store at `store_flag store` over the
/// fleet file `fleet`, and a client once it answers (it leads and has loaded the
/// fleet: a standby's answer is Unavailable).
pub async fn serving(store_flag: &str, store: &str, fleet: &Path, log: &Path) -> (Spawned, rollout::cli::Client) {
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        store_flag,
        store,
        "--fleet",
        path(fleet),
    ];
    let controller = spawn(&args, log).await;
    let mut client = rollout::cli::connect(&format!("http://{}", controller.addr))
        .await
        .expect("connect");
    while client.list_rollouts(pb::ListRolloutsRequest::default()).await.is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (controller, client)
}
