//! One rollout in memory: its record and state, the counters, the queues of hosts
//! waiting for a wave or for dispatch, and the channel that publishes snapshots.
//!
//! Built the same way for a new rollout and for one found in the store after a
//! restart: by scanning its host rows. So the counters a client sees always equal a
//! re-count of the store, and there is one code path to trust.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::audit::{Actor, Target};
use super::order;
use super::results::{FailureGroups, GroupKind, push_history};
use super::state::{Decision, Event, Policy, Refusal, State, WaveReport, step};
use super::{Error, Result};
use crate::fleet::Inventory;
use crate::plan::{FailureAction, Kind, Plan};
use crate::proto::v1 as pb;
use crate::store::{Holder, Store};

use pb::HostState;

/// How many failed hosts a halt reason quotes.
const EXAMPLES: usize = 3;

/// Hosts per state, per wave. Index 0 holds the hosts in no wave yet; index k+1
/// holds wave k (the same numbering as `RolloutHostRecord.wave`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    counts: Vec<[u64; 6]>,
}

impl Tally {
    fn new(waves: usize) -> Tally {
        Tally {
            counts: vec![[0; 6]; waves + 1],
        }
    }

    fn slot(&mut self, wave_index: u32) -> &mut [u64; 6] {
        let i = (wave_index as usize).min(self.counts.len() - 1);
        &mut self.counts[i]
    }

    fn add(&mut self, wave_index: u32, state: HostState) {
        self.slot(wave_index)[state as usize] += 1;
    }

    fn remove(&mut self, wave_index: u32, state: HostState) {
        let c = &mut self.slot(wave_index)[state as usize];
        *c = c.saturating_sub(1);
    }

    /// A host of wave `wave_index` changed state.
    fn moved(&mut self, wave_index: u32, from: HostState, to: HostState) {
        self.remove(wave_index, from);
        self.add(wave_index, to);
    }

    /// Counts of wave `wave` (0-based).
    pub fn wave(&self, wave: u32) -> [u64; 6] {
        self.counts.get(wave as usize + 1).copied().unwrap_or_default()
    }

    pub fn total(&self, state: HostState) -> u64 {
        self.counts.iter().map(|c| c[state as usize]).sum()
    }
}

/// Per customer: selected hosts and how many of them succeeded.
#[derive(Debug, Default)]
struct Customers {
    hosts: HashMap<String, (u32, u32)>,
    mitigated: u64,
}

impl Customers {
    fn select(&mut self, customers: &[String]) {
        for c in customers {
            self.hosts.entry(c.clone()).or_default().0 += 1;
        }
    }

    /// Counts a success while loading, before every host is selected: no verdicts yet.
    fn count_success(&mut self, customers: &[String]) {
        for c in customers {
            self.hosts.entry(c.clone()).or_default().1 += 1;
        }
    }

    /// Recounts the mitigated customers once loading is done.
    fn recount(&mut self) {
        self.mitigated = self.hosts.values().filter(|(sel, ok)| *sel > 0 && ok >= sel).count() as u64;
    }

    /// A host of these customers succeeded: a customer is mitigated with its last host.
    fn succeeded(&mut self, customers: &[String]) {
        for c in customers {
            if let Some((sel, ok)) = self.hosts.get_mut(c) {
                *ok += 1;
                if *ok == *sel {
                    self.mitigated += 1;
                }
            }
        }
    }
}

/// A host on its way to an agent, or back from one.
#[derive(Debug, Clone)]
pub(crate) struct Dispatch {
    pub host: String,
    pub address: String,
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
}

/// A rollout the engine knows about.
pub(crate) struct Live {
    pub id: u64,
    pub plan: Plan,
    pub policy: Policy,
    inventory: Arc<Inventory>,
    inner: Mutex<Inner>,
    snapshot: watch::Sender<Arc<pb::Rollout>>,
    /// Bumped when an operator changes the state, so a busy driver looks again.
    pub control: watch::Sender<u64>,
}

impl Live {
    /// Rebuilds a rollout from the store: record, host rows, counters, queues.
    pub fn load(store: &Store, inventory: Arc<Inventory>, record: pb::RolloutRecord, now_ms: i64) -> Result<Live> {
        let rows = store.rollout_hosts(record.id).map(|row| row.map_err(Error::from));
        Live::from_rows(inventory, record, rows, now_ms)
    }

