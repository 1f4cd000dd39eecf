//! The domain records: rollouts and their hosts, restart jobs and theirs, client
//! request ids, the inventory (hosts in hash buckets, customers). Every write that
//! belongs with an audit line is one batch with it.

use std::collections::BTreeMap;

use prost::Message;

use super::backend::{self, Batch};
use super::hosts::{CHUNK, selection_chunk};
use super::{
    CUSTOMERS, HOST_BUCKETS, HOSTS, Held, Holder, JOB_HOSTS, JOBS, REQUESTS, ROLLOUTS, Result, Store, as_u64, decode,
    host_key, key, off_the_runtime,
};
use crate::proto::v1 as pb;

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

impl Store {
    /// Records a new rollout: every selected host as pending with its lease, in
    /// batches of [`CHUNK`] hosts (a chunk of the selection and its hosts' leases
    /// together, the leases conditioned on being as read), then the record, its
    /// request id and `events` in a last batch: the commit point. A host leased to
    /// another holder that `may_take` refuses undoes what was written and returns
    /// `Ok(Err(held))`. A crash before the commit point leaves only leases of a
    /// rollout that does not exist, released at the next start-up, and unreachable
    /// chunks. `hosts`: (host id, target version or "" for the plan's own), in any
    /// order. `also`: another rollout's record to
    /// write with the commit (the original of a rollback, which hands its leases over).
    pub async fn create_rollout(
        &self,
        record: &pb::RolloutRecord,
        hosts: &[(&str, &str)],
        may_take: &(dyn Fn(&Holder) -> bool + Sync),
        also: Option<&pb::RolloutRecord>,
        events: &[pb::EventRecord],
        notices: &[pb::Notification],
    ) -> Result<std::result::Result<(), Held>> {
        let me = Holder::Rollout {
            id: record.id,
            name: record.name.clone(),
        };
        let mut hosts = hosts.to_vec();
        hosts.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for chunk in hosts.chunks(CHUNK) {
            let taken = off_the_runtime(|| self.create_chunk(record.id, chunk, &me, may_take))?;
            if let Err(held) = taken {
                // Undo the chunks already written: their leases, then the selection.
                self.release_leases(&me)?;
                self.forget_rollout_hosts(record.id)?;
                return Ok(Err(held));
            }
        }
        let mut commit = Batch::default();
        commit.put(key(ROLLOUTS, &record.id.to_be_bytes()), record.encode_to_vec());
        if let Some(other) = also {
            commit.put(key(ROLLOUTS, &other.id.to_be_bytes()), other.encode_to_vec());
        }
        if !record.request_id.is_empty() {
            commit.put(
                key(REQUESTS, record.request_id.as_bytes()),
                record.id.to_be_bytes().to_vec(),
            );
        }
        self.log(&mut commit, events);
        self.outbox(&mut commit, notices);
        self.write(commit, "rollouts")?;
        self.flush().await?;
        Ok(Ok(()))
    }

    /// One chunk of a new rollout: its hosts pending and their leases, in one batch.
    fn create_chunk(
        &self,
        id: u64,
        chunk: &[(&str, &str)],
        me: &Holder,
        may_take: &(dyn Fn(&Holder) -> bool + Sync),
    ) -> Result<std::result::Result<(), Held>> {
        let hosts: Vec<&str> = chunk.iter().map(|(h, _)| *h).collect();
        let (k, v) = selection_chunk(id, chunk);
        self.take_leases(&hosts, me, may_take, &|batch| {
            batch.put(k.clone(), v.clone());
        })
    }

    /// The answer recorded for an operator's request id (pause, resume, abort, retry).
    pub fn action_answer(&self, request_id: &str) -> Result<Option<pb::Rollout>> {
        self.kv
            .get(&key(REQUESTS, format!("action:{request_id}").as_bytes()))?
            .map(|v| decode("requests", &v))
            .transpose()
    }

