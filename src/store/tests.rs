//! The domain store over a real backend: creation with leases (refused whole,
//! undone chunk by chunk), the inventory written only where it changed, and the
//! migrations of older data dirs.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;

use super::backend::{Pairs, Result as BackendResult};
use super::*;

/// A backend that counts the batches that write something: "nothing was written"
/// can then be asserted.
struct Counting {
    inner: SledBackend,
    writes: AtomicUsize,
}

impl Backend for Counting {
    fn get(&self, key: &[u8]) -> BackendResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn range(&self, start: &[u8], end: Option<&[u8]>, reverse: bool) -> Pairs {
        self.inner.range(start, end, reverse)
    }

    fn commit(&self, batch: Batch) -> BackendResult<bool> {
        if !batch.ops.is_empty() {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.commit(batch)
    }

    fn flush(&self) -> futures::future::BoxFuture<'_, BackendResult<()>> {
        self.inner.flush()
    }

    fn flush_blocking(&self) -> BackendResult<()> {
        self.inner.flush_blocking()
    }
}

#[test]
fn the_inventory_is_replaced_writing_only_what_changed() {
    let counting = Arc::new(Counting {
        inner: SledBackend::temporary().unwrap(),
        writes: AtomicUsize::new(0),
    });
    let store = Store::with_backend(counting.clone()).unwrap();
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
    // Unchanged: nothing written.
    let before = counting.writes.load(Ordering::SeqCst);
    store
        .put_inventory(&[host("a", "c1"), host("b", "c1")], &[customer("c1")])
        .unwrap();
    assert_eq!(counting.writes.load(Ordering::SeqCst), before, "nothing was rewritten");
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
    let hosts: Vec<(Vec<u8>, Vec<u8>)> = ["b", "a"]
        .iter()
        .map(|id| {
            let record = pb::HostRecord {
                id: id.to_string(),
                version: "1".into(),
                ..Default::default()
            };
            (id.as_bytes().to_vec(), record.encode_to_vec())
        })
        .collect();
    sled_backend::write_legacy_trees(
        dir.path(),
        &[
            ("meta", vec![(b"schema_version".to_vec(), 1u32.to_be_bytes().to_vec())]),
            ("hosts", hosts),
        ],
    );
    let store = Store::open(dir.path()).unwrap();
    let ids: Vec<String> = store.inventory(|_| true).unwrap().0.into_iter().map(|h| h.id).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(backend::scan_prefix(store.kv.as_ref(), LEGACY_HOSTS).next().is_none());
    assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
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

/// A schema 2 data dir (a sled tree per record kind) opens as one key space with
/// everything in it, the audit log continuing after its last line; opened again, it
/// migrates nothing more.
#[test]
fn a_tree_per_kind_is_migrated_to_one_key_space() {
    let dir = tempfile::tempdir().unwrap();
    let rollout = pb::RolloutRecord {
        id: 7,
        name: "old".into(),
        ..Default::default()
    };
    let row = pb::RolloutHostRecord {
        state: pb::HostState::Succeeded as i32,
        ..Default::default()
    };
    let event = pb::EventRecord {
        detail: "first".into(),
        ..Default::default()
    };
    let mut row_key = 7u64.to_be_bytes().to_vec();
    row_key.extend_from_slice(b"h1");
    sled_backend::write_legacy_trees(
        dir.path(),
        &[
            ("meta", vec![(b"schema_version".to_vec(), 2u32.to_be_bytes().to_vec())]),
            ("rollouts", vec![(7u64.to_be_bytes().to_vec(), rollout.encode_to_vec())]),
            ("rollout_hosts", vec![(row_key, row.encode_to_vec())]),
            ("events", vec![(41u64.to_be_bytes().to_vec(), event.encode_to_vec())]),
            (
                "leases",
                vec![(
                    b"h1".to_vec(),
                    Holder::Rollout {
                        id: 7,
                        name: "old".into(),
                    }
                    .lease()
                    .encode_to_vec(),
                )],
            ),
        ],
    );
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.rollouts().unwrap(), vec![rollout.clone()]);
        let rows: Vec<_> = store.rollout_hosts(7).map(|r| r.unwrap()).collect();
        assert_eq!(rows, vec![("h1".to_string(), row.clone())]);
        assert_eq!(
            store.lease("h1").unwrap(),
            Some(Holder::Rollout {
                id: 7,
                name: "old".into()
            })
        );
        store
            .append_event(&pb::EventRecord {
                detail: "second".into(),
                ..Default::default()
            })
            .unwrap();
        let log: Vec<String> = store
            .recent_events(0, 10, |_| true)
            .unwrap()
            .into_iter()
            .map(|e| e.detail)
            .collect();
        assert_eq!(log, ["first", "second"]);
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        futures::executor::block_on(store.flush()).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.rollouts().unwrap(), vec![rollout]);
    assert_eq!(store.recent_events(0, 10, |_| true).unwrap().len(), 2);
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
        .create_rollout(&record, &[("b", ""), ("a", "")], &|_| false, None, &[], &[])
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
        .create_rollout(&other, &[("c", ""), ("b", "")], &|_| false, None, &[], &[])
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(held.0, BTreeMap::from([(me.clone(), 1)]));
    assert_eq!(store.lease("c").unwrap(), None);
    assert_eq!(store.rollout(id + 1).unwrap(), None);
    assert_eq!(store.rollout_hosts(id + 1).count(), 0);
    // A conflict in a later chunk undoes the chunks already written.
    // (Hosts are chunked in id order: "a" comes after these.)
    let many: Vec<String> = (0..hosts::CHUNK + 10).map(|i| format!("0m{i:06}")).collect();
    let mut rows: Vec<(&str, &str)> = many.iter().map(|h| (h.as_str(), "")).collect();
    rows.push(("a", ""));
    let big = pb::RolloutRecord {
        id: id + 2,
        name: "big".into(),
        ..Default::default()
    };
    let held = store
        .create_rollout(&big, &rows, &|_| false, None, &[], &[])
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(held.0, BTreeMap::from([(me.clone(), 1)]));
    assert_eq!(
        store.lease("0m000000").unwrap(),
        None,
        "the first chunk's leases are undone"
    );
    assert_eq!(store.rollout_hosts(id + 2).count(), 0, "and its rows");
    assert_eq!(store.rollout(id + 2).unwrap(), None);
    // Preempting takes it; the first holder's release then leaves "b" alone.
    store
        .create_rollout(&other, &[("c", ""), ("b", "")], &|h| *h == me, None, &[], &[])
        .await
        .unwrap()
        .unwrap();
    store.release_leases(&me).unwrap();
    assert_eq!(store.lease("a").unwrap(), None);
    assert_eq!(
        store.lease("b").unwrap(),
        Some(Holder::Rollout {
            id: id + 1,
            name: "other".into()
        })
    );
}

