//! What the controller knows of each host's health and version: the fleet file's
//! word at first, then every probe and every answer from an agent.
//!
//! Health nobody measured is not health: a host whose health was never reported by a
//! probe or a heartbeat, or was last reported longer ago than [`STALE_AFTER_MS`], is
//! [`Known::Unknown`], shown as such with when it was last known.
//!
//! Kept per inventory index (a million hosts' words in one vector, without a key
//! each), re-indexed when the inventory changes, with versions and details interned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;

use crate::intern::Pool;
use crate::inventory::Inventory;
use crate::reach::SharedFleet;

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
    pub version: Arc<str>,
    /// Unix ms of the probe or answer; 0 when only the fleet file said so.
    pub at_ms: i64,
    pub detail: Arc<str>,
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
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    /// The inventory whose indexes `seen` follows.
    inventory: Arc<Inventory>,
    seen: Vec<Seen>,
    /// Hosts outside that inventory (removed since, or not registered yet).
    others: HashMap<String, Seen>,
    /// Versions and details: a fleet has a few of each.
    pool: Pool,
}

impl Book {
    fn slot(&mut self, host: &str) -> Option<&mut Seen> {
        match self.inventory.index_of(host) {
            Some(i) => self.seen.get_mut(i),
            None => self.others.get_mut(host),
        }
    }

    fn interned(&mut self, mut seen: Seen) -> Seen {
        seen.version = self.pool.get(&seen.version);
        seen.detail = self.pool.get(&seen.detail);
        seen
    }
}

impl HealthBook {
    pub fn new(inventory: &Arc<Inventory>) -> HealthBook {
        let mut pool = Pool::default();
        let from_file = pool.get("from the fleet file");
        let seen = inventory
            .hosts()
            .iter()
            .map(|h| Seen {
                healthy: h.healthy,
                version: pool.get(h.version.as_deref().unwrap_or_default()),
                at_ms: 0,
                detail: from_file.clone(),
                ..Default::default()
            })
            .collect();
        HealthBook {
            book: Mutex::new(Book {
                inventory: inventory.clone(),
                seen,
                others: HashMap::new(),
                pool,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follows a new inventory (a host registered): every host keeps its word, a new
    /// one starts with the inventory's.
    pub fn reindex(&self, inventory: &Arc<Inventory>) {
        let mut book = self.lock();
        let from_file = book.pool.get("from the fleet file");
        let mut seen = Vec::with_capacity(inventory.len());
        for h in inventory.hosts() {
            let known = match book.inventory.index_of(&h.id) {
                Some(i) => book.seen.get(i).cloned(),
                None => book.others.remove(&h.id),
            };
            seen.push(known.unwrap_or_else(|| Seen {
                healthy: h.healthy,
                version: h.version.as_deref().unwrap_or_default().into(),
                detail: from_file.clone(),
                ..Default::default()
            }));
        }
        let old = std::mem::replace(&mut book.inventory, inventory.clone());
        for (h, s) in old.hosts().iter().zip(std::mem::take(&mut book.seen)) {
            if inventory.index_of(&h.id).is_none() {
                book.others.insert(h.id.clone(), s);
            }
        }
        book.seen = seen.into_iter().map(|s| book.interned(s)).collect();
    }

    /// The hosts known (not merely said by the fleet file) to be unhealthy, or
    /// unreachable, at `now_ms`; and the hosts whose health is unknown.
    pub fn down_and_unknown(
        &self,
        now_ms: i64,
    ) -> (std::collections::HashSet<String>, std::collections::HashSet<String>) {
        let mut down = std::collections::HashSet::new();
        let mut unknown = std::collections::HashSet::new();
        let book = self.lock();
        let indexed = book.inventory.hosts().iter().map(|h| h.id.as_str()).zip(&book.seen);
        for (h, s) in indexed.chain(book.others.iter().map(|(h, s)| (h.as_str(), s))) {
            match s.known(now_ms) {
                Known::Unknown => {
                    unknown.insert(h.to_string());
                }
                k if k.is_down() => {
                    down.insert(h.to_string());
                }
                _ => {}
            }
        }
        (down, unknown)
    }

    pub fn get(&self, host: &str) -> Option<Seen> {
        self.lock().slot(host).map(|s| s.clone())
    }

    /// Records what a probe or an answer said; heartbeat times are kept.
    pub fn record(&self, host: &str, seen: Seen) {
        let mut book = self.lock();
        let mut seen = book.interned(seen);
        match book.slot(host) {
            Some(old) => {
                if seen.heartbeat_ms == 0 {
                    seen.heartbeat_ms = old.heartbeat_ms;
                    seen.heartbeat_interval_ms = old.heartbeat_interval_ms;
                }
                *old = seen;
            }
            None => {
                book.others.insert(host.to_string(), seen);
            }
        }
    }

    /// A host's version changed (a deploy or rollback returned). Its health is not
    /// learned by that, so when it was last known stays as it was.
    pub fn record_version(&self, host: &str, version: &str) {
        let mut book = self.lock();
        if book.slot(host).is_none_or(|s| &*s.version == version) {
            return;
        }
        let version = book.pool.get(version);
        if let Some(s) = book.slot(host) {
            s.version = version;
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
                        version: p.version.into(),
                        at_ms: now_ms,
                        detail: p.detail.into(),
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

    fn inventory(ids: &[&str]) -> Arc<Inventory> {
        let hosts = ids
            .iter()
            .map(|id| crate::inventory::Host {
                id: id.to_string(),
                address: "127.0.0.1:1".into(),
                labels: Default::default(),
                customers: Vec::new(),
                version: Some("1".into()),
                healthy: true,
            })
            .collect();
        let fleet = crate::inventory::FleetFile {
            customers: Vec::new(),
            hosts,
        };
        Arc::new(Inventory::new(fleet).unwrap())
    }

    /// A registration moves hosts' indexes: each keeps its word, a new host starts
    /// with the inventory's, a host gone from it is still known.
    #[test]
    fn a_new_inventory_keeps_every_hosts_word() {
        let book = HealthBook::new(&inventory(&["b", "d"]));
        let probed = Seen {
            healthy: false,
            version: "2".into(),
            at_ms: 5,
            detail: "disk full".into(),
            ..Default::default()
        };
        book.record("d", probed.clone());
        book.record_version("b", "3");
        book.reindex(&inventory(&["a", "b", "c"]));
        assert_eq!(book.get("d"), Some(probed), "gone from the inventory, still known");
        assert_eq!(book.get("b").map(|s| s.version), Some("3".into()));
        let new = book.get("a").unwrap();
        assert_eq!((new.healthy, &*new.version, new.at_ms), (true, "1", 0));
        book.record("c", Seen::default());
        book.reindex(&inventory(&["a", "b", "c", "d"]));
        assert_eq!(book.get("d").map(|s| s.at_ms), Some(5), "back in the inventory");
        let (down, unknown) = book.down_and_unknown(10);
        assert_eq!(down.into_iter().collect::<Vec<_>>(), ["d"]);
        assert_eq!(unknown.len(), 3);
    }
}
