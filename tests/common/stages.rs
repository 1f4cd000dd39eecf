//! Plans in stages for tests: a stage, the three-stage plan over the generated fleet
//! (canary ring, apac, the rest), each host's stage in it, and the check that stages
//! ran in order from the hosts' start and finish times, which `rollout hosts --output
//! json` lists.

use std::collections::HashMap;

use rollout::inventory::FleetFile;
use rollout::proto::v1 as pb;

use super::{plan, rollout, text};

/// A stage of a plan: `selector` as (label, values) pairs (none: every host left).
pub fn stage(name: &str, selector: &[(&str, &[&str])], waves: &[&str]) -> pb::StageSpec {
    pb::StageSpec {
        name: name.into(),
        selector: selector
            .iter()
            .map(|(k, v)| {
                let values = v.iter().map(|s| s.to_string()).collect();
                (k.to_string(), pb::LabelValues { values })
            })
            .collect(),
        waves: waves.iter().map(|w| w.to_string()).collect(),
        bake: String::new(),
    }
}

/// [`plan`] in three stages over the generated fleet: canary (ring 0, one wave),
/// apac (10%, 50%, 100%), the rest (30%, 100%).
pub fn staged_plan(name: &str, max_parallel: u32) -> pb::PlanSpec {
    let mut spec = plan(name, &[], "0");
    spec.max_parallel = max_parallel;
    spec.stages = vec![
        stage("canary", &[("ring", &["0"])], &["100%"]),
        stage("apac", &[("region", &["apac"])], &["10%", "50%", "100%"]),
        stage("rest", &[], &["30%", "100%"]),
    ];
    spec
}

/// The stage of [`staged_plan`] each host of `fleet` belongs to.
pub fn stage_of(fleet: &FleetFile) -> HashMap<String, usize> {
    fleet
        .hosts
        .iter()
        .map(|h| {
            let s = if h.labels.get("ring").is_some_and(|v| v == "0") {
                0
            } else if h.labels.get("region").is_some_and(|v| v == "apac") {
                1
            } else {
                2
            };
            (h.id.clone(), s)
        })
        .collect()
}

/// Fails unless every host of a later stage started once every host of the earlier
/// ones finished (`started`/`finished` per host, `stage` per host).
pub fn stages_in_order(times: &HashMap<String, (i64, i64)>, stage: &HashMap<String, usize>) {
    let last = stage.values().copied().max().unwrap_or(0);
    for earlier in 0..last {
        let finished = times
            .iter()
            .filter(|(h, _)| stage[*h] == earlier)
            .map(|(_, (_, f))| *f)
            .max();
        let started = times
            .iter()
            .filter(|(h, _)| stage[*h] > earlier)
            .map(|(h, (s, _))| (*s, h.clone()))
            .min();
        if let (Some(finished), Some((started, host))) = (finished, started) {
            assert!(
                started >= finished,
                "{host} (a later stage) started at {started}, before stage {earlier} finished at {finished}"
            );
        }
    }
}

/// Every host of rollout `name` as `rollout hosts --rollout NAME --output json` lists
/// it (the real CLI against the controller at `url`).
pub async fn listed_hosts(url: &str, name: &str) -> Vec<serde_json::Value> {
    let out = rollout(&["hosts", "--rollout", name, "--output", "json", "--server", url]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    listed.as_array().expect("a list of hosts").clone()
}

/// Per host of rollout `name`: (started, finished), from the real CLI.
pub async fn host_times(url: &str, name: &str) -> HashMap<String, (i64, i64)> {
    listed_hosts(url, name)
        .await
        .iter()
        .map(|h| {
            let at = |k: &str| h[k].as_i64().unwrap_or_else(|| panic!("{k} of {h}"));
            (
                h["host_id"].as_str().unwrap().to_string(),
                (at("started_at_unix_ms"), at("finished_at_unix_ms")),
            )
        })
        .collect()
}