    /// Records the answer to an operator's request id. Durable at the next flush.
    pub fn put_action_answer(&self, request_id: &str, answer: &pb::Rollout) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(
            key(REQUESTS, format!("action:{request_id}").as_bytes()),
            answer.encode_to_vec(),
        );
        self.write(batch, "requests")
    }

    /// Overwrites a rollout's record (state changes). Durable at the next flush.
    pub fn put_rollout(&self, record: &pb::RolloutRecord) -> Result<()> {
        self.put_rollout_with_events(record, &[])
    }

    /// Overwrites a rollout's record and appends `events` to the audit log, in one
    /// batch: a state change and the line saying who made it go together.
    pub fn put_rollout_with_events(&self, record: &pb::RolloutRecord, events: &[pb::EventRecord]) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(key(ROLLOUTS, &record.id.to_be_bytes()), record.encode_to_vec());
        self.log(&mut batch, events);
        self.write(batch, "rollouts")
    }

    /// Overwrites a restart job's record and appends `events`, in one batch.
    pub fn put_restart_job_with_events(&self, record: &pb::RestartJobRecord, events: &[pb::EventRecord]) -> Result<()> {
        self.put_restart_job_with_notices(record, events, &[])
    }

    /// [`Store::put_restart_job_with_events`], and `notices` into the outbox, in the
    /// same batch.
    pub fn put_restart_job_with_notices(
        &self,
        record: &pb::RestartJobRecord,
        events: &[pb::EventRecord],
        notices: &[pb::Notification],
    ) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(key(JOBS, &record.id.to_be_bytes()), record.encode_to_vec());
        self.log(&mut batch, events);
        self.outbox(&mut batch, notices);
        self.write(batch, "restart_jobs")
    }

    /// Adds or replaces one host of the inventory and appends `events`, in one batch
    /// (a heartbeat registered it). Registrations are serialised by the engine.
    pub fn put_host_with_events(&self, host: &pb::HostRecord, events: &[pb::EventRecord]) -> Result<()> {
        let k = key(HOSTS, &host_bucket(&host.id).to_be_bytes());
        let mut bucket: pb::HostBucket = match self.kv.get(&k)? {
            Some(v) => decode("host_buckets", &v)?,
            None => pb::HostBucket::default(),
        };
        bucket.hosts.retain(|h| h.id != host.id);
        let mut hosts: Vec<&pb::HostRecord> = bucket.hosts.iter().chain([host]).collect();
        let mut batch = Batch::default();
        batch.put(k, encode_bucket(&mut hosts));
        self.log(&mut batch, events);
        self.write(batch, "host_buckets")
    }

    pub fn rollout(&self, id: u64) -> Result<Option<pb::RolloutRecord>> {
        self.kv
            .get(&key(ROLLOUTS, &id.to_be_bytes()))?
            .map(|v| decode("rollouts", &v))
            .transpose()
    }

    /// Every rollout, oldest first.
    pub fn rollouts(&self) -> Result<Vec<pb::RolloutRecord>> {
        backend::scan_prefix(self.kv.as_ref(), ROLLOUTS)
            .map(|kv| decode("rollouts", &kv?.1))
            .collect()
    }

    /// The rollout a client request created, if any.
    pub fn rollout_for_request(&self, request_id: &str) -> Result<Option<u64>> {
        Ok(self
            .kv
            .get(&key(REQUESTS, request_id.as_bytes()))?
            .as_deref()
            .and_then(as_u64))
    }

    /// Replaces the stored inventory, writing only what changed (a restart with the
    /// same fleet file writes nothing). Customers are added first and removed last, and
    /// each kind changes in one atomic batch, so a crash at any point leaves hosts whose
    /// customers are all stored.
    pub fn put_inventory(&self, hosts: &[pb::HostRecord], customers: &[pb::CustomerRecord]) -> Result<()> {
        let customers: Vec<(Vec<u8>, Vec<u8>)> = customers
            .iter()
            .map(|c| (key(CUSTOMERS, c.id.as_bytes()), c.encode_to_vec()))
            .collect();
        let mut buckets: BTreeMap<[u8; 4], Vec<&pb::HostRecord>> = BTreeMap::new();
        for h in hosts {
            buckets.entry(host_bucket(&h.id).to_be_bytes()).or_default().push(h);
        }
        let buckets: Vec<(Vec<u8>, Vec<u8>)> = buckets
            .iter_mut()
            .map(|(k, hosts)| (key(HOSTS, k), encode_bucket(hosts)))
            .collect();
        self.update(CUSTOMERS, &customers, false)?;
        self.update(HOSTS, &buckets, true)?;
        self.update(CUSTOMERS, &customers, true)
    }

    /// Makes the keys under `prefix` hold `entries`: writes what is new or different
    /// and, with `prune`, deletes keys not among them; one atomic batch. One ordered
    /// scan of what is stored, merged with the entries in key order (a remote backend
    /// answers a scan in a few pages, but a read per key is a round trip each).
    fn update(&self, prefix: &[u8], entries: &[(Vec<u8>, Vec<u8>)], prune: bool) -> Result<()> {
        let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = entries.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut batch = Batch::default();
        let mut stored = backend::scan_prefix(self.kv.as_ref(), prefix);
        let mut next = stored.next().transpose()?;
        for (k, value) in sorted {
            // Stored keys before this one are not among the entries.
            while let Some((stored_key, _)) = next.as_ref().filter(|(sk, _)| sk < k) {
                if prune {
                    batch.delete(stored_key.clone());
                }
                next = stored.next().transpose()?;
            }
            let same = next.as_ref().is_some_and(|(sk, sv)| sk == k && sv == value);
            if next.as_ref().is_some_and(|(sk, _)| sk == k) {
                next = stored.next().transpose()?;
            }
            if !same {
                batch.put(k.clone(), value.clone());
            }
        }
        while let Some((stored_key, _)) = next {
            if prune {
                batch.delete(stored_key);
            }
            next = stored.next().transpose()?;
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.write(batch, "inventory")
    }

    /// The stored inventory: the hosts `keep` selects by id, sorted by id, and every
    /// customer.
    pub fn inventory(&self, keep: impl Fn(&str) -> bool) -> Result<(Vec<pb::HostRecord>, Vec<pb::CustomerRecord>)> {
        let mut hosts = Vec::new();
        for kv in backend::scan_prefix(self.kv.as_ref(), HOSTS) {
            let bucket: pb::HostBucket = decode("host_buckets", &kv?.1)?;
            hosts.extend(bucket.hosts.into_iter().filter(|h| keep(&h.id)));
        }
        hosts.sort_unstable_by(|a: &pb::HostRecord, b| a.id.cmp(&b.id));
        let customers = backend::scan_prefix(self.kv.as_ref(), CUSTOMERS)
            .map(|kv| decode("customers", &kv?.1))
            .collect::<Result<_>>()?;
        Ok((hosts, customers))
    }

    /// Records a new restart job in one batch: its hosts, their leases, the record
    /// and its request id; then flushes. `Ok(Err(held))` when a host is leased.
    pub async fn create_restart_job(
        &self,
        record: &pb::RestartJobRecord,
        hosts: &[pb::RestartHostRecord],
        request_id: &str,
        events: &[pb::EventRecord],
        notices: &[pb::Notification],
    ) -> Result<std::result::Result<(), Held>> {
        let me = Holder::Job { id: record.id };
        let host_id = |r: &pb::RestartHostRecord| r.host.as_ref().map_or("", |h| h.host_id.as_str()).to_string();
        let ids: Vec<String> = hosts.iter().map(host_id).collect();
        let leased: Vec<&str> = ids.iter().map(String::as_str).collect();
        let taken = self.take_leases(&leased, &me, &|_| false, &|batch| {
            for (host, r) in ids.iter().zip(hosts) {
                batch.put(host_key(JOB_HOSTS, record.id, host), r.encode_to_vec());
            }
            batch.put(key(JOBS, &record.id.to_be_bytes()), record.encode_to_vec());
            if !request_id.is_empty() {
                batch.put(
                    key(REQUESTS, format!("restart:{request_id}").as_bytes()),
                    record.id.to_be_bytes().to_vec(),
                );
            }
            self.log(batch, events);
            self.outbox(batch, notices);
        })?;
        if let Err(held) = taken {
            return Ok(Err(held));
        }
        self.flush().await?;
        Ok(Ok(()))
    }

    /// The restart job a client request created, if any.
    pub fn restart_job_for_request(&self, request_id: &str) -> Result<Option<u64>> {
        Ok(self
            .kv
            .get(&key(REQUESTS, format!("restart:{request_id}").as_bytes()))?
            .as_deref()
            .and_then(as_u64))
    }

    /// Overwrites a restart job's record. Durable at the next flush.
    pub fn put_restart_job(&self, record: &pb::RestartJobRecord) -> Result<()> {
        self.put_restart_job_with_events(record, &[])
    }

    /// Every restart job, oldest first.
    pub fn restart_jobs(&self) -> Result<Vec<pb::RestartJobRecord>> {
        backend::scan_prefix(self.kv.as_ref(), JOBS)
            .map(|kv| decode("restart_jobs", &kv?.1))
            .collect()
    }

    /// Writes host records of one restart job in one batch. Durable at the next flush.
    pub fn put_restart_hosts<'a>(
        &self,
        job: u64,
        records: impl IntoIterator<Item = &'a pb::RestartHostRecord>,
    ) -> Result<()> {
        let mut batch = Batch::default();
        for record in records {
            let host = record.host.as_ref().map_or("", |h| h.host_id.as_str());
            batch.put(host_key(JOB_HOSTS, job, host), record.encode_to_vec());
        }
        self.write(batch, "restart_hosts")
    }

    /// All host records of a restart job, in host id order.
    pub fn restart_hosts(&self, job: u64) -> Result<Vec<pb::RestartHostRecord>> {
        backend::scan_prefix(self.kv.as_ref(), &host_key(JOB_HOSTS, job, ""))
            .map(|kv| decode("restart_hosts", &kv?.1))
            .collect()
    }
}
