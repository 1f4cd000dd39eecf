//! The dashboard (`rollout serve --http-listen`): rollouts, one rollout's
//! waves and timeline, restart jobs and their queue, and the fleet by customers'
//! local time. Server-rendered HTML ([`views`]) kept live by server-sent events that
//! follow the engine's own watch channels (the ones `WatchRollout` streams), sent at
//! most a few times a second and only when the HTML changed.
//!
//! Authentication is the gRPC API's: with `--auth`, a viewer (or higher) token, sent
//! as `Authorization: Bearer` or once through the sign-in form, which opens a
//! server-side session held in an HttpOnly, SameSite=Strict cookie. Tokens never
//! appear in URLs. Without `--auth` (loopback only) the dashboard is open.
//!
//! It speaks TLS with `--http-tls-cert` and `--http-tls-key` (the cookie is then
//! `Secure`); in plain HTTP keep it on loopback behind the site's TLS proxy (a
//! non-loopback `--http-listen` without TLS needs `--http-insecure`). It answers only
//! requests whose Host is its own address or an advertised name (DNS rebinding), and
//! `/metrics` beside its pages needs the same credentials as its pages.
//!
//! Operators act from a rollout's and a restart job's pages ([`actions`]): forms with
//! a CSRF token bound to the session, checked with the role on every post.
//!
//! With `--oidc` people sign in through the site's OpenID provider ([`oidc`]): the
//! same sessions, with the role their groups map to.
//!
//! With `--slack-signing-secret-file` it also answers Slack's `Approve` buttons at
//! `POST /slack/interactions` ([`slack`]): signed by Slack instead of a session.

mod actions;
mod chart;
mod freezes;
mod oidc;
mod restarts;
mod session;
mod signin;
pub mod slack;
pub mod sun;
mod views;
mod wall;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use futures::Stream;
use maud::{Markup, PreEscaped};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::{Credentials, Need, Principal};
use crate::cluster::Controllers;
use crate::engine::{Engine, Key};
use crate::proto::v1 as pb;
use session::{Origin, Sessions};

/// Hosts of a restart job's queue shown, best first.
const QUEUE_TOP: usize = 25;
/// Audit lines on a rollout's timeline.
const TIMELINE: usize = 40;
/// Updates of one stream, at most one per this.
const THROTTLE: Duration = Duration::from_millis(250);
/// Lists (rollouts, jobs) are compared with what was sent this often.
const LIST_TICK: Duration = Duration::from_secs(1);
/// The follow-the-sun view is recomputed this often (it moves with the clock).
const SUN_TICK: Duration = Duration::from_secs(5);

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/live.js");

/// What the dashboard needs from the controller.
#[derive(Clone)]
pub struct Dashboard {
    engine: Arc<Engine>,
    /// Who the controllers sharing the store are (blocking: etcd may be asked).
    controllers: Controllers,
    credentials: Option<Arc<Credentials>>,
    sessions: Arc<Sessions>,
    /// Served over TLS: the session cookie is `Secure`.
    secure: bool,
    /// Streams end when the controller stops, so a graceful stop never waits on a
    /// browser.
    shutdown: CancellationToken,
    /// The follow-the-sun fragment, shared by every screen for [`SUN_TICK`]: it reads
    /// the whole inventory (0.3 s at a million hosts; it was 1.2 s per screen).
    sun: Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>,
    /// With `--slack-signing-secret-file`: approvals from Slack's buttons.
    slack: Option<slack::SigningSecret>,
    /// The key of the forms' CSRF tokens.
    csrf: actions::Csrf,
    /// Each principal's change budget, shared with the gRPC API.
    changes: Option<crate::auth::ChangeLimit>,
    /// With `--oidc`: single sign-on.
    sso: Option<Arc<crate::sso::Sso>>,
}

impl Dashboard {
    pub fn new(
        engine: Arc<Engine>,
        controllers: Controllers,
        credentials: Option<Arc<Credentials>>,
        secure: bool,
        shutdown: CancellationToken,
    ) -> Dashboard {
        Dashboard {
            engine,
            controllers,
            credentials,
            sessions: Arc::new(Sessions::default()),
            secure,
            shutdown,
            sun: Arc::default(),
            slack: None,
            csrf: actions::Csrf::default(),
            changes: None,
            sso: None,
        }
    }

