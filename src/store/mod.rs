//! The controller's durable state, in sled. Nothing outside this module touches sled.
//!
//! Trees (records are prost messages from `proto/rollout/v1/store.proto`):
//! - `rollouts`: rollout id (u64 BE) -> `RolloutRecord`
//! - `rollout_hosts`: rollout id (u64 BE) ++ host id -> `RolloutHostRecord`
//! - `host_buckets`: the inventory's hosts, `HostBucket`s keyed by a hash of the host
//!   id (u32 BE, [`HOST_BUCKETS`] of them): with a key per host, writing a million-host
//!   fleet in one batch and comparing it key by key at the next start each took
//!   gigabytes; 4,096 values are compared and written in a moment
//! - `customers`: the inventory's customers, by id
//! - `requests`: client request_id -> rollout id (u64 BE), for idempotent submits
//! - `events`: sequence (u64 BE) -> `EventRecord`, the audit log
//! - `restart_jobs`, `restart_hosts`: like `rollouts` and `rollout_hosts`
//! - `leases`: host id -> `LeaseRecord`, the one active rollout or job holding it
//! - `meta`: schema version, the id counter
//!
//! A rollout is created in sled transactions of a few thousand hosts, each with those
//! hosts' rows and leases (the lease check is inside it), then a last transaction with
//! its record, request id and audit line: the commit point. A restart job is created
//! in one transaction. Later writes are grouped: a batch of intents is
//! one `apply_batch` and one flush (group commit).

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use crate::proto::v1 as pb;

/// 2: the inventory's hosts moved from a key per host (`hosts`) to `host_buckets`.
const SCHEMA_VERSION: u32 = 2;

/// Buckets of the inventory's hosts: about 250 hosts (30 KB) each at a million hosts;
/// a registration rewrites one bucket.
pub const HOST_BUCKETS: u32 = 4_096;

/// The bucket of a host id: FNV-1a, stable across versions and platforms (it is
/// stored).
fn host_bucket(id: &str) -> u32 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % u64::from(HOST_BUCKETS)) as u32
}

