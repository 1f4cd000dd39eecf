//! An emergency restart job (`TriggerRestartRequest.emergency`): it restarts nothing
//! until an admin other than the one who asked for it approves, and then freezes do
//! not hold it. The approval is stored with the job's record and its audit line in
//! one write.

use super::{Job, Target};
use crate::engine::audit::Actor;
use crate::engine::{Error, Result};
use crate::proto::v1 as pb;

impl Job {
    /// An approved emergency job: freezes do not hold it.
    pub fn passes_freezes(&self) -> bool {
        let inner = self.lock();
        is_emergency(&inner.record) && inner.record.emergency_approval.is_some()
    }

    /// Approves the job for `actor` (an admin, not its submitter), stored with its
    /// audit line; the caller flushes. A second approval is refused, saying whose
    /// counted.
    pub fn approve_emergency(
        &self,
        store: &crate::store::Store,
        actor: &Actor,
        comment: &str,
        now_ms: i64,
    ) -> Result<()> {
        let mut inner = self.lock();
        let named = |why: String| format!("restart job {}: {why}", self.id);
        if !is_emergency(&inner.record) {
            return Err(Error::Refused(named(
                "it is not an emergency job: nothing to approve (it runs as it is)".into(),
            )));
        }
        if let Some(a) = &inner.record.emergency_approval {
            return Err(Error::Refused(named(format!("{} approved it already", a.principal))));
        }
        if inner.record.state() != pb::RestartJobState::Running {
            return Err(Error::Refused(named(format!(
                "it has ended ({}): nothing to approve",
                inner.record.state().label()
            ))));
        }
        if actor.role != "admin" {
            return Err(Error::Forbidden(named(format!(
                "an emergency job passes freezes only with an admin's approval; {} is {}",
                actor.principal, actor.role
            ))));
        }
        if actor.principal == inner.record.submitted_by {
            return Err(Error::Refused(named(format!(
                "four-eyes: {} asked for it; another admin must approve",
                actor.principal
            ))));
        }
        inner.record.emergency_approval = Some(pb::Approval {
            principal: actor.principal.clone(),
            role: actor.role.clone(),
            at_unix_ms: now_ms,
            comment: comment.to_string(),
            request_id: actor.request_id.clone(),
        });
        inner.record.updated_at_unix_ms = now_ms;
        let mut line = "emergency approved: it restarts now, and freezes do not hold it".to_string();
        if !comment.is_empty() {
            line.push_str(&format!(" (comment: {})", crate::text::one_line(comment)));
        }
        let audit = actor.event(now_ms, Target::Job(self.id), line, "ok");
        store.put_restart_job_with_events(&inner.record, &[audit])?;
        self.publish(&inner);
        drop(inner);
        self.control.send_modify(|g| *g += 1);
        Ok(())
    }
}

fn is_emergency(record: &pb::RestartJobRecord) -> bool {
    record.request.as_ref().is_some_and(|r| r.emergency)
}

/// What an emergency job waiting for its approval says.
pub(super) fn awaiting(record: &pb::RestartJobRecord) -> Option<String> {
    (is_emergency(record) && record.emergency_approval.is_none()).then(|| {
        format!(
            "it restarts nothing until an admin other than {} approves (emergency: passes freezes once approved): `rollout restart --approve {}`",
            record.submitted_by, record.id
        )
    })
}
