//! A real Alertmanager (Debian's `prometheus-alertmanager`) as a process on a
//! loopback port: a halted rollout is a firing `RolloutHalted` alert in its API, with
//! the labels and the status text, and resolved once the rollout is resumed and
//! ends. Skipped without the binary, failing instead with
//! ROLLOUT_ALERTMANAGER_TESTS=required.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

const REQUIRED: &str = "ROLLOUT_ALERTMANAGER_TESTS";
const BINARY: &str = "prometheus-alertmanager";

struct LocalAlertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for LocalAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalAlertmanager {
    async fn start_for_test() -> Option<LocalAlertmanager> {
        let found = Command::new(BINARY)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            rollout::testing::skip(
                REQUIRED,
                &format!("no `{BINARY}`: install Debian's prometheus-alertmanager"),
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nobody\n  group_wait: 1s\nreceivers:\n  - name: nobody\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
        let child = Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No cluster: no gossip port, nothing but loopback.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("alertmanager starts");
        let am = LocalAlertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reqwest::get(format!("{}/-/ready", am.url))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(Instant::now() < deadline, "alertmanager did not get ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some(am)
    }

    /// The alerts its API lists now.
    async fn alerts(&self) -> Vec<serde_json::Value> {
        reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Firing while the condition holds: a `RolloutHalted` alert with labels alertname,
/// rollout, site, severity and the status text as its summary; resolved (gone from
/// the active alerts) once the rollout is resumed and ends.
#[ignore = "needs prometheus-alertmanager (Debian's); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_rollout_fires_until_it_is_resumed_and_ends() {
    let Some(am) = LocalAlertmanager::start_for_test().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sinks = dir.path().join("sinks.yaml");
    std::fs::write(
        &sinks,
        format!("sinks:\n  - name: pager\n    kind: alertmanager\n    url: {}\n", am.url),
    )
    .unwrap();
    let sim = Sim::start(
        200,
        SimulatorOptions {
            fail_rate: 0.5,
            ..Default::default()
        },
    )
    .await;
    let controller = Controller::start_notifying(&dir.path().join("data"), &sim.fleet, &sinks).await;
    let mut client = controller.client().await;
    submit(&mut client, plan("paged-fix", &["10%", "100%"], "2%")).await;
    let halted = within(
        60,
        "the rollout to halt",
        watch_until(&mut client, "paged-fix", |r| {
            r.state() == pb::RolloutState::Halted || r.state().is_terminal()
        }),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    let firing = within(60, "the alert to fire in Alertmanager", async {
        loop {
            let found = am
                .alerts()
                .await
                .into_iter()
                .find(|a| a["labels"]["alertname"] == "RolloutHalted");
            if let Some(a) = found {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(firing["status"]["state"], "active", "{firing}");
    assert_eq!(firing["labels"]["rollout"], "paged-fix");
    assert_eq!(firing["labels"]["site"], "test-site");
    assert_eq!(firing["labels"]["severity"], "critical");
    let summary = firing["annotations"]["summary"].as_str().unwrap();
    assert_eq!(summary, get(&mut client, "paged-fix").await.summary, "the status text");
    assert!(
        firing["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("is halted: wave 1"),
        "{firing}"
    );

    sim.sim.set_fail_rate(0.0);
    client.resume_rollout(action("paged-fix")).await.unwrap();
    let done = within(
        60,
        "the resumed rollout to end",
        watch_until(&mut client, "paged-fix", |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    within(60, "the alert to be resolved", async {
        loop {
            let still = am
                .alerts()
                .await
                .into_iter()
                .any(|a| a["labels"]["alertname"] == "RolloutHalted" && a["status"]["state"] == "active");
            if !still {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let status = client
        .notify_status(pb::NotifyStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.sinks[0].delivered >= 2, "fired and resolved: {status:?}");
    assert_eq!(status.sinks[0].pending, 0, "{status:?}");
    controller.stop().await;
    sim.stop().await;
}
