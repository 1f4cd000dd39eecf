//! A rollout's hosts as grouped records: a snapshot in chunks and a log of update
//! batches over it, folded into a new snapshot (a checkpoint) when the log has grown
//! to twice the snapshot's size (a rollout writes about three updates per host: its
//! assignment, its intent, its result; so two or three checkpoints per rollout). The
//! hot path writes one value per batch of hosts, never one per host.
//!
//! Keys (numbers big-endian, so that scans come out in order):
//! - `rs` rollout id ++ generation (u32) ++ wave (u32) ++ first host id ->
//!   `HostRows`: the snapshot, every selected host once, partitioned by the wave it
//!   was in when the snapshot was written (0: none yet) and sorted by host id within
//!   a partition, [`CHUNK`] hosts per value. A host's wave never changes once it is
//!   placed in one, so a resume from the rollout's counters checkpoint reads only the
//!   partitions of the waves after it (`read.rs`). Creating the rollout writes
//!   generation 0 (every host pending, in partition 0).
//! - `ru` rollout id ++ sequence (u64) -> `HostRows`: one batch of updates (a wave's
//!   assignment, a dispatch batch's intents, the results of one flush).
//! - `rm` rollout id -> `HostsMark`: the current generation and the last update
//!   folded into it; absent means generation 0 and none.
//!
//! A host's record is its newest update after the mark, else its snapshot row.
//!
//! A checkpoint writes generation g+1 (g's rows with the updates applied), commits the
//! mark, makes it durable, and only then deletes the folded updates and generation g
//! (g waits while a reader still streams it). A crash before the mark leaves a
//! partial generation nobody reads, deleted at the next checkpoint or load; a crash
//! after it leaves folded updates that readers skip and the next load deletes.

mod read;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prost::Message;

pub use read::RolloutHosts;
use read::{Rows, rows_of};

use super::backend::{self, Batch};
use super::{MAX_VALUE, PUT_BATCH, Result, Store, as_u64, decode, key, off_the_runtime};
use crate::proto::v1 as pb;

/// Hosts per snapshot chunk (and per creation batch, with their leases): a
/// million-host rollout is a few hundred values of a few hundred KB, well under a
/// remote store's request limit.
pub(super) const CHUNK: usize = 4_096;

/// Below this many bytes of updates a rollout is never checkpointed: small rollouts
/// would rewrite their snapshot for nothing.
const MIN_CHECKPOINT: u64 = 256 << 10;

const SNAPSHOT: &[u8] = b"rs";
const UPDATES: &[u8] = b"ru";
const MARK: &[u8] = b"rm";

/// `prefix` ++ rollout id.
fn of_rollout(prefix: &[u8], id: u64) -> Vec<u8> {
    key(prefix, &id.to_be_bytes())
}

