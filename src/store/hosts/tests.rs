//! Grouped host records: updates over the snapshot, pages, checkpoints, the crashes
//! a checkpoint can meet, readers during one, wave partitions, and schema 3's rows
//! and schema 4's flat generations migrated.

use std::sync::Arc;

use super::super::{Backend, LEGACY_ROLLOUT_HOSTS, META, SledBackend};
use super::*;

fn host(i: usize) -> String {
    format!("h{i:05}")
}

fn record(state: pb::HostState, detail: &str) -> pb::RolloutHostRecord {
    pb::RolloutHostRecord {
        state: state as i32,
        wave: 1,
        detail: detail.into(),
        ..Default::default()
    }
}

/// A store over a fresh backend with rollout 1 of `n` hosts; the backend is returned
/// to open the store again (a restart).
async fn rollout(n: usize) -> (Store, Arc<SledBackend>) {
    let kv = Arc::new(SledBackend::temporary().unwrap());
    let store = Store::with_backend(kv.clone()).unwrap();
    let ids: Vec<String> = (0..n).map(host).collect();
    let hosts: Vec<(&str, &str)> = ids.iter().rev().map(|h| (h.as_str(), "")).collect();
    let r = pb::RolloutRecord {
        id: 1,
        name: "r".into(),
        ..Default::default()
    };
    store
        .create_rollout(&r, &hosts, &|_| false, None, &[], &[])
        .await
        .unwrap()
        .unwrap();
    (store, kv)
}

fn keys(kv: &dyn Backend, prefix: &[u8]) -> usize {
    backend::scan_prefix(kv, &of_rollout(prefix, 1)).count()
}

fn states(store: &Store) -> Vec<(String, pb::HostState, String)> {
    store
        .rollout_hosts(1)
        .map(|r| {
            let (h, rec) = r.unwrap();
            (h, rec.state(), rec.detail)
        })
        .collect()
}

#[tokio::test]
async fn updates_apply_over_the_snapshot_one_value_per_batch() {
    let (store, kv) = rollout(10_000).await;
    assert_eq!(keys(kv.as_ref(), SNAPSHOT), 3, "10,000 hosts in chunks of 4,096");
    let ids: Vec<String> = (0..1_000).map(|i| host(i * 7)).collect();
    let done = record(pb::HostState::Succeeded, "");
    store.put_hosts(1, ids.iter().map(|h| (h.as_str(), &done))).unwrap();
    assert_eq!(keys(kv.as_ref(), UPDATES), 1, "one value for the batch");
    let failed = record(pb::HostState::Failed, "disk full");
    store.put_hosts(1, [(host(7).as_str(), &failed)]).unwrap();
    let all = states(&store);
    assert_eq!(all.len(), 10_000);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in host id order");
    assert_eq!(
        all[7],
        (host(7), pb::HostState::Failed, "disk full".into()),
        "newest wins"
    );
    assert_eq!(all[14].1, pb::HostState::Succeeded);
    assert_eq!(all[15].1, pb::HostState::Pending);
    // A page starts after the host asked, in the middle of a chunk.
    let page: Vec<String> = store
        .rollout_hosts_after(1, &host(5_000))
        .take(2)
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(page, [host(5_001), host(5_002)]);
    assert_eq!(store.rollout_hosts_after(1, &host(9_999)).count(), 0);
    assert_eq!(store.rollout_hosts_after(1, "a").count(), 10_000);
    // A restarted store reads the same.
    let again = Store::with_backend(kv).unwrap();
    assert_eq!(states(&again), all);
}

/// Updates of every host, over and over, until checkpoints fold them: the reads
/// never change, the folded updates and old generations are gone.
#[tokio::test]
async fn checkpoints_fold_updates_and_reads_stay_the_same() {
    let (store, kv) = rollout(5_000).await;
    let ids: Vec<String> = (0..5_000).map(host).collect();
    for round in 0..20 {
        let detail = format!("round {round}: {}", "x".repeat(60));
        let r = record(pb::HostState::Failed, &detail);
        store.put_hosts(1, ids.iter().map(|h| (h.as_str(), &r))).unwrap();
        let all = states(&store);
        assert_eq!(all.len(), 5_000);
        assert!(all.iter().all(|(_, s, d)| *s == pb::HostState::Failed && *d == detail));
    }
    let mark: pb::HostsMark = decode("mark", &kv.get(&of_rollout(MARK, 1)).unwrap().unwrap()).unwrap();
    assert!(mark.generation >= 2, "checkpointed: {mark:?}");
    assert!(keys(kv.as_ref(), UPDATES) < 20, "folded updates deleted");
    assert_eq!(keys(kv.as_ref(), SNAPSHOT), 2, "one generation left");
    let again = Store::with_backend(kv).unwrap();
    assert!(states(&again).iter().all(|(_, _, d)| d.starts_with("round 19")));
}

