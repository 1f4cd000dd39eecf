//! Acting from the dashboard: a rollout's page offers `Approve` (while it awaits
//! approval, carrying the gate id the page showed), `Pause`, `Resume`, `Retry` and
//! `Abort` (the rollout's name typed first), a restart job's page `Cancel`, to the
//! principals whose role allows them; the server refuses everyone else whatever
//! they post. Each form carries a CSRF token bound to the session (an HMAC of the
//! session id under a key this dashboard drew at start): without it, or with another
//! session's, the request is refused with 403 and nothing changes. Each action goes
//! to the engine as the CLI's does (roles, quorum, four-eyes, the audit log, under
//! the signed-in principal, "through the dashboard"), with a request id drawn when
//! the page was rendered, so a double click acts once.

use axum::Extension;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use maud::{Markup, html};
use serde::Deserialize;
use sha2::Sha256;
use tracing::info;

use super::{Dashboard, views};
use crate::auth::refusals::Why;
use crate::auth::{Need, Principal};
use crate::engine::audit::{Actor, Target, Via};
use crate::engine::{Action, Error as EngineError, Key};
use crate::proto::v1 as pb;

/// The session a request came with: its id, or empty (no authentication, or a bearer
/// token, which a browser never adds by itself), and the CSRF token its forms carry.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub id: String,
    pub csrf: String,
}

/// CSRF tokens: HMAC-SHA256 of the session id under a key drawn at start.
#[derive(Clone)]
pub struct Csrf {
    key: [u8; 32],
}

impl Default for Csrf {
    fn default() -> Csrf {
        Csrf {
            key: rand::random::<[u8; 32]>(),
        }
    }
}

impl Csrf {
    fn mac(&self, session: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(b"rollout dashboard csrf:");
        mac.update(session.as_bytes());
        mac
    }

    /// The token the forms of `session`'s pages carry.
    pub fn token(&self, session: &str) -> String {
        self.mac(session)
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// True when `presented` is `session`'s token (compared in constant time).
    pub fn holds(&self, session: &str, presented: &str) -> bool {
        let Some(bytes) = crate::auth::unhex(presented) else {
            return false;
        };
        self.mac(session).verify_slice(&bytes).is_ok()
    }
}

/// A fresh request id for a form: the action it sends acts once, however often sent.
fn request_id() -> String {
    let bytes: [u8; 12] = rand::random();
    format!("web-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// The buttons of a rollout's page for `who` (none for a viewer, none once it ended).
pub fn rollout_panel(r: &pb::Rollout, who: &Principal, csrf: &str) -> Markup {
    let state = r.state();
    if !who.role.allows(Need::Change) || state.is_terminal() {
        return html! {};
    }
    let base = format!("/rollouts/{}", views::encode(&r.name));
    let hidden = |csrf: &str| {
        html! {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="request_id" value=(request_id());
        }
    };
    html! {
        section.actions #actions {
            @if let Some(g) = r.gate.as_ref().filter(|_| state == pb::RolloutState::AwaitingApproval) {
                form method="post" action=(format!("{base}/approve")) {
                    (hidden(csrf))
                    input type="hidden" name="gate_id" value=(g.gate_id);
                    p.evidence { "Approving gate " code { (g.gate_id) } " after " (g.after) ": "
                        (g.evidence.as_ref().map(|e| crate::summary::evidence(g.wave, e)).unwrap_or_default()) }
                    input type="text" name="comment" placeholder="comment (optional)";
                    button type="submit" name="do" value="approve" { "Approve" }
                }
            }
            @for (action, label) in [("pause", "Pause"), ("resume", "Resume"), ("retry", "Retry")] {
                form.inline method="post" action=(format!("{base}/{action}")) {
                    (hidden(csrf))
                    button type="submit" { (label) }
                }
            }
            form.inline method="post" action=(format!("{base}/abort")) {
                (hidden(csrf))
                input type="text" name="confirm" placeholder=(format!("type {} to abort", r.name)) required;
                input type="text" name="reason" placeholder="reason (optional)";
                @if r.kind == "fix" {
                    label { input type="checkbox" name="rollback" value="yes"; " and roll back the hosts it touched" }
                }
                button type="submit" { "Abort" }
            }
        }
    }
}

/// The `Cancel` button of a restart job's page for `who`.
pub fn job_panel(j: &pb::RestartJob, who: &Principal, csrf: &str) -> Markup {
    let over = j.state() != pb::RestartJobState::Running;
    if !who.role.allows(Need::Change) || over {
        return html! {};
    }
    html! {
        section.actions #actions {
            form.inline method="post" action=(format!("/restarts/{}/cancel", j.id)) {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="request_id" value=(request_id());
                button type="submit" { "Cancel" }
            }
        }
    }
}

/// What a form posts.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    request_id: String,
    #[serde(default)]
    gate_id: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    reason: String,
    /// `yes`: abort and roll back (a fix's hosts), as `rollout abort --rollback`.
    #[serde(default)]
    rollback: String,
}

/// A refusal before the engine is asked: the page with why, and nothing changed.
fn refused(d: &Dashboard, who: &Principal, session: &Session, status: StatusCode, name: &str, why: &str) -> Response {
    (
        status,
        super::rollout_screen(d, who, session, name, Some((false, why.to_string()))),
    )
        .into_response()
}

