//! Slack's side of an interaction, for tests: the people of a tokens file with their
//! Slack user ids, and presses of the `Approve` button as Slack posts them, each
//! signed by PyPI's `slack_sdk` (`SignatureVerifier`), so the wire format is judged by
//! Slack's own library.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use rollout::auth::hash_token;
use serde_json::{Value, json};

use super::identity::token;
use super::text;

/// The Slack app's signing secret the tests' controllers are given.
pub const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

/// `dir/slack.secret` holding [`SECRET`]; its path.
pub fn secret_file(dir: &Path) -> PathBuf {
    let path = dir.join("slack.secret");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    path
}

/// `dir/tokens.yaml` giving each `(principal, role, slack user id)` its role and
/// Slack user (each with [`token`]'s hash); its path.
pub fn tokens_file(dir: &Path, people: &[(&str, &str, &str)]) -> PathBuf {
    let mut text = String::from("tokens:\n");
    for (principal, role, slack) in people {
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
pub fn signed_by_slack_sdk(python: &Path, secret: &str, timestamp: i64, body: &str) -> String {
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
/// as Slack posts it (form-encoded `payload`), without a `response_url` (the tests
/// talk to loopback only).
pub fn press(user: &str, rollout: &str, gate_id: &str, trigger: &str) -> String {
    press_answering_at(user, rollout, gate_id, trigger, None)
}

/// The same, with `response_url` in the payload.
pub fn press_answering_at(
    user: &str,
    rollout: &str,
    gate_id: &str,
    trigger: &str,
    response_url: Option<&str>,
) -> String {
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase()},
        "trigger_id": trigger,
        "response_url": response_url,
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

/// The Unix time now, in seconds.
pub fn now_s() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Slack, as far as a controller's dashboard sees it.
pub struct Slack {
    /// The venv's python, with slack_sdk.
    pub python: PathBuf,
    /// `.../slack/interactions`.
    pub url: String,
    pub http: reqwest::Client,
}

impl Slack {
    /// Slack posting to the dashboard at `base` (ending in `/`), signing with the
    /// slack_sdk of the venv whose `bin` is `bin`.
    pub fn at(base: &str, bin: &Path) -> Slack {
        Slack {
            python: bin.join("python"),
            url: format!("{base}slack/interactions"),
            http: reqwest::Client::new(),
        }
    }

    /// Posts `body` signed at `timestamp` with `secret`: the status, and the answer.
    pub async fn post(&self, body: &str, secret: &str, timestamp: i64) -> (u16, Value) {
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
