//! Real etcd members as processes on loopback ports, for tests and benchmarks: one
//! member, or a cluster of several. `etcd` is Debian's `etcd-server` package. Every
//! member is killed, and its data removed, when the [`LocalEtcd`] is dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{EtcdAddress, EtcdBackend};

/// The variable that makes a missing `etcd` a test failure instead of a skip.
pub const REQUIRED: &str = "ROLLOUT_ETCD_TESTS";

/// A running etcd cluster on 127.0.0.1.
pub struct LocalEtcd {
    members: Vec<Member>,
    dir: tempfile::TempDir,
}

struct Member {
    name: String,
    client: String,
    child: Option<Child>,
}

/// A free loopback port (bound, then let go: etcd binds it a moment later).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl LocalEtcd {
    /// True when an `etcd` binary is on the PATH.
    pub fn available() -> bool {
        Command::new("etcd")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// For a test: a cluster of `members`, or None (with a line saying the test is
    /// skipped) when there is no `etcd`; with `ROLLOUT_ETCD_TESTS=required` a missing
    /// `etcd` fails the test instead.
    pub async fn start_for_test(members: usize) -> Option<LocalEtcd> {
        if !LocalEtcd::available() {
            crate::testing::skip(REQUIRED, "no `etcd` binary: install Debian's etcd-server");
            return None;
        }
        // Ports are picked free and then handed to etcd, so another process may take
        // one in between: a cluster that does not come up is tried again on new ports.
        let mut last = None;
        for _ in 0..3 {
            match LocalEtcd::start(members).await {
                Ok(etcd) => return Some(etcd),
                Err(e) => {
                    eprintln!("etcd did not start on loopback ({e}); trying again on other ports");
                    last = Some(e);
                }
            }
        }
        panic!("etcd starts on loopback: {last:?}")
    }

    /// Starts a cluster of `members` and waits until it answers.
    pub async fn start(members: usize) -> std::io::Result<LocalEtcd> {
        let dir = tempfile::tempdir()?;
        let mut peers = Vec::new();
        let mut clients = Vec::new();
        for i in 0..members {
            peers.push((format!("m{i}"), format!("http://127.0.0.1:{}", free_port()?)));
            clients.push(format!("127.0.0.1:{}", free_port()?));
        }
        let cluster: Vec<String> = peers.iter().map(|(n, url)| format!("{n}={url}")).collect();
        let cluster = cluster.join(",");
        let mut started = Vec::new();
        for ((name, peer), client) in peers.iter().zip(&clients) {
            let log = std::fs::File::create(dir.path().join(format!("{name}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", name])
                .arg("--data-dir")
                .arg(dir.path().join(name))
                .args(["--listen-client-urls", &format!("http://{client}")])
                .args(["--advertise-client-urls", &format!("http://{client}")])
                .args(["--listen-peer-urls", peer])
                .args(["--initial-advertise-peer-urls", peer])
                .args(["--initial-cluster", &cluster])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", "rollout-test"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?;
            started.push(Member {
                name: name.clone(),
                client: client.clone(),
                child: Some(child),
            });
        }
        let etcd = LocalEtcd { members: started, dir };
        etcd.wait_ready().await?;
        Ok(etcd)
    }

    async fn wait_ready(&self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = self.address("ready");
        loop {
            let probe = address.clone();
            let ready = tokio::task::spawn_blocking(move || EtcdBackend::connect(&probe).is_ok())
                .await
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                // The directory goes with this cluster: its members' last words go in
                // the error.
                let tails: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| {
                        let log = std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name)))
                            .unwrap_or_default();
                        let last: Vec<&str> = log.lines().rev().take(3).collect();
                        format!("{}: {}", m.name, last.into_iter().rev().collect::<Vec<_>>().join(" | "))
                    })
                    .collect();
                return Err(std::io::Error::other(format!(
                    "etcd did not answer within 60 s; {}",
                    tails.join("; ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The cluster's address for a store under `/prefix/`.
    pub fn address(&self, prefix: &str) -> EtcdAddress {
        EtcdAddress {
            endpoints: self.members.iter().map(|m| m.client.clone()).collect(),
            prefix: format!("/{prefix}/").into_bytes(),
        }
    }

    /// `etcd://...` for `rollout serve --store`.
    pub fn url(&self, prefix: &str) -> String {
        let hosts: Vec<&str> = self.members.iter().map(|m| m.client.as_str()).collect();
        format!("etcd://{}/{prefix}", hosts.join(","))
    }

    /// Which member is the cluster's raft leader now (an index into the members), as
    /// the members that answer say.
    pub async fn leader(&self) -> Option<usize> {
        use crate::proto::etcd::maintenance_client::MaintenanceClient;
        let mut ids = Vec::new();
        let mut leader = None;
        for m in &self.members {
            let status = async {
                let mut client = MaintenanceClient::connect(format!("http://{}", m.client)).await.ok()?;
                client
                    .status(crate::proto::etcd::StatusRequest {})
                    .await
                    .ok()
                    .map(|s| s.into_inner())
            };
            let status = match m.child {
                Some(_) => tokio::time::timeout(Duration::from_secs(5), status)
                    .await
                    .ok()
                    .flatten(),
                None => None,
            };
            ids.push(status.as_ref().and_then(|s| s.header.as_ref()).map(|h| h.member_id));
            leader = leader.or(status.map(|s| s.leader).filter(|l| *l != 0));
        }
        let leader = leader?;
        ids.iter().position(|id| *id == Some(leader))
    }

    /// Kills member `i` (SIGKILL); the others go on without it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members.get_mut(i).and_then(|m| m.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every member and removes their data.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for LocalEtcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            tracing::debug!(member = %m.name, "etcd member stopped");
        }
    }
}
