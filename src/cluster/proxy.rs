//! The leader's dashboard proxy: a standby's dashboard is the leader's, fetched from it as the browser asks, page by
//! page and stream by stream (so its live updates keep coming), each page with a line
//! saying which standby shows it. An operator may point a browser at any controller.
//!
//! Authentication is the leader's: a request goes as it came (its session cookie or
//! bearer token), and the leader's answer, a sign-in page or a refusal included,
//! comes back as it was given.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, html};

use super::registry::Controllers;
use crate::{Error, Result};

/// Where the leader's dashboard is: (its URL, the leader's advertised URL), or why
/// there is none to show. Blocking: etcd may be asked.
pub type Leader = Arc<dyn Fn() -> std::result::Result<(String, String), String> + Send + Sync>;

#[derive(Clone)]
struct Proxy {
    leader: Leader,
    /// This standby's advertised URL.
    me: String,
    client: reqwest::Client,
}

/// Every path, fetched from the leader's dashboard.
pub fn router(leader: Leader, me: String) -> Result<Router> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Internal(format!("cannot build the standby dashboard's HTTP client: {e}")))?;
    Ok(Router::new().fallback(forward).with_state(Proxy { leader, me, client }))
}

/// Headers that belong to one connection, not to the request or answer.
const HOP_BY_HOP: [header::HeaderName; 7] = [
    header::CONNECTION,
    header::HOST,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for h in &HOP_BY_HOP {
        kept.remove(h);
    }
    kept.remove("keep-alive");
    kept
}

async fn forward(State(p): State<Proxy>, request: Request) -> Response {
    let leader = p.leader.clone();
    let found = tokio::task::spawn_blocking(move || leader())
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let (base, leader_url) = match found {
        Ok(found) => found,
        Err(why) => return unavailable(&p.me, &why),
    };
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let sent = p
        .client
        .request(parts.method, &url)
        .headers(end_to_end(&parts.headers))
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            let why = format!("the leader's dashboard at {base} cannot be reached ({e})");
            return unavailable(&p.me, &why);
        }
    };
    let status = answer.status();
    let mut headers = end_to_end(answer.headers());
    let is_page = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let body = if is_page {
        // A page (small): said to be shown by this standby. Streams and assets go as
        // they come.
        let page: String = match answer.text().await {
            Ok(page) => page,
            Err(e) => return unavailable(&p.me, &format!("the leader's dashboard stopped answering ({e})")),
        };
        headers.remove(header::CONTENT_LENGTH);
        Body::from(marked(&page, &p.me, &leader_url))
    } else {
        Body::from_stream(answer.bytes_stream())
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    if let Ok(me) = HeaderValue::from_str(&p.me) {
        response.headers_mut().insert("x-rollout-standby", me);
    }
    response
}

/// `page` with a line at the top of its main part naming this standby and the leader.
fn marked(page: &str, me: &str, leader: &str) -> String {
    let line = html! {
        p.standby { "Shown by the standby at " code { (me) } ": this is the dashboard of the leader at " code { (leader) } "." }
    };
    match page.find("<main>") {
        Some(at) => {
            let at = at + "<main>".len();
            format!("{}{}{}", &page[..at], line.into_string(), &page[at..])
        }
        None => page.to_string(),
    }
}

/// No leader's dashboard to show: a page that says why and asks again shortly.
fn unavailable(me: &str, why: &str) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="2";
                title { "Standby - rollout" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                main {
                    h1 { "This controller is a standby" }
                    p { "The controller at " code { (me) } " stands by: it shows the leader's dashboard, but " (why) "." }
                    p { "This page tries again every 2 seconds." }
                }
            }
        }
    };
    (StatusCode::SERVICE_UNAVAILABLE, Html(page.into_string())).into_response()
}

/// The leader's dashboard, for a standby's to show: (its URL, the leader's
/// advertised URL), or why there is none.
pub fn leader_dashboard(peers: Controllers) -> Leader {
    Arc::new(move || {
        let all = peers().map_err(|e| format!("the controllers cannot be read: {e}"))?;
        let leader = all
            .into_iter()
            .find(|c| c.role == "leader")
            .ok_or_else(|| "no controller leads right now".to_string())?;
        if leader.dashboard.is_empty() {
            return Err(format!(
                "the leader at {} serves no dashboard (--http-listen)",
                leader.advertise
            ));
        }
        Ok((leader.dashboard, leader.advertise))
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_says_which_standby_shows_it() {
        let page = "<html><body><header>x</header><main><h1>Rollouts</h1></main></body></html>";
        let marked = super::marked(page, "http://b:1", "http://a:1");
        assert!(marked.contains(
            "<main><p class=\"standby\">Shown by the standby at <code>http://b:1</code>: this is the dashboard of the leader at <code>http://a:1</code>.</p><h1>"
        ));
        assert_eq!(super::marked("no main", "b", "a"), "no main");
    }
}
