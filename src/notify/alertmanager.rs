//! An Alertmanager sink: alerts posted to `/api/v2/alerts` while a condition holds,
//! as Prometheus posts them (again before their `endsAt`), and resolved (`endsAt`
//! now) when it ends. The site's routing (PagerDuty, email, chat) takes it from there.
//!
//! - `RolloutHalted` (critical): a rollout is halted.
//! - `RolloutAwaitingApproval` (warning): a rollout waits at a gate.
//! - `RolloutFailed` (critical): a rollout failed, for a day after it ended.
//! - `RestartJobFailed` (warning): a restart job failed, for a day after it ended.
//!
//! Labels `alertname`, `rollout` (a restart job: `job`), `site`, `severity`;
//! annotations `summary` (the status text) and `description`. The sink's `events`
//! pick alerts by the event each condition begins with (`rollout.halted`,
//! `rollout.awaiting_approval`, `rollout.failed`, `restart.completed`), `rollouts`
//! by name. Level-triggered: each round posts what holds now, from the engine's
//! snapshots, and the alerts it posted as firing are kept in the store, so a new
//! leader resolves what the last one left firing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{debug, warn};

use super::delivery::{Delivery, Outlet};
use super::send::{self, Answer};
use crate::clock::{Clock, SystemClock};
use crate::engine::Engine;
use crate::event_type::EventType;
use crate::proto::v1 as pb;
use crate::retry::Backoff;

/// How often the alerts are posted again (Prometheus's resend delay is a minute).
const RESEND: Duration = Duration::from_secs(30);
/// A firing alert's `endsAt` is this far ahead: four rounds missed resolve it.
const ENDS_AFTER: Duration = Duration::from_secs(120);
/// How long a failed rollout or restart job keeps its alert firing.
const FAILED_FOR_MS: i64 = 24 * 3600 * 1000;

/// One alert that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub alertname: &'static str,
    /// The rollout's name, or the restart job's id.
    pub subject: String,
    pub summary: String,
    pub description: String,
}

/// An Alertmanager sink as the notifier runs it.
pub struct Alerts {
    pub outlet: Arc<Outlet>,
    /// The last round's word: alerts firing, the last error and when.
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    firing: u64,
    /// Changes (new or resolved alerts) not posted yet.
    pending: u64,
    pending_since_ms: i64,
    last_error: String,
    last_error_at_ms: i64,
}

impl Alerts {
    pub fn new(outlet: Arc<Outlet>) -> Alerts {
        Alerts {
            outlet,
            seen: Mutex::new(Seen::default()),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Posts the alerts each round, and at once after any change is written, until
    /// shutdown.
    pub async fn run(self: Arc<Alerts>, delivery: Arc<Delivery>, engine: Arc<Engine>) {
        let mut written = delivery.store.outbox_written();
        let mut backoff = Backoff::new(Duration::from_secs(1), RESEND);
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = delivery.shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                got = written.recv() => {
                    if matches!(got, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    // The engine's snapshot follows the write at once; a burst of
                    // writes is one round.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    while written.try_recv().is_ok() {}
                }
            }
            wait = match self.round(&delivery, &engine).await {
                true => {
                    backoff.reset();
                    RESEND
                }
                false => backoff.next().unwrap_or(RESEND),
            };
        }
    }

    /// One round: posts what holds (and what stopped holding, resolved); true when
    /// Alertmanager took it.
    async fn round(&self, delivery: &Delivery, engine: &Engine) -> bool {
        let sink = &self.outlet.sink;
        let now = engine.wall_ms();
        let rollouts = engine.list(&[]);
        let jobs = engine.restart_jobs();
        let wanted: Vec<Wanted> = conditions(&rollouts, &jobs, now)
            .into_iter()
            .filter(|w| sink.wants(event_of(w.alertname), rollout_of(w)))
            .collect();
        let before = match delivery.store.firing_alerts(&sink.name) {
            Ok(f) => f,
            Err(e) => {
                warn!(sink = %sink.name, error = %e, "cannot read the alerts posted as firing");
                return false;
            }
        };
        let (body, firing, changes) = alerts(&wanted, &before, &rollouts, &delivery.site, now);
        {
            let mut seen = self.seen();
            seen.pending = changes;
            if changes > 0 && seen.pending_since_ms == 0 {
                seen.pending_since_ms = now;
            }
        }
        if body.is_empty() {
            return true;
        }
        let url = format!("{}/api/v2/alerts", sink.url.trim_end_matches('/'));
        let headers = [("content-type", "application/json".to_string())];
        let answer = tokio::select! {
            _ = delivery.shutdown.cancelled() => return false,
            a = send::post(&self.outlet.client, &url, Value::Array(body).to_string().into_bytes(), &headers) => a,
        };
        self.outlet.stats.attempt(&answer, true);
        match answer {
            Answer::Delivered(_) => {
                if let Err(e) = delivery.store.put_firing_alerts(&sink.name, &firing) {
                    warn!(sink = %sink.name, error = %e, "cannot record the alerts posted as firing");
                    return false;
                }
                let mut seen = self.seen();
                seen.firing = firing.alerts.len() as u64;
                seen.pending = 0;
                seen.pending_since_ms = 0;
                debug!(sink = %sink.name, firing = firing.alerts.len(), "alerts posted");
                true
            }
            Answer::Retry { why, .. } | Answer::Refused(why) => {
                warn!(sink = %sink.name, error = %why, "Alertmanager did not take the alerts; trying again");
                let mut seen = self.seen();
                seen.last_error = why;
                seen.last_error_at_ms = now;
                false
            }
        }
    }

    /// What `rollout notify status` says of this sink.
    pub fn status(&self) -> pb::SinkStatus {
        let sink = &self.outlet.sink;
        let seen = self.seen();
        pb::SinkStatus {
            name: sink.name.clone(),
            kind: sink.kind.as_str().to_string(),
            url: super::redact(&sink.url),
            delivered: self.outlet.stats.delivered.get(),
            pending: seen.pending,
            oldest_pending_unix_ms: seen.pending_since_ms,
            last_error: seen.last_error.clone(),
            last_error_at_unix_ms: seen.last_error_at_ms,
            undeliverable: 0,
            description: format!("{}; {} alerts firing", sink.describe(), seen.firing),
        }
    }
}

/// The event a condition begins with, for the sink's `events`.
fn event_of(alertname: &str) -> &'static str {
    match alertname {
        "RolloutHalted" => EventType::Halted,
        "RolloutAwaitingApproval" => EventType::AwaitingApproval,
        "RolloutFailed" => EventType::Failed,
        _ => EventType::RestartCompleted,
    }
    .as_str()
}

