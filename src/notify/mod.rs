//! Telling the incident room: the sinks a controller notifies (`rollout serve
//! --notify FILE`), the event types they may pick, delivering what the outbox holds,
//! and how a sink's URL is shown without its secrets.
//!
//! The engine writes each event into the store's outbox in the transaction of the
//! change it reports (`crate::store`'s notices); the leader's [`Notifier`] delivers
//! them. Nothing here can slow a rollout: it only reads what was written.
//!
//! - [`sinks`]: the sinks file, read strictly (file:line:column), each sink's
//!   secret and CA read at start; `rollout notify check` validates it offline.
//! - [`delivery`]: the outbox's sinks: per sink and subject, in seq order, at least
//!   once, retried with the shared backoff and budget, given up after a while.
//! - [`webhook`]: the wire format: a structured CloudEvent, signed as Standard
//!   Webhooks sign.
//! - [`slack`]: a Slack incoming webhook's text.
//! - [`alertmanager`]: alerts firing while a rollout is halted, waits for approval
//!   or failed, resolved when that ends.
//! - [`send`]: one request and what its answer means.

pub mod alertmanager;
pub mod delivery;
pub mod send;
pub mod sinks;
pub mod slack;
pub mod webhook;

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use sinks::{Sink, SinkKind, Sinks};

use crate::clock::Clock;
use crate::engine::Engine;
use crate::event_type::EventType;
use crate::proto::v1 as pb;
use crate::store::Store;
use delivery::{Delivery, Outlet};
use send::Answer;