/// A checkpoint cut short before its mark left part of a generation: nobody reads
/// it, and the next checkpoint writes it whole.
#[tokio::test]
async fn a_generation_without_its_mark_is_ignored_and_redone() {
    let (store, kv) = rollout(5_000).await;
    let bad = pb::HostRow {
        host: host(0),
        record: Some(record(pb::HostState::Failed, "half a checkpoint")),
    };
    let (k, v) = chunk(1, 1, 0, vec![bad]);
    let mut batch = Batch::default();
    batch.put(k, v);
    assert!(kv.commit(batch).unwrap());
    let store2 = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(states(&store2)[0].1, pb::HostState::Pending);
    drop(store);
    let ids: Vec<String> = (0..5_000).map(host).collect();
    let done = record(pb::HostState::Succeeded, &"y".repeat(100));
    for _ in 0..5 {
        store2.put_hosts(1, ids.iter().map(|h| (h.as_str(), &done))).unwrap();
    }
    assert!(kv.get(&of_rollout(MARK, 1)).unwrap().is_some(), "checkpointed");
    let all = states(&Store::with_backend(kv).unwrap());
    assert_eq!(all.len(), 5_000);
    assert!(all.iter().all(|(_, s, _)| *s == pb::HostState::Succeeded));
}

/// A crash after the mark and before the folded updates were deleted: an older
/// update left behind is skipped, and deleted at the next load.
#[tokio::test]
async fn folded_updates_left_behind_are_skipped() {
    let (store, kv) = rollout(5_000).await;
    let ids: Vec<String> = (0..5_000).map(host).collect();
    let done = record(pb::HostState::Succeeded, &"z".repeat(100));
    while kv.get(&of_rollout(MARK, 1)).unwrap().is_none() {
        store.put_hosts(1, ids.iter().map(|h| (h.as_str(), &done))).unwrap();
    }
    let stale = pb::HostRows {
        rows: vec![pb::HostRow {
            host: host(3),
            record: Some(record(pb::HostState::Dispatched, "")),
        }],
        log_bytes: 0,
    };
    let mut batch = Batch::default();
    batch.put(update_key(1, 1), stale.encode_to_vec());
    assert!(kv.commit(batch).unwrap());
    let again = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(states(&again)[3].1, pb::HostState::Succeeded);
    assert!(kv.get(&update_key(1, 1)).unwrap().is_none(), "deleted at load");
}

/// A reader streaming a generation keeps it until it is done, while checkpoints
/// happen under it.
#[tokio::test]
async fn a_reader_keeps_its_generation() {
    let (store, kv) = rollout(10_000).await;
    let mut reading = store.rollout_hosts(1);
    let first = reading.next().unwrap().unwrap();
    let ids: Vec<String> = (0..10_000).map(host).collect();
    let done = record(pb::HostState::Succeeded, &"w".repeat(100));
    while kv.get(&of_rollout(MARK, 1)).unwrap().is_none() {
        store.put_hosts(1, ids.iter().map(|h| (h.as_str(), &done))).unwrap();
    }
    let rest: Vec<_> = reading.map(|r| r.unwrap()).collect();
    assert_eq!(rest.len() + 1, 10_000, "the old generation was read whole");
    assert_eq!(first.1.state(), pb::HostState::Pending, "as it was when reading began");
    assert!(rest.iter().all(|(_, r)| r.state() == pb::HostState::Pending));
    store.put_hosts(1, [(host(0).as_str(), &done)]).unwrap();
    assert_eq!(keys(kv.as_ref(), SNAPSHOT), 3, "the old generation deleted once read");
}

/// Schema 3's row per host becomes chunks at open; a crash after the mark (rows left
/// over) only deletes the rows.
#[test]
fn rows_per_host_are_migrated_to_chunks() {
    let kv = Arc::new(SledBackend::temporary().unwrap());
    let mut batch = Batch::default();
    batch.put(key(META, b"schema_version"), 3u32.to_be_bytes().to_vec());
    for i in 0..5_000 {
        let mut k = of_rollout(LEGACY_ROLLOUT_HOSTS, 1);
        k.extend_from_slice(host(i).as_bytes());
        let state = if i % 2 == 0 {
            pb::HostState::Succeeded
        } else {
            pb::HostState::Pending
        };
        batch.put(k, record(state, "").encode_to_vec());
    }
    assert!(kv.commit(batch).unwrap());
    let store = Store::with_backend(kv.clone()).unwrap();
    let all = states(&store);
    assert_eq!(all.len(), 5_000);
    assert_eq!(all[2].1, pb::HostState::Succeeded);
    assert_eq!(all[3].1, pb::HostState::Pending);
    assert_eq!(keys(kv.as_ref(), LEGACY_ROLLOUT_HOSTS), 0);
    assert_eq!(store.schema_version().unwrap(), Some(super::super::SCHEMA_VERSION));
    // The crash after the mark: a row left behind, the version not yet written.
    let mut batch = Batch::default();
    batch.put(key(META, b"schema_version"), 3u32.to_be_bytes().to_vec());
    let mut k = of_rollout(LEGACY_ROLLOUT_HOSTS, 1);
    k.extend_from_slice(host(2).as_bytes());
    batch.put(k, record(pb::HostState::Failed, "old").encode_to_vec());
    assert!(kv.commit(batch).unwrap());
    let store = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(states(&store), all, "the chunks stand, the row is dropped");
    assert_eq!(keys(kv.as_ref(), LEGACY_ROLLOUT_HOSTS), 0);
}

