//! Signing in and out of the dashboard: the sign-in page (`Sign in with SSO` when
//! single sign-on is on, and the token form for scripts and break-glass), the token
//! sign-in that opens a session, the sign-out form (with its CSRF token), and the
//! page that moves on by itself that single sign-on answers with.

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use tracing::{info, warn};

use super::session::{self, Origin};
use super::{Dashboard, html as page_html, views};
use crate::auth::Need;

/// A page that moves on to `to` by itself (a meta refresh: no script), with a link
/// for a browser that does not.
pub fn moving_on(title: &str, text: &str, to: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(format!("0;url={to}"));
                title { (title) " - rollout" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                main {
                    h1 { (title) }
                    p { (text) }
                    p { a href=(to) { "Continue" } }
                }
            }
        }
    }
}

/// The sign-in form; `error` says why the last attempt failed.
pub fn page(error: Option<&str>, sso: bool) -> Markup {
    views::page(
        "Sign in",
        None,
        html! {
            section.login {
                h1 { "Sign in" }
                @if let Some(e) = error { p.error { (e) } }
                @if sso {
                    form method="get" action="/oidc/login" {
                        button type="submit" { "Sign in with SSO" }
                    }
                    p { "Or, for scripts and break-glass, a bearer token:" }
                }
                p { "Paste a bearer token (" code { "rollout token new" } "); a viewer token is enough. It is sent once, in this form's body, and never put in a URL." }
                form method="post" action="/login" {
                    input type="password" name="token" autocomplete="current-password" placeholder="token" autofocus[!sso];
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub async fn login_page(State(d): State<Dashboard>) -> Response {
    if d.credentials.is_none() {
        return Redirect::to("/").into_response();
    }
    page_html(d.login_view(None)).into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
}

pub async fn login(State(d): State<Dashboard>, Form(form): Form<LoginForm>) -> Response {
    let Some(credentials) = &d.credentials else {
        return Redirect::to("/").into_response();
    };
    match credentials.by_token(&form.token) {
        Some(p) if p.role.allows(Need::View) => {
            info!(principal = %p.name, role = %p.role, "dashboard sign-in");
            let Some(id) = d.sessions.open(p, Origin::Token) else {
                warn!("dashboard sign-in refused: every session slot is held");
                let why = "Too many people are signed in to this dashboard; try again later.";
                return (StatusCode::SERVICE_UNAVAILABLE, page_html(d.login_view(Some(why)))).into_response();
            };
            let cookie = session::set_cookie(&id, d.secure);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Some(p) => {
            warn!(principal = %p.name, role = %p.role, "dashboard sign-in refused: role");
            let why = "That token's role cannot view the dashboard (viewer, operator or admin can).";
            (StatusCode::FORBIDDEN, page_html(d.login_view(Some(why)))).into_response()
        }
        None => {
            warn!("dashboard sign-in refused: unknown token");
            (
                StatusCode::UNAUTHORIZED,
                page_html(d.login_view(Some("That token is not accepted."))),
            )
                .into_response()
        }
    }
}

/// Signs out: the form carries the session's CSRF token (another site cannot sign
/// anyone out).
pub async fn logout(State(d): State<Dashboard>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let csrf = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if let Some(id) = session::cookie(&headers) {
        if !d.csrf.holds(id, &csrf) {
            return (
                StatusCode::FORBIDDEN,
                "This form is not from your session: reload the page.\n",
            )
                .into_response();
        }
        d.sessions.close(id);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie(d.secure))],
        Redirect::to("/login"),
    )
        .into_response()
}
