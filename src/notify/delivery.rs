//! Delivery from the outbox: per sink and per subject (a rollout, a restart job, the
//! controllers), in seq order, at least once. Each sink keeps a cursor per subject in
//! the store, written after each delivery, so a new leader (or the same controller
//! restarted) goes on where the last one stopped and sends again at most what was
//! in flight, under the same id.
//!
//! Every (sink, subject) pair has its own task while it has work: a slow or dead
//! sink holds back only its own events, one subject at a time, and never the
//! rollout (which only writes to the outbox). Failures are retried with the
//! full-jitter backoff and a retry budget of [`crate::retry`], the same as agent
//! calls: 1 s up to 5 min, `Retry-After` honoured, until the sink's
//! `give_up_after` from when the event was written; then it is undeliverable (an
//! audit line, a metric, `rollout notify status`). A 4xx other than 429 is
//! undeliverable at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::send::{self, Answer};
use super::sinks::{Sink, SinkKind};
use super::{Error, Stats, redact, slack, webhook};
use crate::clock::{Clock, SystemClock};
use crate::engine::audit::{Actor, Target};
use crate::proto::v1 as pb;
use crate::retry::{Backoff, RetryBudget};
use crate::store::{Store, Subject};

/// The first retry waits up to this long, each later one up to twice the last...
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// ...up to this.
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// How often every subject is looked at, besides each write's signal.
const SWEEP: Duration = Duration::from_secs(60);
/// Requests one sink has in flight at most (each subject waits its turn to send,
/// never behind another's backoff).
const IN_FLIGHT: usize = 16;

/// One sink as the notifier runs it.
pub struct Outlet {
    pub sink: Sink,
    pub client: reqwest::Client,
    /// Retries stay within a tenth of first attempts, and at least one a second
    /// (a sink down for hours still gets tried).
    budget: RetryBudget,
    /// Subjects with a task, and whether more was written since it last looked.
    busy: Mutex<HashMap<Subject, bool>>,
    /// Held while a request is out.
    in_flight: tokio::sync::Semaphore,
    pub stats: Stats,
}

impl Outlet {
    pub fn new(sink: Sink, stats: Stats) -> Result<Outlet, Error> {
        Ok(Outlet {
            client: send::client(&sink)?,
            sink,
            budget: RetryBudget::new(0.1, Duration::from_secs(60)).with_minimum(60),
            busy: Mutex::new(HashMap::new()),
            in_flight: tokio::sync::Semaphore::new(IN_FLIGHT),
            stats,
        })
    }

