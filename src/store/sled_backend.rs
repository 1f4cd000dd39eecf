//! The embedded backend: one sled tree holds the whole key space. A conditional
//! batch is a sled transaction that checks its conditions, then writes. The only
//! file of the crate that uses sled.

use std::path::Path;

use futures::future::BoxFuture;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::backend::{Backend, Batch, Condition, Error, Op, Pairs, Result};

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Error {
        Error::Storage(Box::new(e))
    }
}

/// How long a lock held by a database just closed is waited for: 50 x 100 ms.
const LOCK_TRIES: u32 = 50;
const LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// The tree of the key space; older data dirs (schema 2) had a tree per record kind.
const TREE: &str = "kv";

/// sled behind the [`Backend`] seam. Cheap to clone.
#[derive(Clone)]
pub struct SledBackend {
    db: sled::Db,
    kv: sled::Tree,
    /// In memory, gone on drop: nothing to make durable, so a flush is done in
    /// place. Tests on tokio's paused clock rely on it: awaiting sled's flusher
    /// thread leaves the runtime idle, and the paused clock would jump ahead (a bake
    /// or a gate's timeout passing) while the store flushed.
    temporary: bool,
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`; fails if another process has it.
    /// A database just closed may still be locked for a moment (sled's flusher lets
    /// go of it after the close returns; a controller restarting in place, or a
    /// previous process still exiting): the lock is tried again for a few seconds.
    pub fn open(dir: &Path) -> Result<SledBackend> {
        let mut tries = 0;
        loop {
            let opened = sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(64 * 1024 * 1024)
                .open();
            match opened {
                Ok(db) => return SledBackend::from_db(db),
                Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && tries < LOCK_TRIES => {
                    tries += 1;
                    std::thread::sleep(LOCK_PAUSE);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A database in memory that vanishes on drop, for tests.
    pub fn temporary() -> Result<SledBackend> {
        let mut backend = SledBackend::from_db(sled::Config::new().temporary(true).open()?)?;
        backend.temporary = true;
        Ok(backend)
    }

    fn from_db(db: sled::Db) -> Result<SledBackend> {
        let kv = db.open_tree(TREE)?;
        Ok(SledBackend {
            db,
            kv,
            temporary: false,
        })
    }

    /// The trees of a schema 2 data dir, by name, for the migration to one key space:
    /// every pair of each, then the tree is dropped with [`SledBackend::drop_legacy`].
    pub fn legacy_trees(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .filter(|n| n != TREE && n != "__sled__default")
            .collect()
    }

    /// The pairs of a legacy tree, in key order.
    pub fn legacy_pairs(&self, name: &str) -> Result<Pairs> {
        let tree = self.db.open_tree(name)?;
        Ok(Box::new(tree.iter().map(|kv| {
            kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from)
        })))
    }

    /// Drops a legacy tree once its pairs are copied and flushed.
    pub fn drop_legacy(&self, name: &str) -> Result<()> {
        self.db.drop_tree(name)?;
        Ok(())
    }
}

impl Backend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.kv.get(key)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Pairs {
        let iter = match end {
            Some(end) => self.kv.range(start.to_vec()..end.to_vec()),
            None => self.kv.range(start.to_vec()..),
        };
        let pairs =
            |kv: sled::Result<(sled::IVec, sled::IVec)>| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(Error::from);
        if reverse {
            Box::new(iter.rev().map(pairs))
        } else {
            Box::new(iter.map(pairs))
        }
    }

    fn commit(&self, batch: Batch) -> Result<bool> {
        if batch.conditions.is_empty() {
            // No condition: one atomic batch, cheaper than a transaction.
            let mut writes = sled::Batch::default();
            for op in batch.ops {
                match op {
                    Op::Put(k, v) => writes.insert(k, v),
                    Op::Delete(k) => writes.remove(k),
                }
            }
            self.kv.apply_batch(writes)?;
            return Ok(true);
        }
        let result: std::result::Result<(), TransactionError<()>> = self.kv.transaction(|tx| {
            for condition in &batch.conditions {
                let holds = match condition {
                    Condition::Absent(k) => tx.get(k)?.is_none(),
                    Condition::Equals(k, v) => tx.get(k)?.is_some_and(|have| have.as_ref() == v.as_slice()),
                };
                if !holds {
                    return Err(ConflictableTransactionError::Abort(()));
                }
            }
            for op in &batch.ops {
                match op {
                    Op::Put(k, v) => {
                        tx.insert(k.as_slice(), v.as_slice())?;
                    }
                    Op::Delete(k) => {
                        tx.remove(k.as_slice())?;
                    }
                }
            }
            Ok(())
        });
        match result {
            Ok(()) => Ok(true),
            Err(TransactionError::Abort(())) => Ok(false),
            Err(TransactionError::Storage(e)) => Err(e.into()),
        }
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.temporary {
                self.db.flush()?;
            } else {
                self.db.flush_async().await?;
            }
            Ok(())
        })
    }

    fn flush_blocking(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

/// A tree of an old data dir: its name and its pairs.
#[cfg(test)]
pub type LegacyTree<'a> = (&'a str, Vec<(Vec<u8>, Vec<u8>)>);

/// Writes a data dir the way schema 2 (or 1) did, a sled tree per record kind, for
/// migration tests.
#[cfg(test)]
pub fn write_legacy_trees(dir: &Path, trees: &[LegacyTree<'_>]) {
    let db = sled::open(dir).unwrap();
    for (name, pairs) in trees {
        let tree = db.open_tree(name).unwrap();
        for (k, v) in pairs {
            tree.insert(k.as_slice(), v.as_slice()).unwrap();
        }
    }
    db.flush().unwrap();
}

#[cfg(test)]
mod tests {
    use super::super::backend::conformance;
    use super::*;

    #[test]
    fn sled_keeps_batches_atomic() {
        conformance::batches_are_atomic(&SledBackend::temporary().unwrap());
    }

    #[test]
    fn sled_writes_nothing_when_a_condition_fails() {
        conformance::a_failed_condition_writes_nothing(&SledBackend::temporary().unwrap());
    }

    #[test]
    fn sled_scans_in_order() {
        conformance::ranges_are_ordered(&SledBackend::temporary().unwrap());
    }

    #[tokio::test]
    async fn sled_keeps_what_was_flushed_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        conformance::flushed_batches_survive_a_reopen(|| SledBackend::open(&path).unwrap()).await;
    }
}
