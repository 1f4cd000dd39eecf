//! The controller's durable state: the domain store the engine calls, over a small
//! backend seam.
//!
//! - [`backend`]: the seam, an ordered key space with range scans and atomic
//!   conditional batches (etcd's `Txn` shape), and the conformance suite every
//!   backend passes; [`sled_backend`]: sled behind it, the embedded default and the
//!   only file that uses sled; [`etcd_backend`]: etcd behind it (`--store
//!   etcd://...`), the only file that talks to etcd;
//! - this file: opening, migrating, ids, flushing and the audit log;
//!   [`records`]: rollouts, restart jobs and their hosts, request ids, the inventory;
//!   [`hosts`]: a rollout's hosts as grouped records (a snapshot in chunks and a log
//!   of update batches, checkpointed); [`leases`]: who holds a host.
//!
//! One key space, a two-byte prefix per kind of record (records are prost messages
//! from `proto/rollout/v1/store.proto`, numbers big-endian so that keys sort):
//! - `ro` rollout id -> `RolloutRecord`; `rs`, `ru`, `rm`: its hosts, in chunks
//!   (see [`hosts`])
//! - `ib` hash bucket (u32, [`HOST_BUCKETS`] of them) -> `HostBucket` (the
//!   inventory's hosts: a million hosts are a few thousand values, compared and
//!   written in a moment); `ic` customer id -> `CustomerRecord`
//! - `rq` client request_id -> rollout id (and `action:`/`restart:`/`freeze:` ids)
//! - `ev` sequence -> `EventRecord`, the audit log
//! - `jo`, `jh`: restart jobs and their hosts, like `ro` and `rh`
//! - `lc` holder ++ version ++ part -> `LeaseChunk`: hosts an active rollout or job
//!   holds (see [`leases`])
//! - `am` rollout id ++ sequence -> `Measurement`: its analysis, measured during bakes
//! - `fz` freeze id -> `Freeze`: the freezes people set (see [`freezes`])
//! - `me`: schema version, the id counter, the lease version, the store's instance name
//!
//! A rollout is created in batches of a few thousand hosts, each with one chunk of
//! its selection and those hosts' leases, conditioned on the leases being as read
//! (the lease check); then a last batch with its record, request id and audit line:
//! the commit point. Later writes are grouped: a dispatch batch's intents are one
//! value and one flush, a flush's results one value.

mod backend;
pub mod etcd_backend;
mod freezes;
mod hosts;
mod leases;
mod measurements;
mod outbox;
mod records;
mod sled_backend;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message;

pub use backend::{Backend, Batch, prefix_end};
pub use hosts::RolloutHosts;
pub use leases::{Held, Holder};
pub use outbox::Subject;
use sled_backend::SledBackend;

use crate::proto::v1 as pb;

/// 5: a rollout's snapshot partitioned by wave (4: its hosts and leases in grouped
/// records; 3: a row and a lease key per host; 2: a sled tree per kind; 1: a key per
/// inventory host instead of buckets).
pub const SCHEMA_VERSION: u32 = 5;

/// Buckets of the inventory's hosts: about 250 hosts (30 KB) each at a million hosts;
/// a registration rewrites one bucket.
pub const HOST_BUCKETS: u32 = 4_096;

/// Writes per batch when many records are written together: one batch over a
/// 500,000-host wave held gigabytes in sled.
const PUT_BATCH: usize = 8_192;

/// The most bytes of records one value holds (a chunk of a rollout's hosts, a batch
/// of their updates): a remote backend takes a request of 1.5 MiB at most (etcd), and
/// a host's record can carry a long failure detail.
const MAX_VALUE: usize = 1 << 20;

/// Subjects the outbox's signal holds for a receiver that lags (it then looks at
/// every subject).
const OUTBOX_SIGNAL: usize = 1_024;

