//! Building a rollout in memory: from its host rows (a new rollout, a dry run, a
//! restart with no stored counters), from the summary stored with an ended one, or
//! from a running one's counters checkpoint and the rows of its unsettled waves;
//! and the stored counters themselves (written with a state change, cleared before
//! a settled host is written again).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::counts::{Customers, Tally};
use super::{EXAMPLES, Error, FailureGroups, GroupKind, HostState, Inner, Live, Result, order};
use crate::engine::state::{MAX_WAVES, Policy, State};
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::proto::v1 as pb;
use crate::store::Store;

impl Inner {
    fn new(record: pb::RolloutRecord, c: Counters, queues: Queues) -> Inner {
        Inner {
            state: State::from_record(&record),
            record,
            durable: (c.tally.clone(), c.customers.mitigated),
            tally: c.tally,
            pending: queues.pending,
            assigned: queues.assigned,
            reconcile: queues.reconcile,
            flight: Default::default(),
            examples: c.examples,
            customers: c.customers,
            targets: queues.targets,
            failures: c.failures,
            unhealthy: c.unhealthy,
            driving: false,
            measurements: Vec::new(),
            waiting: Default::default(),
        }
    }
}

/// The counters a rollout is loaded with: from nothing, or from those stored with
/// its record (an ended rollout's summary, a running one's checkpoint).
struct Counters {
    tally: Tally,
    customers: Customers,
    examples: Vec<Vec<String>>,
    failures: FailureGroups,
    unhealthy: u64,
    /// The customers' selected counts are the whole selection's already.
    selected: bool,
}

impl Counters {
    fn new(waves: usize) -> Counters {
        Counters {
            tally: Tally::new(waves),
            customers: Customers::default(),
            examples: vec![Vec::new(); waves + 1],
            failures: FailureGroups::default(),
            unhealthy: 0,
            selected: false,
        }
    }

    /// Stored counters for a plan of `waves` waves; None if they do not fit it.
    fn from_summary(waves: usize, summary: pb::RolloutSummary) -> Option<Counters> {
        let tally = Tally::from_record(waves, &summary.tally)?;
        let mut examples: Vec<Vec<String>> = summary.examples.into_iter().map(|e| e.lines).collect();
        examples.resize(waves + 1, Vec::new());
        Some(Counters {
            tally,
            customers: Customers::from_record(summary.customers),
            examples,
            failures: FailureGroups::from_records(summary.failures),
            unhealthy: summary.unhealthy,
            selected: true,
        })
    }
}

/// The hosts a loaded rollout has still to place, send or ask about.
#[derive(Default)]
struct Queues {
    pending: VecDeque<String>,
    assigned: VecDeque<(String, pb::RolloutHostRecord)>,
    reconcile: Vec<(String, pb::RolloutHostRecord)>,
    targets: HashMap<String, String>,
}

impl Live {
    /// Rebuilds a rollout from the store: record, host rows, counters, queues.
    pub fn load(store: &Store, inventory: Arc<Inventory>, record: pb::RolloutRecord, now_ms: i64) -> Result<Live> {
        let started = std::time::Instant::now();
        let (id, hosts) = (record.id, record.hosts_selected);
        let (mut live, from) = if let Some(live) = Live::from_summary(&inventory, &record)? {
            (live, "summary")
        } else if let Some(live) = Live::from_checkpoint(store, &inventory, &record, now_ms)? {
            (live, "checkpoint")
        } else {
            let rows = store.rollout_hosts(record.id).map(|row| row.map_err(Error::from));
            (Live::from_rows(inventory, record, rows, None, now_ms)?, "hosts")
        };
        live.instance = Arc::from(store.instance());
        if live.plan.analysis.is_some() {
            let measured = store.measurements(id)?;
            let mut inner = live.lock();
            inner.measurements = measured;
            live.publish(&inner);
        }
        tracing::info!(
            id,
            hosts,
            from,
            load_ms = started.elapsed().as_millis() as u64,
            "rollout loaded"
        );
        Ok(live)
    }

    /// An ended rollout from the summary stored with its final state, without reading
    /// its hosts; None when it has none (or one that does not fit its plan).
    fn from_summary(inventory: &Arc<Inventory>, record: &pb::RolloutRecord) -> Result<Option<Live>> {
        let Some(summary) = record.summary.clone() else {
            return Ok(None);
        };
        let (plan, policy) = Live::plan_of(record)?;
        let Some(counters) = Counters::from_summary(plan.waves.len(), summary) else {
            return Ok(None);
        };
        let inner = Inner::new(record.clone(), counters, Queues::default());
        Ok(Some(Live::assemble(inventory.clone(), plan, policy, inner)))
    }