/// The keys of one snapshot generation of a rollout.
fn generation_prefix(id: u64, generation: u32) -> Vec<u8> {
    let mut k = of_rollout(SNAPSHOT, id);
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// The keys of one wave's partition of a snapshot generation.
fn partition_prefix(id: u64, generation: u32, wave: u32) -> Vec<u8> {
    key(&generation_prefix(id, generation), &wave.to_be_bytes())
}

fn update_key(id: u64, seq: u64) -> Vec<u8> {
    key(&of_rollout(UPDATES, id), &seq.to_be_bytes())
}

/// A chunk of a snapshot's partition for `wave`, keyed by its first host.
fn chunk(id: u64, generation: u32, wave: u32, rows: Vec<pb::HostRow>) -> (Vec<u8>, Vec<u8>) {
    let first = rows.first().map_or("", |r| r.host.as_str());
    let k = key(&partition_prefix(id, generation, wave), first.as_bytes());
    (k, pb::HostRows { rows, log_bytes: 0 }.encode_to_vec())
}

/// Generation 0 of a new rollout, one chunk: `hosts` (sorted by id) pending, each
/// with its target version ("" for the plan's own).
pub(super) fn selection_chunk(id: u64, hosts: &[(&str, &str)]) -> (Vec<u8>, Vec<u8>) {
    let rows: Vec<pb::HostRow> = hosts
        .iter()
        .map(|(host, version)| pb::HostRow {
            host: host.to_string(),
            record: Some(pb::RolloutHostRecord {
                state: pb::HostState::Pending as i32,
                version: version.to_string(),
                ..Default::default()
            }),
        })
        .collect();
    chunk(id, 0, 0, rows)
}

/// What the store knows of one rollout's grouped records, loaded at first use.
#[derive(Default)]
pub(super) struct Book {
    loaded: bool,
    mark: pb::HostsMark,
    /// The sequence of the next batch of updates.
    next: u64,
    /// Bytes of updates after the mark, and of the current snapshot.
    log_bytes: u64,
    snapshot_bytes: u64,
    /// Readers streaming a snapshot now: an old generation waits for them.
    readers: Arc<AtomicUsize>,
    /// Old generations to delete once no reader streams them.
    stale: Vec<u32>,
}

/// Every rollout's [`Book`]; one lock per rollout serialises its writers.
#[derive(Default)]
pub(super) struct Books(Mutex<HashMap<u64, Arc<Mutex<Book>>>>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Books {
    fn of(&self, id: u64) -> Arc<Mutex<Book>> {
        lock(&self.0).entry(id).or_default().clone()
    }
}

impl Store {
    /// Records updates of hosts of `rollout` (group commit): one value per
    /// [`PUT_BATCH`] hosts, usually one for the whole call. Checkpoints the rollout
    /// when its updates have grown to twice its snapshot. Durable once `flush` returns.
    pub fn put_hosts<'a>(
        &self,
        rollout: u64,
        records: impl IntoIterator<Item = (&'a str, &'a pb::RolloutHostRecord)>,
    ) -> Result<()> {
        let book = self.books.of(rollout);
        let mut book = lock(&book);
        self.load_book(rollout, &mut book)?;
        let mut rows = Vec::new();
        let mut bytes = 0;
        for (host, record) in records {
            let row = pb::HostRow {
                host: host.to_string(),
                record: Some(record.clone()),
            };
            bytes += row.encoded_len();
            rows.push(row);
            if rows.len() == PUT_BATCH || bytes >= MAX_VALUE {
                self.append(rollout, &mut book, std::mem::take(&mut rows))?;
                bytes = 0;
            }
        }
        if !rows.is_empty() {
            self.append(rollout, &mut book, rows)?;
        }
        self.sweep(rollout, &mut book)?;
        if book.log_bytes > MIN_CHECKPOINT && book.log_bytes > 2 * book.snapshot_bytes {
            off_the_runtime(|| self.checkpoint(rollout, &mut book))?;
        }
        Ok(())
    }

    fn append(&self, rollout: u64, book: &mut Book, rows: Vec<pb::HostRow>) -> Result<()> {
        let mut batch = pb::HostRows { rows, log_bytes: 0 };
        // The log's size with this batch (its own size less the few bytes of this field).
        batch.log_bytes = book.log_bytes + batch.encoded_len() as u64;
        let value = batch.encode_to_vec();
        book.log_bytes = batch.log_bytes;
        let mut batch = Batch::default();
        batch.put(update_key(rollout, book.next), value);
        book.next += 1;
        self.write(batch, "rollout_hosts")
    }

    /// Reads a rollout's mark and sizes the first time it is used, and deletes what a
    /// crash left behind: partial or old generations, updates already folded.
    fn load_book(&self, rollout: u64, book: &mut Book) -> Result<()> {
        if book.loaded {
            return Ok(());
        }
        book.mark = self
            .kv
            .get(&of_rollout(MARK, rollout))?
            .map(|v| decode("rollout_hosts", &v))
            .transpose()?
            .unwrap_or_default();
        // Generations other than the mark's: older ones a crash kept from being
        // swept, the next one a crash cut short. One key read each.
        let current = book.mark.generation;
        for generation in (0..current).chain([current + 1]) {
            let prefix = generation_prefix(rollout, generation);
            if backend::scan_prefix(self.kv.as_ref(), &prefix).next().is_some() {
                book.stale.push(generation);
            }
        }
        book.snapshot_bytes = book.mark.bytes;
        if current == 0 {
            // Never checkpointed: the selection as created.
            for kv in backend::scan_prefix(self.kv.as_ref(), &generation_prefix(rollout, 0)) {
                book.snapshot_bytes += kv?.1.len() as u64;
            }
        }
        // The last batch says how large the log is; batches a checkpoint folded but a
        // crash kept from being deleted come before the mark's.
        book.next = book.mark.through + 1;
        let updates = of_rollout(UPDATES, rollout);
        let end = backend::prefix_end(&updates);
        if let Some(kv) = self.kv.range(&updates, end.as_deref(), true).next() {
            let (k, v) = kv?;
            let seq = as_u64(&k[updates.len()..]).unwrap_or(0);
            if seq > book.mark.through {
                book.next = seq + 1;
                book.log_bytes = decode::<pb::HostRows>("rollout_hosts", &v)?.log_bytes;
            }
        }
        let folded = self
            .kv
            .range(&updates, Some(&update_key(rollout, book.mark.through + 1)), false)
            .map(|kv| kv.map(|(k, _)| k))
            .collect::<backend::Result<Vec<_>>>()?;
        self.delete_keys(folded)?;
        book.loaded = true;
        self.sweep(rollout, book)
    }

    /// Deletes old generations nobody reads any more.
    fn sweep(&self, rollout: u64, book: &mut Book) -> Result<()> {
        if book.stale.is_empty() || book.readers.load(Ordering::SeqCst) > 0 {
            return Ok(());
        }
        for generation in std::mem::take(&mut book.stale) {
            self.delete_prefix(&generation_prefix(rollout, generation))?;
        }
        Ok(())
    }

    /// Folds the updates into a new snapshot generation (see the module's doc).
    fn checkpoint(&self, rollout: u64, book: &mut Book) -> Result<()> {
        let (mut updates, through) = self.updates_as(rollout, book.mark.through, |r| r.encode_to_vec())?;
        let old = book.mark.generation;
        let new = old + 1;
        // What a checkpoint cut short by a crash wrote of this generation is no longer
        // to be swept: it is about to be written again.
        book.stale.retain(|g| *g != new);
        let rows = self.snapshot_rows(rollout, old)?.map(|row| {
            let mut row = row?;
            if let Some((_, newer)) = updates.remove(&row.host) {
                row.record = Some(decode("rollout_hosts", &newer)?);
            }
            Ok(row)
        });
        let bytes = self.write_generation(rollout, new, rows)?;
        if !updates.is_empty() {
            tracing::warn!(
                rollout,
                hosts = updates.len(),
                "updates of hosts outside the selection dropped"
            );
        }
        let mark = pb::HostsMark {
            generation: new,
            through,
            bytes,
            waves: true,
        };
        self.set_mark(rollout, &mark)?;
        let folded: Vec<Vec<u8>> = self
            .kv
            .range(&update_key(rollout, 0), Some(&update_key(rollout, through + 1)), false)
            .map(|kv| kv.map(|(k, _)| k))
            .collect::<backend::Result<_>>()?;
        self.delete_keys(folded)?;
        tracing::debug!(rollout, generation = new, bytes, "hosts checkpointed");
        book.mark = mark;
        book.log_bytes = 0;
        book.snapshot_bytes = bytes;
        book.stale.push(old);
        self.sweep(rollout, book)
    }

    /// Writes snapshot generation `generation` of a rollout from `rows` (in host id
    /// order), partitioned by wave, [`CHUNK`] rows (or [`MAX_VALUE`] bytes) per value, after deleting what a
    /// write cut short by a crash left of it. Returns the bytes written. Nobody reads
    /// it before its mark.
    fn write_generation(
        &self,
        rollout: u64,
        generation: u32,
        rows: impl Iterator<Item = Result<pb::HostRow>>,
    ) -> Result<u64> {
        self.delete_prefix(&generation_prefix(rollout, generation))?;
        let mut bytes = 0;
        let mut write = |wave: u32, piece: Vec<pb::HostRow>| -> Result<()> {
            let (k, v) = chunk(rollout, generation, wave, piece);
            bytes += v.len() as u64;
            let mut batch = Batch::default();
            batch.put(k, v);
            self.write(batch, "rollout_hosts")
        };
        // Per wave: the rows of its next chunk, and their size.
        let mut pieces: BTreeMap<u32, (Vec<pb::HostRow>, usize)> = BTreeMap::new();
        for row in rows {
            let row = row?;
            let wave = row.record.as_ref().map_or(0, |r| r.wave);
            let (piece, bytes) = pieces.entry(wave).or_insert_with(|| (Vec::with_capacity(CHUNK), 0));
            *bytes += row.encoded_len();
            piece.push(row);
            if piece.len() == CHUNK || *bytes >= MAX_VALUE {
                let full = std::mem::replace(piece, Vec::with_capacity(CHUNK));
                *bytes = 0;
                write(wave, full)?;
            }
        }
        for (wave, (piece, _)) in pieces {
            if !piece.is_empty() {
                write(wave, piece)?;
            }
        }
        Ok(bytes)
    }

    /// Every row of a snapshot generation, in host id order.
    fn snapshot_rows(&self, rollout: u64, generation: u32) -> Result<Rows> {
        let partitions = self
            .partitions(rollout, generation)?
            .into_iter()
            .map(|wave| {
                rows_of(backend::scan_prefix(
                    self.kv.as_ref(),
                    &partition_prefix(rollout, generation, wave),
                ))
            })
            .collect();
        Ok(read::merged(partitions))
    }

    /// Makes `mark` a rollout's current generation, durable before anything folded
    /// into it is deleted.
    fn set_mark(&self, rollout: u64, mark: &pb::HostsMark) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(of_rollout(MARK, rollout), mark.encode_to_vec());
        self.write(batch, "rollout_hosts")?;
        self.kv.flush_blocking()?;
        Ok(())
    }

    /// Deletes a rollout's host records (a creation that was refused).
    pub(super) fn forget_rollout_hosts(&self, rollout: u64) -> Result<()> {
        for prefix in [SNAPSHOT, UPDATES, MARK] {
            self.delete_prefix(&of_rollout(prefix, rollout))?;
        }
        lock(&self.books.0).remove(&rollout);
        Ok(())
    }

    /// Deletes every key under `prefix`, in batches.
    pub(super) fn delete_prefix(&self, prefix: &[u8]) -> Result<()> {
        let keys = backend::scan_prefix(self.kv.as_ref(), prefix)
            .map(|kv| kv.map(|(k, _)| k))
            .collect::<backend::Result<Vec<_>>>()?;
        self.delete_keys(keys)
    }

    pub(super) fn delete_keys(&self, keys: Vec<Vec<u8>>) -> Result<()> {
        for keys in keys.chunks(PUT_BATCH) {
            let mut batch = Batch::default();
            for k in keys {
                batch.delete(k.clone());
            }
            self.write(batch, "rollout_hosts")?;
        }
        Ok(())
    }

    /// Schema 3 kept a row per host (`rh` rollout id ++ host id): each rollout's rows
    /// become snapshot generation 1, with its mark, then the rows are deleted. A crash
    /// before the mark redoes the rollout; after it, only the deletion.
    pub(super) fn migrate_host_rows(&self, legacy: &[u8]) -> Result<()> {
        let mut rollouts = Vec::new();
        for kv in backend::scan_prefix(self.kv.as_ref(), legacy) {
            let (k, _) = kv?;
            if let Some(id) = k.get(legacy.len()..legacy.len() + 8).and_then(as_u64)
                && rollouts.last() != Some(&id)
            {
                rollouts.push(id);
            }
        }
        for id in rollouts {
            let rows = of_rollout(legacy, id);
            if self.kv.get(&of_rollout(MARK, id))?.is_none() {
                let legacy_rows = backend::scan_prefix(self.kv.as_ref(), &rows).map(|kv| {
                    let (k, v) = kv?;
                    Ok(pb::HostRow {
                        host: String::from_utf8_lossy(&k[rows.len()..]).into_owned(),
                        record: Some(decode("rollout_hosts", &v)?),
                    })
                });
                let bytes = self.write_generation(id, 1, legacy_rows)?;
                let mark = pb::HostsMark {
                    generation: 1,
                    through: 0,
                    bytes,
                    waves: true,
                };
                self.set_mark(id, &mark)?;
            }
            self.delete_prefix(&rows)?;
        }
        Ok(())
    }

    /// Schema 4 kept a snapshot generation as one run of chunks in host id order:
    /// each rollout's current generation becomes the next one, partitioned by wave,
    /// with its mark. A crash before the mark redoes the rollout; after it, the mark
    /// says so and the old generation is swept at its first use.
    pub(super) fn migrate_flat_generations(&self) -> Result<()> {
        let mut from = SNAPSHOT.to_vec();
        let end = backend::prefix_end(SNAPSHOT);
        while let Some(kv) = self.kv.range(&from, end.as_deref(), false).next() {
            let (k, _) = kv?;
            let Some(id) = k.get(SNAPSHOT.len()..SNAPSHOT.len() + 8).and_then(as_u64) else {
                break;
            };
            let mark: pb::HostsMark = self
                .kv
                .get(&of_rollout(MARK, id))?
                .map(|v| decode("rollout_hosts", &v))
                .transpose()?
                .unwrap_or_default();
            if !mark.waves {
                let old = mark.generation;
                let rows = rows_of(backend::scan_prefix(self.kv.as_ref(), &generation_prefix(id, old)));
                let bytes = self.write_generation(id, old + 1, rows)?;
                let new = pb::HostsMark {
                    generation: old + 1,
                    bytes,
                    waves: true,
                    ..mark
                };
                self.set_mark(id, &new)?;
                self.delete_prefix(&generation_prefix(id, old))?;
            }
            match id.checked_add(1) {
                Some(next) => from = of_rollout(SNAPSHOT, next),
                None => break,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
