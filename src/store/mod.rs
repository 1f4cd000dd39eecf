//! The controller's durable state, in sled. Nothing outside this module touches sled.
//!
//! Trees (records are prost messages from `proto/rollout/v1/store.proto`):
//! - `rollouts`: rollout id (u64 BE) -> `RolloutRecord`
//! - `rollout_hosts`: rollout id (u64 BE) ++ host id -> `RolloutHostRecord`
//! - `hosts`, `customers`: the inventory, by id
//! - `requests`: client request_id -> rollout id (u64 BE), for idempotent submits
//! - `events`: sequence (u64 BE) -> `EventRecord`, the audit log
//! - `meta`: schema version
//!
//! Writes are grouped: a batch of intents is one `apply_batch` and one flush (group
//! commit), and a rollout's record is written after its hosts, so a crash part-way
//! through a submission leaves no rollout behind, only unreachable host rows.

use std::path::Path;

use prost::Message;

use crate::proto::v1 as pb;

const SCHEMA_VERSION: u32 = 1;

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
    meta: sled::Tree,
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
        Ok(Store {
            rollouts: db.open_tree("rollouts")?,
            rollout_hosts: db.open_tree("rollout_hosts")?,
            hosts: db.open_tree("hosts")?,
            customers: db.open_tree("customers")?,
            requests: db.open_tree("requests")?,
            events: db.open_tree("events")?,
            restart_jobs: db.open_tree("restart_jobs")?,
            restart_hosts: db.open_tree("restart_hosts")?,
            meta,
            db,
        })
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

    /// Records a new rollout with all its selected hosts as pending, then the
    /// request id, and flushes. The rollout record goes last: it is the commit point.
    /// `hosts`: (host id, target version or "" for the plan's own).
    pub async fn create_rollout<'a>(
        &self,
        record: &pb::RolloutRecord,
        hosts: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (host, version) in hosts {
            let pending = pb::RolloutHostRecord {
                state: pb::HostState::Pending as i32,
                version: version.to_string(),
                ..Default::default()
            };
            batch.insert(host_key(record.id, host), pending.encode_to_vec());
        }
        self.rollout_hosts.apply_batch(batch)?;
        self.flush().await?;
        self.rollouts.insert(record.id.to_be_bytes(), record.encode_to_vec())?;
        if !record.request_id.is_empty() {
            self.requests
                .insert(record.request_id.as_bytes(), &record.id.to_be_bytes())?;
        }
        self.flush().await
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

    /// Writes many host records of one rollout in one batch (group commit).
    /// Durable once `flush` returns.
    pub fn put_hosts<'a>(
        &self,
        rollout: u64,
        records: impl IntoIterator<Item = (&'a str, &'a pb::RolloutHostRecord)>,
    ) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (host, record) in records {
            batch.insert(host_key(rollout, host), record.encode_to_vec());
        }
        self.rollout_hosts.apply_batch(batch)?;
        Ok(())
    }

    /// All host records of a rollout, in host id order.
    pub fn rollout_hosts(&self, rollout: u64) -> impl Iterator<Item = Result<(String, pb::RolloutHostRecord)>> + use<> {
        self.rollout_hosts.scan_prefix(rollout.to_be_bytes()).map(|kv| {
            let (k, v) = kv?;
            let host = String::from_utf8_lossy(&k[8..]).into_owned();
            Ok((host, decode("rollout_hosts", &v)?))
        })
    }

    /// Replaces the stored inventory.
    pub fn put_inventory(&self, hosts: &[pb::HostRecord], customers: &[pb::CustomerRecord]) -> Result<()> {
        self.hosts.clear()?;
        self.customers.clear()?;
        let mut batch = sled::Batch::default();
        for h in hosts {
            batch.insert(h.id.as_bytes(), h.encode_to_vec());
        }
        self.hosts.apply_batch(batch)?;
        let mut batch = sled::Batch::default();
        for c in customers {
            batch.insert(c.id.as_bytes(), c.encode_to_vec());
        }
        self.customers.apply_batch(batch)?;
        Ok(())
    }

    /// Adds or replaces one host of the inventory (a heartbeat registered it).
    pub fn put_host(&self, host: &pb::HostRecord) -> Result<()> {
        self.hosts.insert(host.id.as_bytes(), host.encode_to_vec())?;
        Ok(())
    }

    /// The stored inventory.
    pub fn inventory(&self) -> Result<(Vec<pb::HostRecord>, Vec<pb::CustomerRecord>)> {
        let hosts = self
            .hosts
            .iter()
            .map(|kv| decode("hosts", &kv?.1))
            .collect::<Result<_>>()?;
        let customers = self
            .customers
            .iter()
            .map(|kv| decode("customers", &kv?.1))
            .collect::<Result<_>>()?;
        Ok((hosts, customers))
    }

    /// Records a new restart job with its hosts, then its request id, and flushes.
    /// The job record goes last: it is the commit point.
    pub async fn create_restart_job(
        &self,
        record: &pb::RestartJobRecord,
        hosts: &[pb::RestartHostRecord],
        request_id: &str,
    ) -> Result<()> {
        self.put_restart_hosts(record.id, hosts)?;
        self.flush().await?;
        self.put_restart_job(record)?;
        if !request_id.is_empty() {
            self.requests
                .insert(format!("restart:{request_id}").as_bytes(), &record.id.to_be_bytes())?;
        }
        self.flush().await
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

    /// The audit log, oldest first.
    pub fn events(&self) -> Result<Vec<pb::EventRecord>> {
        self.events.iter().map(|kv| decode("events", &kv?.1)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            .create_rollout(&record, [("b", ""), ("a", "")].into_iter())
            .await
            .unwrap();
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
    }
}