    /// True when this sink takes `n`.
    fn wants(&self, n: &pb::Notification) -> bool {
        let rollout = if n.rollout_id != 0 { n.subject.as_str() } else { "" };
        self.sink.wants(&n.r#type, rollout)
    }

    /// The request delivering `n`.
    pub fn request(
        &self,
        n: &pb::Notification,
        site: &str,
        dashboard: Option<&str>,
    ) -> (Vec<u8>, Vec<(&'static str, String)>) {
        match self.sink.kind {
            SinkKind::Slack => slack::request(n, dashboard),
            // The receiver checks the signature's timestamp against the real time.
            _ => webhook::request(n, site, self.sink.secret.as_ref(), SystemClock.now_ms() / 1000),
        }
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, bool>> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a subject's task stopped before the end.
enum Stop {
    /// The controller is stopping (or lost the leadership).
    Shutdown,
    /// The store refused or failed: the next leader (or start) goes on.
    Store(crate::store::Error),
}

impl From<crate::store::Error> for Stop {
    fn from(e: crate::store::Error) -> Stop {
        Stop::Store(e)
    }
}

/// The delivery side of the notifier: what runs the outbox sinks.
pub struct Delivery {
    pub store: Store,
    pub site: String,
    /// Where people find the dashboard: Slack's `Open dashboard` link.
    pub dashboard: Option<String>,
    pub clock: Arc<dyn Clock>,
    pub outlets: Vec<Arc<Outlet>>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl Delivery {
    /// Runs until shutdown: each write's signal starts the tasks of its subject, and
    /// every subject is looked at now and each [`SWEEP`] (and when the signal lagged).
    pub async fn run(self: Arc<Delivery>) {
        let mut written = self.store.outbox_written();
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = sweep.tick() => self.sweep(),
                got = written.recv() => match got {
                    Ok(subject) => {
                        for outlet in &self.outlets {
                            self.kick(outlet, subject);
                        }
                    }
                    Err(RecvError::Lagged(_)) => self.sweep(),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }

    /// Starts a task for every (sink, subject) with notifications past its cursor.
    fn sweep(self: &Arc<Delivery>) {
        let heads = match self.store.outbox_heads() {
            Ok(h) => h,
            Err(e) => {
                warn!(error = %e, "cannot read the notification outbox");
                return;
            }
        };
        for outlet in &self.outlets {
            for (&subject, &head) in &heads {
                match self.store.sink_cursor(&outlet.sink.name, subject) {
                    Ok(c) if c.seq >= head => {}
                    Ok(_) => self.kick(outlet, subject),
                    Err(e) => warn!(sink = %outlet.sink.name, error = %e, "cannot read a sink's cursor"),
                }
            }
        }
    }

    /// Makes sure a task delivers `subject`'s notifications to `outlet`: starts one,
    /// or tells the running one to look again before it ends.
    fn kick(self: &Arc<Delivery>, outlet: &Arc<Outlet>, subject: Subject) {
        {
            let mut busy = outlet.busy();
            if let Some(again) = busy.get_mut(&subject) {
                *again = true;
                return;
            }
            busy.insert(subject, false);
        }
        let (me, outlet) = (self.clone(), outlet.clone());
        self.tracker.spawn(async move { me.drain(outlet, subject).await });
    }

    /// Delivers `subject`'s notifications to `outlet` until none is left.
    async fn drain(&self, outlet: Arc<Outlet>, subject: Subject) {
        loop {
            match self.drain_once(&outlet, subject).await {
                Ok(()) => {}
                Err(Stop::Shutdown) => return,
                Err(Stop::Store(e)) => {
                    // Deposed, or the store failed: whoever writes next goes on.
                    warn!(sink = %outlet.sink.name, error = %e, "notifications stopped: the store refused their cursor");
                    outlet.busy().remove(&subject);
                    return;
                }
            }
            let mut busy = outlet.busy();
            match busy.get_mut(&subject) {
                Some(again) if *again => *again = false,
                _ => {
                    busy.remove(&subject);
                    return;
                }
            }
        }
    }

    /// One pass: everything past the cursor, in seq order.
    async fn drain_once(&self, outlet: &Outlet, subject: Subject) -> Result<(), Stop> {
        // Only what is durable is told: a crash cannot take back an event sent.
        self.store.flush().await?;
        let name = &outlet.sink.name;
        let mut cursor = self.store.sink_cursor(name, subject)?;
        // Never touched by this sink: what is older than its give_up_after is history
        // from before it was configured (or a controller down that long), not news.
        let fresh = cursor == pb::SinkCursor::default();
        let mut unsaved = false;
        let mut history = 0;
        for n in self.store.notices(subject, cursor.seq)? {
            if self.shutdown.is_cancelled() {
                return Err(Stop::Shutdown);
            }
            let old = fresh && self.age(&n) > outlet.sink.give_up_after;
            history += usize::from(old && outlet.wants(&n));
            if old || !outlet.wants(&n) {
                cursor.seq = n.seq;
                unsaved = true;
                continue;
            }
            let audit = self.deliver(outlet, &n, subject, &mut cursor).await?;
            cursor.seq = n.seq;
            self.store.put_sink_cursor(name, subject, &cursor, audit.as_slice())?;
            unsaved = false;
        }
        if unsaved {
            self.store.put_sink_cursor(name, subject, &cursor, &[])?;
        }
        if history > 0 {
            info!(sink = %name, ?subject, events = history, "not sending events older than the sink's give_up_after, written before it was configured");
        }
        Ok(())
    }

    /// How long ago `n` was written.
    fn age(&self, n: &pb::Notification) -> Duration {
        Duration::from_millis((self.clock.now_ms() - n.at_unix_ms).max(0) as u64)
    }

    /// Sends `n` until it is delivered or given up; the audit line of giving up.
    async fn deliver(
        &self,
        outlet: &Outlet,
        n: &pb::Notification,
        subject: Subject,
        cursor: &mut pb::SinkCursor,
    ) -> Result<Option<pb::EventRecord>, Stop> {
        let sink = &outlet.sink;
        let mut backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
        outlet.budget.first_attempt();
        let mut first = true;
        loop {
            if first || outlet.budget.try_retry() {
                let send = async {
                    let _turn = outlet.in_flight.acquire().await;
                    let (body, headers) = outlet.request(n, &self.site, self.dashboard.as_deref());
                    send::post(&outlet.client, &sink.url, body, &headers).await
                };
                let answer = tokio::select! {
                    // Cut off mid-request: it is sent again (same id) by whoever goes on.
                    _ = self.shutdown.cancelled() => return Err(Stop::Shutdown),
                    a = send => a,
                };
                outlet.stats.attempt(&answer, first);
                first = false;
                let (why, after) = match answer {
                    Answer::Delivered(how) => {
                        cursor.delivered += 1;
                        debug!(sink = %sink.name, id = %n.id, r#type = %n.r#type, %how, "notification delivered");
                        return Ok(None);
                    }
                    Answer::Refused(why) => return Ok(Some(self.undeliverable(outlet, n, subject, cursor, why))),
                    Answer::Retry { why, after } => (why, after),
                };
                cursor.last_error = why.clone();
                cursor.last_error_at_unix_ms = self.clock.now_ms();
                if self.age(n) >= sink.give_up_after {
                    let why = format!(
                        "given up after {} (give_up_after): {why}",
                        crate::text::format_duration(sink.give_up_after)
                    );
                    return Ok(Some(self.undeliverable(outlet, n, subject, cursor, why)));
                }
                // The error is shown while it is retried (`rollout notify status`).
                self.store.put_sink_cursor(&sink.name, subject, cursor, &[])?;
                debug!(sink = %sink.name, id = %n.id, error = %why, "notification not delivered yet; retrying");
                let wait = backoff.next().unwrap_or(BACKOFF_CAP);
                self.sleep(after.map_or(wait, |a| a.max(wait))).await?;
            } else {
                outlet.stats.budget_exhausted.inc();
                self.sleep(backoff.next().unwrap_or(BACKOFF_CAP)).await?;
            }
        }
    }

    async fn sleep(&self, wait: Duration) -> Result<(), Stop> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(Stop::Shutdown),
            _ = tokio::time::sleep(wait) => Ok(()),
        }
    }

    /// Records that `n` will not be delivered to `outlet`, and why: counted, and the
    /// audit line to write with the cursor.
    fn undeliverable(
        &self,
        outlet: &Outlet,
        n: &pb::Notification,
        subject: Subject,
        cursor: &mut pb::SinkCursor,
        why: String,
    ) -> pb::EventRecord {
        let sink = &outlet.sink;
        cursor.undeliverable += 1;
        cursor.last_error = why.clone();
        cursor.last_error_at_unix_ms = self.clock.now_ms();
        outlet.stats.undeliverable.inc();
        warn!(sink = %sink.name, url = %redact(&sink.url), id = %n.id, r#type = %n.r#type, error = %why, "notification undeliverable");
        let target = match subject {
            Subject::Rollout(id) => Target::Rollout { id, name: &n.subject },
            Subject::Job(id) => Target::Job(id),
            Subject::Controllers | Subject::Freeze(_) => Target::None,
        };
        let line = format!(
            "notification {} ({}) is undeliverable to sink {}: {why}",
            n.id, n.r#type, sink.name
        );
        let mut event = Actor::controller().event(self.clock.now_ms(), target, line, "undeliverable");
        event.kind = "notify".into();
        event
    }

    /// Per outbox sink: delivered, pending and the oldest pending, the last error,
    /// undeliverable; from the store, so any leader says the same.
    pub fn status(&self) -> Result<Vec<pb::SinkStatus>, crate::store::Error> {
        let heads = self.store.outbox_heads()?;
        let mut out = Vec::with_capacity(self.outlets.len());
        for outlet in &self.outlets {
            let mut s = pb::SinkStatus {
                name: outlet.sink.name.clone(),
                kind: outlet.sink.kind.as_str().to_string(),
                url: redact(&outlet.sink.url),
                description: outlet.sink.describe(),
                ..Default::default()
            };
            for (&subject, &head) in &heads {
                let c = self.store.sink_cursor(&outlet.sink.name, subject)?;
                s.delivered += c.delivered;
                s.undeliverable += c.undeliverable;
                if c.last_error_at_unix_ms > s.last_error_at_unix_ms {
                    s.last_error = c.last_error.clone();
                    s.last_error_at_unix_ms = c.last_error_at_unix_ms;
                }
                if head <= c.seq {
                    continue;
                }
                for n in self.store.notices(subject, c.seq)? {
                    if outlet.wants(&n) {
                        s.pending += 1;
                        if s.oldest_pending_unix_ms == 0 || n.at_unix_ms < s.oldest_pending_unix_ms {
                            s.oldest_pending_unix_ms = n.at_unix_ms;
                        }
                    }
                }
            }
            out.push(s);
        }
        Ok(out)
    }

    /// Says, once at start, where notifications go.
    pub fn announce(&self) {
        for o in &self.outlets {
            info!(sink = %o.sink.name, "notifying {}", o.sink.describe());
        }
    }
}
