//! Controllers on etcd as processes: one started on a prefix of a local etcd, the
//! roles they list (leader, standby), and signals to them (SIGSTOP, SIGCONT).

use std::path::Path;
use std::time::Duration;

use rollout::cli::process::Spawned;
use rollout::cli::{Credentials, connect_with};
use rollout::proto::v1 as pb;
use rollout::store::etcd_backend::local::LocalEtcd;

use super::{spawn_rollout, within};

/// A controller on `etcd`'s prefix `ha` (lease 3 s), its standard error appended to `log`.
pub async fn controller(etcd: &LocalEtcd, fleet: &Path, log: &Path, extra: &[&str]) -> Spawned {
    let store = etcd.url("ha");
    let fleet = fleet.display().to_string();
    let mut args = vec![
        "serve",
        "--store",
        &store,
        "--listen",
        "127.0.0.1:0",
        "--fleet",
        &fleet,
        "--leader-lease",
        "3s",
    ];
    args.extend_from_slice(extra);
    spawn_rollout(args, log, "a controller").await
}

pub fn url(c: &Spawned) -> String {
    format!("http://{}", c.addr)
}

/// The controllers, as `asked` lists them (a standby forwards the question to the
/// leader, which may be paused: a second at most), asked as `who`.
pub async fn controllers_as(asked: &str, who: &Credentials) -> Option<Vec<pb::ControllerInfo>> {
    let ask = async {
        let mut c = connect_with(asked, who).await.ok()?;
        let listed = c.list_controllers(pb::ListControllersRequest {}).await.ok()?;
        Some(listed.into_inner().controllers)
    };
    tokio::time::timeout(Duration::from_secs(1), ask).await.ok().flatten()
}

pub async fn controllers(asked: &str) -> Option<Vec<pb::ControllerInfo>> {
    controllers_as(asked, &Credentials::default()).await
}

/// Waits until controller `url` is listed with role `wanted`, asking it as `who`.
pub async fn until_role_as(url: &str, wanted: &str, what: &str, who: &Credentials) {
    within(60, what, async {
        loop {
            let listed = controllers_as(url, who).await.unwrap_or_default();
            if listed.iter().any(|c| c.advertise == url && c.role == wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

pub async fn until_role(url: &str, wanted: &str, what: &str) {
    until_role_as(url, wanted, what, &Credentials::default()).await
}

/// Sends `signal` to the controller.
pub fn signal(c: &Spawned, signal: i32) {
    let pid = c.pid().expect("the controller runs") as i32;
    // SAFETY: kill sends a signal to a child process this test started.
    unsafe { libc::kill(pid, signal) };
}
