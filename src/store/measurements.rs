//! A rollout's analysis measurements: `am` rollout id ++ sequence -> `Measurement`,
//! each round written with its audit lines in one batch, so that a bake resumed after
//! a restart counts what was measured before it.

use prost::Message;

use super::backend::{self, Batch};
use super::{Result, Store, decode, key};
use crate::proto::v1 as pb;

const MEASUREMENTS: &[u8] = b"am";

fn measurement_key(rollout: u64, seq: u64) -> Vec<u8> {
    let mut tail = rollout.to_be_bytes().to_vec();
    tail.extend_from_slice(&seq.to_be_bytes());
    key(MEASUREMENTS, &tail)
}

impl Store {
    /// Records measurements of rollout `rollout`, numbered from `first`, with their
    /// audit lines. Durable at the next flush.
    pub fn put_measurements(
        &self,
        rollout: u64,
        first: u64,
        measurements: &[pb::Measurement],
        events: &[pb::EventRecord],
    ) -> Result<()> {
        let mut batch = Batch::default();
        for (seq, m) in (first..).zip(measurements) {
            batch.put(measurement_key(rollout, seq), m.encode_to_vec());
        }
        self.log(&mut batch, events);
        self.write(batch, "measurements")
    }

    /// Every measurement of rollout `rollout`, oldest first.
    pub fn measurements(&self, rollout: u64) -> Result<Vec<pb::Measurement>> {
        let prefix = key(MEASUREMENTS, &rollout.to_be_bytes());
        backend::scan_prefix(self.kv.as_ref(), &prefix)
            .map(|kv| decode("measurements", &kv?.1))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::proto::v1 as pb;

    #[test]
    fn measurements_are_kept_per_rollout_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::Store::open(dir.path()).unwrap();
        let m = |check: &str, at| pb::Measurement {
            check: check.into(),
            wave: 1,
            at_unix_ms: at,
            value: 0.01,
            verdict: "pass".into(),
            ..Default::default()
        };
        store.put_measurements(7, 0, &[m("a", 1), m("b", 1)], &[]).unwrap();
        store.put_measurements(7, 2, &[m("a", 2)], &[]).unwrap();
        store.put_measurements(8, 0, &[m("a", 3)], &[]).unwrap();
        let seven: Vec<(String, i64)> = store
            .measurements(7)
            .unwrap()
            .into_iter()
            .map(|m| (m.check, m.at_unix_ms))
            .collect();
        assert_eq!(seven, [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
        assert_eq!(store.measurements(8).unwrap().len(), 1);
        assert!(store.measurements(9).unwrap().is_empty());
    }
}
