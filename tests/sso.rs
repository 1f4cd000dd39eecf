//! Single sign-on (`rollout serve --oidc`) against a real OpenID provider (npm's
//! oidc-provider, started by the test) and the real binary: in Chromium, people sign
//! in through the provider and get the role their groups map to (an operator
//! approves, a viewer sees no button, someone whose groups map to nothing gets no
//! session); over HTTP, answers that are not this browser's sign-in, forged states,
//! refused codes and another issuer's answers open nothing.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::Locator;
use reqwest::StatusCode;
use rollout::proto::v1 as pb;
use serde_json::json;

const SECRET: &str = "oidc-client-secret-0123456789";

/// The provider's people: olga is on call (operator), vera is everyone (viewer),
/// carl is a contractor, which maps to nothing.
fn accounts() -> serde_json::Value {
    json!({
        "olga": {"email": "olga@example.com", "groups": ["everyone", "sre-oncall"]},
        "vera": {"email": "vera@example.com", "groups": ["everyone"]},
        "carl": {"email": "carl@example.com", "groups": ["contractors"]},
    })
}

/// `dir/oidc.yaml` (the example, on loopback) and its secret file.
fn oidc_file(dir: &Path, issuer: &str, redirect: &str) -> PathBuf {
    std::fs::write(dir.join("oidc.secret"), format!("{SECRET}\n")).unwrap();
    let text = format!(
        "issuer: {issuer}\nclient_id: rollout\nclient_secret_file: oidc.secret\nredirect_url: {redirect}\nprincipal_claim: email\nroles:\n  claim: groups\n  map: {{sre-oncall: operator, sre-leads: admin, everyone: viewer}}\n"
    );
    let path = dir.join("oidc.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Site {
    provider: common::oidc::Provider,
    agent: rollout::cli::process::Spawned,
    controller: rollout::cli::process::Spawned,
    /// The dashboard's URL, ending in `/`.
    base: String,
    alice: Client,
}

/// The provider, a simulator, a controller with `--auth` (alice's token) and
/// `--oidc`; alice's rollout `web-fix` waits at a two-approval gate after 10%.
async fn site(dir: &Path) -> Option<Site> {
    let mut provider = common::oidc::start(dir).await?;
    let port = free_port();
    let redirect = format!("http://127.0.0.1:{port}/oidc/callback");
    provider.serve("rollout", SECRET, &redirect, accounts()).await;
    let log = dir.join("log");
    let (agent, _fleet, ctl_fleet) = spawn_simulator(dir, 100, "1..5", &log).await;
    let tokens = tokens_file(dir, &[("alice", "operator")]);
    let oidc = oidc_file(dir, &provider.issuer, &redirect);
    let listen = format!("127.0.0.1:{port}");
    let extra = [
        "--auth".as_ref(),
        tokens.as_os_str(),
        "--http-listen".as_ref(),
        listen.as_ref(),
        "--oidc".as_ref(),
        oidc.as_os_str(),
    ];
    let mut controller = spawn_controller(&dir.join("data"), &ctl_fleet, &extra, &log).await;
    let base = controller.line_after("dashboard on ").await.unwrap();
    let mut alice = as_who(&format!("http://{}", controller.addr), "alice").await;
    gated_at_ten_percent(&mut alice, "web-fix").await;
    Some(Site {
        provider,
        agent,
        controller,
        base,
        alice,
    })
}

/// Signs `login` in through the provider in a fresh browser: `Sign in with SSO`
/// on the dashboard, the provider's sign-in and consent pages, and back. Returns
/// the browser and the page it lands on.
async fn sign_in_with_sso(base: &str, login: &str) -> (common::browser::Browser, String) {
    let session = common::browser::start().await.expect("the browser started before");
    let b = session.client.clone();
    b.goto(&format!("{base}login")).await.unwrap();
    b.find(Locator::XPath("//button[normalize-space(text())='Sign in with SSO']"))
        .await
        .expect("the sign-in page offers Sign in with SSO")
        .click()
        .await
        .unwrap();
    let started = Instant::now();
    let mut signed = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let url = b.current_url().await.unwrap().to_string();
        if started.elapsed() > Duration::from_secs(60) {
            let page = b.source().await.unwrap_or_default();
            panic!("{login}'s sign-in did not come back: at {url}: {page}");
        }
        if url.starts_with(base) {
            let page = b.source().await.unwrap_or_default();
            if page.contains("http-equiv=\"refresh\"") {
                continue; // moving on by itself
            }
            break;
        }
        // At the provider: its sign-in form once, then its consent page.
        if !signed && let Ok(field) = b.find(Locator::Css("input[name=login]")).await {
            field.send_keys(login).await.unwrap();
            b.find(Locator::Css("input[name=password]"))
                .await
                .unwrap()
                .send_keys("any password")
                .await
                .unwrap();
            b.find(Locator::Css("button[type=submit]"))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            signed = true;
        } else if signed
            && !url.contains("/oidc/")
            && let Ok(button) = b.find(Locator::Css("form button[type=submit]")).await
        {
            let _ = button.click().await;
        }
    }
    let page = b.source().await.unwrap();
    (session, page)
}

