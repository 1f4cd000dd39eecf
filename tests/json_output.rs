//! `--output json` on every command that prints a result or a table, through the
//! real CLI against a real controller and simulated fleet: each answer parses as
//! JSON (a stream as JSON lines), with the fields README's "Output as JSON" names.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// `rollout ARGS --server SERVER --output json`: exit code and every stdout line as
/// JSON (one for a result, several for a stream).
async fn json(server: &str, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut all = args.to_vec();
    all.extend(["--server", server, "--output", "json"]);
    let out = rollout(&all).await;
    let lines = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {l}")))
        .collect();
    (out.status.code(), lines)
}

/// The one JSON answer of a command that succeeded.
async fn one(server: &str, args: &[&str]) -> Value {
    let (code, mut lines) = json(server, args).await;
    assert_eq!(code, Some(0), "{args:?}");
    assert_eq!(lines.len(), 1, "{args:?}: one answer: {lines:?}");
    lines.remove(0)
}

fn plan(dir: &Path, name: &str, gated: bool, bake: &str) -> String {
    let path = dir.join(format!("{name}.yaml"));
    let gate = if gated {
        "gates:\n  - after: 10%\n    approvals: 1\n    role: operator\n"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "name: {name}\nkind: fix\nversion: '2.0'\nselector: {{region: apac}}\nwaves: [10%, 100%]\nbake: {bake}\n{gate}"
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_and_table_parses_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut agent, _fleet, ctl_fleet) = spawn_simulator(dir.path(), 120, "1..5", &log).await;
    let mut controller = spawn_controller(&dir.path().join("data"), &ctl_fleet, &[], &log).await;
    let server = format!("http://{}", controller.addr);
    let gated = plan(dir.path(), "json-fix", true, "0s");

    // Offline: a plan check, good and bad.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "name: x\n").unwrap();
    let out = rollout(&["plan", "check", &gated, bad.to_str().unwrap(), "--output", "json"]).await;
    assert_eq!(out.status.code(), Some(1), "one plan is bad");
    let checked: Value = serde_json::from_str(&text(&out.stdout)).expect("JSON");
    let checked = checked.as_array().expect("an array");
    assert_eq!(checked[0]["ok"], true);
    assert_eq!(checked[0]["name"], "json-fix");
    assert_eq!(checked[0]["waves"], serde_json::json!(["10%", "100%"]));
    assert_eq!(checked[1]["ok"], false);
    assert!(checked[1]["error"].as_str().unwrap().contains("bad.yaml"));

    // A dry run: the rollout it would be, and each wave's hosts.
    let dry = one(&server, &["submit", &gated, "--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["rollout"]["name"], "json-fix");
    let preview = dry["preview"].as_array().unwrap();
    assert_eq!(preview.len(), 2);
    assert!(preview[0]["new_hosts"].as_u64().unwrap() > 0);
    assert_eq!(
        preview[0]["host_ids"].as_array().unwrap().len() as u64,
        preview[0]["new_hosts"].as_u64().unwrap()
    );

    // The submission, then the watch to the gate as JSON lines (exit 5 at the gate).
    let submitted = one(&server, &["submit", &gated]).await;
    assert_eq!(submitted["dry_run"], false);
    assert!(submitted["rollout"]["id"].as_u64().unwrap() > 0);
    let (code, lines) = json(&server, &["watch", "json-fix", "--exit-on-gate"]).await;
    assert_eq!(code, Some(5));
    assert!(!lines.is_empty());
    let last = lines.last().unwrap();
    assert_eq!(last["state"], "awaiting-approval");
    let gate_id = last["gate"]["gate_id"].as_str().unwrap().to_string();
    assert!(!gate_id.is_empty());

    // Approving as JSON needs --yes (nobody reads the gate first).
    let (code, lines) = json(&server, &["approve", "json-fix"]).await;
    assert_ne!(code, Some(0));
    assert!(lines.is_empty());
    let (_, lines) = json(&server, &["watch", "json-fix", "--exit-on-gate"]).await;
    assert_eq!(lines.last().unwrap()["state"], "awaiting-approval");
    let approved = one(&server, &["approve", "json-fix", "--yes"]).await;
    assert_eq!(approved["counted"], true);
    assert_eq!(approved["rollout"]["name"], "json-fix");

    // The watch runs to the end.
    let (code, lines) = json(&server, &["watch", "json-fix"]).await;
    assert_eq!(code, Some(0));
    assert_eq!(lines.last().unwrap()["state"], "succeeded");
    assert_eq!(lines.last().unwrap()["percent_complete"], 100.0);
    let status = one(&server, &["status", "json-fix"]).await;
    assert_eq!(status["hosts_succeeded"], status["hosts_selected"]);

    // Restarts: a dry run's order, then a job followed to its end as JSON lines.
    let dry = one(&server, &["restart", "--selector", "region=apac", "--dry-run"]).await;
    assert_eq!(dry["dry_run"], true);
    let order = dry["hosts"].as_array().unwrap();
    assert!(!order.is_empty());
    let first = order[0]["host_id"].as_str().unwrap().to_string();
    let (code, lines) = json(&server, &["restart", "--host", &first, "--watch"]).await;
    assert_eq!(code, Some(0));
    let done = lines.last().unwrap();
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["hosts"][0]["host_id"], first.as_str());
    assert_eq!(done["hosts"][0]["state"], "restarted");
    let (code, lines) = json(&server, &["restart", "--list"]).await;
    assert_eq!(code, Some(0));
    assert!(!lines[0].as_array().unwrap().is_empty());

    // A freeze set and ended.
    let frozen = one(&server, &["freeze", "--reason", "INC-9 json"]).await;
    let id = frozen["id"].as_u64().unwrap().to_string();
    assert_eq!(frozen["reason"], "INC-9 json");
    assert_eq!(frozen["replayed"], false);
    let ended = one(&server, &["unfreeze", &id]).await;
    assert!(ended["ended_at_unix_ms"].as_i64().unwrap() > 0);

    // Pause and resume answer with the rollout (this one bakes a minute after its
    // first wave); an abort with the aborted rollout, asking being for people.
    let other = plan(dir.path(), "json-other", false, "60s");
    one(&server, &["submit", &other]).await;
    let paused = one(&server, &["pause", "json-other"]).await;
    assert_eq!(paused["state"], "paused");
    let resumed = one(&server, &["resume", "json-other"]).await;
    assert_eq!(resumed["name"], "json-other");
    assert_ne!(resumed["state"], "paused");
    let (code, _) = json(&server, &["abort", "json-other", "--reason", "test"]).await;
    assert_ne!(code, Some(0), "--output json without --yes is refused");
    let aborted = one(&server, &["abort", "json-other", "--reason", "test", "--yes"]).await;
    assert_eq!(aborted["state"], "aborted");

    assert_eq!(
        controller.terminate(std::time::Duration::from_secs(30)).await.unwrap(),
        Some(0)
    );
    assert_eq!(
        agent.terminate(std::time::Duration::from_secs(30)).await.unwrap(),
        Some(0)
    );
}
