//! Who holds a host: at most one active rollout or restart job (`leases/` host id ->
//! `LeaseRecord`). Leases are taken in the batch that writes the holder's host rows,
//! conditioned on each lease being what was read, so two holders can never both get
//! a host; they are given up key by key, only where still ours.

use std::collections::BTreeMap;

use prost::Message;

use super::backend::Batch;
use super::{LEASES, Result, Store, backend, decode, key};
use crate::proto::v1 as pb;

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
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::Rollout { id, name } => write!(f, "active rollout `{name}` (id {id})"),
            Holder::Job { id } => write!(f, "active restart job {id}"),
        }
    }
}

impl Store {
    /// Adds to `batch` the leases of `hosts` for `me`, each conditioned on the lease
    /// being as read now; a host another holder has, that `may_take` refuses, is
    /// counted in the `Held` returned instead.
    pub(super) fn take_leases<'a>(
        &self,
        batch: &mut Batch,
        hosts: impl Iterator<Item = &'a str>,
        me: &Holder,
        may_take: &(dyn Fn(&Holder) -> bool + Sync),
    ) -> Result<std::result::Result<(), Held>> {
        let mine = me.lease().encode_to_vec();
        let mut held = BTreeMap::new();
        for host in hosts {
            let k = key(LEASES, host.as_bytes());
            match self.kv.get(&k)? {
                Some(old) => {
                    let holder = Holder::of(&decode::<pb::LeaseRecord>("leases", &old)?);
                    if holder != *me && !may_take(&holder) {
                        *held.entry(holder).or_insert(0) += 1;
                        continue;
                    }
                    batch.require_equals(k.clone(), old);
                }
                None => {
                    batch.require_absent(k.clone());
                }
            }
            batch.put(k, mine.clone());
        }
        Ok(if held.is_empty() { Ok(()) } else { Err(Held(held)) })
    }

    /// Takes the leases of `hosts` for `me` (a preempted rollout resuming, a retried
    /// one), all or none. Durable at the next flush.
    pub fn lease_hosts(&self, me: &Holder, hosts: &[String]) -> Result<std::result::Result<(), Held>> {
        loop {
            let mut batch = Batch::default();
            if let Err(held) = self.take_leases(&mut batch, hosts.iter().map(String::as_str), me, &|_| false)? {
                return Ok(Err(held));
            }
            // A lease that changed between the read and the write: read again.
            if self.kv.commit(batch)? {
                return Ok(Ok(()));
            }
        }
    }

    /// Who holds `host`, if anyone.
    pub fn lease(&self, host: &str) -> Result<Option<Holder>> {
        self.kv
            .get(&key(LEASES, host.as_bytes()))?
            .map(|v| decode::<pb::LeaseRecord>("leases", &v).map(|l| Holder::of(&l)))
            .transpose()
    }

    /// Every lease, by host.
    pub fn leases(&self) -> impl Iterator<Item = Result<(String, Holder)>> + use<> {
        backend::scan_prefix(self.kv.as_ref(), LEASES).map(|kv| {
            let (k, v) = kv?;
            let lease: pb::LeaseRecord = decode("leases", &v)?;
            Ok((
                String::from_utf8_lossy(&k[LEASES.len()..]).into_owned(),
                Holder::of(&lease),
            ))
        })
    }

    /// Gives up `holder`'s leases on `hosts`; a host someone else holds now (it was
    /// preempted) is left alone. Durable at the next flush.
    pub fn release_leases<'a>(&self, holder: &Holder, hosts: impl Iterator<Item = &'a str>) -> Result<()> {
        let mine = holder.lease().encode_to_vec();
        let hosts: Vec<&str> = hosts.collect();
        for chunk in hosts.chunks(super::hosts::CHUNK) {
            // Usually every lease is still ours: one batch for the chunk. If one is
            // not, key by key, deleting only ours.
            let mut batch = Batch::default();
            for host in chunk {
                let k = key(LEASES, host.as_bytes());
                if self.kv.get(&k)?.as_deref() == Some(mine.as_slice()) {
                    batch.require_equals(k.clone(), mine.clone()).delete(k);
                }
            }
            if batch.is_empty() || self.kv.commit(batch)? {
                continue;
            }
            for host in chunk {
                let k = key(LEASES, host.as_bytes());
                let mut one = Batch::default();
                one.require_equals(k.clone(), mine.clone()).delete(k);
                self.kv.commit(one)?;
            }
        }
        Ok(())
    }
}