/// What the notifier can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A sink's HTTP client could not be made (its CA).
    #[error("sink {sink}: {reason}")]
    Client { sink: String, reason: String },
    /// A request names a sink the sinks file does not have.
    #[error("no sink is named `{name}`; this controller's are: {known}")]
    UnknownSink { name: String, known: String },
    /// The controller runs without `--notify`.
    #[error(
        "this controller notifies no one: start it with --notify FILE (a sinks file; `rollout notify check FILE` validates one)"
    )]
    NoSinks,
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> crate::error::Error {
        match e {
            Error::UnknownSink { .. } => crate::error::Error::NotFound(e.to_string()),
            Error::NoSinks => crate::error::Error::Unconfigured(e.to_string()),
            Error::Client { .. } => crate::error::Error::Usage(e.to_string()),
            Error::Store(s) => crate::error::Error::Store(s),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    sink: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

/// One sink's counters (`rollout_notifications_total{sink,outcome}`); a clone shares
/// the counts.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub delivered: Counter,
    /// Attempts that failed and will be tried again.
    pub retried: Counter,
    pub undeliverable: Counter,
    /// Retries put off because the retry budget was spent.
    pub budget_exhausted: Counter,
}

impl Stats {
    fn of(family: &Family<OutcomeLabels, Counter>, sink: &str) -> Stats {
        let c = |outcome: &str| {
            family
                .get_or_create(&OutcomeLabels {
                    sink: sink.to_string(),
                    outcome: outcome.to_string(),
                })
                .clone()
        };
        Stats {
            delivered: c("delivered"),
            retried: c("retried"),
            undeliverable: c("undeliverable"),
            budget_exhausted: c("budget_exhausted"),
        }
    }

    /// Counts one attempt's answer (undeliverable is counted where it is decided).
    pub fn attempt(&self, answer: &Answer, _first: bool) {
        match answer {
            Answer::Delivered(_) => {
                self.delivered.inc();
            }
            Answer::Retry { .. } => {
                self.retried.inc();
            }
            Answer::Refused(_) => {}
        }
    }
}

/// The leader's notifier: every sink of `--notify`, delivering from the outbox (and
/// Alertmanager's alerts from the rollouts' states). SIGHUP re-reads the sinks file
/// ([`Notifier::reload`]): the sinks in force stop and the new ones start where each
/// sink's cursor is (a sink that stays keeps its place; delivery is at least once).
pub struct Notifier {
    current: std::sync::RwLock<Arc<Generation>>,
    parts: Parts,
    pending: Family<SinkLabels, Gauge>,
}

/// What every generation of sinks is made with.
struct Parts {
    store: Store,
    site: String,
    dashboard: Option<String>,
    clock: Arc<dyn Clock>,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    /// Every generation's tasks, waited for at shutdown.
    tracker: TaskTracker,
    outcomes: Family<OutcomeLabels, Counter>,
}

/// The sinks of one reading of the sinks file, and their tasks.
struct Generation {
    delivery: Arc<Delivery>,
    alerts: Vec<Arc<alertmanager::Alerts>>,
    /// Ends this generation's tasks (a child of the controller's shutdown).
    stop: CancellationToken,
}

impl Parts {
    /// Starts the tasks of `sinks`.
    fn generation(&self, sinks: &Sinks) -> Result<Arc<Generation>, Error> {
        let mut outlets = Vec::new();
        let mut alert_outlets = Vec::new();
        for sink in &sinks.0 {
            let outlet = Arc::new(Outlet::new(sink.clone(), Stats::of(&self.outcomes, &sink.name))?);
            match sink.kind {
                SinkKind::Alertmanager => alert_outlets.push(outlet),
                _ => outlets.push(outlet),
            }
        }
        let stop = self.shutdown.child_token();
        let delivery = Arc::new(Delivery {
            store: self.store.clone(),
            site: self.site.clone(),
            dashboard: self.dashboard.clone(),
            clock: self.clock.clone(),
            outlets,
            shutdown: stop.clone(),
            tracker: self.tracker.clone(),
        });
        delivery.announce();
        self.tracker.spawn(delivery.clone().run());
        let alerts: Vec<Arc<alertmanager::Alerts>> = alert_outlets
            .into_iter()
            .map(|o| Arc::new(alertmanager::Alerts::new(o)))
            .collect();
        for a in &alerts {
            tracing::info!(sink = %a.outlet.sink.name, "alerting {}", a.outlet.sink.describe());
            self.tracker.spawn(a.clone().run(delivery.clone(), self.engine.clone()));
        }
        Ok(Arc::new(Generation { delivery, alerts, stop }))
    }
}

impl Notifier {
    /// Starts delivering to `sinks` what `store`'s outbox holds, until `shutdown`.
    /// The CloudEvents' source is `/rollout/{site}`; Slack's messages link to
    /// `dashboard`.
    pub fn start(
        store: Store,
        sinks: &Sinks,
        site: &str,
        dashboard: Option<&str>,
        clock: Arc<dyn Clock>,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Notifier>, Error> {
        let parts = Parts {
            store,
            site: site.to_string(),
            dashboard: dashboard.map(str::to_string),
            clock,
            engine,
            shutdown,
            tracker: TaskTracker::new(),
            outcomes: Family::default(),
        };
        let first = parts.generation(sinks)?;
        Ok(Arc::new(Notifier {
            current: std::sync::RwLock::new(first),
            parts,
            pending: Family::default(),
        }))
    }

    fn now(&self) -> Arc<Generation> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `sinks` in force: the sinks in force stop, and these start from each
    /// sink's cursor in the store.
    pub fn reload(&self, sinks: &Sinks) -> Result<(), Error> {
        let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
        let next = self.parts.generation(sinks)?;
        slot.stop.cancel();
        *slot = next;
        Ok(())
    }

    /// Waits until every task of the notifier has stopped (after shutdown).
    pub async fn stopped(&self) {
        self.parts.tracker.close();
        self.parts.tracker.wait().await;
    }

    /// Every sink's delivered, pending, last error and undeliverable.
    pub fn status(&self) -> Result<pb::NotifyStatusResponse, Error> {
        let now = self.now();
        let mut sinks = now.delivery.status()?;
        sinks.extend(now.alerts.iter().map(|a| a.status()));
        Ok(pb::NotifyStatusResponse {
            sinks,
            site: self.parts.site.clone(),
        })
    }

    /// Sends one test event to sink `name` now, once, and says how it answered.
    pub async fn test(&self, name: &str) -> Result<pb::NotifyTestResponse, Error> {
        let now = self.now();
        let d = &now.delivery;
        let outlet = d
            .outlets
            .iter()
            .chain(now.alerts.iter().map(|a| &a.outlet))
            .find(|o| o.sink.name == name)
            .ok_or_else(|| Error::UnknownSink {
                name: name.to_string(),
                known: self.names().join(", "),
            })?;
        let now = d.clock.now_ms();
        let id = format!("test-{now}-{:08x}", rand::random::<u32>());
        let started = Instant::now();
        let answer = match outlet.sink.kind {
            SinkKind::Alertmanager => alertmanager::test(outlet, &d.site).await,
            _ => {
                let n = test_event(&id, now);
                let (body, headers) = outlet.request(&n, &d.site, d.dashboard.as_deref());
                send::post(&outlet.client, &outlet.sink.url, body, &headers).await
            }
        };
        let (delivered, answer) = match answer {
            Answer::Delivered(how) => (true, how),
            Answer::Retry { why, .. } | Answer::Refused(why) => (false, why),
        };
        Ok(pb::NotifyTestResponse {
            sink: name.to_string(),
            delivered,
            answer,
            id,
            took_ms: started.elapsed().as_millis() as i64,
        })
    }

    fn names(&self) -> Vec<String> {
        let now = self.now();
        now.delivery
            .outlets
            .iter()
            .chain(now.alerts.iter().map(|a| &a.outlet))
            .map(|o| o.sink.name.clone())
            .collect()
    }

    /// Registers `rollout_notifications_total{sink,outcome}` and
    /// `rollout_notifications_pending{sink}` (in a registry prefixed `rollout`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "notifications",
            "Notification attempts by sink and outcome (delivered, retried, undeliverable, budget_exhausted)",
            self.parts.outcomes.clone(),
        );
        registry.register(
            "notifications_pending",
            "Notifications written and not yet delivered (nor given up), by sink",
            self.pending.clone(),
        );
    }

    /// Sets the pending gauges from the outbox (at each scrape).
    pub fn refresh_metrics(&self) {
        match self.status() {
            Ok(status) => {
                for s in status.sinks {
                    self.pending
                        .get_or_create(&SinkLabels { sink: s.name })
                        .set(s.pending as i64);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count pending notifications"),
        }
    }
}

/// The event `rollout notify test` sends (a type of its own, outside the contract's,
/// so no receiver mistakes it for a rollout's).
fn test_event(id: &str, now_ms: i64) -> pb::Notification {
    let message = "A test notification from rollout (`rollout notify test`): this sink is reachable.";
    pb::Notification {
        id: id.to_string(),
        r#type: "notification.test".into(),
        subject: "test".into(),
        at_unix_ms: now_ms,
        data_json: serde_json::json!({ "kind": "test", "message": message }).to_string(),
        ..Default::default()
    }
}

/// `controller.leader_changed`: `controller` leads now, as of `epoch` (its seq).
pub fn leader_changed(controller: &str, epoch: u64, now_ms: i64) -> pb::Notification {
    let message = format!(
        "Controller {controller} now leads (epoch {epoch}): it carries on every rollout and restart job, and delivers what the previous leader had not."
    );
    pb::Notification {
        id: format!("controllers-{epoch}"),
        r#type: EventType::LeaderChanged.to_string(),
        subject: "controllers".into(),
        rollout_id: 0,
        job_id: 0,
        seq: epoch,
        at_unix_ms: now_ms,
        data_json: serde_json::json!({
            "kind": "controller",
            "seq": epoch,
            "epoch": epoch,
            "leader": controller,
            "message": message,
        })
        .to_string(),
        controller: controller.to_string(),
        freeze_id: 0,
    }
}

/// Every event type a notification may have (a contract: sinks filter on these).
pub const EVENT_TYPES: [&str; 20] = crate::event_type::EventType::NAMES;

/// A URL as anything may show it (status, logs, audit lines, errors, metric labels):
/// its scheme, host and port only. A Slack incoming webhook carries its secret in
/// the path, others in a query or the user part; none of them is ever shown.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", u.scheme()),
            (Some(host), None) => format!("{}://{host}", u.scheme()),
            _ => format!("{}: (a URL without a host)", u.scheme()),
        },
        Err(_) => "(a URL that does not parse)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_credentials_or_query() {
        assert_eq!(
            redact("https://bot:s3cret@hooks.internal:8443/services/T0/B0?token=xyz#frag"),
            "https://hooks.internal:8443"
        );
        assert_eq!(
            redact("https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXX"),
            "https://hooks.slack.com:443"
        );
        assert_eq!(redact("http://127.0.0.1:9093"), "http://127.0.0.1:9093");
        assert!(!redact("not a url with s3cret").contains("s3cret"));
    }
}