/// What was written and flushed is there when the store is opened again: a new store
/// records its schema first, so a reopen never takes it for an older one.
#[tokio::test]
async fn a_reopened_store_has_what_was_flushed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_inventory(&[], &[]).unwrap();
        let c = pb::HostRecord {
            id: "c".into(),
            ..Default::default()
        };
        store.put_host_with_events(&c, &[]).unwrap();
        assert_eq!(store.next_id().unwrap(), 1);
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
    let ids: Vec<String> = store.inventory(|_| true).unwrap().0.into_iter().map(|h| h.id).collect();
    assert_eq!(ids, ["c"]);
    assert_eq!(store.next_id().unwrap(), 2);
}

/// Leases are sets: a rollout of 10,000 hosts holds three chunks, not a key per host;
/// a writer deciding on a stale view of the leases (another controller's) writes
/// nothing and decides again on what the other wrote.
#[tokio::test]
async fn leases_are_chunks_and_a_stale_writer_decides_again() {
    let kv = Arc::new(SledBackend::temporary().unwrap());
    let first = Store::with_backend(kv.clone()).unwrap();
    let second = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(
        second.lease("h00001").unwrap(),
        None,
        "the second writer's view, read now"
    );
    let ids: Vec<String> = (0..10_000).map(|i| format!("h{i:05}")).collect();
    let hosts: Vec<(&str, &str)> = ids.iter().map(|h| (h.as_str(), "")).collect();
    let big = pb::RolloutRecord {
        id: 1,
        name: "big".into(),
        ..Default::default()
    };
    first
        .create_rollout(&big, &hosts, &|_| false, None, &[], &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(backend::scan_prefix(kv.as_ref(), b"lc").count(), 3);
    let me = Holder::Rollout {
        id: 1,
        name: "big".into(),
    };
    assert_eq!(first.lease_holders().unwrap(), BTreeMap::from([(me.clone(), 10_000)]));
    let other = pb::RolloutRecord {
        id: 2,
        name: "other".into(),
        ..Default::default()
    };
    let held = second
        .create_rollout(&other, &[("h00001", ""), ("new", "")], &|_| false, None, &[], &[])
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(held.0, BTreeMap::from([(me.clone(), 1)]));
    assert_eq!(second.lease("new").unwrap(), None);
    // Taken from its holder (a preemption), a host leaves the holder's chunk: when the
    // taker gives it up, it is free, not returned to the first.
    second
        .create_rollout(&other, &[("h00001", ""), ("new", "")], &|h| *h == me, None, &[], &[])
        .await
        .unwrap()
        .unwrap();
    let them = Holder::Rollout {
        id: 2,
        name: "other".into(),
    };
    // The first writer's view is stale now; taking the host back, it learns why not.
    let held = first.lease_hosts(&me, &["h00001".to_string()]).unwrap().unwrap_err();
    assert_eq!(held.0, BTreeMap::from([(them.clone(), 1)]));
    assert_eq!(first.lease("h00001").unwrap(), Some(them.clone()), "reloaded");
    second.release_leases(&them).unwrap();
    let fresh = Store::with_backend(kv).unwrap();
    assert_eq!(fresh.lease("h00001").unwrap(), None);
    assert_eq!(fresh.lease("h00002").unwrap(), Some(me.clone()));
    assert_eq!(fresh.lease_holders().unwrap(), BTreeMap::from([(me, 9_999)]));
}

/// Schema 3's lease keys become chunks at open; a crash after the lease version was
/// written (keys left over, the schema not yet 4) only deletes the keys, and a crash
/// before it writes the chunks again whole.
#[test]
fn lease_keys_are_migrated_to_chunks() {
    let kv = Arc::new(SledBackend::temporary().unwrap());
    let holder = Holder::Rollout {
        id: 3,
        name: "fix".into(),
    };
    let schema3 = |extra: &[&str]| {
        let mut batch = Batch::default();
        batch.put(key(META, b"schema_version"), 3u32.to_be_bytes().to_vec());
        for host in ["a", "b", "c"].iter().chain(extra) {
            batch.put(key(LEGACY_LEASES, host.as_bytes()), holder.lease().encode_to_vec());
        }
        batch
    };
    assert!(kv.commit(schema3(&[])).unwrap());
    let store = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(store.lease_holders().unwrap(), BTreeMap::from([(holder.clone(), 3)]));
    assert_eq!(backend::scan_prefix(kv.as_ref(), LEGACY_LEASES).count(), 0);
    // After the lease version: a key left over is deleted, not added again.
    assert!(kv.commit(schema3(&["d"])).unwrap());
    let store = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(store.lease_holders().unwrap(), BTreeMap::from([(holder.clone(), 3)]));
    assert_eq!(store.lease("d").unwrap(), None);
    // Before it (the version gone with the crash): every key becomes a chunk again.
    let mut undone = schema3(&["d"]);
    undone.delete(key(META, b"lease_version"));
    assert!(kv.commit(undone).unwrap());
    let store = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(store.lease_holders().unwrap(), BTreeMap::from([(holder, 4)]));
    assert_eq!(backend::scan_prefix(kv.as_ref(), b"lc").count(), 1, "no chunk twice");
}
