//! Who asked for a change: carried from the API to the store, where the line saying
//! so is written in the same transaction as the change itself.

use super::Result;
use crate::proto::v1 as pb;

/// The caller of a mutating RPC, or the controller itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub principal: String,
    pub role: String,
    /// The RPC (`SubmitPlan`, `PauseRollout`...).
    pub method: String,
    pub request_id: String,
    /// Where the person acted, when not through the API.
    pub via: Via,
}

/// Where a person acted: the API (the CLI, a script), the dashboard or Slack. The
/// audit line says the last two.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Via {
    #[default]
    Api,
    Dashboard,
    Slack,
}

impl Actor {
    pub fn new(principal: &str, role: &str, method: &str, request_id: &str) -> Actor {
        Actor {
            principal: principal.to_string(),
            role: role.to_string(),
            method: method.to_string(),
            request_id: request_id.to_string(),
            via: Via::Api,
        }
    }

    /// The same actor, acting through `via`.
    pub fn through(self, via: Via) -> Actor {
        Actor { via, ..self }
    }

    /// The controller's own steps (a wave halting, a rollout succeeding).
    pub fn controller() -> Actor {
        Actor::new("controller", "", "", "")
    }

    /// A line of the audit log by this actor. `kind` is the method for a caller.
    pub fn event(&self, at_unix_ms: i64, target: Target<'_>, detail: String, result: &str) -> pb::EventRecord {
        let (rollout_id, rollout_name, job_id) = match target {
            Target::Rollout { id, name } => (id, name.to_string(), 0),
            Target::Job(id) => (0, String::new(), id),
            Target::None => (0, String::new(), 0),
        };
        pb::EventRecord {
            at_unix_ms,
            rollout_id,
            rollout_name,
            kind: self.method.clone(),
            detail: match self.via {
                Via::Api => detail,
                Via::Dashboard => format!("{detail} (through the dashboard)"),
                Via::Slack => format!("{detail} (through Slack)"),
            },
            principal: self.principal.clone(),
            role: self.role.clone(),
            request_id: self.request_id.clone(),
            result: result.to_string(),
            job_id,
            controller: String::new(),
        }
    }
}

/// What a change was made to.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    Rollout { id: u64, name: &'a str },
    Job(u64),
    None,
}

impl super::Engine {
    /// Applies an operator's event (pause, resume, abort) and returns the new snapshot.
    /// Writes a refused change to the audit log (nothing else changed) and flushes.
    pub async fn record_refusal(&self, actor: &Actor, target: Target<'_>, message: &str) {
        self.record_call(actor, target, String::new(), message).await
    }

    /// Writes a call that changed nothing the store holds (a test notification) to
    /// the audit log, and flushes.
    pub async fn record_call(&self, actor: &Actor, target: Target<'_>, detail: String, result: &str) {
        let event = actor.event(self.ctx.clock.now_ms(), target, detail, result);
        let written = match self.ctx.store.append_event(&event) {
            Ok(()) => self.ctx.store.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }

    /// The audit log: the newest `limit` events at or after `since_ms`, of rollout
    /// `rollout` (by name; empty: all), oldest first.
    pub fn events(&self, since_ms: i64, rollout: &str, limit: usize) -> Result<Vec<pb::EventRecord>> {
        self.events_where(since_ms, limit, |e| rollout.is_empty() || e.rollout_name == rollout)
    }

    /// The newest `limit` events at or after `since_ms` that `keep` accepts, oldest
    /// first.
    pub fn events_where(
        &self,
        since_ms: i64,
        limit: usize,
        keep: impl Fn(&pb::EventRecord) -> bool,
    ) -> Result<Vec<pb::EventRecord>> {
        Ok(self.ctx.store.recent_events(since_ms, limit, keep)?)
    }
}
