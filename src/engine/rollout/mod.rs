//! One rollout in memory: its record and state, the counters, the queues of hosts
//! waiting for a wave or for dispatch, and the channel that publishes snapshots.
//!
//! Built the same way for a new rollout and for one found in the store after a
//! restart: by scanning its host rows, from nothing or from the counters stored with
//! the record. So the counters a client sees always equal a re-count of the store,
//! and there is one code path to trust. An ended rollout stores all its counters
//! (`summary`) and loads without reading a host; a running one stores those of its
//! settled waves when a wave starts (`checkpoint`), and a restart reads only the
//! hosts of the later waves and those in no wave yet.

mod counts;
mod dispatch;
mod domains;
mod gate;
mod load;
mod snapshot;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::audit::{Actor, Target};
use super::order;
use super::results::{FailureGroups, GroupKind, push_history};
use super::state::{Decision, Event, Policy, Refusal, State, WaveReport, step};
use super::{Error, Result};
use crate::event_type::EventType;
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::proto::v1 as pb;
use crate::store::{Holder, Store};

use pb::HostState;

use counts::Customers;
pub(crate) use counts::Tally;
pub(crate) use domains::Domains;
pub use gate::Approved;

/// The clocks a transition reads: the wall clock, and the one business hours are
/// judged by (a drill clock, or the wall clock again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct At {
    pub wall_ms: i64,
    pub hours_ms: i64,
    /// `hours_ms` is a drill clock's.
    pub drill: bool,
}

/// What carrying out a transition's decisions gathered, to be written with it.
struct Carried {
    /// Audit lines: who asked (an operator), then what the controller did.
    audit: Vec<pb::EventRecord>,
    /// Notifications, in the order the step function made them.
    told: Vec<EventType>,
    /// A rollback of this rollout is to be started (only the engine creates rollouts).
    rollback: bool,
}

/// How many failed hosts a halt reason quotes.
const EXAMPLES: usize = 3;

/// A host on its way to an agent, or back from one.
#[derive(Debug, Clone)]
pub(crate) struct Dispatch {
    pub host: String,
    pub address: std::sync::Arc<str>,
    pub record: pb::RolloutHostRecord,
    /// Its intent was found without a result after a restart: probe before re-applying.
    pub probe_first: bool,
}

pub(crate) struct Inner {
    pub record: pb::RolloutRecord,
    pub state: State,
    tally: Tally,
    /// Selected hosts in no wave yet, in dispatch order.
    pending: VecDeque<String>,
    /// Hosts placed in a wave and waiting to be sent, in order.
    assigned: VecDeque<(String, pb::RolloutHostRecord)>,
    /// Intents without a result, found at start-up: asked again first.
    reconcile: Vec<(String, pb::RolloutHostRecord)>,
    /// Hosts in flight per fault domain (a plan with `fault_domain:`).
    flight: domains::Flight,
    /// A few failures per wave, quoted in halt reasons.
    examples: Vec<Vec<String>>,
    customers: Customers,
    /// Per-host target versions (an automatic rollback returns each host to its own
    /// previous version), recorded with the hosts when the rollout was created.
    targets: HashMap<String, String>,
    /// The counters as of the last flush: what snapshots show, so that nobody ever
    /// sees progress a crash could take back (results are flushed in groups).
    durable: (Tally, u64),
    /// Why hosts failed, or were unhealthy at a gate, grouped by reason.
    failures: FailureGroups,
    /// Succeeded hosts that a health gate found unhealthy or unreachable.
    unhealthy: u64,
    /// A driver task runs this rollout: set when one is spawned, cleared when it
    /// parks on a terminal state, so that a retry spawns exactly one again.
    driving: bool,
    /// The plan's analysis measured so far, oldest first (stored as taken).
    measurements: Vec<pb::Measurement>,
    /// Hosts of the current wave that a freeze or a window keeps back, as of the
    /// last batch taken.
    waiting: crate::engine::hold::Waiting,
}

/// A rollout the engine knows about.
pub(crate) struct Live {
    pub id: u64,
    /// The store's instance name, which the operation ids it makes carry (empty in
    /// a dry run, which sends nothing).
    pub instance: Arc<str>,
    pub plan: Plan,
    pub policy: Policy,
    /// Each stage's hosts (one stage for a plan without stages): wave targets are
    /// shares of these.
    pub stage_sizes: Vec<u64>,
    /// The fault domains' budgets (a plan with `fault_domain:`).
    domains: Option<domains::Domains>,
    inventory: Arc<Inventory>,
    inner: Mutex<Inner>,
    snapshot: watch::Sender<Arc<pb::Rollout>>,
    /// Bumped when an operator changes the state, so a busy driver looks again.
    pub control: watch::Sender<u64>,
}

