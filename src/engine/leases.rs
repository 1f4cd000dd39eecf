//! Who holds a host: at most one active rollout or restart job. Conflicts are
//! counted from the store's leases; leases a crash left behind are released at
//! start-up.

use std::collections::BTreeMap;

use tracing::info;

use super::{Engine, Holder, Result};

impl Engine {
    /// Who holds some of `hosts` (other than `except`), and how many of them, as the
    /// store's leases say.
    pub(super) fn conflicts(&self, hosts: &[String], except: Option<&Holder>) -> Result<BTreeMap<Holder, u64>> {
        let mut shared: BTreeMap<Holder, u64> = BTreeMap::new();
        for h in hosts {
            if let Some(holder) = self.ctx.store.lease(h)?
                && Some(&holder) != except
            {
                *shared.entry(holder).or_default() += 1;
            }
        }
        Ok(shared)
    }

    /// Leases left behind by a crash: their holder ended (and wants no rollback) but
    /// died before giving them up. Released at start-up.
    pub(super) fn release_stale_leases(&self) -> Result<()> {
        for (holder, hosts) in self.ctx.store.lease_holders()? {
            let alive = match &holder {
                Holder::Rollout { id, .. } => self
                    .lock()
                    .get(id)
                    .is_some_and(|l| !l.state().is_terminal() || l.rollback_pending()),
                Holder::Job { id } => self.jobs().get(id).is_some_and(|j| j.is_active()),
            };
            if !alive {
                info!(%holder, hosts, "releasing leases of an ended holder");
                self.ctx.store.release_leases(&holder)?;
            }
        }
        Ok(())
    }
}

/// "12 of its 40 hosts are held by active rollout `x` (id 3); ..." for a lease refusal.
pub(super) fn held_by(held: &crate::store::Held, total: usize) -> String {
    let parts: Vec<String> = held
        .0
        .iter()
        .map(|(holder, n)| format!("{n} of its {total} hosts are held by {holder}"))
        .collect();
    format!(
        "{}; wait for it, abort it, or set `preempt: NAME` in the plan to pause that rollout",
        parts.join("; ")
    )
}
