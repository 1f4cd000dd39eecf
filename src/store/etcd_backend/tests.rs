//! The etcd backend against a real etcd: addresses, batches cut to etcd's limits,
//! the conformance suite and a rollout's records (the election and its fencing are
//! tested in `crate::cluster::election`).

use super::super::backend::conformance;
use super::*;

#[test]
fn addresses_parse_or_say_what_is_expected() {
    let a: EtcdAddress = "etcd://127.0.0.1:2379,127.0.0.1:22379/prod/rollout".parse().unwrap();
    assert_eq!(a.endpoints, ["127.0.0.1:2379", "127.0.0.1:22379"]);
    assert_eq!(a.prefix, b"/prod/rollout/");
    let b: EtcdAddress = "etcd://[::1]:2379".parse().unwrap();
    assert_eq!((b.endpoints.len(), b.prefix.as_slice()), (1, &b"/rollout/"[..]));
    for bad in ["127.0.0.1:2379", "etcd://", "etcd://host", "etcd://h:0", "etcd://h:x/p"] {
        let e = bad.parse::<EtcdAddress>().unwrap_err().to_string();
        assert!(e.contains("expected etcd://HOST:PORT"), "{bad}: {e}");
    }
}

#[test]
fn a_key_written_twice_in_a_batch_is_written_once_as_the_last_op_says() {
    let ops = vec![
        Op::Put(b"a".to_vec(), b"1".to_vec()),
        Op::Delete(b"b".to_vec()),
        Op::Delete(b"a".to_vec()),
        Op::Put(b"b".to_vec(), b"2".to_vec()),
    ];
    let ops: Vec<pb::RequestOp> = request_ops(ops, |k| k.to_vec()).into_iter().map(|(_, op)| op).collect();
    assert_eq!(ops.len(), 2);
    assert!(matches!(
        &ops[0].request,
        Some(pb::request_op::Request::RequestDeleteRange(d)) if d.key == b"a"
    ));
    assert!(matches!(
        &ops[1].request,
        Some(pb::request_op::Request::RequestPut(p)) if p.key == b"b" && p.value == b"2"
    ));
}

/// The conformance suite against a real etcd (Debian's `etcd-server`), one
/// member on loopback ports; skipped without an `etcd` binary unless
/// `ROLLOUT_ETCD_TESTS=required`.
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_conformance_suite() {
    let Some(etcd) = local::LocalEtcd::start_for_test(1).await else {
        return;
    };
    let open = || EtcdBackend::connect(&etcd.address("conformance")).expect("etcd answers");
    let b = open();
    conformance::batches_are_atomic(&b);
    conformance::a_failed_condition_writes_nothing(&b);
    conformance::ranges_are_ordered(&b);
    conformance::flushed_batches_survive_a_reopen(open).await;
    // Another prefix sees none of it.
    let other = EtcdBackend::connect(&etcd.address("other")).unwrap();
    assert!(super::super::backend::scan_prefix(&other, b"").next().is_none());
    // Pages: more keys than a page, values larger than a transaction's share.
    let mut batch = Batch::default();
    for i in 0..1_000u32 {
        batch.put(format!("p/{i:05}"), vec![b'x'; 4_000]);
    }
    assert!(b.commit(batch).unwrap(), "written in parts");
    let keys: Vec<Vec<u8>> = super::super::backend::scan_prefix(&b, b"p/")
        .map(|kv| kv.unwrap().0)
        .collect();
    assert_eq!(keys.len(), 1_000);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
    let last: Vec<Vec<u8>> = b.range(b"p/", None, true).take(3).map(|kv| kv.unwrap().0).collect();
    assert_eq!(last, [b"p/00999".to_vec(), b"p/00998".to_vec(), b"p/00997".to_vec()]);
    let mut big = Batch::default();
    big.require_absent("p/none");
    for i in 0..200u32 {
        big.put(format!("q/{i}"), "v");
    }
    let refused = b.commit(big).unwrap_err().to_string();
    assert!(refused.contains("larger than one etcd transaction takes"), "{refused}");
    assert!(super::super::backend::scan_prefix(&b, b"q/").next().is_none());
    // The store on etcd: a 10,000-host rollout created in chunks with its leases,
    // updated in batches, checkpointed, and read back by a second store.
    let store = super::super::Store::with_backend(Arc::new(open())).expect("a store on etcd");
    assert_eq!(store.schema_version().unwrap(), Some(super::super::SCHEMA_VERSION));
    let ids: Vec<String> = (0..10_000).map(|i| format!("h{i:05}")).collect();
    let hosts: Vec<(&str, &str)> = ids.iter().map(|h| (h.as_str(), "")).collect();
    let record = crate::proto::v1::RolloutRecord {
        id: 1,
        name: "fix".into(),
        ..Default::default()
    };
    store
        .create_rollout(&record, &hosts, &|_| false, None, &[], &[])
        .await
        .unwrap()
        .unwrap();
    let done = crate::proto::v1::RolloutHostRecord {
        state: crate::proto::v1::HostState::Succeeded as i32,
        wave: 1,
        // Long details: 4,096 rows of them are more than etcd takes in one request.
        detail: "x".repeat(600),
        ..Default::default()
    };
    for _ in 0..4 {
        store.put_hosts(1, ids.iter().map(|h| (h.as_str(), &done))).unwrap();
    }
    let again = super::super::Store::with_backend(Arc::new(open())).unwrap();
    let read: Vec<_> = again.rollout_hosts(1).map(|r| r.unwrap()).collect();
    assert_eq!(read.len(), 10_000);
    assert!(
        read.iter()
            .all(|(_, r)| r.state() == crate::proto::v1::HostState::Succeeded)
    );
    let holder = again.lease("h04321").unwrap().map(|h| h.to_string());
    assert_eq!(holder.as_deref(), Some("active rollout `fix` (id 1)"));
    etcd.stop();
}

