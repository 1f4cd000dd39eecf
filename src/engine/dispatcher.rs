//! The one way hosts are sent work: the dispatcher of a wave, of a restart job's
//! batches, or of the calls in doubt after a restart, a state machine of its own. It owns the hosts ready to send, the operations in flight
//! (each a record keyed by a token; their answers come back on one channel, not
//! through a task per host), the results not yet durable, and two clocks: when the
//! results are flushed next, and when the wave counts as stuck.
//!
//! - **refill**: every free place (up to `max_parallel`) is sent at once; when
//!   nothing is left ready, the next batch of intents is written ahead (one flush).
//! - **on answers**: each answer becomes its host's result; results are made durable
//!   in groups ([`RESULT_FLUSH`]), at once on a failure (the wave's budget stops it)
//!   and when nothing is left in flight.
//! - **on stuck**: no answer for the plan's progress deadline: the hosts awaited
//!   fail with their outcome unknown (a retry reuses their operation ids), and the
//!   intents never sent go back to the queue.
//! - **reconcile** is a mode: it sends only the intents it was given (found without
//!   results at start-up), takes no batches and is never stuck.
//! - **job** is a mode: a restart job's batches are picked when half the places are
//!   free, as many as are free, ranked at that instant (business hours move); never
//!   written ahead, never stuck.
//!
//! A pause or abort stops the sending; operations already sent finish and are
//! recorded. The work is anything [`Work`] (a rollout's host, a restart job's); the
//! store and its owner are reached through [`Book`], the agents through
//! [`crate::reach::Fleet`]: fakes stand in for both in the tests below, on paused time.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Result;
use super::rollout::Dispatch;
use crate::plan::Kind;
use crate::proto::v1 as pb;
use crate::reach::{Answer, Reply, SharedFleet};

/// Intents written per flush at most: bounds the work a crash can leave "in doubt".
pub(crate) const MAX_BATCH: usize = 1_000;
/// Results are flushed at least this often while calls are answered (group commit);
/// watchers see progress once it is durable, so it never goes back after a crash.
pub(crate) const RESULT_FLUSH: Duration = Duration::from_millis(50);
/// What a host found already on the version after a restart is recorded with.
const CONFIRMED: &str = "already on the version (confirmed by probe after a restart)";

/// What a dispatcher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The hosts of this wave (0-based), batch after batch.
    Wave(u32),
    /// Only the intents given: calls in doubt after a restart.
    Reconcile,
    /// A restart job's batches, picked as places free.
    Job,
}

impl Mode {
    fn wave(self) -> Option<u32> {
        match self {
            Mode::Wave(w) => Some(w),
            Mode::Reconcile | Mode::Job => None,
        }
    }
}

/// One host's work, as the dispatcher moves it: sent, answered, settled.
pub(crate) trait Work: Send {
    fn host(&self) -> &str;
    /// Where its agent is (empty: the host left the inventory).
    fn address(&self) -> &str;
    /// The host carried it out; `resp` is its answer.
    fn succeed(&mut self, resp: pb::ApplyResponse, now_ms: i64);
    /// It failed; `unknown`: the host may have acted all the same.
    fn fail(&mut self, detail: String, unknown: bool, now_ms: i64);
    fn failed(&self) -> bool;
}

