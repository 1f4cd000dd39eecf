//! The dashboard, through real processes: `rollout serve --http-listen` refuses pages
//! and live streams without a viewer's credentials; and a real Chromium, driven over
//! WebDriver (chromedriver), watches `rollout demo --http-listen` take its rollout to
//! 100% live (through a controller crash), then the follow-the-sun and restart views.
//!
//! The browser test needs Debian's `chromium` and `chromium-driver` (`.ci/run`
//! installs them and sets ROLLOUT_BROWSER_TESTS=required, so there a missing browser
//! fails the test; elsewhere it is skipped with a message).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::browser::text_of;
use rollout::cli::process::Spawned;
use rollout::inventory::{GenerateOptions, generate};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use common::EXE;
const VIEWER: &str = "viewer-token-0123456789abcdef0123456789abcdef";
const AGENT: &str = "agent-token-0123456789abcdef0123456789abcdef";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client")
}

/// The dashboard's pages and streams refuse a caller without a viewer token (the
/// sign-in form and nothing else), and a token is never taken from the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_and_streams_need_a_viewer_token_never_in_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        generate(&GenerateOptions {
            hosts: 50,
            agent: "127.0.0.1:1".into(),
            seed: 3,
            unhealthy_rate: 0.0,
        })
        .to_yaml(),
    )
    .unwrap();
    let tokens = dir.path().join("tokens.yaml");
    let entry = |who: &str, role: &str, token: &str| {
        format!(
            "  - principal: {who}\n    role: {role}\n    sha256: {}\n",
            rollout::auth::hash_token(token)
        )
    };
    std::fs::write(
        &tokens,
        format!(
            "tokens:\n{}{}",
            entry("vera", "viewer", VIEWER),
            entry("agent-1", "agent", AGENT)
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--data",
        path(&data),
        "--fleet",
        path(&fleet),
        "--auth",
        path(&tokens),
    ];
    let mut controller = Spawned::start(Path::new(EXE), args, Some(&dir.path().join("log")))
        .await
        .expect("controller");
    let base = controller
        .line_after("dashboard on ")
        .await
        .expect("the dashboard's address");
    let base = base.trim_end_matches('/');
    let client = http();
    let get = |path: &str| client.get(format!("{base}{path}"));

    // Nobody: refused, with the sign-in form and nothing else.
    for page in ["/", "/rollouts/x", "/restarts", "/sun", "/live/rollouts", "/live/sun"] {
        let r = get(page).send().await.unwrap();
        assert_eq!(r.status(), 401, "{page} without a token");
        let body = r.text().await.unwrap();
        assert!(body.contains("name=\"token\""), "{page} shows the sign-in form");
        assert!(!body.contains("data-live"), "{page} leaks a live view");
    }
    // A wrong token, a token in the URL, an agent's token: refused.
    let wrong = get("/").bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let in_url = get(&format!("/?token={VIEWER}")).send().await.unwrap();
    assert_eq!(in_url.status(), 401, "a token in the URL is not a credential");
    let agent = get("/").bearer_auth(AGENT).send().await.unwrap();
    assert_eq!(agent.status(), 403);
    assert!(agent.text().await.unwrap().contains("has the agent role"));

    // A viewer token in the header: the pages.
    let page = get("/sun").bearer_auth(VIEWER).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let csp = page
        .headers()
        .get("content-security-policy")
        .expect("a CSP")
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(page.text().await.unwrap().contains("svg"), "the follow-the-sun band");

    // The sign-in form: a session cookie, HttpOnly and SameSite=Strict; the token
    // goes in the body and comes back nowhere.
    let bad = client
        .post(format!("{base}/login"))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let signed = client
        .post(format!("{base}/login"))
        .form(&[("token", VIEWER)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 303);
    let location = signed.headers()["location"].to_str().unwrap().to_string();
    assert!(!location.contains(VIEWER), "{location}");
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(!cookie.contains(VIEWER));
    let session = cookie.split(';').next().unwrap().to_string();
    let with_session = get("/").header("cookie", &session).send().await.unwrap();
    assert_eq!(with_session.status(), 200);
    let signed_in = with_session.text().await.unwrap();
    assert!(signed_in.contains("vera (viewer)"));
    // The sign-out form carries the session's CSRF token.
    let csrf = common::web::field(&signed_in, "csrf").expect("the sign-out form's CSRF token");
    // A live stream opens with the session, and starts with the fragment.
    let mut live = get("/live/rollouts").header("cookie", &session).send().await.unwrap();
    assert_eq!(live.status(), 200);
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(10), live.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first).to_string();
    assert!(first.starts_with("event: html"), "{first}");
    drop(live);
    // Another site's sign-out (no CSRF token) is refused; the session stays.
    let forged = client
        .post(format!("{base}/logout"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(get("/").header("cookie", &session).send().await.unwrap().status(), 200);
    // Signed out: the session is gone on the server, not only in the browser.
    let out = client
        .post(format!("{base}/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert_eq!(get("/").header("cookie", &session).send().await.unwrap().status(), 401);
    // Metrics are served beside the dashboard, to the dashboard's viewers only.
    assert_eq!(get("/metrics").send().await.unwrap().status(), 401);
    assert_eq!(get("/metrics").bearer_auth(VIEWER).send().await.unwrap().status(), 200);

    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A process this test started, killed when dropped (a failing assertion included).
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// A real Chromium follows `rollout demo`'s rollout on the dashboard, as a user runs
/// it, until the page says 100%.
#[ignore = "needs chromium and chromedriver (Debian's); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_follows_the_demo_rollout_to_100_percent() {
    let Some(session) = common::browser::start().await else {
        return;
    };
    let browser = session.client.clone();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

    // The demo, as a user runs it, with the dashboard on a free loopback port.
    let mut demo = Command::new(EXE)
        .args([
            "demo",
            "--hosts",
            "3000",
            "--bake",
            "2s",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let stdout = demo.stdout.take().unwrap();
    let mut demo = Child(demo);
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("dashboard: ") {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("the demo ended without a dashboard line");
    })
    .await
    .expect("the demo prints its dashboard's address");
    // The rest of its output, kept to say when the demo is done and to show on failure.
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(Vec::<String>::new());
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            done_tx.send_modify(|all| all.push(line));
        }
    });

    // The rollout's page, opened once and never reloaded: what it shows comes from
    // its live stream, across the controller the demo kills and restarts.
    let page = format!("{url}rollouts/exo-retry-fix");
    let percent = || async {
        let el = browser.find(fantoccini::Locator::Id("percent")).await.ok()?;
        el.attr("data-percent").await.ok().flatten()?.parse::<f64>().ok()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        assert!(Instant::now() < deadline, "the rollout never appeared on the dashboard");
        if browser.goto(&page).await.is_ok()
            && let Some(p) = percent().await
        {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        first < 100.0,
        "the page must load before the rollout ends to test live updates (got {first}%)"
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let p = percent().await.unwrap_or(0.0);
        if p >= 100.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the bar stopped at {p}% (it started at {first}%)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // 100% of hosts while the last wave bakes; then the health gate, then success.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let title = text_of(&browser, "h1").await;
        if title == "exo-retry-fix succeeded" {
            break;
        }
        assert!(Instant::now() < deadline, "the page never said succeeded: {title:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let body = text_of(&browser, "main").await;
    assert!(body.contains("of customers mitigated"), "{body}");
    assert!(body.contains("Timeline"), "{body}");
    let waves = browser
        .find_all(fantoccini::Locator::Css("table.waves tbody tr"))
        .await
        .unwrap();
    assert_eq!(waves.len(), 6, "a bar per wave (1% 10% 30% 60% 90% 100%)");
    std::fs::write(shots.join("dashboard-rollout.png"), browser.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", shots.join("dashboard-rollout.png").display());

    // Follow the sun: customers placed on the band.
    browser.goto(&format!("{url}sun")).await.unwrap();
    let dots = browser
        .find_all(fantoccini::Locator::Css("svg#sun circle"))
        .await
        .unwrap();
    assert!(!dots.is_empty(), "customers on the band");
    std::fs::write(shots.join("dashboard-sun.png"), browser.screenshot().await.unwrap()).unwrap();

    // After the demo's restart job: the restarts list and the job.
    tokio::time::timeout(
        Duration::from_secs(120),
        done_rx.wait_for(|l| l.iter().any(|x| x.contains("stays open"))),
    )
    .await
    .expect("the demo finishes its restarts")
    .unwrap();
    let job_id = done_rx
        .borrow()
        .iter()
        .find_map(|l| l.strip_prefix("restart job ")?.split(':').next()?.parse::<u64>().ok())
        .expect("the demo names its restart job");
    browser.goto(&format!("{url}restarts/{job_id}")).await.unwrap();
    let job = text_of(&browser, "main").await;
    assert!(
        job.contains(&format!("Restart job #{job_id}")) && job.contains("succeeded"),
        "{job}"
    );
    std::fs::write(shots.join("dashboard-restart.png"), browser.screenshot().await.unwrap()).unwrap();
    browser.close().await.unwrap();

    // Ctrl-C ends the demo, and it says it went as it should.
    let pid = nix::unistd::Pid::from_raw(demo.0.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), demo.0.wait())
        .await
        .unwrap()
        .unwrap();
    let output = done_rx.borrow().join("\n");
    assert!(status.success(), "the demo failed:\n{output}");
}