#[test]
fn etcd_busy_or_a_member_gone_is_asked_again_a_refusal_is_not() {
    use tonic::Status;
    for busy in [
        Status::unavailable("etcdserver: leader changed"),
        Status::unavailable("etcdserver: request timed out"),
        Status::unknown("transport error: connection reset"),
        Status::cancelled("Timeout expired"),
        Status::deadline_exceeded("deadline"),
    ] {
        assert!(transient(&busy), "{busy:?}");
    }
    for refused in [
        Status::invalid_argument("etcdserver: too many operations in txn request"),
        Status::unknown("etcdserver: some logic error"),
        Status::permission_denied("etcdserver: permission denied"),
        Status::out_of_range("etcdserver: mvcc: required revision has been compacted"),
    ] {
        assert!(!transient(&refused), "{refused:?}");
    }
}

/// Three members, the one calls go to killed: reads, writes and a lease's grant go
/// on through the other two at once, and a backend connects while one is down (a
/// balanced channel kept picking the dead member, which refuses fastest).
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_hands_its_calls_to_the_others() {
    let Some(mut etcd) = local::LocalEtcd::start_for_test(3).await else {
        return;
    };
    let b = EtcdBackend::connect(&etcd.address("members")).expect("etcd answers");
    let mut batch = Batch::default();
    batch.put("k", "before");
    assert!(b.commit(batch).unwrap());
    etcd.kill(0);
    // Each call would otherwise be asked again of the dead member until it gives up.
    for i in 0..20 {
        let mut batch = Batch::default();
        batch.put("k", format!("after {i}"));
        assert!(b.commit(batch).expect("written through the others"));
        assert_eq!(b.get(b"k").unwrap(), Some(format!("after {i}").into_bytes()));
    }
    let members = b.members();
    let grant = pb::LeaseGrantRequest { ttl: 5, id: 0 };
    let granted = b
        .on_channel(move |channel| async move {
            let mut lease = pb::lease_client::LeaseClient::new(channel);
            lease.lease_grant(grant).await.map(|r| r.into_inner())
        })
        .await
        .expect("a lease through the others");
    assert!(granted.id != 0);
    assert_ne!(members.pinned().0.index(), 0, "calls moved off the dead member");
    let again = EtcdBackend::connect(&etcd.address("members")).expect("connects while a member is down");
    assert_eq!(again.get(b"k").unwrap(), Some(b"after 19".to_vec()));
    etcd.stop();
}