impl Work for Dispatch {
    fn host(&self) -> &str {
        &self.host
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn succeed(&mut self, resp: pb::ApplyResponse, now_ms: i64) {
        self.record.version = resp.version;
        if !resp.previous_version.is_empty() {
            self.record.previous_version = resp.previous_version;
        }
        settle(self, Ok(resp.detail), false, now_ms);
    }

    fn fail(&mut self, detail: String, unknown: bool, now_ms: i64) {
        settle(self, Err(detail), unknown, now_ms);
    }

    fn failed(&self) -> bool {
        self.record.state() == pb::HostState::Failed
    }
}

/// The owner of the work (a rollout, a restart job) and its store, as the
/// dispatcher reads and writes them.
pub(crate) trait Book: Sync {
    type Item: Work;
    /// What a dispatch ends with (how a wave stands).
    type Report;
    /// Now, by the controller's clock: results are stamped with it.
    fn now_ms(&self) -> i64;
    /// Nothing more may be sent (for `wave`): the state moved on (a pause, an abort,
    /// a cancelled job), or the failures already pass what the wave tolerates.
    fn must_stop(&self, wave: u32) -> bool;
    /// Starts `item`'s operation, its answer going to `reply`.
    fn start(&self, fleet: &SharedFleet, item: &Self::Item, reply: Reply);
    /// Up to `n` more hosts (of `wave`) as intents, durable when this returns.
    fn intents(&self, wave: u32, n: usize) -> impl Future<Output = Result<Vec<Self::Item>>> + Send;
    /// Results (maybe none), recorded; everything written so far made durable.
    fn record(&self, results: &[Self::Item]) -> impl Future<Output = Result<()>> + Send;
    /// Intents never sent, back to the queue (durable at the next `record`).
    fn unsend(&self, items: Vec<Self::Item>) -> Result<()>;
    /// How `wave` stands.
    fn report(&self, wave: u32) -> Self::Report;
    /// Hosts of `wave` wait (a freeze, a window): how long to sleep before asking for
    /// them again; None when none waits, and the dispatch may end.
    fn held(&self, _wave: u32) -> Option<Duration> {
        None
    }
    /// How `wave` stands, stuck for `after` waiting on `hosts`.
    fn stuck(&self, wave: u32, after: Duration, hosts: Vec<String>) -> Self::Report;
}

/// One dispatch's state: what is ready, in flight, answered but not durable.
pub(crate) struct Dispatcher<W> {
    mode: Mode,
    max_parallel: usize,
    batch: usize,
    progress_deadline: Duration,
    ready: VecDeque<W>,
    /// In flight, by token.
    calling: HashMap<u64, W>,
    next_token: u64,
    /// Answered, not yet recorded.
    done: Vec<W>,
    /// A failure is among `done`: record at once.
    failed: bool,
    last_progress: Instant,
    last_flush: Instant,
}

/// A stuck wave: the hosts it gave up waiting on, and the intents it never sent.
pub(crate) struct Stuck<W> {
    pub awaited: Vec<W>,
    pub unsent: Vec<W>,
}

impl<W: Work> Dispatcher<W> {
    /// A dispatcher for `mode`, at most `max_parallel` in flight, `first` ready.
    pub(crate) fn new(mode: Mode, max_parallel: usize, progress_deadline: Duration, first: Vec<W>) -> Self {
        let max_parallel = max_parallel.max(1);
        let now = Instant::now();
        Dispatcher {
            mode,
            max_parallel,
            batch: max_parallel.min(MAX_BATCH),
            progress_deadline,
            ready: first.into(),
            calling: HashMap::new(),
            next_token: 0,
            done: Vec::new(),
            failed: false,
            last_progress: now,
            last_flush: now,
        }
    }

    /// The next host to send, if a place is free: moved in flight under its token.
    /// A host no longer in the inventory fails here, without a call.
    fn next(&mut self, now_ms: i64) -> Option<(u64, &W)> {
        while self.calling.len() < self.max_parallel {
            let mut d = self.ready.pop_front()?;
            if d.address().is_empty() {
                d.fail("the host is no longer in the inventory".into(), false, now_ms);
                self.answered(d);
                continue;
            }
            let token = self.next_token;
            self.next_token += 1;
            return Some((token, self.calling.entry(token).or_insert(d)));
        }
        None
    }

    /// How many intents to write now, if any: nothing is ready and the mode takes
    /// batches (a wave's written ahead; a job's picked once half the places are free,
    /// as many as are free).
    fn wants_batch(&self) -> Option<(u32, usize)> {
        if !self.ready.is_empty() {
            return None;
        }
        match self.mode {
            Mode::Wave(wave) => Some((wave, self.batch)),
            Mode::Job => {
                let free = self.max_parallel - self.calling.len().min(self.max_parallel);
                (free > 0 && self.calling.len() <= self.max_parallel / 2).then_some((0, free))
            }
            Mode::Reconcile => None,
        }
    }