impl Live {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    pub fn name(&self) -> &str {
        &self.plan.name
    }

    /// The inventory as of the rollout's start (its hosts and their customers).
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Hosts covered once wave `k` is done.
    pub fn wave_target(&self, k: usize) -> u64 {
        self.plan.wave_target(k, &self.stage_sizes)
    }

    pub fn snapshot(&self) -> Arc<pb::Rollout> {
        self.snapshot.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<pb::Rollout>> {
        self.snapshot.subscribe()
    }

    /// Applies an event: the step function decides, this carries the decisions out
    /// and persists the new state. The caller flushes. Returns true when the caller
    /// must start a rollback of this rollout (only the engine can create rollouts).
    /// `at` is the wall clock, and the clock business hours are judged by (a gate
    /// opening explains the next wave with it).
    /// Whether the state machine would accept `event` now, without acting on it:
    /// side effects an action needs first (taking its hosts' leases) follow only an
    /// accepted decision.
    pub fn accepts(&self, event: &Event, at: At) -> Result<()> {
        let inner = self.lock();
        step(&inner.state, event.clone(), at.wall_ms, &self.policy)
            .map(|_| ())
            .map_err(|Refusal(why)| self.refused(why))
    }

    fn refused(&self, why: String) -> Error {
        Error::Refused(format!("rollout `{}` (id {}): {why}", self.plan.name, self.id))
    }

    pub fn transition(&self, store: &Store, event: Event, at: At, audit: Option<pb::EventRecord>) -> Result<bool> {
        let inner = self.lock();
        self.apply(store, inner, event, at, audit.into_iter().collect())
    }

    /// [`Live::transition`] with the lock held (an approval changed the gate first)
    /// and the audit lines to write with the change. The step function decides
    /// everything; this carries its decisions out in three phases: the work on
    /// hosts and gates, one write of the new state with its audit lines and
    /// notifications, and what follows that write.
    fn apply<'a>(
        &'a self,
        store: &Store,
        mut inner: MutexGuard<'a, Inner>,
        event: Event,
        at: At,
        audit: Vec<pb::EventRecord>,
    ) -> Result<bool> {
        let operator = event.by_operator();
        let unhealthy = match &event {
            Event::BakeElapsed(health) => health.unhealthy,
            _ => 0,
        };
        let (next, decisions) =
            step(&inner.state, event, at.wall_ms, &self.policy).map_err(|Refusal(why)| self.refused(why))?;
        let next = next.named(&self.plan.name);
        let mut done = Carried {
            audit,
            told: Vec::new(),
            rollback: false,
        };
        self.carry_out(store, &mut inner, &next, decisions, unhealthy, at, &mut done)?;
        let ended = self.persist(store, &mut inner, next, &done, at)?;
        self.settle(store, inner, ended, operator)?;
        Ok(done.rollback)
    }

    /// Phase one: the host and gate work of each decision, in order; audit lines and
    /// notifications are gathered into `done` to be written with the change.
    #[allow(clippy::too_many_arguments)]
    fn carry_out(
        &self,
        store: &Store,
        inner: &mut Inner,
        next: &State,
        decisions: Vec<Decision>,
        unhealthy: u64,
        at: At,
        done: &mut Carried,
    ) -> Result<()> {
        let now_ms = at.wall_ms;
        let target = Target::Rollout {
            id: self.id,
            name: &self.plan.name,
        };
        let mut audit = |line: String, kind: &str| {
            let mut event = Actor::controller().event(now_ms, target, line, "ok");
            event.kind = kind.to_string();
            done.audit.push(event);
        };
        for decision in decisions {
            match decision {
                Decision::RequeueFailed { wave } => {
                    self.requeue_failed(store, inner, wave..=wave, None)?;
                }
                Decision::RetryFailed { wave } => {
                    let round = inner.record.retries + 1;
                    let n = self.requeue_failed(store, inner, 0..=wave, Some(round))?;
                    inner.record.retries = round;
                    audit(
                        format!("retry {round}: re-running {n} failed hosts with new operation ids"),
                        "retry",
                    );
                }
                Decision::Audit(line) => audit(line.replace(super::state::ROLLOUT, &self.plan.name), next.name()),
                Decision::Notify(kind) => done.told.push(kind),
                Decision::StartRollback => done.rollback = true,
                Decision::OpenGate { wave } => audit(self.open_gate(inner, wave, unhealthy, at), "gate"),
                Decision::OpenEmergencyGate => audit(self.open_emergency_gate(inner, at), "gate"),
                Decision::CloseGate { outcome } => super::approval::close(&mut inner.record, outcome, now_ms),
            }
        }
        Ok(())
    }

