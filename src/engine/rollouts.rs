//! The rollouts the engine knows: adopting one from the store (and starting its
//! driver), finding one by name or id, its snapshots, and the operator's actions on
//! it (pause, resume, abort, retry), idempotent by request id.

use std::sync::Arc;

use tokio::sync::watch;

use super::audit::{Actor, Target};
use super::rollout::Approved;
use super::{Engine, Error, Event, Key, Live, Result, State, rollout_task};
use crate::proto::v1 as pb;

/// What an operator may do to a rollout: one value from the API's handler to the
/// state machine (a method's name never decides what happens).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
    Retry,
    Abort { reason: String, rollback: bool },
}

impl Action {
    /// The API method that asks for it (audit lines name it).
    pub fn method(&self) -> &'static str {
        match self {
            Action::Pause => "PauseRollout",
            Action::Resume => "ResumeRollout",
            Action::Retry => "RetryRollout",
            Action::Abort { .. } => "AbortRollout",
        }
    }

    /// The state machine's event for it.
    fn event(&self) -> Event {
        match self {
            Action::Pause => Event::Pause,
            Action::Resume => Event::Resume,
            Action::Retry => Event::Retry,
            Action::Abort { reason, rollback } => Event::Abort {
                reason: reason.clone(),
                rollback: *rollback,
            },
        }
    }
}

/// As the audit log says it: `pause`, `resume`, `retry`, `abort and roll back: why`.
impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Pause => f.write_str("pause"),
            Action::Resume => f.write_str("resume"),
            Action::Retry => f.write_str("retry"),
            Action::Abort { reason, rollback } => {
                f.write_str("abort")?;
                if *rollback {
                    f.write_str(" and roll back")?;
                }
                if !reason.is_empty() {
                    write!(f, ": {reason}")?;
                }
                Ok(())
            }
        }
    }
}

impl Engine {
    /// Loads a stored rollout, registers it, and starts its driver when it has work
    /// left (an unfinished state, or calls in doubt to ask about).
    pub(super) fn adopt(&self, record: pb::RolloutRecord) -> Result<Arc<Live>> {
        let live = Arc::new(Live::load(
            &self.ctx.store,
            self.ctx.inventory(),
            record,
            self.ctx.hours.now_ms(),
        )?);
        self.lock().insert(live.id, live.clone());
        if live.revive() {
            self.spawn(rollout_task::drive(live.clone(), self.ctx.clone()));
        }
        Ok(live)
    }

    pub(super) fn find(&self, key: Key<'_>) -> Result<Arc<Live>> {
        let rollouts = self.lock();
        let found = if key.id != 0 {
            rollouts.get(&key.id).cloned()
        } else {
            let named = || rollouts.values().rev().filter(|l| l.name() == key.name);
            named()
                .find(|l| !l.state().is_terminal())
                .or_else(|| named().next())
                .cloned()
        };
        found.ok_or_else(|| {
            Error::NotFound(if key.id != 0 {
                format!("no rollout has id {}", key.id)
            } else {
                format!("no rollout is named `{}`; `rollout status` lists them", key.name)
            })
        })
    }

    /// The rollout's current snapshot.
    pub fn get(&self, key: Key<'_>) -> Result<Arc<pb::Rollout>> {
        Ok(self.find(key)?.snapshot())
    }

    /// Every rollout, newest first, optionally only in some states.
    pub fn list(&self, states: &[pb::RolloutState]) -> Vec<Arc<pb::Rollout>> {
        self.lock()
            .values()
            .rev()
            .map(|l| l.snapshot())
            .filter(|r| states.is_empty() || states.contains(&r.state()))
            .collect()
    }

    /// A receiver of the rollout's snapshots: the current one, then each change.
    pub fn watch(&self, key: Key<'_>) -> Result<watch::Receiver<Arc<pb::Rollout>>> {
        Ok(self.find(key)?.subscribe())
    }