    /// A running rollout from the counters of its settled waves and the rows of the
    /// others; None when it has no checkpoint, or one that no longer holds (a settled
    /// host was written after it): then every row is read.
    fn from_checkpoint(
        store: &Store,
        inventory: &Arc<Inventory>,
        record: &pb::RolloutRecord,
        now_ms: i64,
    ) -> Result<Option<Live>> {
        let Some(checkpoint) = record.checkpoint.clone() else {
            return Ok(None);
        };
        let waves = Live::plan_of(record)?.0.waves.len();
        let Some(counters) = checkpoint
            .counts
            .and_then(|counts| Counters::from_summary(waves, counts))
        else {
            return Ok(None);
        };
        let mut rows = store.rollout_hosts_unsettled(record.id, checkpoint.through_wave, checkpoint.since_update);
        let live = Live::from_rows(
            inventory.clone(),
            record.clone(),
            rows.by_ref().map(|row| row.map_err(Error::from)),
            Some(counters),
            now_ms,
        )?;
        if !rows.checkpoint_holds() {
            tracing::warn!(
                id = record.id,
                "the counters checkpoint no longer holds (a settled host changed since): reading every host"
            );
            return Ok(None);
        }
        Ok(Some(live))
    }

    /// The summary to store with an ended rollout's final state: its counters, when
    /// no host is in doubt or waiting to be sent (those need their rows at a restart).
    pub(super) fn summary(inner: &Inner) -> Option<pb::RolloutSummary> {
        let t = &inner.tally;
        if t.total(HostState::Dispatched) > 0 || t.total(HostState::Assigned) > 0 || !inner.reconcile.is_empty() {
            return None;
        }
        Some(pb::RolloutSummary {
            tally: t.to_record(),
            customers: inner.customers.to_record(),
            failures: inner.failures.to_records(),
            examples: inner
                .examples
                .iter()
                .map(|lines| pb::Examples { lines: lines.clone() })
                .collect(),
            unhealthy: inner.unhealthy,
        })
    }

    /// The counters of waves 1..=`through` (stored numbering) as a restart starts
    /// from them, when those waves are settled (no host waiting or in doubt) and no
    /// later wave has started; `since`: the sequence of the next batch of host updates.
    pub(super) fn checkpoint(inner: &Inner, through: u32, since: u64) -> Option<pb::RolloutCheckpoint> {
        let mut counts = Live::summary(inner)?;
        for (slot, c) in counts.tally.chunks_mut(6).enumerate() {
            if slot == 0 {
                // The hosts in no wave yet are read again.
                c.fill(0);
            } else if slot as u32 > through && c.iter().any(|n| *n > 0) {
                return None;
            }
        }
        Some(pb::RolloutCheckpoint {
            counts: Some(counts),
            through_wave: through,
            since_update: since,
        })
    }

    /// Before hosts of `waves` (stored numbering) are written again (a retry, a later
    /// gate's verdict): if the checkpoint counts them, it no longer holds, and the
    /// record without it is written first.
    pub(super) fn unsettle(store: &Store, inner: &mut Inner, waves: impl IntoIterator<Item = u32>) -> Result<()> {
        let Some(checkpoint) = &inner.record.checkpoint else {
            return Ok(());
        };
        let settled = 1..=checkpoint.through_wave;
        if waves.into_iter().any(|w| settled.contains(&w)) {
            inner.record.checkpoint = None;
            store.put_rollout(&inner.record)?;
        }
        Ok(())
    }

    /// A stored rollout's plan, and the state machine's policy from it.
    fn plan_of(record: &pb::RolloutRecord) -> Result<(Plan, Policy)> {
        let spec = record.plan.clone().unwrap_or_default();
        let plan =
            Plan::from_spec(&spec).map_err(|e| Error::Corrupt(format!("rollout {}: stored plan: {e}", record.id)))?;
        let sizes = stage_sizes(record, &plan);
        let mut bakes_ms = [0; MAX_WAVES];
        let mut skipped = 0u32;
        for (k, bake) in bakes_ms.iter_mut().enumerate().take(plan.waves.len()) {
            if sizes.get(plan.stage_of_wave(k)) == Some(&0) && !plan.stages.is_empty() {
                skipped |= 1 << k;
            } else {
                *bake = plan.bake_of(k).as_millis() as i64;
            }
        }
        let policy = Policy {
            waves: plan.waves.len() as u32,
            bakes_ms,
            skipped,
            rollback_on_failure: plan.on_failure == crate::plan::FailureAction::Rollback,
            gated: plan.gates.iter().fold(0, |mask, g| mask | (1u32 << g.wave)),
            emergency: plan.emergency,
        };
        Ok((plan, policy))
    }

    fn assemble(inventory: Arc<Inventory>, plan: Plan, policy: Policy, mut inner: Inner) -> Live {
        let domains = super::domains::Domains::of(&plan, &inventory);
        if let Some(d) = &domains {
            // Intents without a result may be running: they count as in flight.
            for (host, _) in &inner.reconcile {
                d.in_flight(&inventory, &mut inner.flight, host);
            }
        }
        let live = Live {
            id: inner.record.id,
            instance: Arc::from(""),
            domains,
            stage_sizes: stage_sizes(&inner.record, &plan),
            plan,
            policy,
            inventory,
            snapshot: watch::Sender::new(Arc::new(pb::Rollout::default())),
            control: watch::Sender::new(0),
            inner: Mutex::new(inner),
        };
        live.publish(&live.lock());
        live
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
        Live::from_rows(inventory, record, rows, None, now_ms)
    }