    /// Phase two: the new state into the record (with the summary an ended rollout
    /// keeps, or the checkpoint a new wave starts from), written in one transaction
    /// with the audit lines and the notifications. Returns true when the rollout
    /// ended and keeps no lease for a rollback to take over.
    fn persist(&self, store: &Store, inner: &mut Inner, next: State, done: &Carried, at: At) -> Result<bool> {
        let now_ms = at.wall_ms;
        let changed = next != inner.state;
        let mut ended = false;
        if changed {
            next.write(&mut inner.record);
            inner.record.updated_at_unix_ms = now_ms;
            if next.is_terminal() && inner.record.finished_at_unix_ms == 0 {
                inner.record.finished_at_unix_ms = now_ms;
            }
            if !next.is_terminal() {
                // A retried rollout is running again.
                inner.record.finished_at_unix_ms = 0;
            }
            // The rollback takes over the leases when it is created; until then
            // (even across a crash) they stay with this rollout.
            inner.record.rollback_pending |= done.rollback;
            ended = next.is_terminal() && !inner.record.rollback_pending;
            // Written with the final state: a restart then reads no host of it.
            inner.record.summary = if ended { Live::summary(inner) } else { None };
            // Written when a wave starts: a restart then reads only the later waves'.
            if ended {
                inner.record.checkpoint = None;
            } else if let State::Running { wave } = next {
                let since = store.next_host_update(self.id)?;
                inner.record.checkpoint = Live::checkpoint(inner, wave, since);
            }
            inner.state = next;
        }
        // What happened, for the incident room: in the outbox, with the change.
        let notices = self.notices(inner, &done.told, at);
        if changed || !done.audit.is_empty() {
            store.put_rollout_with_notices(&inner.record, &done.audit, &notices)?;
        }
        Ok(ended)
    }

    /// Phase three, after the write: an ended rollout frees its hosts (before anyone
    /// is told it ended, so they are free when people look), the new state is
    /// published, and a driver waiting on an operator looks again.
    fn settle(&self, store: &Store, inner: MutexGuard<'_, Inner>, ended: bool, operator: bool) -> Result<()> {
        let inner = if ended {
            drop(inner);
            self.release_leases(store)?;
            self.lock()
        } else {
            inner
        };
        self.publish(&inner);
        drop(inner);
        if operator {
            self.control.send_modify(|g| *g += 1);
        }
        Ok(())
    }

    /// The notifications of `kinds` as of now (current counters), numbered on from
    /// the record's count, which they advance.
    fn notices(&self, inner: &mut Inner, kinds: &[EventType], at: At) -> Vec<pb::Notification> {
        if kinds.is_empty() {
            return Vec::new();
        }
        let now_ms = at.wall_ms;
        let mut shown = self.build_counted(inner, &inner.tally, inner.customers.mitigated);
        if at.drill {
            shown.drill_clock = crate::clock::drill_text(at.hours_ms);
        }
        shown.summary = crate::summary::rollout(&shown);
        let mut out = Vec::with_capacity(kinds.len());
        for kind in kinds {
            inner.record.notices += 1;
            let seq = inner.record.notices;
            out.push(pb::Notification {
                id: format!("rollout-{}-{seq}", self.id),
                r#type: kind.to_string(),
                subject: self.plan.name.clone(),
                rollout_id: self.id,
                job_id: 0,
                seq,
                at_unix_ms: now_ms,
                data_json: super::notification::data(&shown, seq).to_string(),
                controller: String::new(),
                freeze_id: 0,
            });
        }
        out
    }

    /// Who this rollout is, as a lease holder.
    pub fn holder(&self) -> Holder {
        Holder::Rollout {
            id: self.id,
            name: self.plan.name.clone(),
        }
    }

