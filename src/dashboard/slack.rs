//! Approvals from Slack (`POST /slack/interactions` on the dashboard's listener, with
//! `rollout serve --slack-signing-secret-file FILE`): the `Approve` button of an
//! awaiting-approval message, pressed by a person whose tokens-file entry names their
//! Slack user id (`slack_user: U0123ABC`), counts as that person's approval, with the
//! role, quorum and four-eyes the CLI's has, and is audited as theirs, "through Slack".
//!
//! A request is Slack's when `X-Slack-Signature` is `v0=` and the hex HMAC-SHA256 of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}` under the app's signing secret
//! (compared in constant time) and its timestamp is within five minutes of now;
//! anything else is answered 401 and nothing is read further (a replayed request is
//! refused once it is older). The answer is a message for the person who pressed
//! (`response_type: ephemeral`), saying what happened.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tracing::{info, warn};

use super::Dashboard;
use crate::engine::audit::{Actor, Target, Via};
use crate::engine::{Error as EngineError, Key};
use crate::notify::slack::{APPROVE, Button, actions, escape};
use crate::proto::v1 as pb;

/// How far a request's timestamp may be from now (Slack's own advice).
pub const FRESH_SECS: i64 = 5 * 60;

/// The Slack app's signing secret (from `--slack-signing-secret-file`); never shown.
#[derive(Clone)]
pub struct SigningSecret(Vec<u8>);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(..)")
    }
}

impl SigningSecret {
    /// Reads the secret from `path` (its first line, trimmed): one-line errors that
    /// name the file and never the secret.
    pub fn load(path: &std::path::Path) -> Result<SigningSecret, String> {
        let shown = path.display();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--slack-signing-secret-file {shown}: {e}: check the path and its permissions"))?;
        let secret = text.trim();
        if secret.is_empty() || secret.contains(char::is_whitespace) {
            return Err(format!(
                "--slack-signing-secret-file {shown}: holds no secret on one line: put the Slack app's \"Signing Secret\" (Basic Information) there"
            ));
        }
        Ok(SigningSecret(secret.as_bytes().to_vec()))
    }

    #[cfg(test)]
    fn of(secret: &str) -> SigningSecret {
        SigningSecret(secret.as_bytes().to_vec())
    }
}

/// Why a request is not taken as Slack's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("no X-Slack-Request-Timestamp or X-Slack-Signature")]
    Missing,
    #[error("the timestamp is {0} s away from now (at most 300)")]
    Stale(i64),
    #[error("the signature does not match the signing secret")]
    Forged,
}

/// Checks that `body` came from Slack as signed at `timestamp` (`now_s`: the Unix
/// time now).
pub fn verify(
    secret: &SigningSecret,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_s: i64,
) -> Result<(), Unsigned> {
    let at: i64 = timestamp.trim().parse().map_err(|_| Unsigned::Missing)?;
    let skew = (now_s - at).abs();
    if skew > FRESH_SECS {
        return Err(Unsigned::Stale(skew));
    }
    let Some(hex) = signature.strip_prefix("v0=") else {
        return Err(Unsigned::Forged);
    };
    let Some(claimed) = crate::auth::unhex(hex) else {
        return Err(Unsigned::Forged);
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&secret.0) else {
        return Err(Unsigned::Forged);
    };
    mac.update(b"v0:");
    mac.update(timestamp.trim().as_bytes());
    mac.update(b":");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&claimed).map_err(|_| Unsigned::Forged)
}

/// One press of a button, as Slack's payload says it.
#[derive(Debug, PartialEq, Eq)]
struct Press {
    user: String,
    trigger: String,
    button: Option<Button>,
    /// Where Slack takes the answer for the person (a `block_actions` request's own
    /// answer is not shown); only `https://hooks.slack.com/` is ever called.
    response_url: Option<String>,
}

/// Reads `payload=` of a form-encoded interaction; None when it is not one.
fn press(body: &[u8]) -> Option<Press> {
    let payload = url::form_urlencoded::parse(body).find(|(k, _)| k == "payload")?.1;
    let v: Value = serde_json::from_str(&payload).ok()?;
    let user = v["user"]["id"].as_str()?.to_string();
    let trigger: String = v["trigger_id"]
        .as_str()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .take(100)
        .collect();
    let button = v["actions"]
        .as_array()?
        .iter()
        .find(|a| a["action_id"] == APPROVE)
        .and_then(|a| serde_json::from_str(a["value"].as_str()?).ok());
    let response_url = v["response_url"].as_str().map(str::to_string);
    Some(Press {
        user,
        trigger,
        button,
        response_url,
    })
}