    /// A batch of intents, durable: ready to send.
    fn on_batch(&mut self, intents: Vec<W>, now: Instant) {
        self.ready.extend(intents);
        // Time spent on our own store is not the agents' silence.
        self.last_progress = now;
    }

    /// The answer for `token`: its host's result.
    fn on_answer(&mut self, token: u64, answer: Answer, now: Instant, now_ms: i64) {
        let Some(mut d) = self.calling.remove(&token) else {
            return;
        };
        match answer {
            Ok(resp) if resp.ok => d.succeed(resp, now_ms),
            Ok(resp) => d.fail(format!("agent reported failure: {}", resp.detail), false, now_ms),
            Err(e) => {
                let unknown = e.outcome_unknown();
                d.fail(e.to_string(), unknown, now_ms);
            }
        }
        self.last_progress = now;
        self.answered(d);
    }

    fn answered(&mut self, d: W) {
        self.failed |= d.failed();
        self.done.push(d);
    }

    /// Whether the results answered so far are to be recorded now.
    fn flush_due(&self, now: Instant) -> bool {
        !self.done.is_empty() && (self.failed || self.calling.is_empty() || now >= self.last_flush + RESULT_FLUSH)
    }

    /// When the results answered so far are recorded at the latest.
    fn flush_at(&self) -> Option<Instant> {
        (!self.done.is_empty()).then_some(self.last_flush + RESULT_FLUSH)
    }

    /// The results to record now.
    fn take_done(&mut self, now: Instant) -> Vec<W> {
        self.last_flush = now;
        self.failed = false;
        std::mem::take(&mut self.done)
    }

    /// When the wave counts as stuck if no answer comes (never in reconcile).
    fn stuck_at(&self) -> Option<Instant> {
        (self.mode.wave().is_some() && !self.calling.is_empty()).then(|| self.last_progress + self.progress_deadline)
    }

    /// No answer for the progress deadline: the hosts awaited fail, outcome unknown.
    fn on_stuck(&mut self, now_ms: i64) -> Stuck<W> {
        let mut awaited: Vec<W> = self.calling.drain().map(|(_, d)| d).collect();
        awaited.sort_by(|a, b| a.host().cmp(b.host()));
        let detail = format!(
            "stuck: no answer within the progress deadline ({})",
            crate::text::format_duration(self.progress_deadline)
        );
        for d in &mut awaited {
            d.fail(detail.clone(), true, now_ms);
        }
        Stuck {
            awaited,
            unsent: self.ready.drain(..).collect(),
        }
    }

    /// Stop sending: in a wave, the intents never sent (back to the queue); in
    /// reconcile, nothing (intents in doubt stay recorded as dispatched: the next
    /// start asks their agents again); a job picks no more than it sends at once.
    fn on_stop(&mut self) -> Vec<W> {
        let unsent: Vec<W> = self.ready.drain(..).collect();
        match self.mode {
            Mode::Wave(_) => unsent,
            Mode::Reconcile | Mode::Job => Vec::new(),
        }
    }

    fn finished(&self) -> bool {
        self.calling.is_empty() && self.ready.is_empty()
    }

