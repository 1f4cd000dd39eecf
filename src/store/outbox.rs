//! The notification outbox: `nq` subject ++ seq -> `Notification`, written in the
//! same batch as the change each one reports (a rollout's record and its audit
//! lines), so that no crash, failover or paused leader loses one, and a new leader
//! finds what the old one had not delivered. A subject is a rollout (`r` ++ id) or a
//! restart job (`j` ++ id), a freeze (`f` ++ id), or the controllers (`c`, seq the
//! leader's epoch); seq
//! counts 1, 2, 3... per rollout or job with no gap.
//!
//! Beside it, what each sink has done with each subject (`nc` sink 0 subject ->
//! `SinkCursor`), and the alerts an Alertmanager sink keeps firing (`na` sink ->
//! `FiringAlerts`). A signal tells the notifier which subjects were written, once
//! the batch is committed.

use std::collections::BTreeMap;

use prost::Message;

use super::backend::{self, Batch, Op};
use super::{Result, Store, decode, key};
use crate::proto::v1 as pb;

pub(super) const NOTICES: &[u8] = b"nq";
const CURSORS: &[u8] = b"nc";
const FIRING: &[u8] = b"na";

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    Rollout(u64),
    Job(u64),
    /// The controllers themselves (a new leader).
    Controllers,
    /// A freeze (seq 1 started, 2 ended).
    Freeze(u64),
}

impl Subject {
    pub fn of(n: &pb::Notification) -> Subject {
        if n.freeze_id != 0 {
            Subject::Freeze(n.freeze_id)
        } else if n.job_id != 0 {
            Subject::Job(n.job_id)
        } else if n.rollout_id != 0 {
            Subject::Rollout(n.rollout_id)
        } else {
            Subject::Controllers
        }
    }

    fn tail(self) -> Vec<u8> {
        let (tag, id) = match self {
            Subject::Rollout(id) => (b'r', id),
            Subject::Job(id) => (b'j', id),
            Subject::Controllers => (b'c', 0),
            Subject::Freeze(id) => (b'f', id),
        };
        let mut tail = vec![tag];
        tail.extend_from_slice(&id.to_be_bytes());
        tail
    }

    /// The subject and seq of a notification's key.
    fn parse(key: &[u8]) -> Option<(Subject, u64)> {
        let tail = key.strip_prefix(NOTICES)?;
        let (tag, rest) = tail.split_first()?;
        let id = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
        let seq = u64::from_be_bytes(rest.get(8..16)?.try_into().ok()?);
        let subject = match tag {
            b'r' => Subject::Rollout(id),
            b'j' => Subject::Job(id),
            b'c' => Subject::Controllers,
            b'f' => Subject::Freeze(id),
            _ => return None,
        };
        Some((subject, seq))
    }
}

/// The subjects whose notifications `batch` writes (to signal once committed).
pub(super) fn written(batch: &Batch) -> Vec<Subject> {
    let mut out: Vec<Subject> = batch
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Put(k, _) if k.starts_with(NOTICES) => Subject::parse(k).map(|(s, _)| s),
            _ => None,
        })
        .collect();
    out.dedup();
    out
}

fn cursor_key(sink: &str, subject: Subject) -> Vec<u8> {
    let mut tail = sink.as_bytes().to_vec();
    tail.push(0);
    tail.extend_from_slice(&subject.tail());
    key(CURSORS, &tail)
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
                signed.controller = self.acting.to_string();
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

    /// Writes notifications that report no other change (a new leader). Durable at
    /// the next flush.
    pub fn put_notices(&self, notices: &[pb::Notification]) -> Result<()> {
        let mut batch = Batch::default();
        self.outbox(&mut batch, notices);
        self.write(batch, "notices")
    }

    /// Tells the notifier, after each committed batch, which subjects got
    /// notifications. A receiver that lags behind must look at every subject.
    pub fn outbox_written(&self) -> tokio::sync::broadcast::Receiver<Subject> {
        self.outbox_signal.subscribe()
    }

    /// Each subject of the outbox with its last seq.
    pub fn outbox_heads(&self) -> Result<BTreeMap<Subject, u64>> {
        let mut heads = BTreeMap::new();
        for kv in backend::scan_prefix(self.kv.as_ref(), NOTICES) {
            if let Some((subject, seq)) = Subject::parse(&kv?.0) {
                heads.insert(subject, seq);
            }
        }
        Ok(heads)
    }

    /// How far sink `sink` is with `subject` (nothing done yet: the default).
    pub fn sink_cursor(&self, sink: &str, subject: Subject) -> Result<pb::SinkCursor> {
        match self.kv.get(&cursor_key(sink, subject))? {
            Some(v) => decode("sink_cursors", &v),
            None => Ok(pb::SinkCursor::default()),
        }
    }

    /// Every cursor of sink `sink`.
    pub fn sink_cursors(&self, sink: &str) -> Result<Vec<pb::SinkCursor>> {
        let mut prefix = sink.as_bytes().to_vec();
        prefix.push(0);
        backend::scan_prefix(self.kv.as_ref(), &key(CURSORS, &prefix))
            .map(|kv| decode("sink_cursors", &kv?.1))
            .collect()
    }

    /// Records how far sink `sink` is with `subject`, and `events` in the audit
    /// log, in one batch. Durable at the next flush.
    pub fn put_sink_cursor(
        &self,
        sink: &str,
        subject: Subject,
        cursor: &pb::SinkCursor,
        events: &[pb::EventRecord],
    ) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(cursor_key(sink, subject), cursor.encode_to_vec());
        self.log(&mut batch, events);
        self.write(batch, "sink_cursors")
    }

    /// The alerts Alertmanager sink `sink` has posted as firing.
    pub fn firing_alerts(&self, sink: &str) -> Result<pb::FiringAlerts> {
        match self.kv.get(&key(FIRING, sink.as_bytes()))? {
            Some(v) => decode("firing_alerts", &v),
            None => Ok(pb::FiringAlerts::default()),
        }
    }

    pub fn put_firing_alerts(&self, sink: &str, alerts: &pb::FiringAlerts) -> Result<()> {
        let mut batch = Batch::default();
        batch.put(key(FIRING, sink.as_bytes()), alerts.encode_to_vec());
        self.write(batch, "firing_alerts")
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
        let heads = store.outbox_heads().unwrap();
        assert_eq!(heads.get(&Subject::Rollout(7)), Some(&2));
        assert_eq!(heads.get(&Subject::Job(7)), Some(&1));
    }

    #[test]
    fn committed_notices_are_signalled_and_cursors_kept_per_sink() {
        let store = Store::temporary().unwrap();
        let mut signal = store.outbox_written();
        let leader = pb::Notification {
            id: "controllers-3".into(),
            r#type: "controller.leader_changed".into(),
            seq: 3,
            ..Default::default()
        };
        store.put_notices(&[leader]).unwrap();
        assert_eq!(signal.try_recv().unwrap(), Subject::Controllers);
        let c = pb::SinkCursor {
            seq: 3,
            delivered: 1,
            ..Default::default()
        };
        store.put_sink_cursor("bridge", Subject::Controllers, &c, &[]).unwrap();
        assert_eq!(store.sink_cursor("bridge", Subject::Controllers).unwrap(), c);
        assert_eq!(store.sink_cursor("bridge-2", Subject::Controllers).unwrap().seq, 0);
        assert_eq!(store.sink_cursors("bridge").unwrap().len(), 1);
        assert!(
            store.sink_cursors("bridg").unwrap().is_empty(),
            "a name is not a prefix"
        );
    }
}
