//! Hosts on their way to agents and back: waves filled when they start, batches of
//! intents taken for dispatch, calls never sent put back, results recorded, and the
//! health gate's verdicts.

use super::{Dispatch, EXAMPLES, GroupKind, HostState, Live, Result, order};
use crate::engine::hold::{Holds, Waiting};

/// Hosts placed in a wave per store record.
const FILL_PIECE: usize = 8_192;
use crate::plan::Kind;
use crate::proto::v1 as pb;
use crate::store::Store;

impl Live {
    /// Places hosts in `wave` until it covers its share of the selection, and
    /// records the placement. The caller flushes.
    pub fn fill_wave(&self, store: &Store, wave: u32, now_ms: i64, hours_ms: i64) -> Result<()> {
        let mut inner = self.lock();
        let selected = inner.record.hosts_selected;
        let target = self.wave_target(wave as usize);
        let placed = selected - inner.pending.len() as u64;
        let need = target.saturating_sub(placed) as usize;
        if need == 0 {
            return Ok(());
        }
        if self.plan.order.is_timed() {
            // The clock moved since the last wave: rank the waiting hosts again.
            order::arrange_in_stages(
                inner.pending.make_contiguous(),
                &self.plan,
                &self.inventory,
                hours_ms,
                self.plan.max_parallel as usize,
            );
        }
        let rec = pb::RolloutHostRecord {
            state: HostState::Assigned as i32,
            wave: wave + 1,
            attempt: 1,
            updated_at_unix_ms: now_ms,
            ..Default::default()
        };
        // A piece at a time: the last wave of a million hosts is half a million
        // records, which were held three times over (ids, records, the store's copy).
        let mut left = need.min(inner.pending.len());
        while left > 0 {
            let n = left.min(FILL_PIECE);
            let hosts: Vec<String> = inner.pending.drain(..n).collect();
            let records: Vec<pb::RolloutHostRecord> = hosts
                .iter()
                .map(|h| pb::RolloutHostRecord {
                    version: inner.targets.get(h).cloned().unwrap_or_default(),
                    ..rec.clone()
                })
                .collect();
            store.put_hosts(self.id, hosts.iter().map(String::as_str).zip(records.iter()))?;
            for (h, r) in hosts.into_iter().zip(records) {
                inner.tally.remove(0, HostState::Pending);
                inner.tally.add(wave + 1, HostState::Assigned);
                inner.assigned.push_back((h, r));
            }
            left -= n;
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

    pub(super) fn dispatch(&self, host: String, record: pb::RolloutHostRecord, probe_first: bool) -> Dispatch {
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
    /// operation ids and the versions they run now; hosts `holds` keeps back (a
    /// freeze, a customer's working day) keep their place and are said to wait. The
    /// caller writes these intents and flushes before sending anything.
    pub fn take_batch(
        &self,
        wave: u32,
        n: usize,
        now_ms: i64,
        holds: &Holds<'_>,
        healthy: impl Fn(&str) -> bool,
    ) -> Vec<Dispatch> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut waiting = Waiting::default();
        let mut held = |host: &str| match holds.of(host) {
            Some(hold) => {
                waiting.add(host, hold);
                true
            }
            None => false,
        };
        let picked = match &self.domains {
            Some(d) => d.pick(
                &self.inventory,
                &mut inner.assigned,
                &mut inner.flight,
                wave,
                n,
                &mut held,
            ),
            None => take_in_order(&mut inner.assigned, wave, n, &mut held),
        };
        let waited = waiting != inner.waiting;
        inner.waiting = waiting;
        let mut out = Vec::with_capacity(picked.len());
        for (host, mut rec) in picked {
            if rec.operation_id.is_empty() {
                rec.operation_id = crate::engine::operation_id(
                    &format!("r{}", self.id),
                    &self.instance,
                    &format!("{host}-a{}", rec.attempt),
                );
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
                .and_then(|h| h.version.as_deref())
                .unwrap_or_default()
                .to_string();
            inner.tally.moved(rec.wave, HostState::Assigned, HostState::Dispatched);
            out.push(self.dispatch(host, rec, probe_first));
        }
        if !out.is_empty() || waited {
            self.publish(inner);
        }
        out
    }

    /// How long `wave`'s dispatcher may sleep before its waiting hosts are worth
    /// asking about again; None when none waits (or none is left to send).
    pub fn held_for(&self, wave: u32) -> Option<i64> {
        let inner = self.lock();
        if inner.waiting.hosts == 0 || !inner.assigned.iter().any(|(_, r)| r.wave <= wave + 1) {
            return None;
        }
        Some(inner.waiting.wake_ms.unwrap_or(i64::MAX))
    }

    /// Returns dispatches that were never sent to the front of the queue.
    pub fn unsend(&self, store: &Store, items: Vec<Dispatch>) -> Result<()> {
        let mut inner = self.lock();
        let mut back = Vec::with_capacity(items.len());
        for mut d in items {
            if let Some(domains) = &self.domains {
                domains.landed(&self.inventory, &mut inner.flight, &d.host);
            }
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
            if let Some(domains) = &self.domains {
                domains.landed(&self.inventory, &mut inner.flight, &d.host);
            }
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

    /// Records the health gate's verdict on hosts that applied fine and are unhealthy
    /// or unreachable after their wave's bake (`hosts`: host, record, why; an empty
    /// why clears an earlier gate's verdict on a host healthy again). The caller
    /// flushes.
    pub fn mark_unhealthy(&self, store: &Store, hosts: Vec<(String, pb::RolloutHostRecord, String)>) -> Result<()> {
        if hosts.is_empty() {
            return Ok(());
        }
        let mut inner = self.lock();
        Live::unsettle(store, &mut inner, hosts.iter().map(|(_, rec, _)| rec.wave))?;
        let mut rows = Vec::with_capacity(hosts.len());
        for (host, mut rec, why) in hosts {
            if rec.unhealthy_after.is_empty() {
                inner.unhealthy += 1;
            } else {
                inner.failures.remove(GroupKind::Unhealthy, &host, &rec.unhealthy_after);
            }
            if why.is_empty() {
                // Healthy again at a later gate: the verdict no longer stands.
                inner.unhealthy = inner.unhealthy.saturating_sub(1);
            } else {
                inner.failures.add(GroupKind::Unhealthy, &host, &why);
            }
            rec.unhealthy_after = why;
            rows.push((host, rec));
        }
        store.put_hosts(self.id, rows.iter().map(|(h, r)| (h.as_str(), r)))?;
        self.publish(&inner);
        Ok(())
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
            // Both set by the fleet that sends it.
            epoch: 0,
            detach: false,
        }
    }
}

/// Up to `n` hosts of `wave` (or retried ones of earlier waves) from the front of
/// `assigned`, in order, passing over those `held` keeps back (they keep their place).
fn take_in_order(
    assigned: &mut std::collections::VecDeque<(String, pb::RolloutHostRecord)>,
    wave: u32,
    n: usize,
    held: &mut dyn FnMut(&str) -> bool,
) -> Vec<(String, pb::RolloutHostRecord)> {
    let mut picked = Vec::with_capacity(n.min(assigned.len()));
    let mut kept = Vec::new();
    while picked.len() < n {
        let Some((host, rec)) = assigned.pop_front() else {
            break;
        };
        if rec.wave > wave + 1 {
            // Hosts of a later wave wait for theirs (cannot happen in order, kept
            // safe); hosts of earlier waves are retried ones and go now.
            assigned.push_front((host, rec));
            break;
        }
        if held(&host) {
            kept.push((host, rec));
        } else {
            picked.push((host, rec));
        }
    }
    super::domains::put_back(assigned, kept);
    picked
}
