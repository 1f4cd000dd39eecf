//! The seam under the domain store: an ordered key space with range scans and
//! atomic conditional batches, shaped after etcd's `Txn {compare, success}` so that
//! a remote store can implement it (it cannot run a closure of ours). sled is the
//! embedded backend ([`super::sled_backend`]); every backend passes
//! [`conformance`]'s suite.
//!
//! Keys are bytes, ordered bytewise; the domain store gives each kind of record a
//! prefix and big-endian numbers, so scans come out in the order it needs.

use futures::future::BoxFuture;

/// What a backend reports when it fails (not a condition that did not hold: that is
/// [`Backend::commit`]'s `Ok(false)`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend's storage failed (I/O, corruption, a lost connection).
    #[error("{0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// This controller's writes are fenced: another leads now (`leader`, its
    /// advertised URL, when the store names one). Not a failure of the store: the
    /// client should ask again, and reaches the new leader.
    #[error(
        "this controller is no longer the leader (its epoch {epoch} is over; {}): its writes are refused; ask again, and the new leader answers",
        leads_now(leader.as_deref())
    )]
    Fenced { epoch: u64, leader: Option<String> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who leads now, as a fenced write says it.
fn leads_now(leader: Option<&str>) -> String {
    match leader {
        Some(url) => format!("{url} leads now"),
        None => "no controller leads at this moment".into(),
    }
}

/// A condition of a batch, checked atomically with its writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key holds no value.
    Absent(Vec<u8>),
    /// The key holds exactly this value.
    Equals(Vec<u8>, Vec<u8>),
}