    /// Builds a rollout from its host rows, counted over `start` (a stored
    /// checkpoint's counters, when the rows are only the unsettled hosts).
    fn from_rows(
        inventory: Arc<Inventory>,
        record: pb::RolloutRecord,
        rows: impl Iterator<Item = Result<(String, pb::RolloutHostRecord)>>,
        start: Option<Counters>,
        now_ms: i64,
    ) -> Result<Live> {
        let (plan, policy) = Live::plan_of(&record)?;
        let waves = plan.waves.len();
        let mut c = start.unwrap_or_else(|| Counters::new(waves));
        let mut queues = Queues::default();
        let mut pending = Vec::new();
        let mut assigned = Vec::new();
        for row in rows {
            let (host, rec) = row?;
            let state = rec.state();
            if state == HostState::Pending && !rec.version.is_empty() {
                queues.targets.insert(host.clone(), rec.version.clone());
            }
            c.tally.add(rec.wave, state);
            let host_customers = inventory
                .host(&host)
                .map(|h| h.customers.as_slice())
                .unwrap_or_default();
            if !c.selected {
                c.customers.select(host_customers);
            }
            match state {
                HostState::Pending | HostState::Unspecified => pending.push(host),
                HostState::Assigned => assigned.push((host, rec)),
                HostState::Dispatched => queues.reconcile.push((host, rec)),
                HostState::Succeeded => {
                    c.customers.count_success(host_customers);
                    if !rec.unhealthy_after.is_empty() {
                        c.unhealthy += 1;
                        c.failures.add(GroupKind::Unhealthy, &host, &rec.unhealthy_after);
                    }
                }
                HostState::Failed => {
                    let ex = &mut c.examples[(rec.wave as usize).min(waves)];
                    if ex.len() < EXAMPLES {
                        ex.push(format!("{host}: {}", rec.detail));
                    }
                    c.failures.add(GroupKind::Failed, &host, &rec.detail);
                }
            }
        }
        c.customers.recount();
        order::arrange_in_stages(&mut pending, &plan, &inventory, now_ms, plan.max_parallel as usize);
        queues.pending = pending.into();
        let mut assigned_hosts: Vec<String> = assigned.iter().map(|(h, _)| h.clone()).collect();
        order::arrange(
            &mut assigned_hosts,
            plan.order,
            &inventory,
            now_ms,
            plan.max_parallel as usize,
        );
        let mut by_host: HashMap<String, pb::RolloutHostRecord> = assigned.into_iter().collect();
        queues.assigned = assigned_hosts
            .into_iter()
            .filter_map(|h| by_host.remove(&h).map(|r| (h, r)))
            .collect();
        let inner = Inner::new(record, c, queues);
        Ok(Live::assemble(inventory, plan, policy, inner))
    }
}

/// Each stage's hosts as decided at submission (one stage of the whole selection
/// for a plan without stages).
fn stage_sizes(record: &pb::RolloutRecord, plan: &Plan) -> Vec<u64> {
    if plan.stages.is_empty() || record.stage_hosts.len() != plan.stages.len() {
        vec![record.hosts_selected]
    } else {
        record.stage_hosts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a controller taking over a staged rollout (after a crash) gives the state
    /// machine: each stage's own bake, the empty stage's wave skipped, the stored
    /// stage sizes as the waves' targets.
    #[test]
    fn a_stored_staged_rollout_gives_the_state_machine_its_stages() {
        let yaml = "name: s\nkind: restart\nselector: {service: web}\nbake: 5m\nstages:\n  - name: canary\n    selector: {ring: \"0\"}\n    waves: [100%]\n    bake: 30m\n  - name: lab\n    selector: {ring: \"9\"}\n    waves: [100%]\n  - name: rest\n    waves: [50%, 100%]\n";
        let plan = Plan::from_yaml(yaml, "s.yaml").unwrap();
        let record = pb::RolloutRecord {
            plan: Some(plan.to_spec()),
            hosts_selected: 210,
            stage_hosts: vec![10, 0, 200],
            ..Default::default()
        };
        let (plan, policy) = Live::plan_of(&record).unwrap();
        assert_eq!(policy.waves, 4);
        assert_eq!(policy.skipped, 0b10, "the empty stage's wave");
        assert_eq!(&policy.bakes_ms[..4], &[1_800_000, 0, 300_000, 300_000]);
        let sizes = stage_sizes(&record, &plan);
        let targets: Vec<u64> = (0..4).map(|k| plan.wave_target(k, &sizes)).collect();
        assert_eq!(targets, [10, 10, 110, 210]);
        // A record without sizes (written before stages existed) is one stage.
        let plain = pb::RolloutRecord {
            stage_hosts: Vec::new(),
            ..record
        };
        assert_eq!(
            stage_sizes(
                &plain,
                &Plan::from_spec(&pb::PlanSpec {
                    stages: Vec::new(),
                    waves: vec!["100%".into()],
                    ..plan.to_spec()
                })
                .unwrap()
            ),
            [210]
        );
    }
}
