//! Refused calls are audited, as the README's Security section says: a viewer's
//! refused submit and pause, a caller with an unknown token, an operator over its
//! rate limit, a viewer pressing a dashboard button; and a flood of refusals is a
//! handful of lines (the first, the 10th, the 100th...) rather than one line each.
//! Through a real controller process with `--auth`, read with `rollout audit`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const PEOPLE: [(&str, &str); 3] = [("vera", "viewer"), ("otto", "operator"), ("ada", "admin")];

/// The audit log's lines, as `rollout audit --output json` prints them.
async fn audit(dir: &Path, server: &str) -> Vec<serde_json::Value> {
    let (ok, out, err) = as_person("ada", dir, server, &["audit", "--output", "json", "--limit", "1000"]).await;
    assert!(ok, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Waits for the audit log to hold a line `wanted` accepts, and returns the log.
async fn until_audited(
    dir: &Path,
    server: &str,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    within(30, what, async {
        loop {
            let lines = audit(dir, server).await;
            if lines.iter().any(&wanted) {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

fn is(line: &serde_json::Value, principal: &str, kind: &str) -> bool {
    line["principal"] == principal && line["kind"] == kind && line["result"] != "ok"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_audited_and_a_flood_is_counted_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut agent, _fleet, ctl_fleet) = spawn_simulator(dir.path(), 20, "1..5", &log).await;
    let tokens = tokens_file(dir.path(), &PEOPLE);
    let extra = [
        "--auth".as_ref(),
        tokens.as_os_str(),
        "--max-changes-per-second".as_ref(),
        "1".as_ref(),
    ];
    let mut controller = spawn_controller(&dir.path().join("data"), &ctl_fleet, &extra, &log).await;
    let server = format!("http://{}", controller.addr);
    let plan_file = dir.path().join("fix.yaml");
    std::fs::write(
        &plan_file,
        "name: fix\nkind: fix\nversion: v2\nwaves: [\"100%\"]\nselector: {region: apac}\n",
    )
    .unwrap();

    // A viewer's submit and pause: refused, and each in the audit log, saying who,
    // what and why.
    let (ok, _, err) = as_person("vera", dir.path(), &server, &["submit", plan_file.to_str().unwrap()]).await;
    assert!(!ok);
    assert!(
        err.contains("`vera` has the viewer role; SubmitPlan needs the operator role"),
        "{err}"
    );
    let (ok, _, _) = as_person("vera", dir.path(), &server, &["pause", "fix"]).await;
    assert!(!ok);
    let lines = until_audited(dir.path(), &server, "vera's refused pause", |l| {
        is(l, "vera", "PauseRollout")
    })
    .await;
    let submit = lines
        .iter()
        .find(|l| is(l, "vera", "SubmitPlan"))
        .expect("the refused submit");
    assert_eq!(submit["role"], "viewer");
    assert_eq!(submit["detail"], "refused (role) from 127.0.0.1");
    assert_eq!(
        submit["result"],
        "`vera` has the viewer role; SubmitPlan needs the operator role"
    );

    // A caller whose token the controller does not know.
    let stranger = dir.path().join("stranger.token");
    std::fs::write(&stranger, "not-a-known-token-0000000000\n").unwrap();
    let out = rollout(&[
        "status",
        "--server",
        &server,
        "--token-file",
        stranger.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    let lines = until_audited(dir.path(), &server, "the stranger's refusal", |l| {
        is(l, "unauthenticated", "ListRollouts")
    })
    .await;
    let stranger = lines.iter().find(|l| is(l, "unauthenticated", "ListRollouts")).unwrap();
    assert_eq!(stranger["detail"], "refused (credentials) from 127.0.0.1");

    // An operator past its rate limit (1 a second, bursts of 5).
    let mut otto = as_who(&server, "otto").await;
    let mut limited = 0;
    for _ in 0..10 {
        let status = otto.pause_rollout(action("fix")).await.unwrap_err();
        if status.code() == tonic::Code::ResourceExhausted {
            limited += 1;
        }
    }
    assert!(limited >= 2, "the limit refused some: {limited}");
    let lines = until_audited(dir.path(), &server, "otto's rate-limit refusal", |l| {
        is(l, "otto", "PauseRollout") && l["detail"].as_str().unwrap_or("").starts_with("refused (rate limit)")
    })
    .await;
    assert!(
        lines.iter().any(
            |l| is(l, "otto", "PauseRollout") && l["result"].as_str().unwrap_or("").contains("over its rate limit")
        ),
        "{lines:#?}"
    );

    // A flood: 250 refused calls of one kind are three lines (the 1st, the 10th, the
    // 100th), not 250; the minute's whole count is written when the minute ends.
    let mut vera = as_who(&server, "vera").await;
    for _ in 0..250 {
        let status = vera.abort_rollout(action("fix")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
    }
    let lines = until_audited(dir.path(), &server, "the 100th refusal's line", |l| {
        is(l, "vera", "AbortRollout") && l["detail"] == "refused (role): the 100th like this within a minute"
    })
    .await;
    let flood: Vec<_> = lines
        .iter()
        .filter(|l| is(l, "vera", "AbortRollout"))
        .map(|l| l["detail"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        flood,
        [
            "refused (role) from 127.0.0.1",
            "refused (role): the 10th like this within a minute",
            "refused (role): the 100th like this within a minute",
        ]
    );

    // `rollout audit` says them in words.
    let (ok, out, err) = as_person("ada", dir.path(), &server, &["audit"]).await;
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("vera") && l.contains("SubmitPlan"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains("refused") && row.contains("needs the operator role"),
        "{row}"
    );

    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
