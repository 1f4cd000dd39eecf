//! Restart jobs: restart the chosen hosts in batches, the best customers first at the
//! moment each batch is picked, never more of one customer's healthy hosts down than
//! its budget allows. Every restart is recorded before it is sent; after a controller
//! restart, hosts in doubt are probed (healthy: done) or asked again with the same
//! operation_id, so no host is restarted twice.

mod emergency;
mod task;

pub(crate) use task::drive;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::Result;
use super::audit::{Actor, Target};
use super::queue::{Budget, Candidate, RestartQueue};
use crate::inventory::Inventory;
use crate::plan::{Order, Threshold};
use crate::proto::v1 as pb;

use pb::RestartHostState as HostState;

/// How often a job with nothing to dispatch looks again (the budget may free up, the
/// clock may move).
const IDLE_TICK: Duration = Duration::from_millis(500);

pub(crate) struct Job {
    pub id: u64,
    /// The store's instance name, which the operation ids it makes carry.
    pub instance: Arc<str>,
    pub order: Order,
    pub max_parallel: usize,
    inner: Mutex<JobInner>,
    snapshot: watch::Sender<Arc<pb::RestartJob>>,
    /// Bumped on cancel, so the driver looks again.
    pub control: watch::Sender<u64>,
}

struct JobInner {
    record: pb::RestartJobRecord,
    /// By host id: a page of the job's hosts is a range of it.
    hosts: BTreeMap<String, pb::RestartHostRecord>,
    queue: RestartQueue,
    budget: Budget,
    customers: HashMap<String, Vec<String>>,
    reconcile: Vec<pb::RestartHostRecord>,
    next_position: u32,
    /// Hosts a freeze keeps back, as of the last pick.
    waiting: crate::engine::hold::Waiting,
}

/// Each customer's host count in the inventory, the base of a share budget. Counted
/// under borrowed names: one allocation per customer, not per host.
pub fn customer_sizes(inventory: &Inventory) -> HashMap<String, u64> {
    let mut sizes: HashMap<&str, u64> = HashMap::new();
    for h in inventory.hosts() {
        for c in &h.customers {
            *sizes.entry(&**c).or_default() += 1;
        }
    }
    sizes.into_iter().map(|(c, n)| (c.to_string(), n)).collect()
}

/// The job's settings, read back from its request.
pub fn settings(req: &pb::TriggerRestartRequest) -> std::result::Result<(Order, usize, Threshold), (String, String)> {
    let order = Order::parse(&req.order, Order::BusinessHoursFirst).map_err(|m| ("order".to_string(), m))?;
    let max_parallel = match req.max_parallel {
        0 => 50,
        n if n > 10_000 => return Err(("max_parallel".into(), format!("{n} is over the limit of 10000"))),
        n => n as usize,
    };
    let threshold = match req.max_unavailable.as_str() {
        "" => Threshold::Share(crate::plan::Percent::from_basis_points(2_500)),
        t => Threshold::parse(t).map_err(|m| ("max_unavailable".to_string(), m))?,
    };
    Ok((order, max_parallel, threshold))
}

/// Restarts a minute the job has managed so far (`done` hosts over the minutes since
/// it was created, once a minute has passed and a host is done); `max_parallel` before.
pub fn pace(created_at_ms: i64, done: usize, max_parallel: usize, now_ms: i64) -> usize {
    let minutes = (now_ms - created_at_ms) as f64 / 60_000.0;
    if done == 0 || minutes < 1.0 {
        return max_parallel.max(1);
    }
    ((done as f64 / minutes).round() as usize).max(1)
}