    /// Counts each action against `limit` (the API's per-principal change budget).
    pub fn with_change_limit(self, limit: crate::auth::ChangeLimit) -> Dashboard {
        Dashboard {
            changes: Some(limit),
            ..self
        }
    }

    /// One change of `who` (its `method`, through `via`), or why not (over its rate
    /// limit: say so, change nothing, and the refusal is audited).
    fn charge(&self, who: &Principal, method: &str, via: &'static str) -> Result<(), String> {
        match &self.changes {
            Some(limit) => limit
                .charge(who, method, Some(via))
                .map_err(|status| status.message().to_string()),
            None => Ok(()),
        }
    }

    /// Hands an action refused before the engine was asked to the audit log.
    fn report_refusal(&self, who: &Principal, method: &str, why: crate::auth::refusals::Why, message: &str) {
        if let Some(limit) = &self.changes {
            limit.refusals().report(crate::auth::refusals::Refusal {
                principal: who.name.clone(),
                role: who.role.to_string(),
                method: method.to_string(),
                why,
                message: message.to_string(),
                peer: None,
                via: Some("the dashboard"),
            });
        }
    }

    /// Signs people in through `sso` too (`Sign in with SSO`).
    pub fn with_sso(self, sso: Option<Arc<crate::sso::Sso>>) -> Dashboard {
        Dashboard { sso, ..self }
    }

    /// The sign-in page, saying `why` when there is something to say.
    fn login_view(&self, why: Option<&str>) -> Markup {
        signin::page(why, self.sso.is_some())
    }

    /// Takes Slack's interactions (`POST /slack/interactions`), signed with `secret`.
    pub fn with_slack(self, secret: Option<slack::SigningSecret>) -> Dashboard {
        Dashboard { slack: secret, ..self }
    }

    /// The dashboard's routes; everything but the sign-in page and the static assets
    /// needs a viewer.
    pub fn router(self) -> Router {
        self.router_with(Router::new())
    }

    /// The dashboard's routes and `extra` (`/metrics`), which needs a viewer too.
    pub fn router_with(self, extra: Router) -> Router {
        let private = Router::new()
            .route("/", get(rollouts_page))
            .route("/rollouts/{name}", get(rollout_page))
            .route("/restarts", get(restarts_page))
            .route("/restarts/{id}", get(restart_page))
            .route("/sun", get(sun_page))
            .route("/controllers", get(controllers_page))
            .route("/live/rollouts", get(live_rollouts))
            .route("/live/rollouts/{name}", get(live_rollout))
            .route("/live/restarts", get(live_restarts))
            .route("/live/restarts/{id}", get(live_restart))
            .route("/live/sun", get(live_sun))
            .route("/live/controllers", get(live_controllers))
            .route("/rollouts/{name}/{action}", post(actions::act_on_rollout))
            .route("/restarts/{id}/cancel", post(actions::cancel_job))
            .route_layer(middleware::from_fn_with_state(self.clone(), authenticate));
        Router::new()
            .route("/login", get(signin::login_page).post(signin::login))
            .route("/logout", post(signin::logout))
            .route("/oidc/login", get(oidc::begin))
            .route("/oidc/callback", get(oidc::callback))
            // Slack signs its requests: no session, the signature instead.
            .route(
                "/slack/interactions",
                post(slack::interactions).layer(axum::extract::DefaultBodyLimit::max(64 * 1024)),
            )
            .route(
                "/static/style.css",
                get(|| async { ([(header::CONTENT_TYPE, "text/css")], STYLE) }),
            )
            .route(
                "/static/live.js",
                get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], SCRIPT) }),
            )
            .merge(private)
            .layer(middleware::map_response(security_headers))
            .with_state(self.clone())
            .merge(extra.route_layer(middleware::from_fn_with_state(self, authenticate)))
    }

    /// Who the request proves to be; Err(why) when nobody (None: no credentials at all).
    fn principal(&self, headers: &HeaderMap) -> Result<Principal, Option<&'static str>> {
        let Some(credentials) = &self.credentials else {
            return Ok(Principal::anonymous());
        };
        if let Some(token) = crate::auth::bearer(headers) {
            return token
                .and_then(|t| credentials.by_token(t))
                .ok_or(Some("That token is not accepted."));
        }
        match session::cookie(headers) {
            // A session ends when its principal leaves the tokens file (SIGHUP).
            Some(id) => match self.sessions.get(id) {
                Some((p, Origin::Sso)) => Ok(p),
                Some((p, Origin::Token)) if credentials.still_holds(&p) => Ok(p),
                Some(_) => {
                    self.sessions.close(id);
                    Err(Some("Your token was withdrawn; sign in again."))
                }
                None => Err(Some("Your session ended; sign in again.")),
            },
            None => Err(None),
        }
    }
}

