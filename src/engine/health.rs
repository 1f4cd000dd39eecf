//! What the controller knows of each host's health and version: the fleet file's
//! word at first, then every probe and every answer from an agent.
//!
//! Health nobody measured is not health: a host whose health was never reported by a
//! probe or a heartbeat, or was last reported longer ago than [`STALE_AFTER_MS`], is
//! [`Known::Unknown`], shown as such with when it was last known.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::StreamExt;

use super::fleet::SharedFleet;
use crate::fleet::Inventory;

/// Probes in flight at once when many hosts are asked.
const PROBE_CONCURRENCY: usize = 256;
/// A probe's word on health older than this is stale: the host is "unknown" until it
/// is probed again or heartbeats.
pub const STALE_AFTER_MS: i64 = 15 * 60 * 1_000;

/// What can honestly be said of a host's health now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Known {
    Healthy,
    Unhealthy,
    /// Its agent heartbeats and missed three in a row.
    Unreachable,
    /// Never reported (only the fleet file's word), or stale.
    Unknown,
}

impl Known {
    pub fn as_str(self) -> &'static str {
        match self {
            Known::Healthy => "healthy",
            Known::Unhealthy => "unhealthy",
            Known::Unreachable => "unreachable",
            Known::Unknown => "unknown",
        }
    }

    /// Unhealthy or unreachable: known to be down.
    pub fn is_down(self) -> bool {
        matches!(self, Known::Unhealthy | Known::Unreachable)
    }
}

/// A group of hosts (a customer's) by what is known of their health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub hosts: u64,
    /// Known unhealthy or unreachable.
    pub down: u64,
    /// Never reported, or stale: neither healthy nor down.
    pub unknown: u64,
}

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

    /// Its health as can be said at `now_ms`; a heartbeating agent's word stays fresh
    /// while its heartbeats come.
    pub fn known(&self, now_ms: i64) -> Known {
        if !self.reachable(now_ms) {
            Known::Unreachable
        } else if self.at_ms == 0 || now_ms - self.at_ms > STALE_AFTER_MS.max(3 * self.heartbeat_interval_ms) {
            Known::Unknown
        } else if self.healthy {
            Known::Healthy
        } else {
            Known::Unhealthy
        }
    }
}

/// Last known health and version of every host.
#[derive(Debug, Default)]
pub struct HealthBook {
    seen: Mutex<HashMap<String, Seen, foldhash::fast::RandomState>>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen, foldhash::fast::RandomState>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The hosts known (not merely said by the fleet file) to be unhealthy, or
    /// unreachable, at `now_ms`; and the hosts whose health is unknown.
    pub fn down_and_unknown(
        &self,
        now_ms: i64,
    ) -> (std::collections::HashSet<String>, std::collections::HashSet<String>) {
        let mut down = std::collections::HashSet::new();
        let mut unknown = std::collections::HashSet::new();
        for (h, s) in self.lock().iter() {
            match s.known(now_ms) {
                Known::Unknown => {
                    unknown.insert(h.clone());
                }
                k if k.is_down() => {
                    down.insert(h.clone());
                }
                _ => {}
            }
        }
        (down, unknown)
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

    /// A host's version changed (a deploy or rollback returned). Its health is not
    /// learned by that, so when it was last known stays as it was.
    pub fn record_version(&self, host: &str, version: &str) {
        if let Some(s) = self.lock().get_mut(host) {
            s.version = version.to_string();
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
        // Calls made as earlier ones are answered, and answers recorded as they come:
        // half a million hosts are never half a million futures or answers at once.
        // (A loop rather than stream combinators, whose closures over borrowed data
        // make the driver's future not provably Send.)
        let mut waiting = hosts.iter();
        let mut answers = futures::stream::FuturesUnordered::new();
        let mut next_answer = || {
            let id = waiting.next()?;
            let address = inventory.host(id).map(|h| h.address.clone()).unwrap_or_default();
            let call = fleet.probe(&address, id);
            let id = id.clone();
            Some(async move { (id, call.await) })
        };
        for call in std::iter::from_fn(&mut next_answer).take(PROBE_CONCURRENCY) {
            answers.push(call);
        }
        let mut failed = Vec::new();
        while let Some((id, answer)) = answers.next().await {
            if let Some(call) = next_answer() {
                answers.push(call);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The fleet file's word is not a measurement; a probe's is, until it is stale; a
    /// heartbeating agent that went silent is unreachable.
    #[test]
    fn health_nobody_measured_is_unknown() {
        let from_file = Seen {
            healthy: true,
            ..Default::default()
        };
        assert_eq!(from_file.known(1_000), Known::Unknown);
        let probed = Seen {
            healthy: false,
            at_ms: 1_000,
            ..Default::default()
        };
        assert_eq!(probed.known(2_000), Known::Unhealthy);
        assert_eq!(probed.known(1_000 + STALE_AFTER_MS + 1), Known::Unknown);
        let beating = Seen {
            healthy: true,
            at_ms: 10_000,
            heartbeat_ms: 10_000,
            heartbeat_interval_ms: 1_000,
            ..Default::default()
        };
        assert_eq!(beating.known(11_000), Known::Healthy);
        assert_eq!(beating.known(14_000), Known::Unreachable);
    }
}