impl Job {
    /// Builds a job from its records (new or found in the store after a restart).
    pub fn load(
        record: pb::RestartJobRecord,
        hosts: Vec<pb::RestartHostRecord>,
        inventory: &Inventory,
    ) -> std::result::Result<Job, String> {
        let request = record.request.clone().unwrap_or_default();
        let (order, max_parallel, threshold) = settings(&request).map_err(|(f, m)| format!("{f}: {m}"))?;
        let mut budget = Budget::new(threshold, &customer_sizes(inventory));
        let mut waiting = Vec::new();
        let mut reconcile = Vec::new();
        let mut customers = HashMap::new();
        let mut next_position = 1;
        let mut by_host = BTreeMap::new();
        for rec in hosts {
            let h = rec.host.clone().unwrap_or_default();
            let host_customers = inventory
                .host(&h.host_id)
                .map(|x| crate::inventory::strings(&x.customers))
                .unwrap_or_default();
            next_position = next_position.max(h.position + 1);
            match h.state() {
                HostState::Pending | HostState::Unspecified => waiting.push(Candidate {
                    host: h.host_id.clone(),
                    customers: host_customers.clone(),
                    healthy: h.was_healthy,
                }),
                HostState::Dispatched => {
                    budget.hold(&host_customers, h.was_healthy);
                    reconcile.push(rec.clone());
                }
                HostState::Restarted | HostState::Failed => {}
            }
            customers.insert(h.host_id.clone(), host_customers);
            by_host.insert(h.host_id.clone(), rec);
        }
        let job = Job {
            id: record.id,
            instance: Arc::from(""),
            order,
            max_parallel,
            snapshot: watch::Sender::new(Arc::new(pb::RestartJob::default())),
            control: watch::Sender::new(0),
            inner: Mutex::new(JobInner {
                record,
                hosts: by_host,
                queue: RestartQueue::new(waiting),
                budget,
                customers,
                reconcile,
                next_position,
                waiting: Default::default(),
            }),
        };
        job.publish(&job.lock());
        Ok(job)
    }

