//! Reading a rollout's hosts: the snapshot's wave partitions merged back into host
//! id order with the newer updates applied over them (the API's pages, the health
//! gate, a full load), or only the partitions a resume from a counters checkpoint
//! still needs (the hosts in no wave yet and those of the later waves).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::super::backend::{self, Pairs};
use super::super::{Result, Store, as_u64, decode, key};
use super::{UPDATES, generation_prefix, lock, of_rollout, partition_prefix, update_key};
use crate::proto::v1 as pb;

/// A rollout's newer records by host, with the sequence of the batch that wrote each
/// (foldhash: the overlay of a million-host rollout is hashed a few million times at
/// a resume).
pub(super) type Newest<V> = HashMap<String, (u64, V), foldhash::fast::RandomState>;

/// Counts a reader while it lives.
struct Reading(Arc<AtomicUsize>);

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Snapshot rows, as chunks are read and decoded.
pub(super) type Rows = Box<dyn Iterator<Item = Result<pb::HostRow>> + Send>;

/// The rows of the snapshot chunks `chunks`, in their order.
pub(super) fn rows_of(mut chunks: Pairs) -> Rows {
    let mut rows = Vec::new().into_iter();
    Box::new(std::iter::from_fn(move || {
        loop {
            if let Some(row) = rows.next() {
                return Some(Ok(row));
            }
            let decoded = chunks
                .next()?
                .map_err(super::super::Error::from)
                .and_then(|(_, v)| decode::<pb::HostRows>("rollout_hosts", &v));
            match decoded {
                Ok(chunk) => rows = chunk.rows.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }))
}

/// Rows of several partitions (each in host id order) merged into host id order.
pub(super) fn merged(partitions: Vec<Rows>) -> Rows {
    let mut streams = partitions;
    let mut heads: BinaryHeap<Reverse<(String, usize)>> = BinaryHeap::new();
    let mut held: Vec<Option<pb::HostRow>> = vec![None; streams.len()];
    let mut failed: Option<super::super::Error> = None;
    for (i, stream) in streams.iter_mut().enumerate() {
        match stream.next() {
            Some(Ok(row)) => {
                heads.push(Reverse((row.host.clone(), i)));
                held[i] = Some(row);
            }
            Some(Err(e)) => failed = failed.or(Some(e)),
            None => {}
        }
    }
    Box::new(std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            return Some(Err(e));
        }
        let Reverse((_, i)) = heads.pop()?;
        let row = held[i].take()?;
        match streams[i].next() {
            Some(Ok(next)) => {
                heads.push(Reverse((next.host.clone(), i)));
                held[i] = Some(next);
            }
            Some(Err(e)) => failed = Some(e),
            None => {}
        }
        Some(Ok(row))
    }))
}

/// What a resume from a counters checkpoint reads: the hosts outside waves
/// `1..=through`, and whether a batch from `since` on touched a settled host.
struct Open {
    through: u32,
    since: u64,
    holds: bool,
}

impl Open {
    fn settled(&self, wave: u32) -> bool {
        (1..=self.through).contains(&wave)
    }
}

/// A rollout's hosts: snapshot rows with the newer updates applied, in host id order
/// (or, for a resume, only the unsettled ones, in no order).
pub struct RolloutHosts {
    rows: Rows,
    updates: Newest<pb::RolloutHostRecord>,
    after: String,
    failed: Option<super::super::Error>,
    open: Option<Open>,
    _reading: Option<Reading>,
}

impl RolloutHosts {
    fn new(after: &str, open: Option<Open>) -> RolloutHosts {
        RolloutHosts {
            rows: Box::new(std::iter::empty()),
            updates: Newest::default(),
            after: after.to_string(),
            failed: None,
            open,
            _reading: None,
        }
    }

    /// For a resume from a counters checkpoint, once every host was read: false when
    /// a batch written after the checkpoint touched a settled host, so the counters
    /// no longer add up (the caller reads every host instead).
    pub fn checkpoint_holds(&self) -> bool {
        match &self.open {
            None => false,
            Some(open) => open.holds && self.updates.values().all(|(seq, _)| *seq < open.since),
        }
    }
}

impl Iterator for RolloutHosts {
    type Item = Result<(String, pb::RolloutHostRecord)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        loop {
            let row = match self.rows.next()? {
                Ok(row) => row,
                Err(e) => return Some(Err(e)),
            };
            if row.host.as_str() <= self.after.as_str() {
                continue;
            }
            let (seq, record) = match self.updates.remove(&row.host) {
                Some((seq, newer)) => (Some(seq), newer),
                None => (None, row.record.unwrap_or_default()),
            };
            if let Some(open) = &mut self.open
                && open.settled(record.wave)
            {
                // Counted by the checkpoint, unless written after it.
                open.holds &= seq.is_none_or(|s| s < open.since);
                continue;
            }
            return Some(Ok((row.host, record)));
        }
    }
}

impl Store {
    /// All host records of a rollout, in host id order.
    pub fn rollout_hosts(&self, rollout: u64) -> RolloutHosts {
        self.rollout_hosts_after(rollout, "")
    }