/// True for a URL Slack gives to answer at: https on hooks.slack.com, nothing else
/// (a forged payload cannot make the controller call an address of its choosing;
/// the payload is signed anyway).
fn slack_hook(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| {
        u.scheme() == "https"
            && u.host_str() == Some("hooks.slack.com")
            && u.port().is_none()
            && u.username().is_empty()
    })
}

/// Sends `message` to Slack's `response_url` (in the background: Slack wants the
/// request's own answer within 3 s).
fn respond_at(url: String, message: Value) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
        {
            Ok(client) => client,
            Err(e) => return warn!(error = %e, "cannot answer Slack: no HTTP client"),
        };
        match client.post(&url).json(&message).send().await {
            Ok(r) if r.status().is_success() => {}
            // The URL's path is a secret: never logged.
            Ok(r) => warn!(status = %r.status(), "Slack refused the answer to a button press"),
            Err(e) => warn!(error = %crate::text::one_line(&e.without_url().to_string()), "cannot answer Slack"),
        }
    });
}

/// A message for the person who pressed, and (to ask again) an `Approve` for `again`.
fn answer(text: String, again: Option<(&str, &str)>) -> Value {
    let mut message = json!({
        "response_type": "ephemeral",
        "replace_original": false,
        "text": escape(&text),
    });
    if let Some((rollout, gate)) = again {
        message["blocks"] = json!([
            { "type": "section", "text": { "type": "mrkdwn", "text": escape(&text) } },
            actions(rollout, gate, None),
        ]);
    }
    message
}

/// The answer to Slack's request: the message (also sent to `response_url`).
fn reply(message: &Value) -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        message.to_string(),
    )
        .into_response()
}

