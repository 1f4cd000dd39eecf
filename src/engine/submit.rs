//! How a rollout is submitted: the plan's hosts are selected, checked against the
//! active rollouts and the leases, previewed (a dry run, at an instant if asked) or
//! created with its leases in the store.

use std::collections::BTreeMap;

use tracing::info;

use super::audit::{Actor, Target};
use super::{Engine, Error, Event, Holder, Key, Live, Result, State, Submitted, held_by, order};
use crate::plan::Plan;
use crate::proto::v1 as pb;

impl Engine {
    /// Starts a rollout of `plan` (or previews it). Idempotent by `request_id`.
    /// `at` (dry runs only): order and explain the waves as at that instant (unix ms).
    pub async fn submit(&self, plan: Plan, dry_run: bool, at: Option<i64>, actor: &Actor) -> Result<Submitted> {
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if at.is_some() && !dry_run {
            return Err(at_refused());
        }
        let _guard = self.submit.lock().await;
        if !dry_run && let Some(replayed) = self.replayed(&plan, &actor.request_id)? {
            return Ok(replayed);
        }
        let hosts = self.select(&plan)?;
        // max_parallel given as a share of the selection becomes a number of hosts.
        let plan = plan.resolved(hosts.len());
        self.refuse_a_second_active(&plan)?;
        // Leases: a host belongs to one active rollout or restart job at a time.
        let shared = self.conflicts(&hosts, None)?;
        if dry_run {
            let at = at.unwrap_or_else(|| self.ctx.hours.now_ms());
            return self.dry_run(&plan, hosts, &shared, at);
        }
        if !plan.emergency {
            self.refuse_frozen(&hosts, "this plan selects")?;
        }
        if let Some(id) = preempted(&plan, &shared, hosts.len())? {
            self.pause_preempted(id, &plan, actor)?;
        }
        self.create(plan, hosts, actor).await
    }

