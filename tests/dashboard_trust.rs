//! The dashboard's trust boundaries, through a real controller: served over TLS
//! (`--http-tls-cert`, `--http-tls-key`) with a `Secure` session cookie; `/metrics`
//! on the dashboard's port only with the dashboard's credentials; one viewer's
//! sign-ins never sign anyone else out; a request whose Host is not the
//! controller's (DNS rebinding) is refused.

mod common;

use std::path::Path;

use rollout::cli::process::Spawned;

use common::EXE;
const VIEWER: &str = "viewer-token-0123456789abcdef0123456789abcdef";
const OPERATOR: &str = "operator-token-0123456789abcdef0123456789abc";

/// TLS with a Secure cookie; /metrics needs credentials; sessions capped per
/// principal, never evicting another's; a foreign Host refused (421), its own
/// address and advertised name answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_over_tls_guards_cookies_metrics_sessions_and_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::certs::Ca::new(dir.path(), "dash-ca");
    let server = ca.issue("dashboard");
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, "hosts: []\n").unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        format!(
            "tokens:\n  - principal: vera\n    role: viewer\n    sha256: {}\n  - principal: otto\n    role: operator\n    sha256: {}\n",
            rollout::auth::hash_token(VIEWER),
            rollout::auth::hash_token(OPERATOR)
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = |p: &Path| p.display().to_string();
    let args = [
        "serve".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--http-listen".into(),
        "127.0.0.1:0".into(),
        "--http-tls-cert".into(),
        s(&server.cert),
        "--http-tls-key".into(),
        s(&server.key),
        "--data".into(),
        s(&data),
        "--fleet".into(),
        s(&fleet),
        "--auth".into(),
        s(&tokens),
    ];
    let mut controller = Spawned::start(Path::new(EXE), &args, Some(&dir.path().join("log")))
        .await
        .expect("controller");
    let base = controller
        .line_after("dashboard on ")
        .await
        .expect("the dashboard's address");
    let base = base.trim_end_matches('/').to_string();
    assert!(base.starts_with("https://127.0.0.1:"), "{base}");
    let port = base.rsplit(':').next().unwrap().to_string();
    let ca_pem = reqwest::Certificate::from_pem(&std::fs::read(&ca.cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca_pem)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Over TLS, the session cookie is Secure.
    let sign_in = |token: &'static str| {
        let client = client.clone();
        let url = format!("{base}/login");
        async move {
            let r = client.post(url).form(&[("token", token)]).send().await.unwrap();
            assert_eq!(r.status(), 303, "sign-in");
            let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
            assert!(cookie.contains("; Secure") && cookie.contains("HttpOnly"), "{cookie}");
            cookie.split(';').next().unwrap().to_string()
        }
    };
    let otto = sign_in(OPERATOR).await;

    // /metrics beside the pages: not without credentials.
    let metrics = client.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 401, "metrics without credentials");
    let metrics = client
        .get(format!("{base}/metrics"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("rollout_"), "the metrics");

    // One viewer signing in again and again never signs the operator out.
    let mut first = None;
    for _ in 0..40 {
        let c = sign_in(VIEWER).await;
        first.get_or_insert(c);
    }
    let page = client
        .get(format!("{base}/"))
        .header("cookie", &otto)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the operator's session stays");
    let oldest = client
        .get(format!("{base}/"))
        .header("cookie", first.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(oldest.status(), 401, "the viewer's own oldest session went");

    // DNS rebinding: the attacker's name resolving to this address is refused.
    for (host, want) in [
        (format!("evil.example:{port}"), 421),
        (format!("127.0.0.1:{port}"), 200),
        (format!("localhost:{port}"), 200),
    ] {
        let r = client
            .get(format!("{base}/"))
            .header("host", &host)
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "Host {host}");
    }
    controller.terminate(std::time::Duration::from_secs(30)).await.unwrap();
}
