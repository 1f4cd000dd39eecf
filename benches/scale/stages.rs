//! `cargo bench --bench scale -- stages [N]`: what stages and a fault domain cost a
//! rollout's throughput, against one stage, in one run.

use std::path::Path;
use std::time::{Duration, Instant};

use rollout::proto::v1 as pb;

use super::row;
use crate::support::{PARALLEL, path, serving, simulated_fleet, submit, wait_for};

/// A plan in three stages (a canary ring, a pilot region, the rest) with a fault
/// domain per zone.
fn staged_plan(name: &str, version: &str) -> String {
    format!(
        "name: {name}\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: {version}\nmax_parallel: {PARALLEL}\nbake: 0s\n\
         stages:\n  - name: canary\n    selector: {{ring: \"0\"}}\n    waves: [100%]\n\
         \x20 - name: pilot\n    selector: {{region: emea}}\n    waves: [10%, 50%, 100%]\n\
         \x20 - name: rest\n    waves: [10%, 50%, 100%]\n\
         fault_domain:\n  label: zone\n  max_unavailable: 10%\n"
    )
}

/// `cargo bench --bench scale -- stages [N]`: the end-to-end rollout of the plain
/// four-wave plan and of the same hosts in three stages with a fault domain per zone,
/// on one controller and simulator, alternated twice; each rate and the ratio.
pub async fn stages_against_one(n: usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("scale-stages-{n}.log"));
    std::fs::remove_file(&log).ok();
    let (mut agent, fleet_path) = simulated_fleet(n, dir.path(), &log).await;
    let data = dir.path().join("data");
    let (mut controller, mut client) = serving("--data", path(&data), &fleet_path, &log).await;
    // The plain plan of the other benches (4 waves), the same hosts in one stage of 7
    // waves (as many as the stages have together: each wave's end drains what is in
    // flight), and in 3 stages with a fault domain.
    let seven = |name: &str, version: &str| {
        format!(
            "name: {name}\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: {version}\nwaves: [1%, 5%, 10%, 25%, 50%, 75%, 100%]\nmax_parallel: {PARALLEL}\nbake: 0s\n"
        )
    };
    let kinds = [
        "one stage, 4 waves",
        "one stage, 7 waves",
        "3 stages (7 waves) + fault domain (zone, 10%)",
    ];
    let mut rates: [Vec<f64>; 3] = Default::default();
    for round in 0..2 {
        for (k, kind) in kinds.iter().enumerate() {
            let name = format!("plan{k}-{round}");
            let version = format!("15.20.{round}.{k}");
            let started = Instant::now();
            if k == 0 {
                submit(&mut client, &name, &version).await;
            } else {
                let yaml = if k == 1 {
                    seven(&name, &version)
                } else {
                    staged_plan(&name, &version)
                };
                client
                    .submit_plan(pb::SubmitPlanRequest {
                        plan: Some(pb::submit_plan_request::Plan::Yaml(yaml)),
                        ..Default::default()
                    })
                    .await
                    .expect("submit");
            }
            wait_for(&mut client, &name, 100.0).await;
            let rate = n as f64 / started.elapsed().as_secs_f64();
            rates[k].push(rate);
            row(
                n,
                &format!("end to end, {kind} (round {}), hosts/s", round + 1),
                format!("{rate:.0}"),
            );
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    for (k, of) in [(2, 0), (2, 1), (1, 0)] {
        row(
            n,
            &format!("{} / {}", kinds[k], kinds[of]),
            format!("{:.0}%", mean(&rates[k]) * 100.0 / mean(&rates[of])),
        );
    }
    controller.terminate(Duration::from_secs(60)).await.ok();
    agent.terminate(Duration::from_secs(30)).await.ok();
}