    /// An operator's action on a rollout: the state machine decides first, and the
    /// leases it needs follow only an accepted action. A repeated `request_id`
    /// returns the first answer and does nothing again.
    pub async fn control(&self, key: Key<'_>, action: Action, actor: &Actor) -> Result<Arc<pb::Rollout>> {
        let event = action.event();
        let request_id = actor.request_id.as_str();
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let _guard = self.submit.lock().await;
        if !request_id.is_empty()
            && let Some(answer) = self.ctx.store.action_answer(request_id)?
        {
            return Ok(Arc::new(answer));
        }
        let live = self.find(key)?;
        // The state machine first: the leases below follow only an accepted action.
        live.accepts(&event, self.ctx.at())?;
        if event == Event::Resume && matches!(live.state(), State::Paused { .. } | State::Halted { .. }) {
            // A preempted rollout takes its hosts back, all or none.
            let hosts = self.ctx.store.rollout_host_ids(live.id)?;
            if let Err(held) = self.ctx.store.lease_hosts(&live.holder(), &hosts)? {
                let (holder, n) = held.first();
                return Err(Error::Refused(format!(
                    "{n} of its hosts are held by {holder} (which preempted it, or started since); wait for it to end or abort it, then resume"
                )));
            }
        }
        if event == Event::Retry && live.state().is_terminal() {
            // A finished rollout gave its hosts up: the failed ones are taken again,
            // all or none, before anything is requeued (and any a crash left requeued
            // by an earlier retry whose record did not follow: they go too).
            let failed: Vec<String> = self
                .ctx
                .store
                .rollout_hosts(live.id)
                .filter_map(|row| match row {
                    Ok((h, r)) if matches!(r.state(), pb::HostState::Failed | pb::HostState::Assigned) => Some(Ok(h)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<std::result::Result<_, _>>()?;
            if let Err(held) = self.ctx.store.lease_hosts(&live.holder(), &failed)? {
                let (holder, n) = held.first();
                return Err(Error::Refused(format!(
                    "{n} of its {} failed hosts are held by {holder} now; wait for it to end or abort it, then retry",
                    failed.len()
                )));
            }
        }
        let now = self.ctx.clock.now_ms();
        let detail = action.to_string();
        let audit = actor.event(
            now,
            Target::Rollout {
                id: live.id,
                name: live.name(),
            },
            detail,
            "ok",
        );
        let rollback = live.transition(&self.ctx.store, event, self.ctx.at(), Some(audit))?;
        if live.revive() {
            // A retried rollout that had ended runs again.
            self.spawn(rollout_task::drive(live.clone(), self.ctx.clone()));
        }
        drop(_guard);
        if rollback {
            self.start_rollback(live.id).await?;
        }
        live.commit(&self.ctx.store).await?;
        let answer = live.snapshot();
        if !request_id.is_empty() {
            self.ctx.store.put_action_answer(request_id, &answer)?;
            self.ctx.store.flush().await?;
        }
        Ok(answer)
    }

    /// Approves the open gate of a rollout for `actor`, who looked at `gate_id`.
    /// Idempotent by request id: an approval already recorded with it is not counted
    /// again, even across a crash (the id is stored with the approval).
    pub async fn approve(
        &self,
        key: Key<'_>,
        gate_id: &str,
        comment: &str,
        actor: &Actor,
    ) -> Result<(Approved, Arc<pb::Rollout>)> {
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if !crate::plan::GateRole::Operator.admits(&actor.role) {
            return Err(Error::Forbidden(format!(
                "`{}` has the {} role; approving a gate needs the operator role (or admin, where the gate says so)",
                actor.principal, actor.role
            )));
        }
        let guard = self.submit.lock().await;
        let live = self.find(key)?;
        let approved = live.approve(&self.ctx.store, actor, gate_id, comment, self.ctx.at())?;
        drop(guard);
        live.commit(&self.ctx.store).await?;
        Ok((approved, live.snapshot()))
    }
}

#[cfg(test)]
mod tests {
    use super::Action;

    #[test]
    fn an_action_says_what_it_is_in_the_audit_log() {
        assert_eq!(Action::Pause.to_string(), "pause");
        assert_eq!(Action::Retry.to_string(), "retry");
        let abort = |reason: &str, rollback| Action::Abort {
            reason: reason.into(),
            rollback,
        };
        assert_eq!(abort("", false).to_string(), "abort");
        assert_eq!(abort("bad fix", true).to_string(), "abort and roll back: bad fix");
        assert_eq!(abort("bad fix", true).method(), "AbortRollout");
    }
}