/// Folds the rollout's updates into a new generation now.
fn fold(store: &Store) {
    let book = store.books.of(1);
    let mut book = lock(&book);
    store.load_book(1, &mut book).unwrap();
    store.checkpoint(1, &mut book).unwrap();
}

fn in_wave(state: pb::HostState, wave: u32) -> pb::RolloutHostRecord {
    pb::RolloutHostRecord {
        wave,
        ..record(state, "")
    }
}

/// A snapshot is partitioned by wave; full reads and pages merge the partitions back
/// into host id order, and a resume reads only the unsettled ones.
#[tokio::test]
async fn waves_are_partitions_merged_back_in_order() {
    let (store, kv) = rollout(10_000).await;
    let ids: Vec<String> = (0..10_000).map(host).collect();
    let first = in_wave(pb::HostState::Succeeded, 1);
    let second = in_wave(pb::HostState::Assigned, 2);
    store
        .put_hosts(1, ids.iter().step_by(2).map(|h| (h.as_str(), &first)))
        .unwrap();
    store
        .put_hosts(1, ids.iter().skip(1).step_by(4).map(|h| (h.as_str(), &second)))
        .unwrap();
    let before = states(&store);
    fold(&store);
    assert_eq!(store.partitions(1, 1).unwrap(), [0, 1, 2]);
    assert_eq!(states(&store), before, "merged back in host id order");
    let page: Vec<String> = store
        .rollout_hosts_after(1, &host(4_999))
        .take(3)
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(page, [host(5_000), host(5_001), host(5_002)], "a page spans partitions");

    // Wave 1 settled (a counters checkpoint through it): the others are read.
    let since = store.next_host_update(1).unwrap();
    let unsettled = |store: &Store| {
        let mut rows = store.rollout_hosts_unsettled(1, 1, since);
        let hosts: Vec<(String, u32)> = rows
            .by_ref()
            .map(|r| r.map(|(h, rec)| (h, rec.wave)).unwrap())
            .collect();
        (hosts, rows.checkpoint_holds())
    };
    let (hosts, holds) = unsettled(&store);
    assert_eq!(hosts.len(), 5_000);
    assert!(hosts.iter().all(|(_, w)| *w != 1) && holds);
    // A later wave moving on: the checkpoint still holds.
    let done = in_wave(pb::HostState::Succeeded, 2);
    store.put_hosts(1, [(host(1).as_str(), &done)]).unwrap();
    assert!(unsettled(&store).1);
    // A settled host written after the checkpoint (in any partition): it does not.
    let again = in_wave(pb::HostState::Failed, 1);
    store.put_hosts(1, [(host(0).as_str(), &again)]).unwrap();
    assert!(!unsettled(&store).1, "a settled host changed since");
    let mark: pb::HostsMark = decode("mark", &kv.get(&of_rollout(MARK, 1)).unwrap().unwrap()).unwrap();
    assert!(mark.waves);
}

/// Schema 4's flat generation is rewritten in wave partitions at open; a crash after
/// the new mark leaves the old generation, swept at first use.
#[test]
fn flat_generations_are_partitioned_at_open() {
    let kv = Arc::new(SledBackend::temporary().unwrap());
    let write_flat = |generation: u32, n: usize| {
        let mut batch = Batch::default();
        batch.put(key(META, b"schema_version"), 4u32.to_be_bytes().to_vec());
        let rows: Vec<pb::HostRow> = (0..n)
            .map(|i| pb::HostRow {
                host: host(i),
                record: Some(in_wave(pb::HostState::Succeeded, (i % 3) as u32)),
            })
            .collect();
        for piece in rows.chunks(CHUNK) {
            let k = key(&generation_prefix(1, generation), piece[0].host.as_bytes());
            let v = pb::HostRows {
                rows: piece.to_vec(),
                log_bytes: 0,
            };
            batch.put(k, v.encode_to_vec());
        }
        assert!(kv.commit(batch).unwrap());
    };
    write_flat(0, 5_000);
    let store = Store::with_backend(kv.clone()).unwrap();
    let all = states(&store);
    assert_eq!(all.len(), 5_000);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(store.partitions(1, 1).unwrap(), [0, 1, 2]);
    assert_eq!(
        store.partitions(1, 0).unwrap(),
        Vec::<u32>::new(),
        "the flat one deleted"
    );
    let waves: Vec<u32> = store.rollout_hosts(1).map(|r| r.unwrap().1.wave).collect();
    assert_eq!(waves[..4], [0, 1, 2, 0]);
    // The crash after the mark: the flat generation is still there, the version not
    // yet written. The mark says the rollout is done; its first use sweeps the rest.
    write_flat(0, 10);
    let store = Store::with_backend(kv.clone()).unwrap();
    assert_eq!(states(&store), all);
    assert_eq!(keys(kv.as_ref(), SNAPSHOT), 3, "the flat generation swept");
}