    /// A rollout that was never stored (a dry run): every host pending.
    pub fn preview(
        inventory: Arc<Inventory>,
        record: pb::RolloutRecord,
        hosts: &[String],
        now_ms: i64,
    ) -> Result<Live> {
        let pending = pb::RolloutHostRecord {
            state: HostState::Pending as i32,
            ..Default::default()
        };
        let rows = hosts.iter().map(|h| Ok((h.clone(), pending.clone())));
        Live::from_rows(inventory, record, rows, now_ms)
    }

    fn from_rows(
        inventory: Arc<Inventory>,
        record: pb::RolloutRecord,
        rows: impl Iterator<Item = Result<(String, pb::RolloutHostRecord)>>,
        now_ms: i64,
    ) -> Result<Live> {
        let spec = record.plan.clone().unwrap_or_default();
        let plan =
            Plan::from_spec(&spec).map_err(|e| Error::Corrupt(format!("rollout {}: stored plan: {e}", record.id)))?;
        let policy = Policy {
            waves: plan.waves.len() as u32,
            bake_ms: plan.bake.as_millis() as i64,
            rollback_on_failure: plan.on_failure == crate::plan::FailureAction::Rollback,
        };
        let mut tally = Tally::new(plan.waves.len());
        let mut pending = Vec::new();
        let mut assigned = Vec::new();
        let mut reconcile = Vec::new();
        let mut customers = Customers::default();
        let mut examples = vec![Vec::new(); plan.waves.len() + 1];
        let mut targets = HashMap::new();
        let mut failures = FailureGroups::default();
        let mut unhealthy = 0;
        for row in rows {
            let (host, rec) = row?;
            let state = rec.state();
            if state == HostState::Pending && !rec.version.is_empty() {
                targets.insert(host.clone(), rec.version.clone());
            }
            tally.add(rec.wave, state);
            let host_customers = inventory
                .host(&host)
                .map(|h| h.customers.as_slice())
                .unwrap_or_default();
            customers.select(host_customers);
            match state {
                HostState::Pending | HostState::Unspecified => pending.push(host),
                HostState::Assigned => assigned.push((host, rec)),
                HostState::Dispatched => reconcile.push((host, rec)),
                HostState::Succeeded => {
                    customers.count_success(host_customers);
                    if !rec.unhealthy_after.is_empty() {
                        unhealthy += 1;
                        failures.add(GroupKind::Unhealthy, &host, &rec.unhealthy_after);
                    }
                }
                HostState::Failed => {
                    let ex = &mut examples[(rec.wave as usize).min(plan.waves.len())];
                    if ex.len() < EXAMPLES {
                        ex.push(format!("{host}: {}", rec.detail));
                    }
                    failures.add(GroupKind::Failed, &host, &rec.detail);
                }
            }
        }
        customers.recount();
        order::arrange(&mut pending, plan.order, &inventory, now_ms);
        let mut assigned_hosts: Vec<String> = assigned.iter().map(|(h, _)| h.clone()).collect();
        order::arrange(&mut assigned_hosts, plan.order, &inventory, now_ms);
        let mut by_host: HashMap<String, pb::RolloutHostRecord> = assigned.into_iter().collect();
        let assigned = assigned_hosts
            .into_iter()
            .filter_map(|h| by_host.remove(&h).map(|r| (h, r)))
            .collect();
        let state = State::from_record(&record);
        let inner = Inner {
            record,
            state,
            tally: tally.clone(),
            pending: pending.into(),
            assigned,
            reconcile,
            durable: (tally.clone(), customers.mitigated),
            examples,
            customers,
            targets,
            failures,
            unhealthy,
            driving: false,
        };
        let live = Live {
            id: inner.record.id,
            plan,
            policy,
            inventory,
            snapshot: watch::Sender::new(Arc::new(pb::Rollout::default())),
            control: watch::Sender::new(0),
            inner: Mutex::new(inner),
        };
        live.publish(&live.lock());
        Ok(live)
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    pub fn name(&self) -> &str {
        &self.plan.name
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
    pub fn transition(&self, store: &Store, event: Event, now_ms: i64, audit: Option<pb::EventRecord>) -> Result<bool> {
        let mut rollback = false;
        let operator = matches!(event, Event::Pause | Event::Resume | Event::Retry | Event::Abort { .. });
        let mut inner = self.lock();
        let (next, decisions) = step(&inner.state, event, now_ms, &self.policy)
            .map_err(|Refusal(why)| Error::Refused(format!("rollout `{}` (id {}): {why}", self.plan.name, self.id)))?;
        let next = next.named(&self.plan.name);
        // Who asked (an operator), then what the controller did: written with the
        // new state in one transaction.
        let mut events: Vec<pb::EventRecord> = audit.into_iter().collect();
        for decision in decisions {
            match decision {
                Decision::RequeueFailed { wave } => {
                    self.requeue_failed(store, &mut inner, wave..=wave, None)?;
                }
                Decision::RetryFailed { wave } => {
                    inner.record.retries += 1;
                    let round = inner.record.retries;
                    let n = self.requeue_failed(store, &mut inner, 0..=wave, Some(round))?;
                    let target = Target::Rollout {
                        id: self.id,
                        name: &self.plan.name,
                    };
                    let line = format!("retry {round}: re-running {n} failed hosts with new operation ids");
                    let mut event = Actor::controller().event(now_ms, target, line, "ok");
                    event.kind = "retry".into();
                    events.push(event);
                }
                Decision::Record(line) => {
                    let target = Target::Rollout {
                        id: self.id,
                        name: &self.plan.name,
                    };
                    let line = line.replace(super::state::ROLLOUT, &self.plan.name);
                    let mut event = Actor::controller().event(now_ms, target, line, "ok");
                    event.kind = next.name().to_string();
                    events.push(event);
                }
                Decision::StartRollback => rollback = true,
            }
        }
        let mut ended = false;
        let next_changed = next != inner.state;
        if next_changed {
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
            inner.record.rollback_pending |= rollback;
            ended = next.is_terminal() && !inner.record.rollback_pending;
            inner.state = next;
        }
        if next_changed || !events.is_empty() {
            store.put_rollout_with_events(&inner.record, &events)?;
        }
        if ended {
            // Before anyone is told it ended, so its hosts are free when they look.
            drop(inner);
            self.release_leases(store)?;
            inner = self.lock();
        }
        self.publish(&inner);
        drop(inner);
        if operator {
            self.control.send_modify(|g| *g += 1);
        }
        Ok(rollback)
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
        let hosts = store.rollout_host_ids(self.id)?;
        store.release_leases(&self.holder(), hosts.iter().map(String::as_str))?;
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

    /// Records the health gate's verdict on hosts that applied fine and are unhealthy
    /// or unreachable after their wave's bake (`hosts`: host, record, why). The caller
    /// flushes.
    pub fn mark_unhealthy(&self, store: &Store, hosts: Vec<(String, pb::RolloutHostRecord, String)>) -> Result<()> {
        if hosts.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        let mut rows = Vec::with_capacity(hosts.len());
        for (host, mut rec, why) in hosts {
            if rec.unhealthy_after.is_empty() {
                inner.unhealthy += 1;
            } else {
                inner.failures.remove(GroupKind::Unhealthy, &host, &rec.unhealthy_after);
            }
            inner.failures.add(GroupKind::Unhealthy, &host, &why);
            rec.unhealthy_after = why;
            rows.push((host, rec));
        }
        store.put_hosts(self.id, rows.iter().map(|(h, r)| (h.as_str(), r)))?;
        self.publish(&inner);
        Ok(())
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

    /// True, once, when the rollout has work and no driver: the caller spawns one.
    pub fn revive(&self) -> bool {
        let mut inner = self.lock();
        if inner.driving || (inner.state.is_terminal() && inner.reconcile.is_empty()) {
            return false;
        }
        inner.driving = true;
        true
    }

    /// Places hosts in `wave` until it covers its share of the selection, and
    /// records the placement. The caller flushes.
    pub fn fill_wave(&self, store: &Store, wave: u32, now_ms: i64, hours_ms: i64) -> Result<()> {
        let mut inner = self.lock();
        let selected = inner.record.hosts_selected;
        let target = self.plan.wave_target(wave as usize, selected);
        let placed = selected - inner.pending.len() as u64;
        let need = target.saturating_sub(placed) as usize;
        if need == 0 {
            return Ok(());
        }
        if self.plan.order.is_timed() {
            // The clock moved since the last wave: rank the waiting hosts again.
            order::arrange(
                inner.pending.make_contiguous(),
                self.plan.order,
                &self.inventory,
                hours_ms,
            );
        }
        let take = need.min(inner.pending.len());
        let hosts: Vec<String> = inner.pending.drain(..take).collect();
        let rec = pb::RolloutHostRecord {
            state: HostState::Assigned as i32,
            wave: wave + 1,
            attempt: 1,
            updated_at_unix_ms: now_ms,
            ..Default::default()
        };
        let targets: Vec<pb::RolloutHostRecord> = hosts
            .iter()
            .map(|h| pb::RolloutHostRecord {
                version: inner.targets.get(h).cloned().unwrap_or_default(),
                ..rec.clone()
            })
            .collect();
        store.put_hosts(self.id, hosts.iter().map(String::as_str).zip(targets.iter()))?;
        for h in hosts {
            inner.tally.remove(0, HostState::Pending);
            inner.tally.add(wave + 1, HostState::Assigned);
            let mut rec = rec.clone();
            if let Some(target) = inner.targets.get(&h) {
                rec.version = target.clone();
            }
            inner.assigned.push_back((h, rec));
        }
        self.publish(&inner);
        Ok(())
    }

    /// Hosts of `wave` waiting to be sent.
    pub fn assigned_hosts(&self, wave: u32) -> Vec<String> {
        self.lock()
            .assigned
            .iter()
            .filter(|(_, r)| r.wave == wave + 1)
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Intents found at start-up without a result.
    pub fn take_reconcile(&self) -> Vec<Dispatch> {
        let mut inner = self.lock();
        let list = std::mem::take(&mut inner.reconcile);
        list.into_iter()
            .map(|(host, record)| self.dispatch(host, record, true))
            .collect()
    }

    pub fn has_reconcile(&self) -> bool {
        !self.lock().reconcile.is_empty()
    }

    fn dispatch(&self, host: String, record: pb::RolloutHostRecord, probe_first: bool) -> Dispatch {
        let address = self
            .inventory
            .host(&host)
            .map(|h| h.address.clone())
            .unwrap_or_default();
        Dispatch {
            host,
            address,
            record,
            probe_first,
        }
    }

    /// Takes up to `n` assigned hosts of `wave` and marks them dispatched, with their
    /// operation ids and the versions they run now. The caller writes these intents
    /// and flushes before sending anything.
    pub fn take_batch(&self, wave: u32, n: usize, now_ms: i64, healthy: impl Fn(&str) -> bool) -> Vec<Dispatch> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(n.min(inner.assigned.len()));
        while out.len() < n {
            let Some((host, mut rec)) = inner.assigned.pop_front() else {
                break;
            };
            if rec.wave > wave + 1 {
                // Hosts of a later wave wait for theirs (cannot happen in order, kept
                // safe); hosts of earlier waves are retried ones and go now.
                inner.assigned.push_front((host, rec));
                break;
            }
            if rec.operation_id.is_empty() {
                rec.operation_id = format!("r{}-{}-a{}", self.id, host, rec.attempt);
            }
            rec.set_state(HostState::Dispatched);
            // A retried host whose last answer never came: ask what it runs first.
            let probe_first = rec.outcome_unknown;
            rec.outcome_unknown = false;
            rec.started_at_unix_ms = now_ms;
            rec.finished_at_unix_ms = 0;
            rec.unhealthy_before = !healthy(&host);
            rec.updated_at_unix_ms = now_ms;
            rec.previous_version = self
                .inventory
                .host(&host)
                .and_then(|h| h.version.clone())
                .unwrap_or_default();
            inner.tally.moved(rec.wave, HostState::Assigned, HostState::Dispatched);
            out.push(self.dispatch(host, rec, probe_first));
        }
        if !out.is_empty() {
            self.publish(&inner);
        }
        out
    }

    /// Returns dispatches that were never sent to the front of the queue.
    pub fn unsend(&self, store: &Store, items: Vec<Dispatch>) -> Result<()> {
        let mut inner = self.lock();
        let mut back = Vec::with_capacity(items.len());
        for mut d in items {
            d.record.set_state(HostState::Assigned);
            inner
                .tally
                .moved(d.record.wave, HostState::Dispatched, HostState::Assigned);
            back.push((d.host, d.record));
        }
        store.put_hosts(self.id, back.iter().map(|(h, r)| (h.as_str(), r)))?;
        for item in back.into_iter().rev() {
            inner.assigned.push_front(item);
        }
        self.publish(&inner);
        Ok(())
    }

    /// Records results (durable at the next flush) and updates the counters.
    pub fn record_results(&self, store: &Store, results: &[Dispatch]) -> Result<()> {
        store.put_hosts(self.id, results.iter().map(|d| (d.host.as_str(), &d.record)))?;
        let mut inner = self.lock();
        for d in results {
            let state = d.record.state();
            inner.tally.moved(d.record.wave, HostState::Dispatched, state);
            match state {
                HostState::Succeeded => {
                    if let Some(h) = self.inventory.host(&d.host) {
                        inner.customers.succeeded(&h.customers);
                    }
                }
                HostState::Failed => {
                    let i = (d.record.wave as usize).min(inner.examples.len() - 1);
                    if inner.examples[i].len() < EXAMPLES {
                        let line = format!("{}: {}", d.host, d.record.detail);
                        inner.examples[i].push(line);
                    }
                    inner.failures.add(GroupKind::Failed, &d.host, &d.record.detail);
                }
                _ => {}
            }
        }
        self.publish(&inner);
        Ok(())
    }

    /// Failed hosts wave `wave` tolerates: a share of the wave's own size, or under
    /// `on_failure.action: continue` of the whole selection, for the whole rollout.
    pub fn allowed_failures(&self, wave: u32, selected: u64) -> u64 {
        match self.plan.on_failure {
            FailureAction::Continue => self.plan.max_failed.allowed(selected),
            _ => self.plan.max_failed.allowed(self.wave_size(wave, selected)),
        }
    }

    /// True when failures are judged over the whole rollout so far rather than wave by
    /// wave (`on_failure.action: continue`).
    pub fn judges_whole_rollout(&self) -> bool {
        self.plan.on_failure == FailureAction::Continue
    }

    fn wave_size(&self, wave: u32, selected: u64) -> u64 {
        let target = self.plan.wave_target(wave as usize, selected);
        let before = if wave == 0 {
            0
        } else {
            self.plan.wave_target(wave as usize - 1, selected)
        };
        target - before
    }

    /// Failed hosts counted against the threshold when `wave` is judged: the wave's
    /// own, or every wave's so far under `continue`.
    fn failures_judged(&self, inner: &Inner, wave: u32) -> u64 {
        let failed = |w: u32| inner.tally.wave(w)[HostState::Failed as usize];
        if self.judges_whole_rollout() {
            (0..=wave).map(failed).sum()
        } else {
            failed(wave)
        }
    }

    /// How the wave stands now.
    pub fn report(&self, wave: u32) -> WaveReport {
        let inner = self.lock();
        let selected = inner.record.hosts_selected;
        let c = inner.tally.wave(wave);
        let examples = if self.judges_whole_rollout() {
            let all = inner.examples.iter().take(wave as usize + 2).flatten();
            all.rev().take(EXAMPLES).cloned().collect()
        } else {
            inner.examples.get(wave as usize + 1).cloned().unwrap_or_default()
        };
        WaveReport {
            wave,
            size: self.wave_size(wave, selected),
            answered: c[HostState::Succeeded as usize] + c[HostState::Failed as usize],
            failed: self.failures_judged(&inner, wave),
            allowed: self.allowed_failures(wave, selected),
            whole_rollout: self.judges_whole_rollout().then_some(selected),
            examples,
            failed_total: inner.tally.total(HostState::Failed),
            stuck: None,
        }
    }

    /// True when nothing more may be sent for `wave`: the state moved on (pause,
    /// abort) or the failures already pass what the wave tolerates.
    pub fn must_stop(&self, wave: u32) -> bool {
        let inner = self.lock();
        if inner.state != (State::Running { wave }) {
            return true;
        }
        self.failures_judged(&inner, wave) > self.allowed_failures(wave, inner.record.hosts_selected)
    }

    /// What the action for this rollout is, as the agent protocol says it.
    pub fn apply_request(&self, d: &Dispatch) -> pb::ApplyRequest {
        let (action, version) = match self.plan.kind {
            Kind::Fix => (pb::Action::Deploy, self.plan.version.clone().unwrap_or_default()),
            // An explicit version for all; else the host's own target (an automatic
            // rollback), else "" and the agent returns to its previous version.
            Kind::Rollback => (
                pb::Action::Rollback,
                self.plan.version.clone().unwrap_or_else(|| d.record.version.clone()),
            ),
            Kind::Restart => (pb::Action::Restart, String::new()),
        };
        pb::ApplyRequest {
            host_id: d.host.clone(),
            operation_id: d.record.operation_id.clone(),
            action: action as i32,
            version,
        }
    }

    /// Everything recorded so far is durable (the caller just flushed): snapshots may
    /// show it.
    pub fn mark_durable(&self) {
        let mut inner = self.lock();
        inner.durable = (inner.tally.clone(), inner.customers.mitigated);
        self.publish(&inner);
    }

    fn publish(&self, inner: &Inner) {
        self.snapshot.send_replace(Arc::new(self.build(inner)));
    }

    fn build(&self, inner: &Inner) -> pb::Rollout {
        let r = &inner.record;
        let selected = r.hosts_selected;
        let t = &inner.durable.0;
        // The record keeps the last wave after the rollout ends.
        let current = r.current_wave;
        let mut waves = Vec::with_capacity(self.plan.waves.len());
        for (k, pct) in self.plan.waves.iter().enumerate() {
            let k32 = k as u32;
            let c = t.wave(k32);
            let answered = c[HostState::Succeeded as usize] + c[HostState::Failed as usize];
            let wave_state = match &inner.state {
                State::Succeeded | State::CompletedWithFailures { .. } => pb::WaveState::Done,
                State::Pending => pb::WaveState::Pending,
                _ if k32 < current => pb::WaveState::Done,
                _ if k32 > current => pb::WaveState::Pending,
                State::Running { .. } => pb::WaveState::Running,
                State::Baking { .. } => pb::WaveState::Baking,
                State::Halted { .. } => pb::WaveState::Halted,
                State::Paused { bake_until_ms, .. } => match bake_until_ms {
                    Some(_) => pb::WaveState::Baking,
                    None => pb::WaveState::Running,
                },
                State::Failed { .. } | State::Aborted { .. } => match answered >= self.wave_size(k32, selected) {
                    true => pb::WaveState::Done,
                    false => pb::WaveState::Halted,
                },
            };
            waves.push(pb::Wave {
                index: k32,
                percent: pct.to_string(),
                target_hosts: pct.of(selected),
                size: self.wave_size(k32, selected),
                succeeded: c[HostState::Succeeded as usize],
                failed: c[HostState::Failed as usize],
                in_flight: c[HostState::Dispatched as usize],
                pending: c[HostState::Assigned as usize],
                state: wave_state as i32,
                max_failed: self.allowed_failures(k32, selected),
            });
        }
        let succeeded = t.total(HostState::Succeeded);
        pb::Rollout {
            id: r.id,
            name: r.name.clone(),
            kind: self.plan.kind.as_str().to_string(),
            description: self.plan.description.clone(),
            version: self.plan.version.clone().unwrap_or_default(),
            state: inner.state.proto() as i32,
            current_wave: current,
            waves,
            hosts_selected: selected,
            hosts_succeeded: succeeded,
            hosts_failed: t.total(HostState::Failed),
            hosts_in_flight: t.total(HostState::Dispatched),
            hosts_pending: t.total(HostState::Pending) + t.total(HostState::Assigned),
            percent_complete: if selected == 0 {
                0.0
            } else {
                succeeded as f64 * 100.0 / selected as f64
            },
            customers_affected: inner.customers.hosts.len() as u64,
            customers_mitigated: inner.durable.1,
            halt_reason: inner.state.reason().to_string(),
            created_at_unix_ms: r.created_at_unix_ms,
            updated_at_unix_ms: r.updated_at_unix_ms,
            finished_at_unix_ms: r.finished_at_unix_ms,
            bake_until_unix_ms: r.bake_until_unix_ms,
            plan: r.plan.clone(),
            failures: inner.failures.top(),
            hosts_unhealthy: inner.unhealthy,
            retries: r.retries,
            drill_clock: String::new(),
        }
    }
}
