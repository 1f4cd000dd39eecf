//! Automatic and requested rollbacks: a rollout of its own that returns every host
//! another rollout touched to the version recorded before its change.

use std::sync::Arc;

use tracing::info;

use super::audit::{Actor, Target};
use super::{Engine, Error, Key, Result, State, held_by};
use crate::plan::Plan;
use crate::proto::v1 as pb;

impl Engine {
    /// Starts a rollback of rollout `id`: a new rollout, `NAME-rollback`, that returns
    /// every host it touched (succeeded, or with an outcome in doubt) to the version
    /// recorded before its change, in the plan's rollback waves (default: one wave) at
    /// its rollback parallelism (default: max_parallel x 4). It is persisted, resumable
    /// and watchable like any rollout.
    pub async fn start_rollback(&self, id: u64) -> Result<Arc<pb::Rollout>> {
        let _guard = self.submit.lock().await;
        let original = self.find(Key { name: "", id })?;
        let mut targets: Vec<(String, String)> = Vec::new();
        for row in self.ctx.store.rollout_hosts(id) {
            let (host, rec) = row?;
            let touched = rec.state() == pb::HostState::Succeeded
                || (rec.outcome_unknown && rec.state() == pb::HostState::Failed)
                || rec.state() == pb::HostState::Dispatched;
            if touched && !rec.previous_version.is_empty() {
                targets.push((host, rec.previous_version));
            }
        }
        let mut name = format!("{}-rollback", original.name());
        name.truncate(63);
        let mut settled = original.record();
        if !settled.rollback_pending {
            return Err(Error::Refused(format!(
                "rollout `{}` (id {id}) has no rollback waiting to start{}",
                original.name(),
                match settled.rollback_id {
                    0 => String::new(),
                    r => format!("; its rollback is rollout {r}"),
                }
            )));
        }
        settled.rollback_pending = false;
        if targets.is_empty() {
            info!(rollout = original.name(), "nothing to roll back: no host was changed");
            self.ctx.store.put_rollout(&settled)?;
            original.set_rolled_back(settled);
            original.release_leases(&self.ctx.store)?;
            self.ctx.store.flush().await?;
            return Ok(original.snapshot());
        }
        let p = &original.plan;
        let plan = Plan {
            name: name.clone(),
            kind: crate::plan::Kind::Rollback,
            description: format!(
                "rollback of `{}` (id {id}): every host it touched, to its previous version",
                p.name
            ),
            selector: p.selector.clone(),
            version: None,
            waves: p.rollback_waves.clone(),
            // A rollback takes every touched host back at once, whatever stage.
            stages: Vec::new(),
            // ... and keeps the fault domains' budget.
            fault_domain: p.fault_domain.clone(),
            // A rollback runs now, whoever is at work; a freeze holds it as any
            // other change (an emergency's approval was for its fix).
            windows: None,
            emergency: false,
            order: crate::plan::Order::Stable,
            max_parallel: p.rollback_max_parallel,
            max_parallel_share: None,
            bake: std::time::Duration::ZERO,
            max_failed: p.max_failed,
            on_failure: crate::plan::FailureAction::Halt,
            preempt: None,
            rollback_waves: p.rollback_waves.clone(),
            rollback_max_parallel: p.rollback_max_parallel,
            progress_deadline: p.progress_deadline,
            min_healthy: None,
            // A rollback is fast and unconditional: no bake, so no analysis, and
            // nobody is asked to approve it.
            analysis: None,
            gates: Vec::new(),
        };
        if let Some(active) = self
            .lock()
            .values()
            .find(|l| l.name() == name && !l.state().is_terminal())
        {
            return Err(Error::AlreadyExists(format!(
                "rollback `{name}` is already running (id {})",
                active.id
            )));
        }
        let now = self.ctx.clock.now_ms();
        let mut record = pb::RolloutRecord {
            id: self.ctx.store.next_id()?,
            name,
            plan: Some(plan.to_spec()),
            hosts_selected: targets.len() as u64,
            created_at_unix_ms: now,
            updated_at_unix_ms: now,
            // What it takes away, for the words that say it.
            rolls_back: original.plan.version.clone().unwrap_or_default(),
            ..Default::default()
        };
        State::Pending.write(&mut record);
        settled.rollback_id = record.id;
        let started = Actor::controller().event(
            now,
            Target::Rollout {
                id: record.id,
                name: &record.name,
            },
            format!(
                "rollback started: {} hosts of rollout `{}` (id {id})",
                targets.len(),
                original.name()
            ),
            "ok",
        );
        let hosts: Vec<(&str, &str)> = targets.iter().map(|(h, v)| (h.as_str(), v.as_str())).collect();
        let ids: Vec<&str> = hosts.iter().map(|(h, _)| *h).collect();
        let notice = super::notification::submitted(&mut record, &plan, &ids, &self.ctx.inventory());
        // The rollback takes the leases from the rollout it undoes, and that rollout's
        // record says so, in one transaction.
        let from = original.holder();
        if let Err(held) = self
            .ctx
            .store
            .create_rollout(&record, &hosts, &|h| *h == from, Some(&settled), &[started], &[notice])
            .await?
        {
            return Err(Error::Refused(held_by(&held, hosts.len())));
        }
        original.set_rolled_back(settled);
        // Hosts it held but never changed are free now.
        original.release_leases(&self.ctx.store)?;
        let live = self.adopt(record)?;
        info!(rollback = live.name(), hosts = targets.len(), "rollback started");
        Ok(live.snapshot())
    }
}
