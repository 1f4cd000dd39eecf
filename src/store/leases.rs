//! Who holds a host: at most one active rollout or restart job.
//!
//! A holder's hosts are stored as sets, in chunks under the holder (`lc` kind ++ id
//! ++ lease version ++ part -> `LeaseChunk`), and a host is in at most one chunk of
//! all holders'. Taking a host from another holder (a preemption, a rollback's
//! handover) rewrites that holder's chunk without it, in the same batch. Giving up
//! is deleting one's chunks.
//!
//! The index (host -> holder and chunk) is kept in memory, loaded at first use. `lv`,
//! the lease version, is bumped by every change, and every change is conditioned on
//! it: a change decided on an index another writer made stale writes nothing, and is
//! decided again on a fresh index.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, MutexGuard};

use prost::Message;

use super::backend::Batch;
use super::hosts::CHUNK;
use super::{META, Result, Store, as_u64, backend, decode, key};
use crate::proto::v1 as pb;

const CHUNKS: &[u8] = b"lc";

/// Hosts that could not be leased, counted by the holder that has them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held(pub BTreeMap<Holder, u64>);

impl Held {
    /// The first holder, as people read it, and how many of the hosts it has.
    pub fn first(&self) -> (String, u64) {
        self.0
            .iter()
            .next()
            .map(|(h, n)| (h.to_string(), *n))
            .unwrap_or_default()
    }
}

/// Who holds a lease, as ordered for messages (rollouts first, by id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Holder {
    Rollout { id: u64, name: String },
    Job { id: u64 },
}

impl Holder {
    pub fn of(lease: &pb::LeaseRecord) -> Holder {
        match lease.kind() {
            pb::lease_record::Kind::RestartJob => Holder::Job { id: lease.id },
            _ => Holder::Rollout {
                id: lease.id,
                name: lease.name.clone(),
            },
        }
    }

    pub fn lease(&self) -> pb::LeaseRecord {
        match self {
            Holder::Rollout { id, name } => pb::LeaseRecord {
                kind: pb::lease_record::Kind::Rollout as i32,
                id: *id,
                name: name.clone(),
            },
            Holder::Job { id } => pb::LeaseRecord {
                kind: pb::lease_record::Kind::RestartJob as i32,
                id: *id,
                name: String::new(),
            },
        }
    }

    /// `lc` ++ kind ++ id: the prefix of this holder's chunks.
    fn prefix(&self) -> Vec<u8> {
        let (kind, id) = match self {
            Holder::Rollout { id, .. } => (1u8, *id),
            Holder::Job { id } => (2u8, *id),
        };
        let mut k = key(CHUNKS, &[kind]);
        k.extend_from_slice(&id.to_be_bytes());
        k
    }

    fn chunk_key(&self, version: u64, part: u32) -> Vec<u8> {
        let mut k = self.prefix();
        k.extend_from_slice(&version.to_be_bytes());
        k.extend_from_slice(&part.to_be_bytes());
        k
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Rollout { id, name } => write!(f, "active rollout `{name}` (id {id})"),
            Holder::Job { id } => write!(f, "active restart job {id}"),
        }
    }
}

/// Where a host's lease is: its holder and the key of the chunk that lists it.
struct Claim {
    holder: Arc<Holder>,
    chunk: Arc<[u8]>,
}

/// The leases in memory.
#[derive(Default)]
pub(super) struct Index {
    loaded: bool,
    /// The stored lease version (0: none stored yet).
    version: u64,
    hosts: HashMap<String, Claim, foldhash::fast::RandomState>,
}

fn version_key() -> Vec<u8> {
    key(META, b"lease_version")
}