/// `POST /slack/interactions`.
pub async fn interactions(State(d): State<Dashboard>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = &d.slack else {
        return (
            StatusCode::NOT_FOUND,
            "Slack interactions are not enabled (--slack-signing-secret-file)\n",
        )
            .into_response();
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (timestamp, signature) = (header("x-slack-request-timestamp"), header("x-slack-signature"));
    let checked = if timestamp.is_empty() || signature.is_empty() {
        Err(Unsigned::Missing)
    } else {
        verify(secret, timestamp, signature, &body, now_s)
    };
    if let Err(why) = checked {
        warn!(%why, "a request to /slack/interactions refused");
        return (StatusCode::UNAUTHORIZED, format!("not Slack's: {why}\n")).into_response();
    }
    let Some(press) = press(&body) else {
        return reply(&answer("This button is not one of rollout's.".into(), None));
    };
    let response_url = press.response_url.clone().filter(|u| slack_hook(u));
    let message = pressed(&d, press).await;
    if let Some(url) = response_url {
        respond_at(url, message.clone());
    }
    reply(&message)
}

/// What a signed press did, as the message for the person who pressed.
async fn pressed(d: &Dashboard, press: Press) -> Value {
    let Some(button) = press.button else {
        return answer("This button is not one of rollout's.".into(), None);
    };
    let user = crate::ident::escaped(&press.user);
    let principal = d.credentials.as_ref().and_then(|c| c.by_slack_user(&press.user));
    let Some(principal) = principal else {
        warn!(slack_user = %user, rollout = %button.rollout, "an approval from Slack refused: unknown user");
        let actor = Actor::new(&format!("slack user {user}"), "", "ApproveRollout", "").through(Via::Slack);
        let target = Target::Rollout {
            id: 0,
            name: &button.rollout,
        };
        d.engine
            .record_refusal(&actor, target, "this Slack user is in no entry of the tokens file")
            .await;
        return answer(
            format!(
                "Your Slack user ({user}) is not known to the rollout controller: nothing was counted. Ask an admin to add `slack_user: {user}` to your entry of its tokens file."
            ),
            None,
        );
    };
    let request_id = if press.trigger.is_empty() {
        String::new()
    } else {
        format!("slack-{}", press.trigger)
    };
    let actor = Actor::new(&principal.name, principal.role.as_str(), "ApproveRollout", &request_id).through(Via::Slack);
    if let Err(why) = d.charge(&principal, "ApproveRollout", "Slack") {
        return answer(format!("Not counted: {why}."), None);
    }
    approve(d, &actor, &button).await
}

/// What an approval did, in the incident channel's words: "bob's approval counted:
/// 1 of 2, waiting for one more operator".
fn counted(principal: &str, approved: &crate::engine::Approved, r: &pb::Rollout) -> String {
    if !approved.counted || approved.replayed {
        return format!("{}.", approved.message);
    }
    if let Some(g) = &r.gate {
        let more = match g.approvals_needed {
            1 => format!("one more {}", g.role),
            n => format!("{n} more {}s", g.role),
        };
        return format!(
            "{principal}'s approval counted: {} of {}, waiting for {more}.",
            g.approvals.len(),
            g.approvals_required
        );
    }
    match r.gates_closed.last() {
        Some(g) => format!(
            "{principal}'s approval counted: {} of {}: the gate after {} is approved and wave {} starts now.",
            g.approvals.len(),
            g.approvals_required,
            g.after,
            g.wave + 1
        ),
        None => format!("{}.", approved.message),
    }
}

/// Approves as `actor` what `button` names, and says what happened.
async fn approve(d: &Dashboard, actor: &Actor, button: &Button) -> Value {
    let key = Key {
        name: &button.rollout,
        id: 0,
    };
    let target = Target::Rollout {
        id: 0,
        name: &button.rollout,
    };
    match d.engine.approve(key, &button.gate_id, "", actor).await {
        Ok((approved, snapshot)) => {
            info!(rollout = %snapshot.name, principal = %actor.principal, counted = approved.counted, "{} (through Slack)", approved.message);
            answer(counted(&actor.principal, &approved, &snapshot), None)
        }
        Err(e) => {
            d.engine.record_refusal(actor, target, &e.to_string()).await;
            let current = d.engine.get(key).ok();
            let open = current.as_ref().and_then(|r| r.gate.as_ref().map(|g| (r, g)));
            match (&e, open) {
                // The gate moved on since the message: the new evidence, and asked again.
                (EngineError::Refused(_), Some((r, g))) if g.gate_id != button.gate_id => {
                    let evidence = g
                        .evidence
                        .as_ref()
                        .map(|ev| crate::summary::evidence(g.wave, ev))
                        .unwrap_or_default();
                    answer(
                        format!(
                            "Not counted: the gate changed since this message. It is now the gate after {} (gate id {}): {evidence}. {} Approve again if this still holds.",
                            g.after, g.gate_id, r.summary
                        ),
                        Some((&r.name, &g.gate_id)),
                    )
                }
                _ => answer(format!("Not counted: {e}"), None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("v0:{timestamp}:").as_bytes());
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!("v0={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    #[test]
    fn only_a_fresh_request_signed_with_the_secret_is_slacks() {
        let secret = SigningSecret::of("8f742231b10e8888abcd99yyyzzz85a5");
        let body = b"payload=%7B%7D";
        let now = 1_531_420_618;
        let good = sign("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body);
        assert_eq!(verify(&secret, "1531420618", &good, body, now), Ok(()));
        // Four minutes later it still holds; six minutes later it is a replay.
        assert_eq!(verify(&secret, "1531420618", &good, body, now + 240), Ok(()));
        assert_eq!(
            verify(&secret, "1531420618", &good, body, now + 360),
            Err(Unsigned::Stale(360))
        );
        let other = sign("another secret", "1531420618", body);
        assert_eq!(verify(&secret, "1531420618", &other, body, now), Err(Unsigned::Forged));
        assert_eq!(
            verify(&secret, "1531420618", &good, b"payload=%7B%7Dx", now),
            Err(Unsigned::Forged)
        );
        assert_eq!(verify(&secret, "1531420619", &good, body, now), Err(Unsigned::Forged));
        assert_eq!(
            verify(&secret, "1531420618", &good[3..], body, now),
            Err(Unsigned::Forged)
        );
        assert_eq!(verify(&secret, "soon", &good, body, now), Err(Unsigned::Missing));
        assert!(!format!("{secret:?}").contains("8f74"), "the secret is never shown");
    }

    #[test]
    fn a_press_says_who_and_which_gate() {
        let value = json!({"rollout": "exo-fix", "gate_id": "0123456789ab"}).to_string();
        let payload = json!({
            "type": "block_actions",
            "user": {"id": "U0123ABC", "username": "bob"},
            "trigger_id": "13345224609.738474920.8088930838d88f008e0",
            "actions": [{"action_id": APPROVE, "value": value}],
        });
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let p = press(body.as_bytes()).unwrap();
        assert_eq!(p.user, "U0123ABC");
        assert_eq!(p.trigger, "13345224609.738474920.8088930838d88f008e0");
        assert_eq!(
            p.button,
            Some(Button {
                rollout: "exo-fix".into(),
                gate_id: "0123456789ab".into()
            })
        );
        assert_eq!(press(b"text=hello"), None);
        assert_eq!(p.response_url.as_deref(), None);
    }

    #[test]
    fn only_slacks_own_hooks_are_answered_at() {
        assert!(slack_hook("https://hooks.slack.com/actions/T0/1/x"));
        for other in [
            "http://hooks.slack.com/actions/T0/1/x",
            "https://hooks.slack.com.evil.example/x",
            "https://evil.example/hooks.slack.com",
            "https://hooks.slack.com:8443/x",
            "https://user@hooks.slack.com/x",
            "https://127.0.0.1/x",
            "not a url",
        ] {
            assert!(!slack_hook(other), "{other}");
        }
    }
}