    fn lock(&self) -> MutexGuard<'_, JobInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn state(&self) -> pb::RestartJobState {
        self.lock().record.state()
    }

    pub fn is_active(&self) -> bool {
        self.state() == pb::RestartJobState::Running
    }

    pub fn has_reconcile(&self) -> bool {
        !self.lock().reconcile.is_empty()
    }

    pub fn snapshot(&self) -> Arc<pb::RestartJob> {
        self.snapshot.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<pb::RestartJob>> {
        self.snapshot.subscribe()
    }

    /// The snapshot with every host in restart order (picked ones by position,
    /// waiting ones after).
    pub fn detailed(&self) -> pb::RestartJob {
        let inner = self.lock();
        let mut job = build(&inner);
        let mut hosts: Vec<pb::RestartHost> = inner.hosts.values().filter_map(|r| r.host.clone()).collect();
        hosts.sort_by_key(|h| (h.position == 0, h.position, h.host_id.clone()));
        job.hosts = hosts;
        job
    }

    /// Up to `limit` of the job's hosts matching `filter` whose ids sort after
    /// `after`, by host id, as the API shows them; and whether more follow.
    pub fn page(&self, filter: pb::HostFilter, after: &str, limit: usize) -> (Vec<pb::HostResult>, bool) {
        let inner = self.lock();
        if filter == pb::HostFilter::Skipped {
            let mut skipped: Vec<&pb::SkippedHost> = inner
                .record
                .skipped
                .iter()
                .filter(|s| s.host_id.as_str() > after)
                .collect();
            skipped.sort_by(|a, b| a.host_id.cmp(&b.host_id));
            let more = skipped.len() > limit;
            let hosts = skipped
                .into_iter()
                .take(limit)
                .map(|s| pb::HostResult {
                    host_id: s.host_id.clone(),
                    state: "skipped".into(),
                    reason: s.reason.clone(),
                    ..Default::default()
                })
                .collect();
            return (hosts, more);
        }
        let keep = |h: &pb::RestartHost| match filter {
            pb::HostFilter::All => true,
            pb::HostFilter::Failed => h.state() == HostState::Failed,
            pb::HostFilter::Succeeded => h.state() == HostState::Restarted,
            pb::HostFilter::InFlight => h.state() == HostState::Dispatched,
            pb::HostFilter::Pending => matches!(h.state(), HostState::Pending | HostState::Unspecified),
            pb::HostFilter::Unhealthy | pb::HostFilter::Skipped => false,
        };
        let start = std::ops::Bound::Excluded(after.to_string());
        let mut matching = inner
            .hosts
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, r)| r)
            .filter(|r| r.host.as_ref().is_some_and(keep));
        let page: Vec<&pb::RestartHostRecord> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        let hosts = page
            .into_iter()
            .map(|r| {
                let h = r.host.clone().unwrap_or_default();
                let done = matches!(h.state(), HostState::Restarted | HostState::Failed);
                pb::HostResult {
                    wave: h.batch,
                    state: state_of_host(h.state()).into(),
                    operation_id: r.operation_id.clone(),
                    attempt: u32::from(!r.operation_id.is_empty()),
                    finished_at_unix_ms: if done { r.updated_at_unix_ms } else { 0 },
                    reason: h.detail.clone(),
                    host_id: h.host_id,
                    ..Default::default()
                }
            })
            .collect();
        (hosts, more)
    }

    /// The first `limit` hosts picked, in the order they were picked (with why).
    pub fn first_picked(&self, limit: usize) -> Vec<pb::RestartHost> {
        let inner = self.lock();
        let mut picked: Vec<&pb::RestartHost> = inner
            .hosts
            .values()
            .filter_map(|r| r.host.as_ref())
            .filter(|h| h.position > 0)
            .collect();
        if picked.len() > limit {
            picked.select_nth_unstable_by_key(limit, |h| h.position);
            picked.truncate(limit);
        }
        picked.sort_by_key(|h| h.position);
        picked.into_iter().cloned().collect()
    }

    /// A dry run's answer: every host in the order it would go if picked now.
    pub fn preview(&self, inventory: &Inventory, now_ms: i64) -> pb::RestartJob {
        let mut job = (*self.snapshot()).clone();
        job.hosts = self.queue(inventory, now_ms, usize::MAX).0;
        let waiting = self.lock().queue.candidates().to_vec();
        job.prices = super::queue::price_list(&waiting, inventory.calendar(), now_ms, self.max_parallel, self.order);
        job
    }

    /// The first `limit` hosts waiting, in the order they would go if picked now, and
    /// how many wait in all.
    pub fn queue(&self, inventory: &Inventory, now_ms: i64, limit: usize) -> (Vec<pb::RestartHost>, usize) {
        let inner = self.lock();
        let ranked = inner.queue.ranked(self.order, inventory.calendar(), now_ms);
        let waiting = ranked.len();
        let hosts = ranked
            .into_iter()
            .take(limit)
            .enumerate()
            .map(|(i, (c, p))| pb::RestartHost {
                host_id: c.host,
                state: HostState::Pending as i32,
                position: i as u32 + 1,
                batch: 0,
                customer: p.customer,
                local_time: p.local_time,
                tier: p.key.0.as_str().to_string(),
                why: p.why,
                was_healthy: c.healthy,
                detail: String::new(),
            })
            .collect();
        (hosts, waiting)
    }

    fn publish(&self, inner: &JobInner) {
        self.snapshot.send_replace(Arc::new(shown(inner)));
    }

    /// `restart.started`, for the outbox with the job's creation.
    pub fn started(&self, now_ms: i64) -> pb::Notification {
        crate::engine::notification::job(
            &shown(&self.lock()),
            crate::event_type::EventType::RestartStarted,
            now_ms,
        )
    }

    /// `restart.completed` with the outcome the record now holds.
    fn completed(&self, inner: &JobInner, now_ms: i64) -> pb::Notification {
        crate::engine::notification::job(&shown(inner), crate::event_type::EventType::RestartCompleted, now_ms)
    }

    /// Stops the job: nothing more is dispatched; restarts in flight finish.
    pub fn cancel(
        &self,
        store: &crate::store::Store,
        reason: &str,
        now_ms: i64,
        audit: crate::proto::v1::EventRecord,
    ) -> Result<()> {
        let mut inner = self.lock();
        if inner.record.state() != pb::RestartJobState::Running {
            return Err(super::Error::Refused(format!(
                "restart job {} has already ended ({}); nothing to cancel",
                self.id,
                inner.record.state().label()
            )));
        }
        inner.record.set_state(pb::RestartJobState::Cancelled);
        inner.record.reason = if reason.is_empty() {
            "cancelled by an operator".into()
        } else {
            reason.into()
        };
        inner.record.updated_at_unix_ms = now_ms;
        inner.record.finished_at_unix_ms = now_ms;
        let notice = self.completed(&inner, now_ms);
        store.put_restart_job_with_notices(&inner.record, &[audit], &[notice])?;
        self.publish(&inner);
        drop(inner);
        self.control.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Picks the next batch at `now_ms`: best first, within budget. Marks the hosts
    /// dispatched with their operation ids and why they were picked; the caller writes
    /// these intents and flushes before sending.
    fn pick(
        &self,
        n: usize,
        inventory: &Inventory,
        now_ms: i64,
        hours_ms: i64,
        holds: &crate::engine::hold::Holds<'_>,
    ) -> Vec<pb::RestartHostRecord> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if emergency::awaiting(&inner.record).is_some() {
            return Vec::new();
        }
        let mut waiting = crate::engine::hold::Waiting::default();
        let mut held = |host: &str| match holds.of(host) {
            Some(hold) => {
                waiting.add(host, hold);
                true
            }
            None => false,
        };
        if self.order == Order::LeastBusinessDowntime {
            let done = inner
                .hosts
                .values()
                .filter(|r| {
                    let state = r.host.as_ref().map(|h| h.state());
                    matches!(state, Some(HostState::Restarted | HostState::Failed))
                })
                .count();
            let pace = pace(inner.record.created_at_unix_ms, done, self.max_parallel, now_ms);
            inner.queue.set_pace(pace);
        }
        let taken = inner.queue.take(
            n,
            self.order,
            inventory.calendar(),
            hours_ms,
            &mut inner.budget,
            &mut held,
        );
        if waiting != inner.waiting {
            inner.waiting = waiting;
            self.publish(inner);
        }
        if taken.is_empty() {
            return Vec::new();
        }
        inner.record.batches += 1;
        let batch = inner.record.batches;
        let mut out = Vec::with_capacity(taken.len());
        for (candidate, placement) in taken {
            let position = inner.next_position;
            inner.next_position += 1;
            let Some(rec) = inner.hosts.get_mut(&candidate.host) else {
                continue;
            };
            let host = rec.host.get_or_insert_with(Default::default);
            host.set_state(HostState::Dispatched);
            host.position = position;
            host.batch = batch;
            host.customer = placement.customer;
            host.local_time = placement.local_time;
            host.tier = placement.key.0.as_str().to_string();
            host.why = placement.why;
            rec.operation_id = super::operation_id(&format!("j{}", self.id), &self.instance, &candidate.host);
            rec.updated_at_unix_ms = now_ms;
            out.push(rec.clone());
        }
        inner.record.updated_at_unix_ms = now_ms;
        self.publish(inner);
        out
    }

    fn take_reconcile(&self) -> Vec<pb::RestartHostRecord> {
        std::mem::take(&mut self.lock().reconcile)
    }

    /// Records returned restarts; frees their budget.
    fn record_results(&self, store: &crate::store::Store, results: &[pb::RestartHostRecord]) -> Result<()> {
        store.put_restart_hosts(self.id, results)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        for r in results {
            let Some(h) = &r.host else { continue };
            if let Some(customers) = inner.customers.get(&h.host_id) {
                inner.budget.release(customers, h.was_healthy);
            }
            inner.hosts.insert(h.host_id.clone(), r.clone());
        }
        self.publish(inner);
        Ok(())
    }

    fn nothing_waiting(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// Ends a job that ran out of hosts: succeeded when every host restarted,
    /// completed with failures when some did not, failed when none did; the outcome
    /// goes to the audit log with the record.
    fn complete(&self, store: &crate::store::Store, now_ms: i64) -> Result<()> {
        let mut inner = self.lock();
        if inner.record.state() != pb::RestartJobState::Running {
            return Ok(());
        }
        let failed = inner
            .hosts
            .values()
            .filter(|r| r.host.as_ref().is_some_and(|h| h.state() == HostState::Failed))
            .count();
        let total = inner.hosts.len();
        let (state, line) = match failed {
            0 => (
                pb::RestartJobState::Succeeded,
                format!("succeeded: {total} hosts restarted"),
            ),
            f if f == total => (
                pb::RestartJobState::Failed,
                format!(
                    "failed: none of its {total} hosts restarted; `rollout hosts --job {}` says why",
                    self.id
                ),
            ),
            f => (
                pb::RestartJobState::CompletedWithFailures,
                format!(
                    "completed with failures: {} of {total} hosts restarted, {f} failed; `rollout hosts --job {} --failed` says why",
                    total - f,
                    self.id
                ),
            ),
        };
        inner.record.set_state(state);
        if failed > 0 {
            inner.record.reason = format!(
                "{failed} of {total} hosts failed to restart; `rollout hosts --job {} --failed` says why",
                self.id
            );
        }
        let mut event = Actor::controller().event(now_ms, Target::Job(self.id), line, "ok");
        event.kind = state.label().to_string();
        inner.record.updated_at_unix_ms = now_ms;
        inner.record.finished_at_unix_ms = now_ms;
        let notice = self.completed(&inner, now_ms);
        store.put_restart_job_with_notices(&inner.record, &[event], &[notice])?;
        // Nothing is in flight: its hosts are free before anyone is told it ended.
        let holder = crate::store::Holder::Job { id: self.id };
        store.release_leases(&holder)?;
        self.publish(&inner);
        Ok(())
    }
}

