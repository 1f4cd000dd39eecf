//! Approvals from Slack's `Approve` button, through the real binary: requests to
//! `POST /slack/interactions` signed the way Slack signs them, each signature made by
//! PyPI's `slack_sdk` (`SignatureVerifier`), so the wire format is judged by Slack's
//! own library. Skipped without Python's venv or PyPI, failing instead with
//! ROLLOUT_PYTHON_TESTS=required.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use rollout::auth::hash_token;
use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;
use serde_json::{Value, json};

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// Who is who: alice submits, bob and carol approve from Slack, vic only looks.
const PEOPLE: [(&str, &str, &str); 4] = [
    ("alice", "operator", "U0ALICE1"),
    ("bob", "operator", "U0BOB001"),
    ("carol", "operator", "U0CAROL1"),
    ("vic", "viewer", "U0VIC001"),
];

fn tokens(dir: &Path) -> PathBuf {
    let mut text = String::from("tokens:\n");
    for (principal, role, slack) in PEOPLE {
        text.push_str(&format!(
            "  - principal: {principal}\n    role: {role}\n    sha256: {}\n    slack_user: {slack}\n",
            hash_token(&token(principal))
        ));
    }
    let path = dir.join("tokens.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Slack's signature of `body` at `timestamp` under `secret`, as slack_sdk makes it.
fn signed_by_slack_sdk(python: &Path, secret: &str, timestamp: i64, body: &str) -> String {
    let mut child = Command::new(python)
        .args([
            "-c",
            "import sys\nfrom slack_sdk.signature import SignatureVerifier\n\
             body = sys.stdin.read()\n\
             print(SignatureVerifier(sys.argv[1]).generate_signature(timestamp=sys.argv[2], body=body))",
            secret,
            &timestamp.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "slack_sdk signs");
    text(&out.stdout).trim().to_string()
}

/// A press of the Approve button by Slack user `user` on `rollout`'s gate `gate_id`,
/// as Slack posts it (form-encoded `payload`).
fn press(user: &str, rollout: &str, gate_id: &str, trigger: &str) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase()},
        "trigger_id": trigger,
        "response_url": "https://hooks.slack.com/actions/T0/1/x",
        "actions": [{
            "action_id": "rollout.approve",
            "type": "button",
            "value": json!({"rollout": rollout, "gate_id": gate_id}).to_string(),
        }],
    });
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &payload.to_string())
        .finish()
}

fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

struct Slack {
    python: PathBuf,
    url: String,
    http: reqwest::Client,
}

impl Slack {
    /// Posts `body` signed at `timestamp` with `secret`: the status, and the answer.
    async fn post(&self, body: &str, secret: &str, timestamp: i64) -> (u16, Value) {
        let signature = signed_by_slack_sdk(&self.python, secret, timestamp, body);
        let answer = self
            .http
            .post(&self.url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", timestamp.to_string())
            .header("x-slack-signature", signature)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

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
    let tokens = tokens(dir.path());
    let secret_file = dir.path().join("slack.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
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
    let slack = Slack {
        python: bin.join("python"),
        url: format!("{}slack/interactions", dashboard),
        http: reqwest::Client::new(),
    };
    let counted = |g: &pb::Gate| g.approvals.iter().map(|a| a.principal.clone()).collect::<Vec<_>>();

    // bob's press counts as bob's.
    let (status, answer) = slack
        .post(
            &press("U0BOB001", "slack-fix", &gate.gate_id, "1.2.bob"),
            SECRET,
            now_s(),
        )
        .await;
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
    let done = within(
        120,
        "the rollout to finish",
        watch_until(&mut alice, "slack-fix", |r| r.state().is_terminal()),
    )
    .await;
    assert_eq!(done.last().unwrap().state(), pb::RolloutState::Succeeded);
    // Slack retrying carol's request (same trigger) acts once.
    let (_, answer) = slack.post(&carol, SECRET, now_s()).await;
    assert!(
        answer["text"].as_str().unwrap().contains("answered already"),
        "{answer}"
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