/// In Chromium, through the real provider: olga (on call) gets operator and her
/// approval counts under her e-mail, audited through the dashboard; vera gets viewer
/// and sees no action; carl's groups map to nothing: he is told so and has no
/// session. Token sign-in stays beside it.
#[ignore = "needs chromium and chromium-driver (Debian), Node.js with npm and npm's registry; cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_through_the_provider_with_the_role_their_groups_map_to() {
    // Is there a browser at all? (It says it skipped when not.)
    let Some(probe) = common::browser::start().await else {
        return;
    };
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let Some(Site {
        provider,
        mut agent,
        mut controller,
        base,
        mut alice,
    }) = site(dir.path()).await
    else {
        return;
    };

    let (olga, landed) = sign_in_with_sso(&base, "olga").await;
    assert!(landed.contains("olga@example.com (operator)"), "{landed}");
    olga.client.goto(&format!("{base}rollouts/web-fix")).await.unwrap();
    let notice = common::browser::press(&olga.client, "Approve").await;
    assert!(notice.contains("approval 1 of 2 recorded"), "{notice}");
    let gate = get(&mut alice, "web-fix").await.gate.unwrap();
    let approvers: Vec<&str> = gate.approvals.iter().map(|a| a.principal.as_str()).collect();
    assert_eq!(approvers, ["olga@example.com"]);
    let events = timeline(&mut alice, "web-fix").await;
    assert!(
        events.iter().any(|e| e.principal == "olga@example.com"
            && e.result == "ok"
            && e.detail.ends_with("(through the dashboard)")),
        "olga's approval is audited under her name, through the dashboard: {events:#?}"
    );
    drop(olga);

    let (vera, landed) = sign_in_with_sso(&base, "vera").await;
    assert!(landed.contains("vera@example.com (viewer)"), "{landed}");
    vera.client.goto(&format!("{base}rollouts/web-fix")).await.unwrap();
    let page = vera.client.source().await.unwrap();
    assert!(
        page.contains("awaiting approval") || page.contains("Awaiting"),
        "{page}"
    );
    for action in ["Approve", "Pause", "Abort"] {
        assert!(
            !page.contains(&format!(">{action}</button>")),
            "a viewer sees no {action}"
        );
    }
    drop(vera);

    let (carl, landed) = sign_in_with_sso(&base, "carl").await;
    assert!(
        landed.contains("carl@example.com signed in at the provider, but none of their `groups` values (contractors) maps to a role here"),
        "{landed}"
    );
    carl.client.goto(&base).await.unwrap();
    let page = carl.client.source().await.unwrap();
    assert!(
        page.contains("Sign in with SSO") && !page.contains("carl@example.com ("),
        "no session: {page}"
    );
    drop(carl);

    // The rollout is untouched by what the viewer and carl did: one approval.
    assert_eq!(
        get(&mut alice, "web-fix").await.state(),
        pb::RolloutState::AwaitingApproval
    );
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    provider.stop().await;
}

/// The query string of the provider's authorization URL the `/oidc/login` page
/// moves on to, and the cookie it set.
async fn started(http: &reqwest::Client, base: &str) -> (String, String) {
    let r = http.get(format!("{base}oidc/login")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("rollout_oidc="))
        .expect("the sign-in's cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/oidc"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = r.text().await.unwrap().replace("&amp;", "&");
    let at = page.find("url=").expect("the page moves on") + 4;
    let url = url::Url::parse(&page[at..at + page[at..].find('"').unwrap()]).unwrap();
    let pairs: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs["code_challenge_method"], "S256", "PKCE");
    assert!(pairs.contains_key("nonce") && pairs.contains_key("state"), "{pairs:?}");
    assert!(
        pairs["scope"].split(' ').any(|s| s == "groups"),
        "the roles' scope: {pairs:?}"
    );
    (pairs["state"].clone(), cookie)
}

/// Over HTTP: a callback with no sign-in under way, with the wrong state, with a
/// code the provider refuses, naming another issuer, or declined at the provider,
/// opens no session and says why; each sign-in is used once.
#[ignore = "needs Node.js with npm and npm's registry; cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_are_not_this_browsers_sign_in_open_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Site {
        provider,
        mut agent,
        mut controller,
        base,
        alice: _,
    }) = site(dir.path()).await
    else {
        return;
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .get(format!("{base}login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(login.contains(">Sign in with SSO</button>"), "{login}");
    assert!(login.contains("name=\"token\""), "token sign-in stays");

    let callback = |query: String, cookie: Option<String>| {
        let mut r = http.get(format!("{base}oidc/callback?{query}"));
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        async move {
            let r = r.send().await.unwrap();
            let opened = r
                .headers()
                .get_all("set-cookie")
                .iter()
                .any(|c| c.to_str().unwrap_or_default().starts_with("rollout_session="));
            assert!(!opened, "no session");
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, said) = callback("code=c&state=s".into(), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        said.contains("not one this controller started for this browser"),
        "{said}"
    );

    let (state, cookie) = started(&http, &base).await;
    let (status, said) = callback("code=c&state=forged".into(), Some(cookie.clone())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(said.contains("does not carry this sign-in"), "{said}");
    let (status, _) = callback(format!("code=c&state={state}"), Some(cookie)).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a sign-in is used once, even a failed one"
    );

    // Each refused at the provider's word or ours, with the sign-in's own cookie and
    // state: a made-up code, another issuer's answer (mix-up), the person declining.
    for (answer, says) in [
        ("code=made-up", "refused the sign-in: invalid_grant"),
        (
            "code=c&iss=http%3A%2F%2Fevil.example",
            "comes from issuer `http://evil.example`",
        ),
        (
            "error=access_denied&error_description=End-User+aborted+interaction",
            "refused the sign-in: access_denied: End-User aborted interaction",
        ),
    ] {
        let (state, cookie) = started(&http, &base).await;
        let (status, said) = callback(format!("{answer}&state={state}"), Some(cookie)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{answer}: {said}");
        assert!(said.contains(says), "{answer}: {said}");
    }

    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    provider.stop().await;
}