/// Pages are not cached, framed or sniffed; scripts only from this server.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn authenticate(State(d): State<Dashboard>, mut req: Request, next: Next) -> Response {
    match d.principal(req.headers()) {
        Ok(p) if p.role.allows(Need::View) => {
            let id = session::cookie(req.headers()).unwrap_or_default().to_string();
            let csrf = d.csrf.token(&id);
            req.extensions_mut().insert(p);
            req.extensions_mut().insert(actions::Session { id, csrf });
            next.run(req).await
        }
        Ok(p) => {
            let text = format!(
                "`{}` has the {} role; the dashboard needs viewer, operator or admin.",
                p.name, p.role
            );
            (
                StatusCode::FORBIDDEN,
                html(views::message("Not allowed", Some((&p, "")), &text)),
            )
                .into_response()
        }
        Err(why) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            html(d.login_view(why)),
        )
            .into_response(),
    }
}

fn html(markup: Markup) -> Html<String> {
    Html(markup.into_string())
}

fn not_found(who: &Principal, session: &actions::Session, text: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        html(views::message("Not found", Some((who, &session.csrf)), &text)),
    )
        .into_response()
}

// ---- pages: a layout around the fragment its live stream keeps fresh ----

async fn rollouts_page(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<actions::Session>,
) -> Response {
    let body = views::live("/live/rollouts", render_rollouts(&d));
    html(views::page("Rollouts", Some((&who, &session.csrf)), body)).into_response()
}

async fn rollout_page(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<actions::Session>,
    Path(name): Path<String>,
) -> Response {
    match d.engine.get(Key { name: &name, id: 0 }) {
        Ok(_) => rollout_screen(&d, &who, &session, &name, None).into_response(),
        Err(_) => not_found(&who, &session, format!("No rollout is named `{name}`.")),
    }
}

/// A rollout's page: what an action did (`notice`), the buttons `who` may press,
/// and the live view.
fn rollout_screen(
    d: &Dashboard,
    who: &Principal,
    session: &actions::Session,
    name: &str,
    notice: Option<(bool, String)>,
) -> Html<String> {
    let fragment =
        render_rollout(d, name).unwrap_or_else(|| views::message_fragment(&format!("No rollout is named `{name}`.")));
    let panel = match d.engine.get(Key { name, id: 0 }) {
        Ok(r) => actions::rollout_panel(&r, who, &session.csrf),
        Err(_) => maud::html! {},
    };
    let live = views::live(&format!("/live/rollouts/{}", views::encode(name)), fragment);
    let body = maud::html! { (actions::notice(&notice)) (panel) (live) };
    html(views::page(name, Some((who, &session.csrf)), body))
}

/// A restart job's page, likewise.
fn restart_screen(
    d: &Dashboard,
    who: &Principal,
    session: &actions::Session,
    id: u64,
    notice: Option<(bool, String)>,
) -> Html<String> {
    let fragment =
        render_restart(d, id).unwrap_or_else(|| views::message_fragment(&format!("No restart job has id {id}.")));
    let panel = match d.engine.restart_job(id, false) {
        Ok(j) => actions::job_panel(&j, who, &session.csrf),
        Err(_) => maud::html! {},
    };
    let live = views::live(&format!("/live/restarts/{id}"), fragment);
    let body = maud::html! { (actions::notice(&notice)) (panel) (live) };
    html(views::page(
        &format!("Restart job {id}"),
        Some((who, &session.csrf)),
        body,
    ))
}