/// One bucket's hosts, sorted by id, encoded as a `HostBucket`.
fn encode_bucket(hosts: &mut [&pb::HostRecord]) -> Vec<u8> {
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    let mut buf = Vec::new();
    for h in hosts {
        prost::encoding::message::encode(1, *h, &mut buf);
    }
    buf
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled reported an I/O or corruption error.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A record could not be decoded: the data dir is damaged or from another program.
    #[error("store: record in `{tree}` cannot be decoded: {source}")]
    Decode {
        tree: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    /// The data dir was written by a newer controller.
    #[error("store: data written by schema version {found}, this controller knows {SCHEMA_VERSION}: upgrade rollout")]
    Schema { found: u32 },
    /// The data dir is locked by another running controller.
    #[error("store: {path} is in use by another controller (or not writable): {source}")]
    Locked {
        path: String,
        #[source]
        source: sled::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    rollouts: sled::Tree,
    rollout_hosts: sled::Tree,
    hosts: sled::Tree,
    customers: sled::Tree,
    requests: sled::Tree,
    events: sled::Tree,
    restart_jobs: sled::Tree,
    restart_hosts: sled::Tree,
    leases: sled::Tree,
    meta: sled::Tree,
}

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

/// Why a transaction that takes leases did not commit.
enum Abort {
    Held(Held),
    Store(Error),
}

/// Takes the lease of each of `hosts` for `me` inside a transaction, unless another
/// holder has it and `may_take` says no; those are counted instead.
fn take_leases<'a>(
    leases: &TransactionalTree,
    hosts: impl Iterator<Item = &'a str>,
    me: &Holder,
    may_take: &(dyn Fn(&Holder) -> bool + Sync),
) -> std::result::Result<(), ConflictableTransactionError<Abort>> {
    let mine = me.lease().encode_to_vec();
    let mut held = BTreeMap::new();
    for host in hosts {
        if let Some(old) = leases.get(host.as_bytes())? {
            let old = decode::<pb::LeaseRecord>("leases", &old)
                .map_err(|e| ConflictableTransactionError::Abort(Abort::Store(e)))?;
            let holder = Holder::of(&old);
            if holder != *me && !may_take(&holder) {
                *held.entry(holder).or_insert(0) += 1;
                continue;
            }
        }
        leases.insert(host.as_bytes(), mine.as_slice())?;
    }
    if held.is_empty() {
        Ok(())
    } else {
        Err(ConflictableTransactionError::Abort(Abort::Held(Held(held))))
    }
}

/// Makes `tree` hold `entries`: inserts what is new or different and, with `prune`,
/// removes keys not among them; one atomic batch.
fn update_tree(tree: &sled::Tree, entries: &[(&[u8], Vec<u8>)], prune: bool) -> Result<()> {
    let mut batch = sled::Batch::default();
    for (key, value) in entries {
        if tree.get(key)?.as_deref() != Some(value.as_slice()) {
            batch.insert(*key, value.as_slice());
        }
    }
    if prune {
        let keep: std::collections::HashSet<&[u8]> = entries.iter().map(|(k, _)| *k).collect();
        for key in tree.iter().keys() {
            let key = key?;
            if !keep.contains(key.as_ref()) {
                batch.remove(key);
            }
        }
    }
    tree.apply_batch(batch)?;
    Ok(())
}

/// Host records per batch of [`Store::put_hosts`].
const PUT_BATCH: usize = 8_192;

/// Hosts per creation transaction: small enough that sled's transaction state stays
/// small (one transaction over a million hosts peaked at gigabytes), large enough
/// that the per-transaction cost vanishes.
const CREATE_CHUNK: usize = 4_096;

/// Runs a long synchronous store operation (a transaction over every host of a big
/// rollout) without stalling the other tasks of the runtime's worker: on the
/// multi-threaded runtime the worker hands its tasks over first.
pub(crate) fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn committed(result: std::result::Result<(), TransactionError<Abort>>) -> Result<std::result::Result<(), Held>> {
    match result {
        Ok(()) => Ok(Ok(())),
        Err(TransactionError::Abort(Abort::Held(held))) => Ok(Err(held)),
        Err(TransactionError::Abort(Abort::Store(e))) => Err(e),
        Err(TransactionError::Storage(e)) => Err(e.into()),
    }
}

fn decode<M: Message + Default>(tree: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|source| Error::Decode { tree, source })
}

