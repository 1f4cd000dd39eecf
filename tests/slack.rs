//! Approvals from Slack's `Approve` button, through the real binary: requests to
//! `POST /slack/interactions` signed the way Slack signs them, each signature made by
//! PyPI's `slack_sdk` (`SignatureVerifier`), so the wire format is judged by Slack's
//! own library. Skipped without Python's venv or PyPI, failing instead with
//! ROLLOUT_PYTHON_TESTS=required.

mod common;

use std::time::Duration;

use common::slack::{SECRET, Slack, now_s, press};
use common::*;
use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;
use serde_json::Value;

/// Who is who: alice submits, bob and carol approve from Slack, vic only looks.
const PEOPLE: [(&str, &str, &str); 4] = [
    ("alice", "operator", "U0ALICE1"),
    ("bob", "operator", "U0BOB001"),
    ("carol", "operator", "U0CAROL1"),
    ("vic", "viewer", "U0VIC001"),
];

async fn gate_of(client: &mut Client, name: &str) -> pb::Gate {
    get(client, name).await.gate.expect("the open gate")
}

/// A two-approval four-eyes gate approved from Slack: bob's press counts as bob's
/// (1 of 2), forged, replayed, unknown and viewer presses count nothing, a press on
/// a gate that changed shows the new one, and carol's press completes the quorum and
/// the rollout goes on; the audit log says each came through Slack.
#[ignore = "needs Python's venv and PyPI (slack_sdk); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_from_slack_count_for_the_person_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = python::venv(dir.path(), &["slack_sdk==3.33.5"], "Slack's signature") else {
        return;
    };
    let log = dir.path().join("log");
    let (mut agent, _fleet, ctl_fleet) = spawn_simulator(dir.path(), 100, "1..5", &log).await;
    let tokens = slack::tokens_file(dir.path(), &PEOPLE);
    let secret_file = slack::secret_file(dir.path());
    let extra = [
        "--auth".as_ref(),
        tokens.as_os_str(),
        "--http-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--slack-signing-secret-file".as_ref(),
        secret_file.as_os_str(),
    ];
    let mut controller: Spawned = spawn_controller(&dir.path().join("data"), &ctl_fleet, &extra, &log).await;
    let dashboard = controller.line_after("dashboard on ").await.unwrap();
    let server = format!("http://{}", controller.addr);
    let mut alice = as_who(&server, "alice").await;
    let gate = gated_at_ten_percent(&mut alice, "slack-fix").await;
    let slack = Slack::at(&dashboard, &bin);
    let counted = |g: &pb::Gate| g.approvals.iter().map(|a| a.principal.clone()).collect::<Vec<_>>();

    // bob's press counts as bob's. Its payload names an answer URL that is not
    // Slack's (here, on loopback): the controller never calls it.
    let elsewhere = receiver::Receiver::start(receiver::Mode::Ok).await;
    let bobs = slack::press_answering_at("U0BOB001", "slack-fix", &gate.gate_id, "1.2.bob", Some(&elsewhere.url));
    let (status, answer) = slack.post(&bobs, SECRET, now_s()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["response_type"], "ephemeral");
    assert_eq!(
        answer["text"], "bob's approval counted: 1 of 2, waiting for one more operator.",
        "{answer}"
    );
    assert_eq!(counted(&gate_of(&mut alice, "slack-fix").await), ["bob"]);

    // Forged (another secret), replayed (signed six minutes ago), unsigned: 401.
    let carol = press("U0CAROL1", "slack-fix", &gate.gate_id, "1.2.carol");
    let (status, _) = slack.post(&carol, "not the secret", now_s()).await;
    assert_eq!(status, 401, "a forged signature");
    let (status, _) = slack.post(&carol, SECRET, now_s() - 360).await;
    assert_eq!(status, 401, "a request replayed after five minutes");
    let unsigned = slack.http.post(&slack.url).body(carol.clone()).send().await.unwrap();
    assert_eq!(unsigned.status().as_u16(), 401, "no signature");
    // Someone the tokens file does not name, and a viewer: told so, nothing counted.
    let (status, answer) = slack
        .post(&press("U0NOBODY", "slack-fix", &gate.gate_id, "1.2.x"), SECRET, now_s())
        .await;
    assert_eq!(status, 200);
    let said = answer["text"].as_str().unwrap();
    assert!(
        said.contains("not known") && said.contains("slack_user: U0NOBODY"),
        "{said}"
    );
    let (_, answer) = slack
        .post(
            &press("U0VIC001", "slack-fix", &gate.gate_id, "1.2.vic"),
            SECRET,
            now_s(),
        )
        .await;
    let said = answer["text"].as_str().unwrap();
    assert!(said.starts_with("Not counted:") && said.contains("viewer"), "{said}");
    // The submitter cannot approve her own fix (four-eyes), from Slack either.
    let (_, answer) = slack
        .post(
            &press("U0ALICE1", "slack-fix", &gate.gate_id, "1.2.alice"),
            SECRET,
            now_s(),
        )
        .await;
    assert!(answer["text"].as_str().unwrap().starts_with("Not counted:"), "{answer}");
    // A press on a gate that is not the open one shows the open one and asks again.
    let (_, answer) = slack
        .post(
            &press("U0CAROL1", "slack-fix", "000000000000", "1.2.stale"),
            SECRET,
            now_s(),
        )
        .await;
    let said = answer["text"].as_str().unwrap();
    assert!(
        said.contains("the gate changed since this message") && said.contains(&gate.gate_id),
        "{said}"
    );
    let again: Value = serde_json::from_str(answer["blocks"][1]["elements"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        again["gate_id"],
        gate.gate_id.as_str(),
        "the button asks again on the open gate"
    );
    assert_eq!(
        counted(&gate_of(&mut alice, "slack-fix").await),
        ["bob"],
        "none of those counted"
    );

    // carol's press completes the quorum: the rollout goes on to 100%.
    let (status, answer) = slack.post(&carol, SECRET, now_s()).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["text"], "carol's approval counted: 2 of 2: the gate after 10% is approved and wave 2 starts now.",
        "{answer}"
    );
    assert_eq!(
        ended(&mut alice, "slack-fix").await.state(),
        pb::RolloutState::Succeeded
    );
    // Slack retrying carol's request (same trigger) acts once.
    let (_, answer) = slack.post(&carol, SECRET, now_s()).await;
    assert!(
        answer["text"].as_str().unwrap().contains("answered already"),
        "{answer}"
    );

    assert!(
        elsewhere.requests().is_empty(),
        "only hooks.slack.com is ever answered at"
    );
    let events = timeline(&mut alice, "slack-fix").await;
    for who in ["bob", "carol"] {
        assert!(
            events
                .iter()
                .any(|e| e.principal == who && e.kind == "ApproveRollout" && e.detail.ends_with("(through Slack)")),
            "{who}'s approval is audited as theirs, through Slack: {events:#?}"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e.principal == "slack user U0NOBODY" && e.result.contains("no entry of the tokens file")),
        "the unknown user's press is audited: {events:#?}"
    );
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