    /// The host records of a rollout whose host id sorts after `after` ("": all), in
    /// host id order. A page of a million-host rollout reads each wave partition of
    /// the snapshot from the chunk that holds `after`, and the updates since the last
    /// checkpoint.
    pub fn rollout_hosts_after(&self, rollout: u64, after: &str) -> RolloutHosts {
        let mut hosts = RolloutHosts::new(after, None);
        if let Err(e) = self.open_hosts(rollout, &mut hosts) {
            hosts.failed = Some(e);
        }
        hosts
    }

    /// The host records a resume from a counters checkpoint needs: the hosts in no
    /// wave yet and those of waves after `through` (stored numbering), in no order.
    /// See [`RolloutHosts::checkpoint_holds`] once they are read.
    pub fn rollout_hosts_unsettled(&self, rollout: u64, through: u32, since: u64) -> RolloutHosts {
        let open = Open {
            through,
            since,
            holds: true,
        };
        let mut hosts = RolloutHosts::new("", Some(open));
        if let Err(e) = self.open_hosts(rollout, &mut hosts) {
            hosts.failed = Some(e);
        }
        hosts
    }

    fn open_hosts(&self, rollout: u64, hosts: &mut RolloutHosts) -> Result<()> {
        let book = self.books.of(rollout);
        let mut book = lock(&book);
        self.load_book(rollout, &mut book)?;
        let started = std::time::Instant::now();
        hosts.updates = self.updates(rollout, book.mark.through)?.0;
        tracing::debug!(
            rollout,
            updates = hosts.updates.len(),
            ms = started.elapsed().as_millis() as u64,
            "updates read"
        );
        book.readers.fetch_add(1, Ordering::SeqCst);
        hosts._reading = Some(Reading(book.readers.clone()));
        let generation = book.mark.generation;
        let mut partitions = Vec::new();
        for wave in self.partitions(rollout, generation)? {
            if hosts.open.as_ref().is_some_and(|open| open.settled(wave)) {
                continue;
            }
            let prefix = partition_prefix(rollout, generation, wave);
            let end = backend::prefix_end(&prefix);
            // The chunk holding `after`: the last whose first host is not after it.
            let mut start = prefix.clone();
            if !hosts.after.is_empty() {
                let mut past = key(&prefix, hosts.after.as_bytes());
                past.push(0);
                if let Some(found) = self.kv.range(&prefix, Some(&past), true).next() {
                    start = found?.0;
                }
            }
            partitions.push(rows_of(self.kv.range(&start, end.as_deref(), false)));
        }
        hosts.rows = if hosts.open.is_some() {
            Box::new(partitions.into_iter().flatten())
        } else {
            merged(partitions)
        };
        Ok(())
    }

    /// The waves a snapshot generation has a partition for, in order: one key read
    /// each.
    pub(super) fn partitions(&self, rollout: u64, generation: u32) -> Result<Vec<u32>> {
        let prefix = generation_prefix(rollout, generation);
        let end = backend::prefix_end(&prefix);
        let mut waves = Vec::new();
        let mut from = prefix.clone();
        while let Some(kv) = self.kv.range(&from, end.as_deref(), false).next() {
            let (k, _) = kv?;
            let Some(wave) = k
                .get(prefix.len()..prefix.len() + 4)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
            else {
                break;
            };
            waves.push(wave);
            match wave.checked_add(1) {
                Some(next) => from = partition_prefix(rollout, generation, next),
                None => break,
            }
        }
        Ok(waves)
    }

    /// Host ids of a rollout (its selection), for finding hosts it holds.
    pub fn rollout_host_ids(&self, rollout: u64) -> Result<Vec<String>> {
        self.rollout_hosts(rollout).map(|row| Ok(row?.0)).collect()
    }

    /// The sequence the next batch of a rollout's host updates will have: what a
    /// counters checkpoint taken now records as `since_update`.
    pub fn next_host_update(&self, rollout: u64) -> Result<u64> {
        let book = self.books.of(rollout);
        let mut book = lock(&book);
        self.load_book(rollout, &mut book)?;
        Ok(book.next)
    }

    /// The updates of a rollout after sequence `through`, newest per host, and the
    /// last sequence read.
    pub(super) fn updates(&self, rollout: u64, through: u64) -> Result<(Newest<pb::RolloutHostRecord>, u64)> {
        self.updates_as(rollout, through, |record| record)
    }

    /// The same, each record kept as `keep` makes it (a checkpoint keeps them encoded:
    /// a third of the memory of a million decoded records).
    pub(super) fn updates_as<V>(
        &self,
        rollout: u64,
        through: u64,
        keep: impl Fn(pb::RolloutHostRecord) -> V,
    ) -> Result<(Newest<V>, u64)> {
        let prefix = of_rollout(UPDATES, rollout);
        let mut newest = HashMap::default();
        let mut last = through;
        for kv in self.kv.range(
            &update_key(rollout, through + 1),
            backend::prefix_end(&prefix).as_deref(),
            false,
        ) {
            let (k, v) = kv?;
            let seq = as_u64(&k[prefix.len()..]).unwrap_or(last);
            last = seq;
            let batch: pb::HostRows = decode("rollout_hosts", &v)?;
            for row in batch.rows {
                newest.insert(row.host, (seq, keep(row.record.unwrap_or_default())));
            }
        }
        Ok((newest, last))
    }
}
