//! The dashboard's side of single sign-on: `GET /oidc/login` sends the browser to
//! the identity provider, `GET /oidc/callback` takes it back and opens a session
//! with the role its claims map to ([`crate::sso`] does the protocol).
//!
//! The sign-in under way is bound to the browser by a cookie of its own
//! (`rollout_oidc`: HttpOnly, `SameSite=Lax`, since the provider's redirect back is
//! a top-level navigation from another site, and only under `/oidc`). Both steps
//! answer with a short page that moves on by itself rather than a redirect: a
//! redirect after the sign-in form would break the pages' `form-action 'self'`
//! policy, and the session cookie (`SameSite=Strict`) is not sent on a redirect
//! that another site started.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use tracing::{info, warn};

use super::session::{self, Origin};
use super::{Dashboard, html, signin};
use crate::sso::{Answer, Error};

/// The cookie holding the sign-in under way.
const COOKIE: &str = "rollout_oidc";

fn set_cookie(id: &str, secure: bool) -> String {
    let max_age = crate::sso::pending::TTL.as_secs();
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Max-Age={max_age}; Path=/oidc; HttpOnly; SameSite=Lax{secure}")
}

fn clear_cookie(secure: bool) -> String {
    set_cookie("", secure).replacen(
        &format!("Max-Age={}", crate::sso::pending::TTL.as_secs()),
        "Max-Age=0",
        1,
    )
}

/// `GET /oidc/login`: to the provider.
pub async fn begin(State(d): State<Dashboard>) -> Response {
    let Some(sso) = &d.sso else {
        return Redirect::to("/login").into_response();
    };
    match sso.begin().await {
        Ok(begun) => {
            let page = signin::moving_on(
                "Signing in",
                "Taking you to your identity provider to sign in.",
                begun.url.as_str(),
            );
            ([(header::SET_COOKIE, set_cookie(&begun.id, d.secure))], html(page)).into_response()
        }
        Err(e) => {
            warn!(error = %e, "single sign-on could not start");
            refused(&d, &e)
        }
    }
}

/// `GET /oidc/callback`: the provider's answer; a session, or the sign-in page
/// saying why not.
pub async fn callback(State(d): State<Dashboard>, headers: HeaderMap, Query(answer): Query<Answer>) -> Response {
    let Some(sso) = &d.sso else {
        return Redirect::to("/login").into_response();
    };
    let id = session::named(&headers, COOKIE).unwrap_or_default();
    let clear = (header::SET_COOKIE, clear_cookie(d.secure));
    let who = match sso.finish(id, &answer).await {
        Ok(who) => who,
        Err(e) => {
            warn!(error = %e, "dashboard sign-in through single sign-on refused");
            return ([clear], refused(&d, &e)).into_response();
        }
    };
    info!(principal = %who.name, role = %who.role, "dashboard sign-in through single sign-on");
    let text = format!("Signed in as {} ({}).", who.name, who.role);
    let Some(id) = d.sessions.open(who, Origin::Sso) else {
        warn!("dashboard sign-in refused: every session slot is held");
        let why = "Too many people are signed in to this dashboard; try again later.";
        return (
            [clear],
            (StatusCode::SERVICE_UNAVAILABLE, html(d.login_view(Some(why)))),
        )
            .into_response();
    };
    let cookies = [clear, (header::SET_COOKIE, session::set_cookie(&id, d.secure))];
    (cookies, html(signin::moving_on("Signed in", &text, "/"))).into_response()
}

/// The sign-in page saying why, with the status the reason deserves.
fn refused(d: &Dashboard, e: &Error) -> Response {
    let status = match e {
        Error::Unreachable { .. } => StatusCode::BAD_GATEWAY,
        Error::Unknown | Error::State => StatusCode::BAD_REQUEST,
        Error::Declined(_) | Error::IdToken(_) => StatusCode::UNAUTHORIZED,
        Error::NoName(_) | Error::NoRole { .. } => StatusCode::FORBIDDEN,
    };
    let text = e.to_string();
    (status, html(d.login_view(Some(&text)))).into_response()
}