fn rollout_of(w: &Wanted) -> &str {
    if w.alertname == "RestartJobFailed" {
        ""
    } else {
        &w.subject
    }
}

fn severity(alertname: &str) -> &'static str {
    match alertname {
        "RolloutHalted" | "RolloutFailed" => "critical",
        _ => "warning",
    }
}

/// The alerts that hold at `now_ms` for these rollouts and restart jobs. Pure.
pub fn conditions(rollouts: &[Arc<pb::Rollout>], jobs: &[Arc<pb::RestartJob>], now_ms: i64) -> Vec<Wanted> {
    use pb::RolloutState as S;
    let mut out = Vec::new();
    for r in rollouts {
        let (alertname, description) = match r.state() {
            S::Halted => (
                "RolloutHalted",
                format!(
                    "Rollout {} is halted: {}. `rollout retry {}` or `rollout abort {} --reason WHY`.",
                    r.name, r.halt_reason, r.name, r.name
                ),
            ),
            S::AwaitingApproval => (
                "RolloutAwaitingApproval",
                format!(
                    "Rollout {} waits for approval before its next wave: `rollout approve {}`.",
                    r.name, r.name
                ),
            ),
            S::Failed if now_ms - r.finished_at_unix_ms < FAILED_FOR_MS => (
                "RolloutFailed",
                format!("Rollout {} failed: {}.", r.name, r.halt_reason),
            ),
            _ => continue,
        };
        out.push(Wanted {
            alertname,
            subject: r.name.clone(),
            summary: r.summary.clone(),
            description,
        });
    }
    for j in jobs {
        if j.state() == pb::RestartJobState::Failed && now_ms - j.finished_at_unix_ms < FAILED_FOR_MS {
            out.push(Wanted {
                alertname: "RestartJobFailed",
                subject: j.id.to_string(),
                summary: j.summary.clone(),
                description: format!("Restart job {} failed: {}.", j.id, j.reason),
            });
        }
    }
    out
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn labels(alertname: &str, subject: &str, site: &str) -> Value {
    let mut l = BTreeMap::new();
    l.insert("alertname", alertname.to_string());
    l.insert(
        if alertname == "RestartJobFailed" {
            "job"
        } else {
            "rollout"
        },
        subject.to_string(),
    );
    l.insert("site", site.to_string());
    l.insert("severity", severity(alertname).to_string());
    json!(l)
}

/// The body of a round (firing alerts, and resolved ones that were firing), the
/// alerts firing once it is taken, and how many alerts changed. Pure.
pub fn alerts(
    wanted: &[Wanted],
    before: &pb::FiringAlerts,
    rollouts: &[Arc<pb::Rollout>],
    site: &str,
    now_ms: i64,
) -> (Vec<Value>, pb::FiringAlerts, u64) {
    let was = |w: &Wanted| {
        before
            .alerts
            .iter()
            .find(|f| f.alertname == w.alertname && f.subject == w.subject)
    };
    let mut body = Vec::new();
    let mut firing = pb::FiringAlerts::default();
    let mut changes = 0;
    for w in wanted {
        let starts = match was(w) {
            Some(f) => f.starts_at_unix_ms,
            None => {
                changes += 1;
                now_ms
            }
        };
        body.push(json!({
            "labels": labels(w.alertname, &w.subject, site),
            "annotations": { "summary": w.summary, "description": w.description },
            "startsAt": rfc3339(starts),
            "endsAt": rfc3339(now_ms + ENDS_AFTER.as_millis() as i64),
        }));
        firing.alerts.push(pb::FiringAlert {
            alertname: w.alertname.to_string(),
            subject: w.subject.clone(),
            starts_at_unix_ms: starts,
        });
    }
    for f in &before.alerts {
        if wanted
            .iter()
            .any(|w| w.alertname == f.alertname && w.subject == f.subject)
        {
            continue;
        }
        changes += 1;
        let summary = rollouts
            .iter()
            .find(|r| r.name == f.subject)
            .map(|r| r.summary.clone())
            .unwrap_or_default();
        body.push(json!({
            "labels": labels(&f.alertname, &f.subject, site),
            "annotations": { "summary": summary, "description": format!("{} no longer holds.", f.alertname) },
            "startsAt": rfc3339(f.starts_at_unix_ms),
            "endsAt": rfc3339(now_ms),
        }));
    }
    (body, firing, changes)
}

/// `rollout notify test` of an Alertmanager sink: one informational alert that ends
/// within a minute.
pub async fn test(outlet: &Outlet, site: &str) -> Answer {
    // Alertmanager judges startsAt and endsAt by the real time.
    let now = SystemClock.now_ms();
    let body = json!([{
        "labels": { "alertname": "RolloutNotifyTest", "site": site, "severity": "info" },
        "annotations": {
            "summary": "A test alert from rollout (`rollout notify test`): this Alertmanager is reachable.",
        },
        "startsAt": rfc3339(now),
        "endsAt": rfc3339(now + 60_000),
    }]);
    let url = format!("{}/api/v2/alerts", outlet.sink.url.trim_end_matches('/'));
    let headers = [("content-type", "application/json".to_string())];
    send::post(&outlet.client, &url, body.to_string().into_bytes(), &headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(name: &str, state: pb::RolloutState, finished: i64) -> Arc<pb::Rollout> {
        Arc::new(pb::Rollout {
            name: name.into(),
            state: state as i32,
            finished_at_unix_ms: finished,
            halt_reason: "3 of 10 hosts failed".into(),
            summary: format!("status of {name}"),
            ..Default::default()
        })
    }

    #[test]
    fn conditions_hold_while_halted_waiting_or_recently_failed() {
        use pb::RolloutState as S;
        let day = FAILED_FOR_MS;
        let rollouts = [
            rollout("a", S::Halted, 0),
            rollout("b", S::AwaitingApproval, 0),
            rollout("c", S::Failed, 10 * day),
            rollout("d", S::Failed, 9 * day - 1),
            rollout("e", S::Running, 0),
        ];
        let job = Arc::new(pb::RestartJob {
            id: 7,
            state: pb::RestartJobState::Failed as i32,
            finished_at_unix_ms: 10 * day,
            ..Default::default()
        });
        let got: Vec<(&str, String)> = conditions(&rollouts, &[job], 10 * day + 5)
            .into_iter()
            .map(|w| (w.alertname, w.subject))
            .collect();
        assert_eq!(
            got,
            [
                ("RolloutHalted", "a".to_string()),
                ("RolloutAwaitingApproval", "b".into()),
                ("RolloutFailed", "c".into()),
                ("RestartJobFailed", "7".into()),
            ],
            "d failed more than a day ago; e runs"
        );
    }

    #[test]
    fn an_alert_fires_from_when_it_began_and_resolves_when_it_ends() {
        let halted = rollout("exo", pb::RolloutState::Halted, 0);
        let wanted = conditions(std::slice::from_ref(&halted), &[], 1_000);
        let (body, firing, changes) = alerts(&wanted, &Default::default(), &[], "apac", 1_000);
        assert_eq!(changes, 1);
        assert_eq!(body[0]["labels"]["alertname"], "RolloutHalted");
        assert_eq!(body[0]["labels"]["rollout"], "exo");
        assert_eq!(body[0]["labels"]["site"], "apac");
        assert_eq!(body[0]["labels"]["severity"], "critical");
        assert_eq!(body[0]["annotations"]["summary"], "status of exo");
        assert_eq!(body[0]["startsAt"], "1970-01-01T00:00:01.000Z");
        assert_eq!(body[0]["endsAt"], "1970-01-01T00:02:01.000Z");
        // Posted again later: the same start, no change.
        let (body, again, changes) = alerts(&wanted, &firing, &[], "apac", 31_000);
        assert_eq!(
            (changes, body[0]["startsAt"].as_str()),
            (0, Some("1970-01-01T00:00:01.000Z"))
        );
        // It ended: resolved now, nothing firing.
        let (body, none, changes) = alerts(&[], &again, &[halted], "apac", 61_000);
        assert_eq!(changes, 1);
        assert_eq!(body[0]["endsAt"], "1970-01-01T00:01:01.000Z");
        assert!(none.alerts.is_empty());
    }
}
