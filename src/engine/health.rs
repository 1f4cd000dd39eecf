//! What the controller knows of each host's health and version: the fleet file's
//! word at first, then every probe and every answer from an agent.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;

use super::fleet::SharedFleet;
use crate::fleet::Inventory;

/// Probes in flight at once when many hosts are asked.
const PROBE_CONCURRENCY: usize = 256;

/// The last word on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub healthy: bool,
    pub version: String,
    /// Unix ms of the probe or answer; 0 when only the fleet file said so.
    pub at_ms: i64,
    pub detail: String,
    /// Unix ms of the last heartbeat (0: its agent never sent one).
    pub heartbeat_ms: i64,
    /// The agent's heartbeat interval, as it said.
    pub heartbeat_interval_ms: i64,
}

impl Seen {
    /// An agent that heartbeats is unreachable once it missed three in a row.
    pub fn reachable(&self, now_ms: i64) -> bool {
        self.heartbeat_ms == 0 || now_ms - self.heartbeat_ms <= 3 * self.heartbeat_interval_ms.max(1)
    }
}

/// Last known health and version of every host.
#[derive(Debug, Default)]
pub struct HealthBook {
    seen: Mutex<HashMap<String, Seen>>,
}

impl HealthBook {
    pub fn new(inventory: &Inventory) -> HealthBook {
        let seen = inventory
            .hosts()
            .iter()
            .map(|h| {
                let seen = Seen {
                    healthy: h.healthy,
                    version: h.version.clone().unwrap_or_default(),
                    at_ms: 0,
                    detail: "from the fleet file".into(),
                    ..Default::default()
                };
                (h.id.clone(), seen)
            })
            .collect();
        HealthBook { seen: Mutex::new(seen) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hosts last seen unhealthy, or unreachable at `now_ms`.
    pub fn down(&self, now_ms: i64) -> std::collections::HashSet<String> {
        self.lock()
            .iter()
            .filter(|(_, s)| !s.healthy || !s.reachable(now_ms))
            .map(|(h, _)| h.clone())
            .collect()
    }

    pub fn get(&self, host: &str) -> Option<Seen> {
        self.lock().get(host).cloned()
    }

    /// Records what a probe or an answer said; heartbeat times are kept.
    pub fn record(&self, host: &str, mut seen: Seen) {
        let mut book = self.lock();
        if let Some(old) = book.get(host)
            && seen.heartbeat_ms == 0
        {
            seen.heartbeat_ms = old.heartbeat_ms;
            seen.heartbeat_interval_ms = old.heartbeat_interval_ms;
        }
        book.insert(host.to_string(), seen);
    }

    /// A host's version changed (a deploy or rollback returned).
    pub fn record_version(&self, host: &str, version: &str, at_ms: i64) {
        if let Some(s) = self.lock().get_mut(host) {
            s.version = version.to_string();
            s.at_ms = at_ms;
        }
    }

    /// Probes `hosts` now and records what they say. Returns the hosts that could not
    /// be probed, with the error.
    pub async fn probe(
        &self,
        fleet: &SharedFleet,
        inventory: &Inventory,
        hosts: &[String],
        now_ms: i64,
    ) -> Vec<(String, String)> {
        // Owned futures, built up front: the stream then borrows nothing.
        let calls: Vec<_> = hosts
            .iter()
            .map(|id| {
                let address = inventory.host(id).map(|h| h.address.clone()).unwrap_or_default();
                let call = fleet.probe(&address, id);
                let id = id.clone();
                async move { (id, call.await) }
            })
            .collect();
        let answers: Vec<_> = futures::stream::iter(calls)
            .buffer_unordered(PROBE_CONCURRENCY)
            .collect()
            .await;
        let mut failed = Vec::new();
        for (id, answer) in answers {
            match answer {
                Ok(p) => self.record(
                    &id,
                    Seen {
                        healthy: p.healthy,
                        version: p.version,
                        at_ms: now_ms,
                        detail: p.detail,
                        ..Default::default()
                    },
                ),
                Err(e) => failed.push((id, e.to_string())),
            }
        }
        failed
    }
}
