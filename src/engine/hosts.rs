//! The inventory as the API sees it: agents' heartbeats register and update hosts,
//! and hosts are listed with what is known of their health (probed on request).

use std::collections::HashSet;
use std::sync::Arc;

use tracing::info;

use super::audit::{Actor, Target};
use super::{Engine, Error, Result, health};
use crate::proto::v1 as pb;

impl Engine {
    /// An agent's heartbeat: registers its host (new, or changed address, labels or
    /// customers) in the inventory and the store, and records its health.
    pub fn heartbeat(
        &self,
        mut req: pb::HeartbeatRequest,
        peer: Option<std::net::IpAddr>,
        actor: &Actor,
    ) -> Result<bool> {
        // A wildcard listen address means "wherever I am": use where the call came from.
        if let (Some(ip), Some((host, port))) = (peer, req.address.rsplit_once(':'))
            && matches!(host, "0.0.0.0" | "[::]" | "" | "::")
        {
            req.address = std::net::SocketAddr::new(ip, port.parse().unwrap_or(0)).to_string();
        }
        let now = self.ctx.clock.now_ms();
        let host = crate::inventory::Host {
            id: req.host_id.clone(),
            address: crate::intern::intern(&req.address),
            labels: req.labels.clone().into_iter().collect(),
            customers: req.customers.iter().map(|c| crate::intern::intern(c)).collect(),
            version: (!req.version.is_empty()).then(|| crate::intern::intern(&req.version)),
            healthy: req.healthy,
        };
        // The one grammar, as for a fleet file's hosts; the fields by their RPC names.
        crate::inventory::check_host(&host).map_err(|(field, message)| Error::Invalid {
            field: format!("Heartbeat {}", if field == "id" { "host_id" } else { field.as_str() }),
            message,
        })?;
        let registered = {
            let mut inventory = self.ctx.inventory.write().unwrap_or_else(|p| p.into_inner());
            let same = inventory
                .host(&host.id)
                .is_some_and(|h| h.address == host.address && h.labels == host.labels && h.customers == host.customers);
            if !same {
                let (records, _) = crate::inventory::FleetFile {
                    customers: Vec::new(),
                    hosts: vec![host.clone()],
                }
                .into_records();
                // Checked against the inventory first; stored only if accepted.
                let updated = inventory.with_host(host).map_err(|e| Error::Invalid {
                    field: "customers".into(),
                    message: e.to_string(),
                })?;
                let audit = actor.event(
                    now,
                    Target::None,
                    format!("host `{}` registered at {}", req.host_id, req.address),
                    "ok",
                );
                for r in &records {
                    self.ctx.store.put_host_with_events(r, std::slice::from_ref(&audit))?;
                }
                *inventory = Arc::new(updated);
                self.ctx.health.reindex(&inventory);
                info!(host = %req.host_id, address = %req.address, "host registered by heartbeat");
            }
            !same
        };
        self.ctx.health.record(
            &req.host_id,
            health::Seen {
                healthy: req.healthy,
                version: req.version.into(),
                at_ms: now,
                detail: req.detail.into(),
                heartbeat_ms: now,
                heartbeat_interval_ms: req.interval_ms as i64,
            },
        );
        Ok(registered)
    }

    /// The inventory with the last known health and version (probed now if asked).
    pub async fn hosts(&self, unhealthy_only: bool, probe: bool) -> Vec<pb::HostStatus> {
        let now = self.ctx.clock.now_ms();
        let inventory = self.ctx.inventory();
        if probe {
            let ids: Vec<String> = inventory.hosts().iter().map(|h| h.id.clone()).collect();
            for (host, err) in self
                .ctx
                .health
                .probe(&self.ctx.fleet, &inventory, &ids, self.ctx.clock.now_ms())
                .await
            {
                if let Some(mut seen) = self.ctx.health.get(&host) {
                    seen.detail = format!("probe failed: {err}").into();
                    self.ctx.health.record(&host, seen);
                }
            }
        }
        self.inventory()
            .hosts()
            .iter()
            .filter_map(|h| {
                let seen = self.ctx.health.get(&h.id).unwrap_or_default();
                let reachable = seen.reachable(now);
                let known = seen.known(now);
                (!unhealthy_only || known.is_down()).then(|| pb::HostStatus {
                    health: known.as_str().to_string(),
                    id: h.id.clone(),
                    address: h.address.to_string(),
                    labels: h.labels.clone().into_iter().collect(),
                    customers: crate::inventory::strings(&h.customers),
                    version: seen.version.to_string(),
                    healthy: seen.healthy,
                    checked_at_unix_ms: seen.at_ms,
                    reachable,
                    last_heartbeat_unix_ms: seen.heartbeat_ms,
                    detail: seen.detail.to_string(),
                })
            })
            .collect()
    }

    /// The hosts known to be down (unhealthy or unreachable) and those nobody
    /// measured (unknown), now.
    pub fn down_and_unknown(&self) -> (HashSet<String>, HashSet<String>) {
        self.ctx.health.down_and_unknown(self.ctx.clock.now_ms())
    }
}