async fn restarts_page(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<actions::Session>,
) -> Response {
    let body = views::live("/live/restarts", render_restarts(&d));
    html(views::page("Restarts", Some((&who, &session.csrf)), body)).into_response()
}

async fn restart_page(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<actions::Session>,
    Path(id): Path<u64>,
) -> Response {
    match d.engine.restart_job(id, false) {
        Ok(_) => restart_screen(&d, &who, &session, id, None).into_response(),
        Err(_) => not_found(&who, &session, format!("No restart job has id {id}.")),
    }
}

async fn sun_page(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<actions::Session>,
) -> Response {
    let body = views::live("/live/sun", render_sun(&d));
    html(views::page("Follow the sun", Some((&who, &session.csrf)), body)).into_response()
}

async fn controllers_page(
    State(d): State<Dashboard>,
    Extension(who): Extension<Principal>,
    Extension(session): Extension<actions::Session>,
) -> Response {
    let body = views::live("/live/controllers", render_controllers(&d));
    html(views::page("Controllers", Some((&who, &session.csrf)), body)).into_response()
}

// ---- fragments ----

fn render_controllers(d: &Dashboard) -> Markup {
    let all = crate::store::off_the_runtime(|| (d.controllers)());
    match &all {
        Ok(all) => views::controllers(Ok(all)),
        Err(e) => views::controllers(Err(&e.to_string())),
    }
}

fn render_rollouts(d: &Dashboard) -> Markup {
    let mut list = d.engine.list(&[]);
    list.sort_by_key(|r| std::cmp::Reverse(r.id));
    maud::html! { (frozen(d)) (views::rollouts(&list)) }
}

/// The banner of the freezes in force (nothing when none is).
fn frozen(d: &Dashboard) -> Markup {
    freezes::banner(&d.engine.freezes_in_force())
}

fn render_rollout(d: &Dashboard, name: &str) -> Option<Markup> {
    let r = d.engine.get(Key { name, id: 0 }).ok()?;
    // Only this rollout's lines, read back to just before it was created.
    let since = r.created_at_unix_ms - 60_000;
    // The analysis's measurements are on the charts: the timeline keeps what people
    // and the controller did.
    let timeline = d
        .engine
        .events_where(since, TIMELINE, |e| e.rollout_name == r.name && e.kind != "measurement")
        .unwrap_or_default();
    // Copied only when this controller limits the plan (rare): pages render often.
    let r = match d.engine.limits(r.plan.as_ref()) {
        Some(limits) => std::sync::Arc::new(pb::Rollout { limits, ..(*r).clone() }),
        None => r,
    };
    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
    let view = views::rollout(&r, &timeline, d.engine.drill_clock().as_deref(), now);
    Some(maud::html! { (frozen(d)) (view) })
}

fn render_restarts(d: &Dashboard) -> Markup {
    maud::html! { (frozen(d)) (restarts::restarts(&d.engine.restart_jobs())) }
}

fn render_restart(d: &Dashboard, id: u64) -> Option<Markup> {
    let job = d.engine.restart_job(id, false).ok()?;
    let queue = d.engine.restart_queue(id, QUEUE_TOP).ok()?;
    let view = restarts::restart(&job, &queue, d.engine.drill_clock().as_deref());
    Some(maud::html! { (frozen(d)) (view) })
}

fn render_sun(d: &Dashboard) -> Markup {
    let mut cached = d.sun.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((at, html)) = cached.as_ref()
        && at.elapsed() < SUN_TICK
    {
        return PreEscaped(html.clone());
    }
    // A pass over every host: the runtime's other tasks move to another worker.
    let markup = crate::store::off_the_runtime(|| {
        let inventory = d.engine.inventory();
        let (down, unknown) = d.engine.down_and_unknown();
        let fleet = sun::Fleet {
            hosts: inventory.hosts(),
            down: &down,
            unknown: &unknown,
        };
        views::sun(
            &sun::follow(inventory.calendar(), &fleet, d.engine.now_ms()),
            d.engine.drill_clock().as_deref(),
        )
    });
    *cached = Some((std::time::Instant::now(), markup.0.clone()));
    markup
}

