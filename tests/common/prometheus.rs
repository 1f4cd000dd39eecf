//! A real Prometheus (Debian's `prometheus` package) as a process on a loopback port,
//! scraping given targets every second, its data in a temporary directory. Killed
//! when dropped. Without a `prometheus` binary a test says it skipped; with
//! ROLLOUT_PROMETHEUS_TESTS=required it fails instead.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The variable that makes a missing `prometheus` a test failure instead of a skip.
pub const REQUIRED: &str = "ROLLOUT_PROMETHEUS_TESTS";

pub struct LocalPrometheus {
    child: Option<Child>,
    /// Its HTTP API's base URL.
    pub url: String,
    dir: tempfile::TempDir,
    /// Trusts its certificate when it serves TLS.
    client: reqwest::Client,
}

fn available() -> bool {
    Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl LocalPrometheus {
    /// A Prometheus scraping `targets` (HOST:PORT, `/metrics`) every second, or None
    /// (saying the test is skipped) without a `prometheus` binary.
    pub async fn start_for_test(targets: &[String]) -> Option<LocalPrometheus> {
        LocalPrometheus::start_with(targets, None).await
    }

    /// The same, its API served over TLS with `tls` (certificate, key, and the CA
    /// that signed them, PEM files) at `https://`.
    pub async fn start_with(targets: &[String], tls: Option<(&Path, &Path, &Path)>) -> Option<LocalPrometheus> {
        if !available() {
            rollout::testing::skip(REQUIRED, "no `prometheus` binary: install Debian's prometheus");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: sim\n    scrape_interval: 1s\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut command = Command::new("prometheus");
        let mut client = reqwest::Client::builder();
        let mut scheme = "http";
        if let Some((cert, key, ca)) = tls {
            let web = dir.path().join("web.yml");
            let text = format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                cert.display(),
                key.display()
            );
            std::fs::write(&web, text).unwrap();
            command.arg(format!("--web.config.file={}", web.display()));
            let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
            client = client.add_root_certificate(ca);
            scheme = "https";
        }
        let child = command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let mut p = LocalPrometheus {
            child: Some(child),
            url: format!("{scheme}://127.0.0.1:{port}"),
            dir,
            client: client.build().unwrap(),
        };
        p.wait_ready().await;
        Some(p)
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.client.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not get ready within 60 s (log in {})",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The value of `promql` now, if it has one.
    pub async fn value(&self, promql: &str) -> Option<f64> {
        let answer: serde_json::Value = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Kills it (SIGKILL): its API stops answering.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for LocalPrometheus {
    fn drop(&mut self) {
        self.kill();
    }
}
