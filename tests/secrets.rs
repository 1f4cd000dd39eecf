//! No secret is ever shown, and nothing a host prints is taken as markup: a Slack
//! incoming webhook's URL carries its secret in the path, so a viewer, the audit log
//! and the controller's log see the sink only as scheme, host and port; a deploy
//! that prints Slack markup reaches the channel escaped. Through a real controller,
//! a real agent and a Slack receiver written here.

mod common;

use std::sync::{Arc, Mutex};

use common::agents::HostDir;
use common::*;
use rollout::auth::hash_token;
use rollout::cli::{Credentials, connect_with};
use rollout::proto::v1 as pb;
use rollout::tls::ClientFiles;

const SECRET_PATH: &str = "/services/T0ROLLOUT/B0INCIDENT/S3cretPathOfTheHook";
const DOWN_SECRET: &str = "DownSinkSecretInPath";
const MARKUP: &str = "<!channel> approve at <https://evil.example|https://rollout.corp/approve> & now";

/// A Slack incoming webhook as Slack runs one: POST of `{"text": ...}` to the
/// secret path, answered `ok`. Records each text.
async fn slack_receiver() -> (String, Arc<Mutex<Vec<String>>>, tokio_util::sync::CancellationToken) {
    let texts = Arc::new(Mutex::new(Vec::new()));
    let kept = texts.clone();
    let app = axum::Router::new().route(
        SECRET_PATH,
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                kept.lock()
                    .unwrap()
                    .push(v["text"].as_str().unwrap_or_default().to_string());
                "ok"
            }
        }),
    );
    let (addr, stop) = common::receiver::serve_app(app).await;
    (format!("http://{addr}{SECRET_PATH}"), texts, stop)
}

fn viewer() -> Credentials {
    Credentials {
        tls: ClientFiles::default(),
        token: Some("token-of-the-viewer-0123456789".into()),
    }
}

/// A Slack sink's secret path is absent from everything a viewer can read (`notify
/// status` as text and JSON, the audit log), from the audit lines of an
/// undeliverable event and from the controller's log; a real agent's failing deploy
/// that prints `<!channel>` and a disguised link is delivered to Slack escaped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_secrets_stay_secret_and_host_text_is_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let (url, texts, stop) = slack_receiver().await;
    // A second Slack sink nobody answers: its failures fill last_error and, after
    // give_up_after, the audit log's "undeliverable" lines.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let sinks = dir.path().join("sinks.yaml");
    std::fs::write(
        &sinks,
        format!(
            "sinks:\n  - name: incident-room\n    kind: slack\n    url: {url}\n    events: [\"rollout.*\"]\n  - name: old-room\n    kind: slack\n    url: http://{closed_addr}/services/T0/B0/{DOWN_SECRET}\n    events: [\"rollout.*\"]\n    timeout: 1s\n    give_up_after: 2s\n"
        ),
    )
    .unwrap();
    let host = HostDir::new(dir.path(), "apac-exo-0001", &format!("echo '{MARKUP}'\nexit 3"), "30s");
    let agent = host.start("127.0.0.1:0").await;
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        format!(
            "hosts:\n  - id: apac-exo-0001\n    address: {}\n    labels: {{service: exo}}\n",
            agent.addr
        ),
    )
    .unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "tokens:\n  - principal: otto\n    role: operator\n    sha256: {}\n  - principal: vera\n    role: viewer\n    sha256: {}\n",
            hash_token("token-of-otto-0123456789"),
            hash_token("token-of-the-viewer-0123456789")
        ),
    )
    .unwrap();
    let log = dir.path().join("controller.log");
    let controller = spawn_controller(
        &dir.path().join("data"),
        &fleet,
        &[
            "--notify".as_ref(),
            sinks.as_os_str(),
            "--auth".as_ref(),
            tokens.as_os_str(),
        ],
        &log,
    )
    .await;
    let server = format!("http://{}", controller.addr);
    let operator = Credentials {
        tls: ClientFiles::default(),
        token: Some("token-of-otto-0123456789".into()),
    };
    let mut client = connect_with(&server, &operator).await.unwrap();
    let spec = plan_for_service("markup", &["100%"], "0", "exo");
    submit(&mut client, spec).await;

    // The halt reaches Slack with the host's output, escaped.
    let halted = within(60, "Slack to get the halt with the host's output", async {
        loop {
            if let Some(t) = texts.lock().unwrap().iter().find(|t| t.contains("evil.example")) {
                return t.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        halted.contains("&lt;!channel&gt;")
            && halted.contains("&lt;https://evil.example|https://rollout.corp/approve&gt;"),
        "{halted}"
    );
    assert!(
        !halted.contains('<') && !halted.contains('>'),
        "markup reached Slack: {halted}"
    );

    // The dead sink gives its events up (audited as undeliverable).
    let mut viewer_client = connect_with(&server, &viewer()).await.unwrap();
    within(60, "the dead sink to give an event up", async {
        loop {
            let s = viewer_client
                .notify_status(pb::NotifyStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            if s.sinks.iter().any(|s| s.name == "old-room" && s.undeliverable > 0) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;

    let token_file = dir.path().join("viewer.token");
    std::fs::write(&token_file, "token-of-the-viewer-0123456789\n").unwrap();
    let as_viewer = |args: &[&str]| {
        let mut all = vec![
            "--server",
            server.as_str(),
            "--token-file",
            token_file.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let mut shown = String::new();
    for args in [
        as_viewer(&["notify", "status"]),
        as_viewer(&["notify", "status", "--output", "json"]),
        as_viewer(&["audit", "--since", "1h"]),
        as_viewer(&["audit", "--since", "1h", "--output", "json"]),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = rollout(&args).await;
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        shown.push_str(&text(&out.stdout));
        shown.push_str(&text(&out.stderr));
    }
    assert!(shown.contains("undeliverable"), "{shown}");
    assert!(
        shown.contains(&format!("http://{closed_addr}")),
        "the sink is still named by host and port: {shown}"
    );
    // And what the controller logged.
    drop(controller);
    shown.push_str(&std::fs::read_to_string(&log).unwrap());
    for secret in ["S3cretPathOfTheHook", "B0INCIDENT", DOWN_SECRET, "/services/"] {
        assert!(!shown.contains(secret), "`{secret}` was shown:\n{shown}");
    }
    stop.cancel();
    drop(agent);
}