// ---- live streams ----

/// What wakes a stream up.
enum Wake {
    Rollout(watch::Receiver<Arc<pb::Rollout>>),
    Job(watch::Receiver<Arc<pb::RestartJob>>),
    Every(Duration),
}

impl Wake {
    /// Waits for a change; false when its source is gone.
    async fn changed(&mut self) -> bool {
        match self {
            Wake::Rollout(rx) => rx.changed().await.is_ok(),
            Wake::Job(rx) => rx.changed().await.is_ok(),
            Wake::Every(period) => {
                tokio::time::sleep(*period).await;
                true
            }
        }
    }

    /// Marks the latest value seen (updates coalesce while throttled).
    fn seen(&mut self) {
        match self {
            Wake::Rollout(rx) => {
                rx.borrow_and_update();
            }
            Wake::Job(rx) => {
                rx.borrow_and_update();
            }
            Wake::Every(_) => {}
        }
    }
}

type Render = Box<dyn Fn(&Dashboard) -> Option<Markup> + Send + Sync>;

/// How often a live stream says it is alive when nothing changed.
const ALIVE_EVERY: Duration = Duration::from_secs(5);

/// A stream of `html` events: the fragment now, then again each time `wake` fires and
/// the HTML differs from what was sent, at most every [`THROTTLE`]. It ends when the
/// source is gone or the controller stops.
fn stream(d: Dashboard, wake: Wake, render: Render) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let state = (d, wake, render, None::<String>, true);
    let events = futures::stream::unfold(state, |(d, mut wake, render, mut last, first)| async move {
        loop {
            if !first {
                let shutdown = d.shutdown.clone();
                tokio::select! {
                    alive = wake.changed() => if !alive { return None },
                    _ = shutdown.cancelled() => return None,
                }
                tokio::select! {
                    _ = tokio::time::sleep(THROTTLE) => {}
                    _ = shutdown.cancelled() => return None,
                }
                wake.seen();
            }
            let html = render(&d)?.into_string();
            if last.as_deref() != Some(html.as_str()) {
                let event = Event::default().event("html").retry(Duration::from_secs(1)).data(&html);
                last = Some(html);
                return Some((Ok(event), (d, wake, render, last, false)));
            }
        }
    });
    // A named event, not a comment: the page's script hears it and says it is live.
    Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(ALIVE_EVERY)
            .event(Event::default().event("alive").data("")),
    )
}

async fn live_rollouts(State(d): State<Dashboard>) -> Response {
    stream(d, Wake::Every(LIST_TICK), Box::new(|d| Some(render_rollouts(d)))).into_response()
}

async fn live_rollout(State(d): State<Dashboard>, Path(name): Path<String>) -> Response {
    let Ok(rx) = d.engine.watch(Key { name: &name, id: 0 }) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    stream(d, Wake::Rollout(rx), Box::new(move |d| render_rollout(d, &name))).into_response()
}

async fn live_restarts(State(d): State<Dashboard>) -> Response {
    stream(d, Wake::Every(LIST_TICK), Box::new(|d| Some(render_restarts(d)))).into_response()
}

async fn live_restart(State(d): State<Dashboard>, Path(id): Path<u64>) -> Response {
    let Ok(rx) = d.engine.watch_restart_job(id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    stream(d, Wake::Job(rx), Box::new(move |d| render_restart(d, id))).into_response()
}

async fn live_controllers(State(d): State<Dashboard>) -> Response {
    stream(d, Wake::Every(LIST_TICK), Box::new(|d| Some(render_controllers(d)))).into_response()
}

async fn live_sun(State(d): State<Dashboard>) -> Response {
    stream(d, Wake::Every(SUN_TICK), Box::new(|d| Some(render_sun(d)))).into_response()
}