// Prefixes of two bytes: a million-host rollout has two million keys, and every
// byte of a key is stored with each of them.
const ROLLOUTS: &[u8] = b"ro";
/// Schema 3's rows, a key per host of a rollout, folded into chunks at open.
const LEGACY_ROLLOUT_HOSTS: &[u8] = b"rh";
const HOSTS: &[u8] = b"ib";
const CUSTOMERS: &[u8] = b"ic";
const REQUESTS: &[u8] = b"rq";
const EVENTS: &[u8] = b"ev";
const JOBS: &[u8] = b"jo";
const JOB_HOSTS: &[u8] = b"jh";
/// Schema 3's leases, a key per host, folded into chunks at open.
const LEGACY_LEASES: &[u8] = b"le";
const META: &[u8] = b"me";
/// Schema 1's inventory: a key per host, folded into buckets at open.
const LEGACY_HOSTS: &[u8] = b"ih";

/// Where each sled tree of a schema 2 (or 1) data dir goes in the key space.
const LEGACY_TREES: [(&str, &[u8]); 11] = [
    ("rollouts", ROLLOUTS),
    ("rollout_hosts", LEGACY_ROLLOUT_HOSTS),
    ("host_buckets", HOSTS),
    ("customers", CUSTOMERS),
    ("requests", REQUESTS),
    ("events", EVENTS),
    ("restart_jobs", JOBS),
    ("restart_hosts", JOB_HOSTS),
    ("leases", LEGACY_LEASES),
    ("meta", META),
    ("hosts", LEGACY_HOSTS),
];

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend reported an I/O or corruption error.
    #[error("store: {0}")]
    Backend(#[from] backend::Error),
    /// A record could not be decoded: the data dir is damaged or from another program.
    #[error("store: record in `{kind}` cannot be decoded: {source}")]
    Decode {
        kind: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// The data dir was written by a newer controller.
    #[error("store: data written by schema version {found}, this controller knows {SCHEMA_VERSION}: upgrade rollout")]
    Schema { found: u32 },
    /// The data dir is locked by another running controller, or cannot be opened.
    #[error("store: {path} {why}")]
    Locked { path: String, why: String },
    /// A write that cannot be refused was refused: another writer changed the key.
    #[error("store: a concurrent write changed `{0}`; retry")]
    Conflict(String),
    /// `rollout store copy` into a place that already holds a store.
    #[error("store: {0} already holds a store; copy into an empty prefix (or delete that one first)")]
    Occupied(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A write refused because another controller leads now (a deposed leader's).
    pub fn is_fenced(&self) -> bool {
        matches!(self, Error::Backend(backend::Error::Fenced { .. }))
    }

    /// A deposed leader's refused write, as the etcd backend reports it.
    #[cfg(test)]
    pub(crate) fn fenced(epoch: u64, leader: Option<&str>) -> Error {
        let leader = leader.map(str::to_string);
        Error::Backend(backend::Error::Fenced { epoch, leader })
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    kv: Arc<dyn Backend>,
    /// What is known of each rollout's grouped host records.
    books: Arc<hosts::Books>,
    /// Who holds which host, read once from the lease chunks.
    leases: Arc<std::sync::Mutex<leases::Index>>,
    /// Batches written since open.
    writes: Arc<AtomicU64>,
    /// This store's own name, made when it was created (see [`Store::instance`]).
    instance: Arc<str>,
    /// The next audit log sequence number (this controller is the log's only writer).
    events: Arc<AtomicU64>,
    /// The controller writing (its advertised URL), named in each audit log line;
    /// empty with a data dir, which one controller holds.
    writer: Arc<str>,
    /// The controller named in notifications as the one that acted: the writer, or
    /// with a data dir the controller's own URL.
    acting: Arc<str>,
    /// Subjects whose notifications a committed batch wrote (see `notices`).
    outbox_signal: tokio::sync::broadcast::Sender<outbox::Subject>,
}

/// Runs a long synchronous store operation (a batch over every host of a big
/// rollout) without stalling the other tasks of the runtime's worker: on the
/// multi-threaded runtime the worker hands its tasks over first.
pub(crate) fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn decode<M: Message + Default>(kind: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|source| Error::Decode { kind, source })
}

/// `prefix` ++ `tail`.
fn key(prefix: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + tail.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(tail);
    key
}

/// `prefix` ++ id (u64 BE) ++ `host`: a host of a rollout or job.
fn host_key(prefix: &[u8], id: u64, host: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8 + host.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(&id.to_be_bytes());
    key.extend_from_slice(host.as_bytes());
    key
}

fn as_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// Why a data dir could not be opened, and the fix, in words (sled says it with a
/// Rust debug struct: `Os { code: 11, kind: WouldBlock, .. }`).
fn unopened(sled: &str) -> String {
    if sled.contains("could not acquire lock") {
        "is in use by another controller (its lock is held): stop that `rollout serve`, or give this one another --data"
            .to_string()
    } else if sled.contains("PermissionDenied") || sled.contains("Permission denied") {
        "cannot be opened (permission denied): run as the user that owns it, or give another --data".to_string()
    } else {
        let said = sled.split(": Os {").next().unwrap_or(sled);
        format!(
            "cannot be opened ({}): check the directory, or give another --data",
            crate::text::one_line(said)
        )
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, migrating an older data dir.
    pub fn open(dir: &Path) -> Result<Store> {
        let sled = SledBackend::open(dir).map_err(|source| Error::Locked {
            path: dir.display().to_string(),
            why: unopened(&source.to_string()),
        })?;
        migrate_legacy_trees(&sled)?;
        Store::with_backend(Arc::new(sled))
    }

    /// Opens the store under a prefix of an etcd cluster, migrating it like a data dir.
    pub fn open_etcd(address: &etcd_backend::EtcdAddress) -> Result<Store> {
        let etcd = off_the_runtime(|| etcd_backend::EtcdBackend::connect(address))?;
        Store::with_backend(Arc::new(etcd))
    }

    /// Copies every record of this store into `target` (`rollout store copy`): in
    /// batches, the schema version last, so that a copy cut short is neither taken for
    /// a store nor refused when run again. `target` must not hold a store (`what`
    /// names it in the error). Returns how many keys were copied.
    pub fn copy_to(&self, target: &dyn Backend, what: &str) -> Result<u64> {
        let version = key(META, b"schema_version");
        if target.get(&version)?.is_some() {
            return Err(Error::Occupied(what.to_string()));
        }
        let mut batch = Batch::default();
        let (mut bytes, mut copied) = (0, 0);
        let mut last = None;
        for kv in self.kv.range(&[], None, false) {
            let (k, v) = kv?;
            copied += 1;
            if k == version {
                last = Some(v);
                continue;
            }
            bytes += k.len() + v.len();
            batch.put(k, v);
            if batch.ops.len() == PUT_BATCH || bytes >= MAX_VALUE {
                target.commit(std::mem::take(&mut batch))?;
                bytes = 0;
            }
        }
        target.commit(batch)?;
        if let Some(v) = last {
            let mut batch = Batch::default();
            batch.put(version, v);
            target.commit(batch)?;
        }
        target.flush_blocking()?;
        Ok(copied)
    }

    /// A store that lives in memory and vanishes on drop, for tests.
    pub fn temporary() -> Result<Store> {
        Store::with_backend(Arc::new(SledBackend::temporary()?))
    }

    /// The store over any backend (tests wrap one to watch what is written).
    pub fn with_backend(kv: Arc<dyn Backend>) -> Result<Store> {
        let last_event = kv
            .range(EVENTS, backend::prefix_end(EVENTS).as_deref(), true)
            .next()
            .transpose()?
            .and_then(|(k, _)| as_u64(&k[EVENTS.len()..]));
        let store = Store {
            kv,
            books: Arc::default(),
            leases: Arc::default(),
            writes: Arc::default(),
            instance: Arc::from(""),
            events: Arc::new(AtomicU64::new(last_event.map_or(0, |n| n + 1))),
            writer: Arc::from(""),
            acting: Arc::from(""),
            outbox_signal: tokio::sync::broadcast::channel(OUTBOX_SIGNAL).0,
        };
        store.migrate()?;
        let instance = store.load_instance()?;
        Ok(Store {
            instance: Arc::from(instance),
            ..store
        })
    }

    /// This store's own name: eight random base-36 characters made once, when the
    /// store is first opened, kept by `store copy` and shared by every controller of
    /// one etcd store. New operation ids carry it, so that a store made afresh never
    /// reuses an id a host already ran (and would only replay).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn load_instance(&self) -> Result<String> {
        let name = key(META, b"instance");
        loop {
            if let Some(v) = self.kv.get(&name)? {
                return Ok(String::from_utf8_lossy(&v).into_owned());
            }
            let mut n: u64 = rand::random();
            let made: String = (0..8)
                .map(|_| {
                    let d = (n % 36) as u32;
                    n /= 36;
                    char::from_digit(d, 36).unwrap_or('0')
                })
                .collect();
            let mut batch = Batch::default();
            batch.require_absent(name.clone());
            batch.put(name.clone(), made.clone().into_bytes());
            if self.commit(batch)? {
                return Ok(made);
            }
        }
    }

    fn schema_version(&self) -> Result<Option<u32>> {
        Ok(self
            .kv
            .get(&key(META, b"schema_version"))?
            .map(|v| v.as_slice().try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX)))
    }

    /// Brings the key space to [`SCHEMA_VERSION`]; a crash half-way redoes it at the
    /// next open (the version is written last).
    fn migrate(&self) -> Result<()> {
        let found = match self.schema_version()? {
            Some(v) if v > SCHEMA_VERSION => return Err(Error::Schema { found: v }),
            Some(v) => v,
            // Schema 1 wrote its version too; a key per inventory host is its mark.
            None if backend::scan_prefix(self.kv.as_ref(), LEGACY_HOSTS).next().is_some() => 1,
            // A new store: this version, written before anything else.
            None => 0,
        };
        if found == 1 {
            let hosts = backend::scan_prefix(self.kv.as_ref(), LEGACY_HOSTS)
                .map(|kv| decode("hosts", &kv?.1))
                .collect::<Result<Vec<pb::HostRecord>>>()?;
            let (_, customers) = self.inventory(|_| true)?;
            self.put_inventory(&hosts, &customers)?;
            let mut gone = Batch::default();
            for kv in backend::scan_prefix(self.kv.as_ref(), LEGACY_HOSTS) {
                gone.delete(kv?.0);
            }
            self.commit(gone)?;
        }
        if found < 4 {
            self.migrate_host_rows(LEGACY_ROLLOUT_HOSTS)?;
            self.migrate_lease_keys(LEGACY_LEASES)?;
        }
        if found < 5 {
            self.migrate_flat_generations()?;
        }
        if found < SCHEMA_VERSION {
            let mut version = Batch::default();
            version.put(key(META, b"schema_version"), SCHEMA_VERSION.to_be_bytes().to_vec());
            self.commit(version)?;
        }
        Ok(())
    }

    /// A new id for a rollout or restart job: 1, 2, 3... never reused, also after a
    /// restart (the counter is stored, durable with the record that uses it).
    pub fn next_id(&self) -> Result<u64> {
        let counter = key(META, b"next_id");
        loop {
            let old = self.kv.get(&counter)?;
            let next = old.as_deref().and_then(as_u64).unwrap_or(0) + 1;
            let mut batch = Batch::default();
            match &old {
                Some(v) => batch.require_equals(counter.clone(), v.clone()),
                None => batch.require_absent(counter.clone()),
            };
            batch.put(counter.clone(), next.to_be_bytes().to_vec());
            if self.commit(batch)? {
                return Ok(next);
            }
        }
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.kv.flush().await?;
        Ok(())
    }

    /// Commits a batch (every write of the domain store goes through here, counted).
    fn commit(&self, batch: Batch) -> Result<bool> {
        let writes = !batch.ops.is_empty();
        let told = if self.outbox_signal.receiver_count() > 0 {
            outbox::written(&batch)
        } else {
            Vec::new()
        };
        let done = self.kv.commit(batch)?;
        if done && writes {
            self.writes.fetch_add(1, Ordering::Relaxed);
            for subject in told {
                // No receiver left is no one to tell.
                let _ = self.outbox_signal.send(subject);
            }
        }
        Ok(done)
    }

    /// Batches written since the store was opened: what the benchmark divides by hosts.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Commits a batch that has no condition (or whose refusal means another writer
    /// raced us where none should be).
    fn write(&self, batch: Batch, what: &str) -> Result<()> {
        if self.commit(batch)? {
            Ok(())
        } else {
            Err(Error::Conflict(what.to_string()))
        }
    }

    /// The controller writing (its advertised URL); empty with a data dir.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// The same store, its audit log lines naming `controller` as their writer
    /// (controllers sharing etcd take turns writing it).
    pub fn written_by(mut self, controller: &str) -> Store {
        self.writer = Arc::from(controller);
        self.acting = self.writer.clone();
        self
    }

    /// The same store, its notifications naming `controller` as the one that acted
    /// (with a data dir, whose audit log names no controller).
    pub fn acting_as(mut self, controller: &str) -> Store {
        self.acting = Arc::from(controller);
        self
    }

    /// Adds `events` to `batch`, each under the next sequence number of the log, and
    /// naming this controller.
    fn log(&self, batch: &mut Batch, events: &[pb::EventRecord]) {
        for event in events {
            let seq = self.events.fetch_add(1, Ordering::SeqCst);
            let value = if event.controller.is_empty() && !self.writer.is_empty() {
                let mut signed = event.clone();
                signed.controller = self.writer.to_string();
                signed.encode_to_vec()
            } else {
                event.encode_to_vec()
            };
            batch.put(key(EVENTS, &seq.to_be_bytes()), value);
        }
    }

    /// Appends to the audit log. Durable at the next flush.
    pub fn append_event(&self, event: &pb::EventRecord) -> Result<()> {
        let mut batch = Batch::default();
        self.log(&mut batch, std::slice::from_ref(event));
        self.write(batch, "events")
    }

    /// The newest `limit` events at or after `since_ms` that `keep` accepts, oldest
    /// first. Reads the log backwards, so a long log costs only what is returned.
    pub fn recent_events(
        &self,
        since_ms: i64,
        limit: usize,
        keep: impl Fn(&pb::EventRecord) -> bool,
    ) -> Result<Vec<pb::EventRecord>> {
        let mut found = Vec::new();
        for kv in self.kv.range(EVENTS, backend::prefix_end(EVENTS).as_deref(), true) {
            let event: pb::EventRecord = decode("events", &kv?.1)?;
            if event.at_unix_ms < since_ms || found.len() >= limit {
                break;
            }
            if keep(&event) {
                found.push(event);
            }
        }
        found.reverse();
        Ok(found)
    }
}

/// A schema 2 (or 1) data dir kept a sled tree per record kind: each is copied under
/// its prefix ([`LEGACY_TREES`]), flushed, then dropped. A crash at any
/// point copies again what is left at the next open (copies overwrite the same keys).
fn migrate_legacy_trees(sled: &SledBackend) -> Result<()> {
    let mut trees = Vec::new();
    for name in sled.legacy_trees() {
        match LEGACY_TREES.iter().find(|(tree, _)| *tree == name) {
            Some((_, prefix)) => trees.push((name, *prefix)),
            None => tracing::warn!(tree = %name, "an unknown tree in the data dir is left alone"),
        }
    }
    if trees.is_empty() {
        return Ok(());
    }
    for (name, prefix) in &trees {
        let mut batch = Batch::default();
        for kv in sled.legacy_pairs(name)? {
            let (k, v) = kv?;
            batch.put(key(prefix, &k), v);
            if batch.ops.len() == PUT_BATCH {
                sled.commit(std::mem::take(&mut batch))?;
            }
        }
        sled.commit(batch)?;
    }
    sled.flush_blocking()?;
    for (name, _) in &trees {
        sled.drop_legacy(name)?;
    }
    tracing::info!(trees = trees.len(), "store migrated to one key space (schema 3)");
    Ok(())
}

#[cfg(test)]
mod tests;
