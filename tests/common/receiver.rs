//! A webhook receiver written for the tests, on 127.0.0.1:0: it verifies every
//! request's Standard Webhooks signature itself (HMAC-SHA256 over id.timestamp.body
//! under the secret, independently of the crate's code), records every request, and
//! answers as told: 200, a status, or never.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Ok,
    Status(u16),
    /// Holds the request and never answers.
    Silent,
}

/// One request as it came.
#[derive(Debug, Clone)]
pub struct Request {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with (0: never answered).
    pub answered: u16,
    /// The signature was verified (a webhook sink signs every request).
    pub verified: bool,
    pub event: serde_json::Value,
}

impl Request {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

struct State {
    mode: Mutex<Mode>,
    requests: Mutex<Vec<Request>>,
    key: Vec<u8>,
}

pub struct Receiver {
    pub url: String,
    /// The secret as a sinks file's secret_file holds it.
    pub secret: String,
    state: Arc<State>,
    stop: CancellationToken,
}

/// Serves `app` on 127.0.0.1:0 until the token is cancelled: its address and the token.
pub async fn serve_app(app: axum::Router) -> (std::net::SocketAddr, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let done = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(done.cancelled_owned())
            .await
            .unwrap()
    });
    (addr, stop)
}

impl Receiver {
    pub async fn start(mode: Mode) -> Receiver {
        let secret = rollout::notify::sinks::new_secret();
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.trim_start_matches("whsec_"))
            .unwrap();
        let state = Arc::new(State {
            mode: Mutex::new(mode),
            requests: Mutex::new(Vec::new()),
            key,
        });
        let app = axum::Router::new()
            .route("/hooks/rollout", axum::routing::post(receive))
            .with_state(state.clone());
        let (addr, stop) = serve_app(app).await;
        let url = format!("http://{addr}/hooks/rollout");
        Receiver {
            url,
            secret,
            state,
            stop,
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The events answered with a 2xx, in the order they came.
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .map(|r| r.event)
            .collect()
    }

    /// Waits until an event delivered satisfies `done`.
    pub async fn until(&self, secs: u64, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
        super::within(secs, what, async {
            while !self.delivered().iter().any(&done) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }

    /// A sinks file naming this receiver `name`, its secret in `dir`.
    pub fn sinks_file(&self, dir: &Path, name: &str, extra: &str) -> std::path::PathBuf {
        let secret = dir.join(format!("{name}.secret"));
        std::fs::write(&secret, format!("{}\n", self.secret)).unwrap();
        let file = dir.join(format!("{name}.sinks.yaml"));
        std::fs::write(
            &file,
            format!(
                "sinks:\n  - name: {name}\n    kind: webhook\n    url: {}\n    secret_file: {}\n{extra}",
                self.url,
                secret.display()
            ),
        )
        .unwrap();
        file
    }
}

/// The PyPI `cloudevents` SDK parses every request, and the `standardwebhooks`
/// library verifies its signature, in a venv made here.
pub fn judged_by_other_libraries(dir: &Path, requests: &[Request], secret: &str) {
    let Some(bin) = super::python::venv(
        dir,
        &["cloudevents==1.12.1", "standardwebhooks==1.0.1"],
        "the PyPI libraries' judgement",
    ) else {
        return;
    };
    let lines: Vec<String> = requests
        .iter()
        .map(|r| {
            serde_json::json!({
                "headers": r.headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
                "body": String::from_utf8_lossy(&r.body),
            })
            .to_string()
        })
        .collect();
    let file = dir.join("requests.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let script = r#"
import json, sys
from cloudevents.http import from_http
from standardwebhooks.webhooks import Webhook
secret = sys.argv[2]
wh = Webhook(secret)
n = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    event = from_http(r["headers"], r["body"])
    assert event["specversion"] == "1.0", event
    assert event["source"].startswith("/rollout/"), event
    assert event["type"].split(".")[0] in ("rollout", "freeze"), event
    assert event.data["seq"] >= 1, event
    verified = wh.verify(r["body"], r["headers"])
    assert verified["data"]["seq"] == event.data["seq"]
    n += 1
print(f"judged {n} requests")
"#;
    let judged = std::process::Command::new(bin.join("python"))
        .arg("-c")
        .arg(script)
        .arg(&file)
        .arg(secret)
        .output()
        .unwrap();
    assert!(
        judged.status.success(),
        "the PyPI libraries refused a request: {}{}",
        String::from_utf8_lossy(&judged.stdout),
        String::from_utf8_lossy(&judged.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&judged.stdout).trim());
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (id, ts, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&state.key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&body);
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    let verified = signatures.split(' ').any(|s| s == expected);
    let mode = *state.mode.lock().unwrap();
    let answered = match mode {
        Mode::Ok => 200,
        Mode::Status(s) => s,
        Mode::Silent => 0,
    };
    state.requests.lock().unwrap().push(Request {
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        answered,
        verified,
        event: serde_json::from_slice(&body).unwrap_or_default(),
    });
    if mode == Mode::Silent {
        futures::future::pending::<()>().await;
    }
    StatusCode::from_u16(answered).unwrap_or(StatusCode::OK)
}

/// Checks what a receiver got for rollout `name`: every event of `expected` seqs
/// delivered at least once, in seq order (a redelivery repeats one already seen,
/// never skips ahead), the same id for a seq each time, nothing after the terminal
/// event, and every request signed.
pub fn check_sequence(requests: &[Request], name: &str, last_seq: u64) {
    let mut max = 0u64;
    let mut ids = std::collections::HashMap::new();
    let mut delivered = std::collections::BTreeSet::new();
    for r in requests.iter().filter(|r| r.event["subject"] == name) {
        assert!(r.verified, "unsigned or badly signed: {}", r.event);
        let seq = r.event["data"]["seq"].as_u64().unwrap();
        let id = r.event["id"].as_str().unwrap().to_string();
        assert_eq!(r.header("webhook-id"), id, "webhook-id is the event's id");
        assert!(seq <= max + 1, "seq {seq} came after {max}: a gap");
        assert!(seq <= last_seq, "seq {seq} after the terminal event {last_seq}");
        assert_eq!(
            ids.entry(seq).or_insert_with(|| id.clone()),
            &id,
            "the same id on every delivery of seq {seq}"
        );
        max = max.max(seq);
        if (200..300).contains(&r.answered) {
            delivered.insert(seq);
        }
    }
    assert_eq!(
        delivered.into_iter().collect::<Vec<_>>(),
        (1..=last_seq).collect::<Vec<_>>(),
        "every event delivered"
    );
}
