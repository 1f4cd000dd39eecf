//! `rollout store copy`: a stopped controller's data dir, with an unfinished rollout,
//! copied into an empty etcd prefix through the real CLI; refused into a prefix that
//! holds a store, and from a directory a running controller holds. A real etcd
//! (Debian's `etcd-server`) on loopback; skipped without it, failing instead with
//! ROLLOUT_ETCD_TESTS=required.

use std::path::Path;
use std::process::Command;

use rollout::proto::v1 as pb;
use rollout::store::Store;
use rollout::store::etcd_backend::local::LocalEtcd;

fn copy(from: &Path, to: &str) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rollout"))
        .args(["store", "copy", "--from"])
        .arg(from)
        .args(["--to", to])
        .output()
        .expect("the CLI runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.trim().to_string())
}

/// Everything a controller would read of rollout 1: its record, every host's record,
/// who holds three of its hosts.
type Contents = (
    Vec<pb::RolloutRecord>,
    Vec<(String, pb::RolloutHostRecord)>,
    Vec<Option<String>>,
);

fn contents(store: &Store) -> Contents {
    let hosts = store.rollout_hosts(1).map(|r| r.expect("a host row")).collect();
    let leases = ["h0000", "h1234", "h2999"]
        .iter()
        .map(|h| store.lease(h).expect("lease").map(|l| l.to_string()))
        .collect();
    (store.rollouts().expect("rollouts"), hosts, leases)
}

/// `rollout store copy` moves a data dir into a real etcd with its unfinished rollout
/// (the same rollouts, hosts and leases); into a prefix that holds a store, or from a
/// data dir a controller holds, it is refused in one line and writes nothing.
#[ignore = "needs etcd (Debian's etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_is_copied_into_etcd_with_its_unfinished_rollout() {
    let Some(etcd) = LocalEtcd::start_for_test(1).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let before = {
        let store = Store::open(&data).unwrap();
        let ids: Vec<String> = (0..3_000).map(|i| format!("h{i:04}")).collect();
        let hosts: Vec<(&str, &str)> = ids.iter().map(|h| (h.as_str(), "")).collect();
        let record = pb::RolloutRecord {
            id: 1,
            name: "fix".into(),
            state: pb::RolloutState::Running as i32,
            hosts_selected: 3_000,
            ..Default::default()
        };
        store
            .create_rollout(&record, &hosts, &|_| false, None, &[], &[])
            .await
            .unwrap()
            .unwrap();
        let done = pb::RolloutHostRecord {
            state: pb::HostState::Succeeded as i32,
            wave: 1,
            ..Default::default()
        };
        store
            .put_hosts(1, ids[..1_000].iter().map(|h| (h.as_str(), &done)))
            .unwrap();
        store.flush().await.unwrap();
        contents(&store)
    };

    let url = etcd.url("site");
    let (ok, said) = copy(&data, &url);
    assert!(ok, "{said}");
    assert!(said.starts_with("copied ") && said.contains("/site/"), "{said}");
    let copied = Store::open_etcd(&etcd.address("site")).expect("the copy opens");
    assert_eq!(contents(&copied), before, "the same rollouts, hosts and leases");
    drop(copied);

    // Into a prefix that holds a store: refused, in one line.
    let (ok, said) = copy(&data, &url);
    assert!(!ok);
    assert!(said.contains("already holds a store") && !said.contains('\n'), "{said}");

    // From a directory a controller holds: refused, nothing written.
    let held = Store::open(&data).unwrap();
    let (ok, said) = copy(&data, &etcd.url("other"));
    assert!(!ok);
    assert!(said.contains("in use by another controller"), "{said}");
    drop(held);
    let other = rollout::store::etcd_backend::EtcdBackend::connect(&etcd.address("other")).unwrap();
    assert!(
        rollout::store::Backend::range(&other, b"", None, false)
            .next()
            .is_none()
    );
    etcd.stop();
}