    /// Gives up the leases on this rollout's hosts that it still holds.
    pub fn release_leases(&self, store: &Store) -> Result<()> {
        store.release_leases(&self.holder())?;
        Ok(())
    }

    /// True when this rollout ended asking for a rollback that was not created yet.
    pub fn rollback_pending(&self) -> bool {
        self.lock().record.rollback_pending
    }

    /// The stored record as it is now.
    pub fn record(&self) -> pb::RolloutRecord {
        self.lock().record.clone()
    }

    /// Records that the rollback was created (in the same transaction, by the caller's
    /// `also` record), or that there was nothing to roll back (`rollback_id` 0).
    pub fn set_rolled_back(&self, record: pb::RolloutRecord) {
        let mut inner = self.lock();
        inner.record = record;
        self.publish(&inner);
    }

    /// Puts the failed hosts of `waves` back in the queue, their attempt so far kept
    /// in their history. On a resume (`round` None) a host whose last attempt got no
    /// answer keeps its operation_id (the agent may have run it) and the others get a
    /// new attempt and id; a retry round gives every host a new attempt and id, and
    /// probes first those whose outcome was unknown. Returns how many were requeued.
    fn requeue_failed(
        &self,
        store: &Store,
        inner: &mut Inner,
        waves: std::ops::RangeInclusive<u32>,
        round: Option<u32>,
    ) -> Result<usize> {
        let stored = waves.start() + 1..=waves.end() + 1;
        let mut again = Vec::new();
        for row in store.rollout_hosts(self.id) {
            let (host, mut rec) = row?;
            if rec.state() != HostState::Failed || !stored.contains(&rec.wave) {
                continue;
            }
            inner.failures.remove(GroupKind::Failed, &host, &rec.detail);
            push_history(&mut rec);
            if round.is_some() || !rec.outcome_unknown {
                rec.attempt += 1;
                rec.operation_id.clear();
            }
            if let Some(round) = round {
                rec.retry_round = round;
            }
            rec.set_state(HostState::Assigned);
            rec.detail.clear();
            rec.started_at_unix_ms = 0;
            rec.finished_at_unix_ms = 0;
            inner.tally.moved(rec.wave, HostState::Failed, HostState::Assigned);
            again.push((host, rec));
        }
        Live::unsettle(store, inner, again.iter().map(|(_, r)| r.wave))?;
        store.put_hosts(self.id, again.iter().map(|(h, r)| (h.as_str(), r)))?;
        for w in stored {
            if let Some(ex) = inner.examples.get_mut(w as usize) {
                ex.clear();
            }
        }
        let n = again.len();
        for item in again.into_iter().rev() {
            inner.assigned.push_front(item);
        }
        Ok(n)
    }

    /// Called by a driver about to leave: true (and the rollout is marked undriven)
    /// when it may go, false when the rollout was revived meanwhile (a retry) and the
    /// driver must carry on.
    pub fn park(&self, shutting_down: bool) -> bool {
        let mut inner = self.lock();
        if shutting_down || inner.state.is_terminal() {
            inner.driving = false;
            true
        } else {
            false
        }
    }

    /// The analysis measured so far.
    pub fn measurements(&self) -> Vec<pb::Measurement> {
        self.lock().measurements.clone()
    }

    /// Records a round of measurements, each with its line in the audit log (one
    /// transaction), and publishes them. The caller flushes.
    pub fn add_measurements(&self, store: &Store, round: Vec<pb::Measurement>) -> Result<()> {
        let target = Target::Rollout {
            id: self.id,
            name: &self.plan.name,
        };
        let events: Vec<pb::EventRecord> = round
            .iter()
            .map(|m| {
                let line = format!("wave {}: check `{}` {}: {}", m.wave, m.check, m.verdict, m.detail);
                let mut event = Actor::controller().event(m.at_unix_ms, target, line, "ok");
                event.kind = "measurement".into();
                event
            })
            .collect();
        let mut inner = self.lock();
        store.put_measurements(self.id, inner.measurements.len() as u64, &round, &events)?;
        inner.measurements.extend(round);
        self.publish(&inner);
        Ok(())
    }

    /// True, once, when the rollout has work and no driver: the caller spawns one.
    pub fn revive(&self) -> bool {
        let mut inner = self.lock();
        if inner.driving || (inner.state.is_terminal() && inner.reconcile.is_empty()) {
            return false;
        }
        inner.driving = true;
        true
    }
}