    /// The first answer to a submission's request id, when it was seen already.
    fn replayed(&self, plan: &Plan, request_id: &str) -> Result<Option<Submitted>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        let Some(id) = self.ctx.store.rollout_for_request(request_id)? else {
            return Ok(None);
        };
        let live = self.find(Key { name: "", id })?;
        // The first one's share was resolved for its selection: so is this one.
        let selected = live.snapshot().hosts_selected as usize;
        if live.plan != plan.clone().resolved(selected) {
            return Err(Error::AlreadyExists(format!(
                "request_id `{request_id}` was already used for rollout `{}` (id {id}) with a different plan; use a new request_id",
                live.name()
            )));
        }
        Ok(Some(Submitted {
            rollout: (*live.snapshot()).clone(),
            replayed: true,
            preview: Vec::new(),
            conflicts: Vec::new(),
            prices: Vec::new(),
        }))
    }

    /// The inventory's hosts the plan's selector matches; none is an error that says
    /// what was looked for.
    fn select(&self, plan: &Plan) -> Result<Vec<String>> {
        let inventory = self.ctx.inventory();
        // With stages, the selection is the hosts some stage takes.
        let hosts: Vec<String> = inventory
            .select(&plan.selector)
            .filter(|h| plan.stage_of(|s| h.matches(s)).is_some())
            .map(|h| h.id.clone())
            .collect();
        if hosts.is_empty() && !plan.stages.is_empty() {
            return Err(Error::Invalid {
                field: "stages".into(),
                message: "no host of the plan's selection matches any stage: check the stages' selectors, or end with a stage without one".into(),
            });
        }
        if hosts.is_empty() {
            let wanted: Vec<String> = plan
                .selector
                .iter()
                .map(|(k, v)| format!("{k} in [{}]", v.join(", ")))
                .collect();
            return Err(Error::Invalid {
                field: "selector".into(),
                message: format!(
                    "matches no host of the inventory ({} hosts): no host has {}; check the labels with the fleet file",
                    inventory.len(),
                    wanted.join(" and ")
                ),
            });
        }
        Ok(hosts)
    }

    /// A rollout's name is unique among active rollouts.
    fn refuse_a_second_active(&self, plan: &Plan) -> Result<()> {
        match self
            .lock()
            .values()
            .find(|l| l.name() == plan.name && !l.state().is_terminal())
        {
            Some(active) => Err(Error::AlreadyExists(format!(
                "rollout `{}` is already active (id {}, {}); wait for it, abort it, or pick another name",
                plan.name,
                active.id,
                active.state().name()
            ))),
            None => Ok(()),
        }
    }

    /// The preview of a dry run: the waves as they would be filled at `at`, and who
    /// holds some of the hosts. Nothing is stored.
    fn dry_run(
        &self,
        plan: &Plan,
        mut hosts: Vec<String>,
        shared: &BTreeMap<Holder, u64>,
        at: i64,
    ) -> Result<Submitted> {
        let inventory = self.ctx.inventory();
        order::arrange_in_stages(&mut hosts, plan, &inventory, at, plan.max_parallel as usize);
        let record = new_record(plan, &hosts, &inventory, self.ctx.clock.now_ms(), "");
        let preview = self.preview(plan, &hosts, &sizes_of(plan, &record), at);
        let waiting: Vec<super::queue::Candidate> = hosts
            .iter()
            .map(|h| super::queue::Candidate {
                host: h.clone(),
                customers: inventory
                    .host(h)
                    .map(|x| crate::inventory::strings(&x.customers))
                    .unwrap_or_default(),
                healthy: false,
            })
            .collect();
        let chosen = plan.order;
        let prices = super::queue::price_list(&waiting, inventory.calendar(), at, plan.max_parallel as usize, chosen);
        let live = Live::preview(inventory, record, &hosts, at)?;
        let conflicts = shared
            .iter()
            .map(|(holder, n)| pb::Conflict {
                holder: holder.to_string(),
                shared_hosts: *n,
            })
            .collect();
        Ok(Submitted {
            rollout: (*live.snapshot()).clone(),
            replayed: false,
            preview,
            conflicts,
            prices,
        })
    }

    /// Pauses the rollout this plan preempts, if it is dispatching.
    fn pause_preempted(&self, id: u64, plan: &Plan, actor: &Actor) -> Result<()> {
        let other = self.find(Key { name: "", id })?;
        if matches!(
            other.state(),
            State::Running { .. } | State::Baking { .. } | State::Pending
        ) {
            let now = self.ctx.clock.now_ms();
            let target = Target::Rollout {
                id: other.id,
                name: other.name(),
            };
            let why = actor.event(now, target, format!("paused: preempted by `{}`", plan.name), "ok");
            other.transition(&self.ctx.store, Event::Pause, self.ctx.at(), Some(why))?;
            info!(paused = other.name(), by = plan.name, "preempted");
        }
        Ok(())
    }

    /// Stores the rollout with its hosts and their leases (refused if another holder
    /// took some meanwhile), then starts it.
    async fn create(&self, plan: Plan, hosts: Vec<String>, actor: &Actor) -> Result<Submitted> {
        let now = self.ctx.clock.now_ms();
        let mut record = new_record(&plan, &hosts, &self.ctx.inventory(), now, &actor.request_id);
        record.id = self.ctx.store.next_id()?;
        record.submitted_by = actor.principal.clone();
        let rows: Vec<(&str, &str)> = hosts.iter().map(|h| (h.as_str(), "")).collect();
        let preempting = plan.preempt.as_deref();
        let may_take = |h: &Holder| matches!(h, Holder::Rollout { name, .. } if Some(name.as_str()) == preempting);
        let target = Target::Rollout {
            id: record.id,
            name: &record.name,
        };
        let audit = actor.event(now, target, selected_line(&plan, &record), "ok");
        let ids: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let notice = super::notification::submitted(&mut record, &plan, &ids, &self.ctx.inventory());
        if let Err(held) = self
            .ctx
            .store
            .create_rollout(&record, &rows, &may_take, None, &[audit], &[notice])
            .await?
        {
            return Err(Error::Refused(held_by(&held, hosts.len())));
        }
        let live = self.adopt(record)?;
        info!(rollout = live.name(), id = live.id, hosts = hosts.len(), "submitted");
        Ok(Submitted {
            rollout: (*live.snapshot()).clone(),
            replayed: false,
            preview: Vec::new(),
            conflicts: Vec::new(),
            prices: Vec::new(),
        })
    }

    /// The hosts each wave would take if the rollout started now, and whose hosts
    /// they are: each customer's local time and tier now.
    pub(super) fn preview(&self, plan: &Plan, ordered: &[String], sizes: &[u64], now_ms: i64) -> Vec<pb::WavePreview> {
        let inventory = self.ctx.inventory();
        let limit = self.options.preview_limit;
        let mut before = 0u64;
        // The zones' budgets, once for every wave.
        let zones = super::rollout::Domains::of(plan, &inventory);
        let mut waves = Vec::with_capacity(plan.waves.len());
        for k in 0..plan.waves.len() {
            let target = plan.wave_target(k, sizes).min(ordered.len() as u64);
            let hosts = &ordered[before.min(target) as usize..target as usize];
            // Every customer, for the tiers; the list shows the first `limit`.
            let customers = order::explain(hosts, plan.order, &inventory, now_ms, usize::MAX);
            waves.push(pb::WavePreview {
                index: k as u32,
                percent: plan.wave_label(k),
                cumulative_hosts: target,
                new_hosts: target - before,
                host_ids: hosts.iter().take(limit).cloned().collect(),
                customers: customers.iter().take(limit).cloned().collect(),
                regions: order::count_by(hosts, |h| {
                    inventory
                        .host(h)
                        .and_then(|x| x.labels.get("region"))
                        .unwrap_or("(no region)")
                        .to_string()
                }),
                domains: zones.as_ref().map(|z| z.count(&inventory, hosts)).unwrap_or_default(),
                tiers: order::count_by(&customers, |c| c.tier.clone()),
                ..Default::default()
            });
            before = target;
        }
        self.expect_times(plan, ordered, &mut waves, now_ms);
        waves
    }

    /// With windows or a freeze in the way, when each wave of a dry run can start
    /// and is expected to end (the wall clock and business hours both read `at`).
    fn expect_times(&self, plan: &Plan, ordered: &[String], waves: &mut [pb::WavePreview], at: i64) {
        let board = self.ctx.freezes.board();
        // An emergency is taken as approved: freezes do not hold it.
        let board = (!plan.emergency).then_some(&*board);
        if plan.windows.is_none() && board.is_none_or(|b| b.is_empty()) {
            return;
        }
        let inventory = self.ctx.inventory();
        let mut slices = Vec::with_capacity(waves.len());
        let mut before = 0usize;
        for w in waves.iter() {
            let end = (w.cumulative_hosts as usize).min(ordered.len());
            slices.push(&ordered[before.min(end)..end]);
            before = end;
        }
        let bakes: Vec<i64> = (0..waves.len() as u32)
            .map(|k| plan.bake_of(k as usize).as_millis() as i64)
            .collect();
        let expected = super::hold::expect(&slices, &bakes, plan.max_parallel as usize, at, |h, t| {
            super::hold::Holds::new(board, plan.windows, &inventory, t, t).of(h)
        });
        for (w, e) in waves.iter_mut().zip(expected) {
            w.starts_at_unix_ms = e.start_ms;
            w.ends_at_unix_ms = e.end_ms;
            w.waiting_hosts = e.waiting;
            w.waits = e.why;
        }
    }
}