/// The checks every action (`method`) passes first: the CSRF token, then the role,
/// then the rate limit. A refusal is audited (sampled, as the API's are).
fn admitted(
    d: &Dashboard,
    who: &Principal,
    session: &Session,
    form: &ActionForm,
    method: &str,
) -> Result<(), (StatusCode, String)> {
    let refuse = |why: Why, status: StatusCode, message: String| {
        d.report_refusal(who, method, why, &message);
        Err((status, message))
    };
    if !d.csrf.holds(&session.id, &form.csrf) {
        return refuse(
            Why::Forgery,
            StatusCode::FORBIDDEN,
            "This form is not from your session (its CSRF token is missing or another's): reload the page and act again. Nothing changed.".into(),
        );
    }
    if !who.role.allows(Need::Change) {
        return refuse(
            Why::Role,
            StatusCode::FORBIDDEN,
            format!(
                "`{}` has the {} role: acting on a rollout needs operator or admin. Nothing changed.",
                who.name, who.role
            ),
        );
    }
    d.charge(who, method, "the dashboard")
        .map_err(|why| (StatusCode::TOO_MANY_REQUESTS, format!("{why}. Nothing changed.")))
}

/// The HTTP status of an engine's refusal.
fn status_of(e: &EngineError) -> StatusCode {
    match e {
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
        EngineError::Refused(_) | EngineError::AlreadyExists(_) | EngineError::Invalid { .. } => StatusCode::CONFLICT,
        EngineError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `POST /rollouts/{name}/{action}`.
pub async fn act_on_rollout(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<Session>,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let method = match action.as_str() {
        "approve" => "ApproveRollout",
        "pause" => "PauseRollout",
        "resume" => "ResumeRollout",
        "retry" => "RetryRollout",
        "abort" => "AbortRollout",
        _ => return refused(&d, &who, &session, StatusCode::NOT_FOUND, &name, "No such action."),
    };
    if let Err((status, why)) = admitted(&d, &who, &session, &form, method) {
        return refused(&d, &who, &session, status, &name, &why);
    }
    if action == "abort" && form.confirm.trim() != name {
        let why = format!("To abort, type the rollout's name ({name}) first. Nothing changed.");
        return refused(&d, &who, &session, StatusCode::UNPROCESSABLE_ENTITY, &name, &why);
    }
    let actor = Actor::new(&who.name, who.role.as_str(), method, &form.request_id).through(Via::Dashboard);
    let key = Key { name: &name, id: 0 };
    let done = match action.as_str() {
        "approve" => d
            .engine
            .approve(key, &form.gate_id, &form.comment, &actor)
            .await
            .map(|(approved, _)| approved.message),
        other => {
            let action = match other {
                "pause" => Action::Pause,
                "resume" => Action::Resume,
                "retry" => Action::Retry,
                _ => Action::Abort {
                    reason: form.reason.trim().to_string(),
                    rollback: form.rollback == "yes",
                },
            };
            let said = action.to_string();
            d.engine
                .control(key, action, &actor)
                .await
                .map(|_| format!("{said}: done"))
        }
    };
    match done {
        Ok(message) => {
            info!(rollout = %name, principal = %who.name, "{message} (through the dashboard)");
            (
                StatusCode::OK,
                super::rollout_screen(&d, &who, &session, &name, Some((true, message))),
            )
                .into_response()
        }
        Err(e) => {
            let target = Target::Rollout { id: 0, name: &name };
            d.engine.record_refusal(&actor, target, &e.to_string()).await;
            let stale = action == "approve"
                && d.engine
                    .get(key)
                    .ok()
                    .and_then(|r| r.gate.as_ref().map(|g| g.gate_id != form.gate_id))
                    .unwrap_or(false);
            let why = if stale {
                "The gate changed since you looked: its new evidence is below. Approve again if it still holds; nothing was counted.".to_string()
            } else {
                format!("Not done: {e}")
            };
            refused(&d, &who, &session, status_of(&e), &name, &why)
        }
    }
}

/// `POST /restarts/{id}/cancel`.
pub async fn cancel_job(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<Session>,
    Path(id): Path<u64>,
    Form(form): Form<ActionForm>,
) -> Response {
    let notice = match admitted(&d, &who, &session, &form, "CancelRestartJob") {
        Err((status, why)) => {
            return (
                status,
                super::restart_screen(&d, &who, &session, id, Some((false, why))),
            )
                .into_response();
        }
        Ok(()) => {
            let actor =
                Actor::new(&who.name, who.role.as_str(), "CancelRestartJob", &form.request_id).through(Via::Dashboard);
            match d
                .engine
                .cancel_restart_job(id, "cancelled from the dashboard", &actor)
                .await
            {
                Ok(_) => (StatusCode::OK, (true, "cancel: done".to_string())),
                Err(e) => {
                    d.engine.record_refusal(&actor, Target::Job(id), &e.to_string()).await;
                    (status_of(&e), (false, format!("Not done: {e}")))
                }
            }
        }
    };
    (notice.0, super::restart_screen(&d, &who, &session, id, Some(notice.1))).into_response()
}

/// The notice at the top of a page after an action.
pub fn notice(n: &Option<(bool, String)>) -> Markup {
    html! {
        @if let Some((ok, text)) = n {
            div class=(if *ok { "notice ok" } else { "notice refused" }) #notice role="status" { (text) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_holds_for_its_session_only() {
        let csrf = Csrf::default();
        let a = csrf.token("session-a");
        assert_eq!(a.len(), 64);
        assert!(csrf.holds("session-a", &a));
        assert!(!csrf.holds("session-b", &a), "another session's token");
        assert!(!csrf.holds("session-a", ""), "no token");
        assert!(!csrf.holds("session-a", &a[..63]));
        assert!(!Csrf::default().holds("session-a", &a), "another dashboard's key");
    }
}
