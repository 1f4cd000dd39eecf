//! The notification outbox: `nq` subject ++ seq -> `Notification`, written in the
//! same batch as the change each one reports (a rollout's record and its audit
//! lines), so that no crash, failover or paused leader loses one, and a new leader
//! finds what the old one had not delivered. A subject is a rollout (`r` ++ id) or a
//! restart job (`j` ++ id); seq counts 1, 2, 3... per subject with no gap.

use prost::Message;

use super::backend::{self, Batch};
use super::{Result, Store, decode, key};
use crate::proto::v1 as pb;

const NOTICES: &[u8] = b"nq";

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Rollout(u64),
    Job(u64),
}

impl Subject {
    pub fn of(n: &pb::Notification) -> Subject {
        if n.job_id != 0 {
            Subject::Job(n.job_id)
        } else {
            Subject::Rollout(n.rollout_id)
        }
    }

    fn tail(self) -> Vec<u8> {
        let (tag, id) = match self {
            Subject::Rollout(id) => (b'r', id),
            Subject::Job(id) => (b'j', id),
        };
        let mut tail = vec![tag];
        tail.extend_from_slice(&id.to_be_bytes());
        tail
    }
}

fn notice_key(subject: Subject, seq: u64) -> Vec<u8> {
    let mut tail = subject.tail();
    tail.extend_from_slice(&seq.to_be_bytes());
    key(NOTICES, &tail)
}

impl Store {
    /// Adds `notices` to `batch`, each naming this store's writer as the controller
    /// that acted.
    pub(super) fn outbox(&self, batch: &mut Batch, notices: &[pb::Notification]) {
        for n in notices {
            let mut signed = n.clone();
            if signed.controller.is_empty() {
                signed.controller = self.writer.to_string();
            }
            batch.put(notice_key(Subject::of(n), n.seq), signed.encode_to_vec());
        }
    }

    /// Overwrites a rollout's record, appends `events` to the audit log and
    /// `notices` to the outbox, in one batch. Durable at the next flush.
    pub fn put_rollout_with_notices(
        &self,
        record: &pb::RolloutRecord,
        events: &[pb::EventRecord],
        notices: &[pb::Notification],
    ) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(key(super::ROLLOUTS, &record.id.to_be_bytes()), record.encode_to_vec());
        self.log(&mut batch, events);
        self.outbox(&mut batch, notices);
        self.write(batch, "rollouts")
    }

    /// The notifications of `subject` after seq `after`, in seq order.
    pub fn notices(&self, subject: Subject, after: u64) -> Result<Vec<pb::Notification>> {
        let prefix = key(NOTICES, &subject.tail());
        backend::scan_prefix(self.kv.as_ref(), &prefix)
            .map(|kv| decode::<pb::Notification>("notices", &kv?.1))
            .filter(|n| n.as_ref().map_or(true, |n| n.seq > after))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_kept_per_subject_in_seq_order_with_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap().written_by("http://127.0.0.1:7000");
        let n = |rollout_id, job_id, seq| pb::Notification {
            id: format!("x-{seq}"),
            r#type: "rollout.wave.started".into(),
            rollout_id,
            job_id,
            seq,
            ..Default::default()
        };
        let record = pb::RolloutRecord {
            id: 7,
            ..Default::default()
        };
        store
            .put_rollout_with_notices(&record, &[], &[n(7, 0, 2), n(7, 0, 1), n(0, 7, 1), n(70, 0, 1)])
            .unwrap();
        let of_7: Vec<u64> = store
            .notices(Subject::Rollout(7), 0)
            .unwrap()
            .iter()
            .map(|n| n.seq)
            .collect();
        assert_eq!(of_7, [1, 2], "ordered by seq, the job and rollout 70 apart");
        assert_eq!(store.notices(Subject::Rollout(7), 1).unwrap().len(), 1);
        assert_eq!(store.notices(Subject::Job(7), 0).unwrap().len(), 1);
        assert_eq!(
            store.notices(Subject::Rollout(7), 0).unwrap()[0].controller,
            "http://127.0.0.1:7000"
        );
    }
}