/// A what-if instant on a real change: it would run now, not then.
pub(super) fn at_refused() -> Error {
    Error::Invalid {
        field: "at".into(),
        message: "a what-if instant is for dry runs only (--dry-run --at TIME); a real change runs now".into(),
    }
}

/// A new rollout's record, pending.
fn new_record(
    plan: &Plan,
    hosts: &[String],
    inventory: &crate::inventory::Inventory,
    now: i64,
    request_id: &str,
) -> pb::RolloutRecord {
    let stage_hosts = match plan.stages.is_empty() {
        true => Vec::new(),
        false => order::stage_sizes(hosts, plan, inventory),
    };
    let mut record = pb::RolloutRecord {
        id: 0,
        name: plan.name.clone(),
        plan: Some(plan.to_spec()),
        hosts_selected: hosts.len() as u64,
        stage_hosts,
        created_at_unix_ms: now,
        updated_at_unix_ms: now,
        request_id: request_id.to_string(),
        ..Default::default()
    };
    State::Pending.write(&mut record);
    record
}

/// The rollout a submission preempts (its `preempt: NAME` holds some of the hosts),
/// or a refusal naming every other holder of some of them.
fn preempted(plan: &Plan, shared: &BTreeMap<Holder, u64>, total: usize) -> Result<Option<u64>> {
    let blocking: Vec<String> = shared
        .iter()
        .filter(|(holder, _)| !matches!(holder, Holder::Rollout { name, .. } if plan.preempt.as_deref() == Some(name.as_str())))
        .map(|(holder, n)| format!("{n} of its {total} hosts are held by {holder}"))
        .collect();
    if !blocking.is_empty() {
        return Err(Error::Refused(format!(
            "{}; wait for it, abort it, or set `preempt: NAME` in the plan to pause that rollout",
            blocking.join("; ")
        )));
    }
    Ok(shared.keys().find_map(|h| match h {
        Holder::Rollout { id, .. } => Some(*id),
        Holder::Job { .. } => None,
    }))
}

/// Each stage's hosts as the record keeps them (one stage of them all without).
fn sizes_of(plan: &Plan, record: &pb::RolloutRecord) -> Vec<u64> {
    match plan.stages.is_empty() {
        true => vec![record.hosts_selected],
        false => record.stage_hosts.clone(),
    }
}

/// The submission's audit line: how many hosts, and per stage, saying which are
/// skipped (no host of the selection matched them).
fn selected_line(plan: &Plan, record: &pb::RolloutRecord) -> String {
    let mut line = format!("{} hosts selected", record.hosts_selected);
    if !plan.stages.is_empty() {
        let per: Vec<String> = plan
            .stages
            .iter()
            .zip(&record.stage_hosts)
            .map(|(s, n)| match n {
                0 => format!("{}: none, skipped", s.name),
                n => format!("{}: {n}", s.name),
            })
            .collect();
        line.push_str(&format!(" ({})", per.join(", ")));
    }
    line
}