    /// Runs until nothing is ready or in flight (or the wave is stuck), and returns
    /// how the wave stands.
    pub(crate) async fn run<B: Book<Item = W>>(
        mut self,
        book: &B,
        fleet: &SharedFleet,
        mut control: watch::Receiver<u64>,
        shutdown: &CancellationToken,
    ) -> Result<B::Report> {
        let (tx, mut answers) = Reply::channel();
        let wave = self.mode.wave().unwrap_or(0);
        loop {
            let stop = shutdown.is_cancelled() || (self.mode != Mode::Reconcile && book.must_stop(wave));
            if stop {
                let unsent = self.on_stop();
                if !unsent.is_empty() {
                    book.unsend(unsent)?;
                }
            } else {
                self.refill(book, fleet, &tx).await?;
            }
            // Hosts that wait (a freeze, a window): asked for again after a while, or
            // when something changes (an unfreeze, a pause).
            let held_at = match self.mode {
                Mode::Wave(_) if !stop && self.ready.is_empty() => book.held(wave).map(|d| Instant::now() + d),
                _ => None,
            };
            if self.finished() && held_at.is_none() {
                break;
            }
            let flush_at = self.flush_at();
            let stuck_at = self.stuck_at();
            tokio::select! {
                // Answers first: a deadline that expires together with an answer is not stuck.
                biased;
                Some((token, answer)) = answers.recv() => {
                    let now = Instant::now();
                    let now_ms = book.now_ms();
                    self.on_answer(token, answer, now, now_ms);
                    while let Ok((token, answer)) = answers.try_recv() {
                        self.on_answer(token, answer, now, now_ms);
                    }
                    if self.flush_due(now) {
                        book.record(&self.take_done(now)).await?;
                    }
                }
                // Slow answers: results received since the last flush are recorded and
                // shown within RESULT_FLUSH even if no other answer comes to trigger it.
                _ = sleep_until(flush_at), if flush_at.is_some() => {
                    book.record(&self.take_done(Instant::now())).await?;
                }
                _ = control.changed() => {}
                _ = sleep_until(held_at), if held_at.is_some() => {}
                _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                _ = sleep_until(stuck_at), if stuck_at.is_some() => {
                    let stuck = self.on_stuck(book.now_ms());
                    if !stuck.unsent.is_empty() {
                        book.unsend(stuck.unsent)?;
                    }
                    let hosts: Vec<String> = stuck.awaited.iter().map(|d| d.host().to_string()).collect();
                    let mut results = self.take_done(Instant::now());
                    results.extend(stuck.awaited);
                    book.record(&results).await?;
                    tracing::warn!(wave, "wave stuck");
                    return Ok(book.stuck(wave, self.progress_deadline, hosts));
                }
            }
        }
        book.record(&self.take_done(Instant::now())).await?;
        Ok(book.report(wave))
    }

    /// Fills every free place now, a batch at a time (the wave's hosts do not wait
    /// for an answer to come before they are sent), then writes the next batch's
    /// intents ahead: at most max_parallel in flight and one batch waiting.
    async fn refill<B: Book<Item = W>>(
        &mut self,
        book: &B,
        fleet: &SharedFleet,
        tx: &tokio::sync::mpsc::UnboundedSender<(u64, Answer)>,
    ) -> Result<()> {
        loop {
            let now_ms = book.now_ms();
            while let Some((token, d)) = self.next(now_ms) {
                book.start(fleet, d, Reply::to(tx, token));
            }
            let Some((wave, n)) = self.wants_batch() else {
                return Ok(());
            };
            let intents = book.intents(wave, n).await?;
            if intents.is_empty() {
                return Ok(());
            }
            self.on_batch(intents, Instant::now());
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Starts a rollout host's operation, its answer going to `reply`. A host whose
/// intent was found without a result after a restart is probed first (for a fix):
/// already on the version, it is not applied again.
pub(crate) fn send(fleet: &SharedFleet, kind: Kind, d: &Dispatch, request: pb::ApplyRequest, reply: Reply) {
    if !(d.probe_first && kind == Kind::Fix) {
        return fleet.start(&d.address, request, reply);
    }
    let probe = fleet.probe(&d.address, &d.host);
    let (fleet, address) = (fleet.clone(), d.address.clone());
    tokio::spawn(reply.answer_with(async move {
        match probe.await {
            Ok(p) if p.version == request.version => Ok(pb::ApplyResponse {
                ok: true,
                version: p.version,
                detail: CONFIRMED.into(),
                ..Default::default()
            }),
            _ => fleet.apply(&address, request).await,
        }
    }));
}

/// The host's result, as its record says it.
fn settle(d: &mut Dispatch, outcome: std::result::Result<String, String>, unknown: bool, now_ms: i64) {
    let (state, detail) = match outcome {
        Ok(detail) => (pb::HostState::Succeeded, detail),
        Err(detail) => (pb::HostState::Failed, detail),
    };
    d.record.set_state(state);
    d.record.detail = detail;
    d.record.outcome_unknown = unknown;
    d.record.updated_at_unix_ms = now_ms;
    d.record.finished_at_unix_ms = now_ms;
}

#[cfg(test)]
mod tests;