/// A write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Writes applied all together or not at all, and only if every condition holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub conditions: Vec<Condition>,
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Batch {
        self.ops.push(Op::Put(key.into(), value.into()));
        self
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Batch {
        self.ops.push(Op::Delete(key.into()));
        self
    }

    /// Only if `key` holds nothing.
    pub fn require_absent(&mut self, key: impl Into<Vec<u8>>) -> &mut Batch {
        self.conditions.push(Condition::Absent(key.into()));
        self
    }

    /// Only if `key` holds exactly `value`.
    pub fn require_equals(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Batch {
        self.conditions.push(Condition::Equals(key.into(), value.into()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.conditions.is_empty()
    }
}

/// Key-value pairs in key order (or reverse), read lazily.
pub type Pairs = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send>;

/// An ordered key space with atomic conditional batches.
pub trait Backend: Send + Sync + 'static {
    /// The value of `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The pairs with `start <= key < end` (no end: to the end of the key space),
    /// in key order, or from the last when `reverse`.
    fn range(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Pairs;

    /// Applies `batch` atomically if all its conditions hold: `Ok(true)`; if one does
    /// not, writes nothing: `Ok(false)`. Durable once [`Backend::flush`] returns.
    fn commit(&self, batch: Batch) -> Result<bool>;

    /// Makes every committed batch durable.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;

    /// The same, blocking the caller: for the rare steps that must be durable before
    /// the next write and run where nothing can wait (a migration, a checkpoint).
    fn flush_blocking(&self) -> Result<()>;
}

/// The smallest key greater than every key starting with `prefix` (None: there is
/// none, the prefix is all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The pairs whose key starts with `prefix`, in key order.
pub fn scan_prefix(backend: &dyn Backend, prefix: &[u8]) -> Pairs {
    backend.range(prefix, prefix_end(prefix).as_deref(), false)
}

/// The suite every backend must pass, run by each backend's tests: atomic batches,
/// a failed condition writes nothing, ordered (and reverse) range scans, and what
/// was flushed is there after the backend is reopened.
#[cfg(test)]
pub mod conformance {
    use super::*;

    fn kv(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
        (k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    fn all(pairs: Pairs) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs.map(|p| p.unwrap()).collect()
    }

    /// A batch lands whole: puts and deletes together.
    pub fn batches_are_atomic(b: &dyn Backend) {
        let mut batch = Batch::default();
        batch.put("a/1", "x").put("a/2", "y").put("a/3", "z");
        assert!(b.commit(batch).unwrap());
        let mut batch = Batch::default();
        batch.delete("a/2").put("a/4", "w");
        assert!(b.commit(batch).unwrap());
        assert_eq!(
            all(scan_prefix(b, b"a/")),
            vec![kv("a/1", "x"), kv("a/3", "z"), kv("a/4", "w")]
        );
        assert_eq!(b.get(b"a/2").unwrap(), None);
        assert_eq!(b.get(b"a/1").unwrap(), Some(b"x".to_vec()));
    }

    /// A condition that does not hold writes nothing of the batch; conditions that
    /// hold let it through.
    pub fn a_failed_condition_writes_nothing(b: &dyn Backend) {
        let mut batch = Batch::default();
        batch.put("c/lease", "mine");
        assert!(b.commit(batch).unwrap());
        let mut taken = Batch::default();
        taken
            .require_absent("c/lease")
            .put("c/lease", "theirs")
            .put("c/other", "1");
        assert!(!b.commit(taken).unwrap(), "the key is present");
        let mut stale = Batch::default();
        stale
            .require_equals("c/lease", "old")
            .delete("c/lease")
            .put("c/other", "2");
        assert!(!b.commit(stale).unwrap(), "the key holds another value");
        assert_eq!(b.get(b"c/lease").unwrap(), Some(b"mine".to_vec()));
        assert_eq!(b.get(b"c/other").unwrap(), None, "nothing of a refused batch");
        let mut fresh = Batch::default();
        fresh
            .require_equals("c/lease", "mine")
            .require_absent("c/other")
            .put("c/lease", "moved")
            .put("c/other", "3");
        assert!(b.commit(fresh).unwrap());
        assert_eq!(b.get(b"c/lease").unwrap(), Some(b"moved".to_vec()));
        assert_eq!(b.get(b"c/other").unwrap(), Some(b"3".to_vec()));
    }

    /// Ranges come out in key order (bytewise, big-endian numbers sort), bounded,
    /// and reversed on request; a prefix scan stays inside its prefix.
    pub fn ranges_are_ordered(b: &dyn Backend) {
        let mut batch = Batch::default();
        for n in [300u64, 2, 1 << 40, 70_000] {
            let mut key = b"n/".to_vec();
            key.extend_from_slice(&n.to_be_bytes());
            batch.put(key, n.to_string());
        }
        batch.put("m/z", "before").put("o/a", "after");
        assert!(b.commit(batch).unwrap());
        let values: Vec<String> = all(scan_prefix(b, b"n/"))
            .into_iter()
            .map(|(_, v)| String::from_utf8(v).unwrap())
            .collect();
        assert_eq!(values, ["2", "300", "70000", (1u64 << 40).to_string().as_str()]);
        let mut from = b"n/".to_vec();
        from.extend_from_slice(&300u64.to_be_bytes());
        let tail: Vec<Vec<u8>> = all(b.range(&from, prefix_end(b"n/").as_deref(), true))
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            tail,
            [
                (1u64 << 40).to_string().into_bytes(),
                b"70000".to_vec(),
                b"300".to_vec()
            ]
        );
        assert!(all(scan_prefix(b, b"zz/")).is_empty());
    }

    /// What was committed and flushed is there after a reopen (the process died).
    pub async fn flushed_batches_survive_a_reopen<B: Backend>(open: impl Fn() -> B) {
        {
            let b = open();
            let mut batch = Batch::default();
            batch.put("d/1", "kept").put("d/2", "kept too");
            assert!(b.commit(batch).unwrap());
            b.flush().await.unwrap();
        }
        let b = open();
        assert_eq!(
            all(scan_prefix(&b, b"d/")),
            vec![kv("d/1", "kept"), kv("d/2", "kept too")]
        );
    }

    #[test]
    fn prefix_ends_are_the_next_key() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }
}