impl Store {
    fn lease_index(&self) -> Result<MutexGuard<'_, Index>> {
        let mut index = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if !index.loaded {
            *index = self.load_leases()?;
        }
        Ok(index)
    }

    fn load_leases(&self) -> Result<Index> {
        let version = self.kv.get(&version_key())?.as_deref().and_then(as_u64).unwrap_or(0);
        let mut hosts = HashMap::default();
        let mut holders: HashMap<Holder, Arc<Holder>> = HashMap::new();
        for kv in backend::scan_prefix(self.kv.as_ref(), CHUNKS) {
            let (k, v) = kv?;
            let chunk: pb::LeaseChunk = decode("leases", &v)?;
            let holder = Holder::of(&chunk.holder.unwrap_or_default());
            let holder = holders
                .entry(holder.clone())
                .or_insert_with(|| Arc::new(holder))
                .clone();
            let k: Arc<[u8]> = k.into();
            for host in chunk.hosts {
                hosts.insert(
                    host,
                    Claim {
                        holder: holder.clone(),
                        chunk: k.clone(),
                    },
                );
            }
        }
        Ok(Index {
            loaded: true,
            version,
            hosts,
        })
    }

    /// Leases `hosts` to `me`, all or none, in one batch with what `also` adds to it
    /// (the holder's own records): a host another holder has, that `may_take`
    /// refuses, is counted in the `Held` returned instead and nothing is written.
    pub(super) fn take_leases(
        &self,
        hosts: &[&str],
        me: &Holder,
        may_take: &(dyn Fn(&Holder) -> bool + Sync),
        also: &dyn Fn(&mut Batch),
    ) -> Result<std::result::Result<(), Held>> {
        loop {
            let mut index = self.lease_index()?;
            let mut held = BTreeMap::new();
            let mut mine = Vec::new();
            // Chunks of other holders that lose hosts to `me`.
            let mut taken: BTreeMap<Arc<[u8]>, Vec<&str>> = BTreeMap::new();
            for host in hosts {
                match index.hosts.get(*host) {
                    Some(c) if *c.holder == *me => continue,
                    Some(c) if !may_take(&c.holder) => *held.entry((*c.holder).clone()).or_insert(0) += 1,
                    Some(c) => taken.entry(c.chunk.clone()).or_default().push(host),
                    None => {}
                }
                mine.push(*host);
            }
            if !held.is_empty() {
                return Ok(Err(Held(held)));
            }
            let version = index.version + 1;
            let mut batch = self.lease_change(&index);
            batch.put(version_key(), version.to_be_bytes().to_vec());
            let lease = me.lease();
            let mut parts = Vec::new();
            for (part, hosts) in mine.chunks(CHUNK).enumerate() {
                let k = me.chunk_key(version, part as u32);
                let chunk = pb::LeaseChunk {
                    holder: Some(lease.clone()),
                    hosts: hosts.iter().map(|h| h.to_string()).collect(),
                };
                batch.put(k.clone(), chunk.encode_to_vec());
                parts.push((Arc::<[u8]>::from(k), hosts));
            }
            for (k, lost) in &taken {
                let Some(value) = self.kv.get(k)? else { continue };
                let mut chunk: pb::LeaseChunk = decode("leases", &value)?;
                chunk.hosts.retain(|h| !lost.contains(&h.as_str()));
                if chunk.hosts.is_empty() {
                    batch.delete(k.to_vec());
                } else {
                    batch.put(k.to_vec(), chunk.encode_to_vec());
                }
            }
            also(&mut batch);
            if !self.commit(batch)? {
                // Another writer changed the leases: decide again on what it wrote.
                index.loaded = false;
                continue;
            }
            index.version = version;
            let holder = Arc::new(me.clone());
            for (k, hosts) in parts {
                for host in hosts {
                    let claim = Claim {
                        holder: holder.clone(),
                        chunk: k.clone(),
                    };
                    index.hosts.insert(host.to_string(), claim);
                }
            }
            return Ok(Ok(()));
        }
    }

    /// A batch conditioned on the lease version the index was read at.
    fn lease_change(&self, index: &Index) -> Batch {
        let mut batch = Batch::default();
        match index.version {
            0 => batch.require_absent(version_key()),
            v => batch.require_equals(version_key(), v.to_be_bytes().to_vec()),
        };
        batch
    }

    /// Takes the leases of `hosts` for `me` (a preempted rollout resuming, a retried
    /// one), all or none. Durable at the next flush.
    pub fn lease_hosts(&self, me: &Holder, hosts: &[String]) -> Result<std::result::Result<(), Held>> {
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        self.take_leases(&hosts, me, &|_| false, &|_| {})
    }

    /// Who holds `host`, if anyone.
    pub fn lease(&self, host: &str) -> Result<Option<Holder>> {
        Ok(self.lease_index()?.hosts.get(host).map(|c| (*c.holder).clone()))
    }

    /// Every holder of leases, and how many hosts it holds.
    pub fn lease_holders(&self) -> Result<BTreeMap<Holder, u64>> {
        let index = self.lease_index()?;
        let mut holders = BTreeMap::new();
        for claim in index.hosts.values() {
            *holders.entry((*claim.holder).clone()).or_insert(0) += 1;
        }
        Ok(holders)
    }

    /// Gives up every lease `holder` has (hosts taken from it are another's now, and
    /// stay so). Durable at the next flush.
    pub fn release_leases(&self, holder: &Holder) -> Result<()> {
        loop {
            let mut index = self.lease_index()?;
            let chunks = backend::scan_prefix(self.kv.as_ref(), &holder.prefix())
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<backend::Result<Vec<_>>>()?;
            if chunks.is_empty() {
                return Ok(());
            }
            let version = index.version + 1;
            let mut batch = self.lease_change(&index);
            batch.put(version_key(), version.to_be_bytes().to_vec());
            for k in chunks {
                batch.delete(k);
            }
            if !self.commit(batch)? {
                index.loaded = false;
                continue;
            }
            index.version = version;
            index.hosts.retain(|_, c| *c.holder != *holder);
            return Ok(());
        }
    }

    /// Schema 3 kept a key per leased host (`le` host id -> `LeaseRecord`): they become
    /// each holder's chunks, then the lease version (the mark that they are whole),
    /// then the keys are deleted. A crash before the version redoes it; after it,
    /// only the deletion.
    pub(super) fn migrate_lease_keys(&self, legacy: &[u8]) -> Result<()> {
        if self.kv.get(&version_key())?.is_none() {
            let mut holders: BTreeMap<Holder, Vec<String>> = BTreeMap::new();
            for kv in backend::scan_prefix(self.kv.as_ref(), legacy) {
                let (k, v) = kv?;
                let lease: pb::LeaseRecord = decode("leases", &v)?;
                let host = String::from_utf8_lossy(&k[legacy.len()..]).into_owned();
                holders.entry(Holder::of(&lease)).or_default().push(host);
            }
            self.delete_prefix(CHUNKS)?;
            for (holder, hosts) in &holders {
                for (part, hosts) in hosts.chunks(CHUNK).enumerate() {
                    let chunk = pb::LeaseChunk {
                        holder: Some(holder.lease()),
                        hosts: hosts.to_vec(),
                    };
                    let mut batch = Batch::default();
                    batch.put(holder.chunk_key(1, part as u32), chunk.encode_to_vec());
                    self.write(batch, "leases")?;
                }
            }
            let mut mark = Batch::default();
            mark.put(version_key(), 1u64.to_be_bytes().to_vec());
            self.write(mark, "leases")?;
            self.kv.flush_blocking()?;
        }
        self.delete_prefix(legacy)?;
        self.leases.lock().unwrap_or_else(|p| p.into_inner()).loaded = false;
        Ok(())
    }
}