fn host_key(rollout: u64, host: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + host.len());
    key.extend_from_slice(&rollout.to_be_bytes());
    key.extend_from_slice(host.as_bytes());
    key
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .cache_capacity(64 * 1024 * 1024)
            .open()
            .map_err(|source| Error::Locked {
                path: dir.display().to_string(),
                source,
            })?;
        Self::from_db(db)
    }

    /// A store that lives in memory and vanishes on drop, for tests.
    pub fn temporary() -> Result<Store> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    fn from_db(db: sled::Db) -> Result<Store> {
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            Some(v) => {
                let found = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX);
                if found > SCHEMA_VERSION {
                    return Err(Error::Schema { found });
                }
            }
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        let store = Store {
            rollouts: db.open_tree("rollouts")?,
            rollout_hosts: db.open_tree("rollout_hosts")?,
            hosts: db.open_tree("host_buckets")?,
            customers: db.open_tree("customers")?,
            requests: db.open_tree("requests")?,
            events: db.open_tree("events")?,
            restart_jobs: db.open_tree("restart_jobs")?,
            restart_hosts: db.open_tree("restart_hosts")?,
            leases: db.open_tree("leases")?,
            meta,
            db,
        };
        store.migrate()?;
        Ok(store)
    }

    /// Brings a store written by an older controller to [`SCHEMA_VERSION`]; a crash
    /// half-way redoes it at the next open (the version is written last).
    fn migrate(&self) -> Result<()> {
        let found = self
            .meta
            .get("schema_version")?
            .and_then(|v| v.as_ref().try_into().ok().map(u32::from_be_bytes))
            .unwrap_or(SCHEMA_VERSION);
        if found < 2 && self.db.tree_names().iter().any(|n| n.as_ref() == b"hosts") {
            let old = self.db.open_tree("hosts")?;
            let hosts = old
                .iter()
                .map(|kv| decode("hosts", &kv?.1))
                .collect::<Result<Vec<pb::HostRecord>>>()?;
            let (_, customers) = self.inventory(|_| true)?;
            self.put_inventory(&hosts, &customers)?;
            self.db.flush()?;
            self.db.drop_tree("hosts")?;
        }
        if found < SCHEMA_VERSION {
            self.meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// A new id for a rollout or restart job: 1, 2, 3... never reused, also after a
    /// restart (the counter is in `meta`, durable with the record that uses it).
    pub fn next_id(&self) -> Result<u64> {
        let next = self.meta.update_and_fetch("next_id", |old| {
            let n = old.and_then(|v| v.try_into().ok()).map_or(0, u64::from_be_bytes);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(next
            .and_then(|v| v.as_ref().try_into().ok())
            .map_or(1, u64::from_be_bytes))
    }

    /// Makes everything written so far durable.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Records a new rollout: every selected host as pending with its lease, in
    /// transactions of [`CREATE_CHUNK`] hosts (each host's row and lease together),
    /// then the record, its request id and `events` in a last transaction: the commit
    /// point. A host leased to another holder that `may_take` refuses undoes what was
    /// written and returns `Ok(Err(held))`. A crash before the commit point leaves only
    /// leases of a rollout that does not exist, released at the next start-up, and
    /// unreachable rows. `hosts`: (host id, target version or "" for the plan's own).
    /// `also`: another rollout's record to write with the commit (the original of a
    /// rollback, which hands its leases over).
    pub async fn create_rollout(
        &self,
        record: &pb::RolloutRecord,
        hosts: &[(&str, &str)],
        may_take: &(dyn Fn(&Holder) -> bool + Sync),
        also: Option<&pb::RolloutRecord>,
        events: &[pb::EventRecord],
    ) -> Result<std::result::Result<(), Held>> {
        let me = Holder::Rollout {
            id: record.id,
            name: record.name.clone(),
        };
        for (done, chunk) in hosts.chunks(CREATE_CHUNK).enumerate() {
            let trees = (&self.rollout_hosts, &self.leases);
            let result = off_the_runtime(|| {
                trees.transaction(|(rows, leases)| {
                    take_leases(leases, chunk.iter().map(|(h, _)| *h), &me, may_take)?;
                    for (host, version) in chunk {
                        let pending = pb::RolloutHostRecord {
                            state: pb::HostState::Pending as i32,
                            version: version.to_string(),
                            ..Default::default()
                        };
                        rows.insert(host_key(record.id, host), pending.encode_to_vec())?;
                    }
                    Ok(())
                })
            });
            if let Err(held) = committed(result)? {
                // Undo the chunks already written: their leases, then their rows.
                let written = &hosts[..done * CREATE_CHUNK];
                self.release_leases(&me, written.iter().map(|(h, _)| *h))?;
                let mut undo = sled::Batch::default();
                for (host, _) in written {
                    undo.remove(host_key(record.id, host));
                }
                self.rollout_hosts.apply_batch(undo)?;
                return Ok(Err(held));
            }
        }
        let events = self.sequenced(events)?;
        let trees = (&self.rollouts, &self.requests, &self.events);
        let result: std::result::Result<(), TransactionError<Abort>> =
            trees.transaction(|(rollouts, requests, log)| {
                rollouts.insert(&record.id.to_be_bytes(), record.encode_to_vec())?;
                if let Some(other) = also {
                    rollouts.insert(&other.id.to_be_bytes(), other.encode_to_vec())?;
                }
                if !record.request_id.is_empty() {
                    requests.insert(record.request_id.as_bytes(), &record.id.to_be_bytes())?;
                }
                for (seq, event) in &events {
                    log.insert(seq, event.as_slice())?;
                }
                Ok(())
            });
        committed(result)?.map_err(|_| Error::Sled(sled::Error::Unsupported("commit aborted".into())))?;
        self.flush().await?;
        Ok(Ok(()))
    }

    /// Takes the leases of `hosts` for `me` (a preempted rollout resuming), all or
    /// none. Durable at the next flush.
    pub fn lease_hosts(&self, me: &Holder, hosts: &[String]) -> Result<std::result::Result<(), Held>> {
        let result = self
            .leases
            .transaction(|leases| take_leases(leases, hosts.iter().map(String::as_str), me, &|_| false));
        committed(result)
    }

    /// Who holds `host`, if anyone.
    pub fn lease(&self, host: &str) -> Result<Option<Holder>> {
        self.leases
            .get(host.as_bytes())?
            .map(|v| decode::<pb::LeaseRecord>("leases", &v).map(|l| Holder::of(&l)))
            .transpose()
    }

    /// Every lease, by host.
    pub fn leases(&self) -> impl Iterator<Item = Result<(String, Holder)>> + use<> {
        self.leases.iter().map(|kv| {
            let (k, v) = kv?;
            let lease: pb::LeaseRecord = decode("leases", &v)?;
            Ok((String::from_utf8_lossy(&k).into_owned(), Holder::of(&lease)))
        })
    }

    /// Gives up `holder`'s leases on `hosts`; a host someone else holds now (it was
    /// preempted) is left alone. Durable at the next flush.
    pub fn release_leases<'a>(&self, holder: &Holder, hosts: impl Iterator<Item = &'a str>) -> Result<()> {
        let mine = holder.lease().encode_to_vec();
        for host in hosts {
            // Compare-and-delete: only what is still ours.
            let _ = self
                .leases
                .compare_and_swap(host.as_bytes(), Some(mine.as_slice()), None::<&[u8]>)?;
        }
        Ok(())
    }

    /// The answer recorded for an operator's request id (pause, resume, abort).
    pub fn action_answer(&self, request_id: &str) -> Result<Option<pb::Rollout>> {
        self.requests
            .get(format!("action:{request_id}").as_bytes())?
            .map(|v| decode("requests", &v))
            .transpose()
    }

    /// Records the answer to an operator's request id. Durable at the next flush.
    pub fn put_action_answer(&self, request_id: &str, answer: &pb::Rollout) -> Result<()> {
        self.requests
            .insert(format!("action:{request_id}").as_bytes(), answer.encode_to_vec())?;
        Ok(())
    }

    /// Overwrites a rollout's record (state changes). Durable at the next flush.
    pub fn put_rollout(&self, record: &pb::RolloutRecord) -> Result<()> {
        self.rollouts.insert(record.id.to_be_bytes(), record.encode_to_vec())?;
        Ok(())
    }

    /// Overwrites a rollout's record and appends `events` to the audit log, in one
    /// transaction: a state change and the line saying who made it go together.
    pub fn put_rollout_with_events(&self, record: &pb::RolloutRecord, events: &[pb::EventRecord]) -> Result<()> {
        self.put_with_events(
            &self.rollouts,
            &record.id.to_be_bytes(),
            &record.encode_to_vec(),
            events,
        )
    }

    /// Overwrites a restart job's record and appends `events`, in one transaction.
    pub fn put_restart_job_with_events(&self, record: &pb::RestartJobRecord, events: &[pb::EventRecord]) -> Result<()> {
        self.put_with_events(
            &self.restart_jobs,
            &record.id.to_be_bytes(),
            &record.encode_to_vec(),
            events,
        )
    }

    /// Adds or replaces one host of the inventory and appends `events`, in one
    /// transaction (a heartbeat registered it).
    pub fn put_host_with_events(&self, host: &pb::HostRecord, events: &[pb::EventRecord]) -> Result<()> {
        let key = host_bucket(&host.id).to_be_bytes();
        let mut bucket: pb::HostBucket = match self.hosts.get(key)? {
            Some(v) => decode("host_buckets", &v)?,
            None => pb::HostBucket::default(),
        };
        bucket.hosts.retain(|h| h.id != host.id);
        let mut hosts: Vec<&pb::HostRecord> = bucket.hosts.iter().chain([host]).collect();
        // Registrations are serialised by the engine (under its inventory lock).
        self.put_with_events(&self.hosts, &key, &encode_bucket(&mut hosts), events)
    }

    fn put_with_events(&self, tree: &sled::Tree, key: &[u8], value: &[u8], events: &[pb::EventRecord]) -> Result<()> {
        let events = self.sequenced(events)?;
        let result: std::result::Result<(), TransactionError<()>> =
            (tree, &self.events).transaction(|(records, log)| {
                records.insert(key, value)?;
                for (seq, event) in &events {
                    log.insert(seq, event.as_slice())?;
                }
                Ok(())
            });
        result.map_err(|e| match e {
            TransactionError::Storage(e) => Error::Sled(e),
            TransactionError::Abort(()) => Error::Sled(sled::Error::Unsupported("transaction aborted".into())),
        })
    }

    /// Audit events with their log keys (sequence numbers, in order), encoded.
    fn sequenced(&self, events: &[pb::EventRecord]) -> Result<Vec<([u8; 8], Vec<u8>)>> {
        events
            .iter()
            .map(|e| Ok((self.db.generate_id()?.to_be_bytes(), e.encode_to_vec())))
            .collect()
    }

    pub fn rollout(&self, id: u64) -> Result<Option<pb::RolloutRecord>> {
        self.rollouts
            .get(id.to_be_bytes())?
            .map(|v| decode("rollouts", &v))
            .transpose()
    }

    /// Every rollout, oldest first.
    pub fn rollouts(&self) -> Result<Vec<pb::RolloutRecord>> {
        self.rollouts.iter().map(|kv| decode("rollouts", &kv?.1)).collect()
    }

    /// The rollout a client request created, if any.
    pub fn rollout_for_request(&self, request_id: &str) -> Result<Option<u64>> {
        Ok(self
            .requests
            .get(request_id.as_bytes())?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Writes many host records of one rollout (group commit), in atomic batches of
    /// at most [`PUT_BATCH`]: one batch over a 500,000-host wave held gigabytes in
    /// sled. A crash between batches leaves the first ones written, which every caller
    /// tolerates (a wave is filled up to its size again at resume; intents and results
    /// are per host). Durable once `flush` returns.
    pub fn put_hosts<'a>(
        &self,
        rollout: u64,
        records: impl IntoIterator<Item = (&'a str, &'a pb::RolloutHostRecord)>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for (host, record) in records {
            batch.insert(host_key(rollout, host), record.encode_to_vec());
            n += 1;
            if n == PUT_BATCH {
                self.rollout_hosts.apply_batch(std::mem::take(&mut batch))?;
                n = 0;
            }
        }
        if n > 0 {
            self.rollout_hosts.apply_batch(batch)?;
        }
        Ok(())
    }

    /// All host records of a rollout, in host id order.
    pub fn rollout_hosts(&self, rollout: u64) -> impl Iterator<Item = Result<(String, pb::RolloutHostRecord)>> + use<> {
        self.rollout_hosts_after(rollout, "")
    }

    /// The host records of a rollout whose host id sorts after `after` ("" : all), in
    /// host id order: a page of a million-host rollout reads from where the last ended.
    pub fn rollout_hosts_after(
        &self,
        rollout: u64,
        after: &str,
    ) -> impl Iterator<Item = Result<(String, pb::RolloutHostRecord)>> + use<> {
        let prefix = rollout.to_be_bytes();
        let rows = if after.is_empty() {
            self.rollout_hosts.scan_prefix(prefix)
        } else {
            // Keys are prefix ++ host id; the smallest key after `after` is `after` ++ 0.
            let mut start = host_key(rollout, after);
            start.push(0);
            let end = (rollout + 1).to_be_bytes();
            if rollout == u64::MAX {
                self.rollout_hosts.range(start..)
            } else {
                self.rollout_hosts.range(start..end.to_vec())
            }
        };
        rows.map(|kv| {
            let (k, v) = kv?;
            let host = String::from_utf8_lossy(&k[8..]).into_owned();
            Ok((host, decode("rollout_hosts", &v)?))
        })
    }

    /// Replaces the stored inventory, writing only what changed (a restart with the
    /// same fleet file writes nothing). Customers are added first and removed last, and
    /// each tree changes in one atomic batch, so a crash at any point leaves hosts whose
    /// customers are all stored.
    pub fn put_inventory(&self, hosts: &[pb::HostRecord], customers: &[pb::CustomerRecord]) -> Result<()> {
        let customers: Vec<(&[u8], Vec<u8>)> = customers.iter().map(|c| (c.id.as_bytes(), c.encode_to_vec())).collect();
        let mut buckets: BTreeMap<[u8; 4], Vec<&pb::HostRecord>> = BTreeMap::new();
        for h in hosts {
            buckets.entry(host_bucket(&h.id).to_be_bytes()).or_default().push(h);
        }
        let buckets: Vec<(&[u8], Vec<u8>)> = buckets
            .iter_mut()
            .map(|(key, hosts)| (key.as_slice(), encode_bucket(hosts)))
            .collect();
        update_tree(&self.customers, &customers, false)?;
        update_tree(&self.hosts, &buckets, true)?;
        update_tree(&self.customers, &customers, true)?;
        Ok(())
    }

    /// The stored inventory: the hosts `keep` selects by id, sorted by id, and every
    /// customer.
    pub fn inventory(&self, keep: impl Fn(&str) -> bool) -> Result<(Vec<pb::HostRecord>, Vec<pb::CustomerRecord>)> {
        let mut hosts = Vec::new();
        for kv in self.hosts.iter() {
            let bucket: pb::HostBucket = decode("host_buckets", &kv?.1)?;
            hosts.extend(bucket.hosts.into_iter().filter(|h| keep(&h.id)));
        }
        hosts.sort_unstable_by(|a: &pb::HostRecord, b| a.id.cmp(&b.id));
        let customers = self
            .customers
            .iter()
            .map(|kv| decode("customers", &kv?.1))
            .collect::<Result<_>>()?;
        Ok((hosts, customers))
    }

    /// Records a new restart job in one transaction: its hosts, their leases, the
    /// record and its request id; then flushes. `Ok(Err(held))` when a host is leased.
    pub async fn create_restart_job(
        &self,
        record: &pb::RestartJobRecord,
        hosts: &[pb::RestartHostRecord],
        request_id: &str,
        events: &[pb::EventRecord],
    ) -> Result<std::result::Result<(), Held>> {
        let me = Holder::Job { id: record.id };
        let host_id = |r: &pb::RestartHostRecord| r.host.as_ref().map_or("", |h| h.host_id.as_str()).to_string();
        let ids: Vec<String> = hosts.iter().map(host_id).collect();
        let events = self.sequenced(events)?;
        let trees = (
            &self.restart_jobs,
            &self.restart_hosts,
            &self.leases,
            &self.requests,
            &self.events,
        );
        let result = trees.transaction(|(jobs, rows, leases, requests, log)| {
            take_leases(leases, ids.iter().map(String::as_str), &me, &|_| false)?;
            for (host, r) in ids.iter().zip(hosts) {
                rows.insert(host_key(record.id, host), r.encode_to_vec())?;
            }
            jobs.insert(&record.id.to_be_bytes(), record.encode_to_vec())?;
            if !request_id.is_empty() {
                requests.insert(format!("restart:{request_id}").as_bytes(), &record.id.to_be_bytes())?;
            }
            for (seq, event) in &events {
                log.insert(seq, event.as_slice())?;
            }
            Ok(())
        });
        let outcome = committed(result)?;
        self.flush().await?;
        Ok(outcome)
    }

    /// The restart job a client request created, if any.
    pub fn restart_job_for_request(&self, request_id: &str) -> Result<Option<u64>> {
        Ok(self
            .requests
            .get(format!("restart:{request_id}").as_bytes())?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes)))
    }

    /// Overwrites a restart job's record. Durable at the next flush.
    pub fn put_restart_job(&self, record: &pb::RestartJobRecord) -> Result<()> {
        self.restart_jobs
            .insert(record.id.to_be_bytes(), record.encode_to_vec())?;
        Ok(())
    }

    /// Every restart job, oldest first.
    pub fn restart_jobs(&self) -> Result<Vec<pb::RestartJobRecord>> {
        self.restart_jobs
            .iter()
            .map(|kv| decode("restart_jobs", &kv?.1))
            .collect()
    }

    /// Writes host records of one restart job in one batch. Durable at the next flush.
    pub fn put_restart_hosts<'a>(
        &self,
        job: u64,
        records: impl IntoIterator<Item = &'a pb::RestartHostRecord>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for record in records {
            let host = record.host.as_ref().map_or("", |h| h.host_id.as_str());
            batch.insert(host_key(job, host), record.encode_to_vec());
        }
        self.restart_hosts.apply_batch(batch)?;
        Ok(())
    }

    /// All host records of a restart job, in host id order.
    pub fn restart_hosts(&self, job: u64) -> Result<Vec<pb::RestartHostRecord>> {
        self.restart_hosts
            .scan_prefix(job.to_be_bytes())
            .map(|kv| decode("restart_hosts", &kv?.1))
            .collect()
    }

    /// Host ids of a rollout (its selection), for finding hosts it holds.
    pub fn rollout_host_ids(&self, rollout: u64) -> Result<Vec<String>> {
        self.rollout_hosts
            .scan_prefix(rollout.to_be_bytes())
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[8..]).into_owned()))
            .collect()
    }

    /// Appends to the audit log. Durable at the next flush.
    pub fn append_event(&self, event: &pb::EventRecord) -> Result<()> {
        let seq = self.db.generate_id()?;
        self.events.insert(seq.to_be_bytes(), event.encode_to_vec())?;
        Ok(())
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
        for kv in self.events.iter().rev() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inventory_is_replaced_writing_only_what_changed() {
        let store = Store::temporary().unwrap();
        let host = |id: &str, customer: &str| pb::HostRecord {
            id: id.into(),
            customers: vec![customer.into()],
            ..Default::default()
        };
        let customer = |id: &str| pb::CustomerRecord {
            id: id.into(),
            ..Default::default()
        };
        store
            .put_inventory(&[host("a", "c1"), host("b", "c1")], &[customer("c1")])
            .unwrap();
        let ids = |s: &Store| {
            let (h, c) = s.inventory(|_| true).unwrap();
            let h: Vec<String> = h.into_iter().map(|h| h.id).collect();
            let c: Vec<String> = c.into_iter().map(|c| c.id).collect();
            (h, c)
        };
        assert_eq!(ids(&store), (vec!["a".into(), "b".into()], vec!["c1".into()]));
        // Unchanged: nothing written (a subscriber to the trees sees no event).
        let mut hosts_written = store.hosts.watch_prefix(Vec::new());
        let mut customers_written = store.customers.watch_prefix(Vec::new());
        store
            .put_inventory(&[host("a", "c1"), host("b", "c1")], &[customer("c1")])
            .unwrap();
        let quiet = std::time::Duration::from_millis(50);
        assert!(hosts_written.next_timeout(quiet).is_err(), "a host was rewritten");
        assert!(
            customers_written.next_timeout(quiet).is_err(),
            "a customer was rewritten"
        );
        // A host and a customer gone, one changed, one new.
        store
            .put_inventory(&[host("b", "c2"), host("c", "c2")], &[customer("c2")])
            .unwrap();
        assert_eq!(ids(&store), (vec!["b".into(), "c".into()], vec!["c2".into()]));
        assert_eq!(store.inventory(|_| true).unwrap().0[0].customers, ["c2"]);
    }

    #[test]
    fn a_store_with_a_key_per_host_is_migrated_to_buckets() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert("schema_version", &1u32.to_be_bytes())
                .unwrap();
            let old = db.open_tree("hosts").unwrap();
            for id in ["b", "a"] {
                let record = pb::HostRecord {
                    id: id.into(),
                    version: "1".into(),
                    ..Default::default()
                };
                old.insert(id, record.encode_to_vec()).unwrap();
            }
            db.flush().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let ids: Vec<String> = store.inventory(|_| true).unwrap().0.into_iter().map(|h| h.id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(!store.db.tree_names().iter().any(|n| n.as_ref() == b"hosts"));
        let version = store.meta.get("schema_version").unwrap().unwrap();
        assert_eq!(version.as_ref(), SCHEMA_VERSION.to_be_bytes());
        // A registration rewrites its bucket, keeping the bucket's other hosts.
        let c = pb::HostRecord {
            id: "c".into(),
            ..Default::default()
        };
        store.put_host_with_events(&c, &[]).unwrap();
        store.put_host_with_events(&c, &[]).unwrap();
        let ids: Vec<String> = store.inventory(|_| true).unwrap().0.into_iter().map(|h| h.id).collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn rollouts_and_hosts_round_trip() {
        let store = Store::temporary().unwrap();
        let id = store.next_id().unwrap();
        let record = pb::RolloutRecord {
            id,
            name: "fix".into(),
            request_id: "req-1".into(),
            ..Default::default()
        };
        store
            .create_rollout(&record, &[("b", ""), ("a", "")], &|_| false, None, &[])
            .await
            .unwrap()
            .unwrap();
        let me = Holder::Rollout { id, name: "fix".into() };
        assert_eq!(store.lease("a").unwrap(), Some(me.clone()));
        assert_eq!(store.rollout(id).unwrap(), Some(record));
        assert_eq!(store.rollout_for_request("req-1").unwrap(), Some(id));
        let hosts: Vec<_> = store.rollout_hosts(id).map(|r| r.unwrap().0).collect();
        assert_eq!(hosts, ["a", "b"]);
        let done = pb::RolloutHostRecord {
            state: pb::HostState::Succeeded as i32,
            ..Default::default()
        };
        store.put_hosts(id, [("a", &done)]).unwrap();
        let (_, a) = store.rollout_hosts(id).next().unwrap().unwrap();
        assert_eq!(a.state(), pb::HostState::Succeeded);
        assert_eq!(
            store.rollout_hosts(id + 1).count(),
            0,
            "prefix scan stays in its rollout"
        );

        // A second rollout over "b" and "c" is refused whole: no row, no lease, no record.
        let other = pb::RolloutRecord {
            id: id + 1,
            name: "other".into(),
            ..Default::default()
        };
        let held = store
            .create_rollout(&other, &[("c", ""), ("b", "")], &|_| false, None, &[])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(held.0, BTreeMap::from([(me.clone(), 1)]));
        assert_eq!(store.lease("c").unwrap(), None);
        assert_eq!(store.rollout(id + 1).unwrap(), None);
        assert_eq!(store.rollout_hosts(id + 1).count(), 0);
        // A conflict in a later chunk undoes the chunks already written.
        let many: Vec<String> = (0..CREATE_CHUNK + 10).map(|i| format!("m{i:06}")).collect();
        let mut rows: Vec<(&str, &str)> = many.iter().map(|h| (h.as_str(), "")).collect();
        rows.push(("a", ""));
        let big = pb::RolloutRecord {
            id: id + 2,
            name: "big".into(),
            ..Default::default()
        };
        let held = store
            .create_rollout(&big, &rows, &|_| false, None, &[])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(held.0, BTreeMap::from([(me.clone(), 1)]));
        assert_eq!(
            store.lease("m000000").unwrap(),
            None,
            "the first chunk's leases are undone"
        );
        assert_eq!(store.rollout_hosts(id + 2).count(), 0, "and its rows");
        assert_eq!(store.rollout(id + 2).unwrap(), None);
        // Preempting takes it; the first holder's release then leaves "b" alone.
        store
            .create_rollout(&other, &[("c", ""), ("b", "")], &|h| *h == me, None, &[])
            .await
            .unwrap()
            .unwrap();
        store.release_leases(&me, ["a", "b"].into_iter()).unwrap();
        assert_eq!(store.lease("a").unwrap(), None);
        assert_eq!(
            store.lease("b").unwrap(),
            Some(Holder::Rollout {
                id: id + 1,
                name: "other".into()
            })
        );
    }
}