fn state_of_host(s: HostState) -> &'static str {
    match s {
        HostState::Pending | HostState::Unspecified => "pending",
        HostState::Dispatched => "in-flight",
        HostState::Restarted => "restarted",
        HostState::Failed => "failed",
    }
}

/// The job as shown: its counts and its status text.
fn shown(inner: &JobInner) -> pb::RestartJob {
    let mut job = build(inner);
    job.summary = crate::summary::restart_job(&job);
    job
}

fn build(inner: &JobInner) -> pb::RestartJob {
    let r = &inner.record;
    let req = r.request.clone().unwrap_or_default();
    let mut counts = [0u64; 5];
    let mut tiers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for rec in inner.hosts.values() {
        let Some(h) = &rec.host else { continue };
        counts[h.state as usize] += 1;
        if h.position > 0 {
            let t = tiers.entry(h.tier.clone()).or_default();
            t.0 += 1;
            if h.state() == HostState::Restarted {
                t.1 += 1;
            }
        }
    }
    let tier_rank = |t: &str| {
        ["in-hours", "starting-soon", "off-hours", "no-customer"]
            .iter()
            .position(|x| *x == t)
    };
    let mut tiers: Vec<pb::TierCount> = tiers
        .into_iter()
        .map(|(tier, (total, restarted))| pb::TierCount { tier, total, restarted })
        .collect();
    tiers.sort_by_key(|t| tier_rank(&t.tier));
    pb::RestartJob {
        id: r.id,
        prices: Vec::new(),
        waiting: if r.state() == pb::RestartJobState::Running {
            emergency::awaiting(r).unwrap_or_else(|| inner.waiting.text())
        } else {
            String::new()
        },
        emergency: req.emergency,
        submitted_by: r.submitted_by.clone(),
        emergency_approval: r.emergency_approval.clone(),
        state: r.state,
        order: Order::parse(&req.order, Order::BusinessHoursFirst)
            .map(|o| o.as_str().to_string())
            .unwrap_or_default(),
        max_parallel: req.max_parallel,
        max_unavailable: req.max_unavailable.clone(),
        hosts_total: inner.hosts.len() as u64,
        hosts_restarted: counts[HostState::Restarted as usize],
        hosts_failed: counts[HostState::Failed as usize],
        hosts_in_flight: counts[HostState::Dispatched as usize],
        hosts_pending: counts[HostState::Pending as usize] + counts[HostState::Unspecified as usize],
        skipped: r.skipped.clone(),
        tiers,
        batches: r.batches,
        hosts: Vec::new(),
        reason: r.reason.clone(),
        created_at_unix_ms: r.created_at_unix_ms,
        updated_at_unix_ms: r.updated_at_unix_ms,
        finished_at_unix_ms: r.finished_at_unix_ms,
        request_id: req.request_id,
        drill_clock: String::new(),
        summary: String::new(),
    }
}
