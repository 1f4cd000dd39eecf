//! Acting from the dashboard, over HTTP against the real binary with `--auth`: the
//! buttons an operator sees and a viewer does not, the CSRF token bound to the
//! session, the typed name before `Abort`, a stale gate asking again, a double submit
//! acting once, and the audit log saying it came through the dashboard.

mod common;

use std::path::Path;
use std::time::Duration;

use common::web::{Browser, field};
use common::*;
use reqwest::StatusCode;
use rollout::proto::v1 as pb;
use serde_json::json;

/// alice submits; bob and carol approve (carol from Slack too); vic only looks.
const PEOPLE: [(&str, &str, &str); 4] = [
    ("alice", "operator", "U0ALICE1"),
    ("bob", "operator", "U0BOB001"),
    ("carol", "operator", "U0CAROL1"),
    ("vic", "viewer", "U0VIC001"),
];

/// The visible labels of `html`'s buttons, in order.
fn buttons(html: &str) -> Vec<String> {
    html.match_indices("<button")
        .filter_map(|(at, _)| {
            let rest = &html[at..];
            let start = rest.find('>')? + 1;
            let end = rest.find("</button>")?;
            Some(rest[start..end].to_string())
        })
        .collect()
}

async fn approvals(client: &mut Client, name: &str) -> Vec<String> {
    let r = get(client, name).await;
    r.gate
        .map(|g| g.approvals.into_iter().map(|a| a.principal).collect())
        .unwrap_or_default()
}

/// A simulator, a controller with `--auth` and the dashboard, and alice's rollout
/// `web-fix` waiting at a two-approval four-eyes gate after 10%.
struct Site {
    agent: rollout::cli::process::Spawned,
    controller: rollout::cli::process::Spawned,
    /// The dashboard's URL, ending in `/`.
    base: String,
    alice: Client,
    gate: pb::Gate,
}

async fn site(dir: &Path, more: &[&str]) -> Site {
    let log = dir.join("log");
    let (agent, _fleet, ctl_fleet) = spawn_simulator(dir, 100, "1..5", &log).await;
    let tokens = common::slack::tokens_file(dir, &PEOPLE);
    let secret = common::slack::secret_file(dir);
    let mut extra = vec![
        "--auth".as_ref(),
        tokens.as_os_str(),
        "--http-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--slack-signing-secret-file".as_ref(),
        secret.as_os_str(),
    ];
    extra.extend(more.iter().map(std::ffi::OsStr::new));
    let mut controller = spawn_controller(&dir.join("data"), &ctl_fleet, &extra, &log).await;
    let base = controller.line_after("dashboard on ").await.unwrap();
    let server = format!("http://{}", controller.addr);
    let mut alice = as_who(&server, "alice").await;
    let gate = gated_at_ten_percent(&mut alice, "web-fix").await;

    Site {
        agent,
        controller,
        base,
        alice,
        gate,
    }
}

/// A two-approval four-eyes gate approved from the dashboard by two operators: each
/// form needs its own session's CSRF token, a viewer sees no button and is refused
/// when posting anyway, `Abort` needs the typed name, a stale gate id shows the new
/// one, a double submit acts once, and each approval is audited through the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_act_from_the_dashboard_and_nobody_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let Site {
        mut agent,
        mut controller,
        base,
        mut alice,
        gate,
    } = site(dir.path(), &[]).await;

    // An operator sees the buttons, the gate's evidence and id beside Approve.
    let bob = Browser::sign_in(&base, "bob").await;
    let page = bob.page("rollouts/web-fix").await;
    assert_eq!(
        buttons(&page),
        ["Sign out", "Approve", "Pause", "Resume", "Retry", "Abort"]
    );
    assert_eq!(field(&page, "gate_id").as_deref(), Some(gate.gate_id.as_str()));
    assert!(page.contains("10 of 10 hosts succeeded"), "the evidence beside Approve");
    let csrf = field(&page, "csrf").expect("a CSRF token");
    let request_id = field(&page, "request_id").expect("a request id");

    // A viewer sees none, and posting anyway with its own session is refused.
    let vic = Browser::sign_in(&base, "vic").await;
    let seen = vic.page("rollouts/web-fix").await;
    assert_eq!(buttons(&seen), ["Sign out"], "a viewer sees no action");
    // Its forged post, with its own session's token (the sign-out form's), is
    // refused for its role; with another's token, for the token.
    let vic_csrf = field(&seen, "csrf").expect("the sign-out form's token");
    for token in [&vic_csrf, &csrf] {
        let (status, said) = vic
            .post(
                "rollouts/web-fix/approve",
                &[("csrf", token), ("gate_id", &gate.gate_id), ("request_id", "v-1")],
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "a viewer's forged post: {said}");
    }
    let (_, said) = vic
        .post(
            "rollouts/web-fix/approve",
            &[("csrf", &vic_csrf), ("gate_id", &gate.gate_id), ("request_id", "v-2")],
        )
        .await;
    assert!(said.contains("has the viewer role"), "{said}");
    // Without the CSRF token, or with another session's: 403, nothing counted.
    let (status, said) = bob
        .post(
            "rollouts/web-fix/approve",
            &[("gate_id", &gate.gate_id), ("request_id", "b-0")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(said.contains("CSRF"), "{said}");
    let carol = Browser::sign_in(&base, "carol").await;
    let carol_page = carol.page("rollouts/web-fix").await;
    let carol_csrf = field(&carol_page, "csrf").unwrap();
    assert_ne!(carol_csrf, csrf, "each session has its own token");
    let (status, _) = bob
        .post(
            "rollouts/web-fix/approve",
            &[("csrf", &carol_csrf), ("gate_id", &gate.gate_id), ("request_id", "b-1")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another session's token");
    assert!(approvals(&mut alice, "web-fix").await.is_empty(), "nothing counted");
    // Each refusal is in the audit log: the viewer's for its role, bob's for the form.
    within(30, "the dashboard's refusals in the audit log", async {
        loop {
            let events = alice
                .list_events(pb::ListEventsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .events;
            let refused = |who: &str, why: &str| {
                events.iter().any(|e| {
                    e.principal == who
                        && e.kind == "ApproveRollout"
                        && e.detail == format!("refused ({why}) through the dashboard")
                })
            };
            if refused("vic", "role") && refused("bob", "forged form") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;

    // Abort needs the rollout's name typed first.
    let (status, said) = bob
        .post(
            "rollouts/web-fix/abort",
            &[("csrf", &csrf), ("confirm", "web"), ("request_id", "b-2")],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{said}");
    assert!(
        said.contains("type the rollout&#39;s name") || said.contains("type the rollout's name"),
        "{said}"
    );
    assert_eq!(
        get(&mut alice, "web-fix").await.state(),
        pb::RolloutState::AwaitingApproval
    );
    // A stale gate id shows the open gate again.
    let (status, said) = bob
        .post(
            "rollouts/web-fix/approve",
            &[("csrf", &csrf), ("gate_id", "000000000000"), ("request_id", "b-3")],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(said.contains("The gate changed since you looked"), "{said}");
    assert_eq!(
        field(&said, "gate_id").as_deref(),
        Some(gate.gate_id.as_str()),
        "asked again"
    );

    // bob approves; a double click (the same form twice) acts once.
    let form = [
        ("csrf", csrf.as_str()),
        ("gate_id", &gate.gate_id),
        ("request_id", &request_id),
    ];
    let (status, said) = bob.post("rollouts/web-fix/approve", &form).await;
    assert_eq!(status, StatusCode::OK, "{said}");
    assert!(said.contains("approval 1 of 2 recorded"), "{said}");
    let (status, said) = bob.post("rollouts/web-fix/approve", &form).await;
    assert_eq!(status, StatusCode::OK);
    assert!(said.contains("answered already"), "{said}");
    assert_eq!(approvals(&mut alice, "web-fix").await, ["bob"]);

    // carol's approval completes the quorum: the rollout goes on.
    let carol_id = field(&carol_page, "request_id").unwrap();
    let (status, said) = carol
        .post(
            "rollouts/web-fix/approve",
            &[
                ("csrf", &carol_csrf),
                ("gate_id", &gate.gate_id),
                ("request_id", &carol_id),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{said}");
    assert_eq!(ended(&mut alice, "web-fix").await.state(), pb::RolloutState::Succeeded);
    let events = timeline(&mut alice, "web-fix").await;
    for who in ["bob", "carol"] {
        assert!(
            events
                .iter()
                .any(|e| e.principal == who && e.result == "ok" && e.detail.ends_with("(through the dashboard)")),
            "{who}'s approval is audited through the dashboard: {events:#?}"
        );
    }
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// Signs `who` in with their token through the sign-in form, in `browser`.
async fn sign_in_in(browser: &fantoccini::Client, base: &str, who: &str) {
    use fantoccini::Locator;
    browser.goto(&format!("{base}login")).await.unwrap();
    browser
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(&token(who))
        .await
        .unwrap();
    browser
        .find(Locator::Css("form[action='/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::XPath(&format!("//header//span[contains(text(), '{who} (')]")))
        .await
        .expect("signed in");
}

/// A form post made by the page's own script (the browser sends the session's
/// cookie, as a forged form of this origin would): the status it got.
async fn post_from_page(browser: &fantoccini::Client, path: &str, body: &str) -> u16 {
    let script = "return fetch(arguments[0], {method: 'POST', credentials: 'same-origin', \
                  headers: {'content-type': 'application/x-www-form-urlencoded'}, body: arguments[1]}) \
                  .then(r => r.status);";
    let status = browser
        .execute(script, vec![json!(path), json!(body)])
        .await
        .expect("the page's fetch");
    status.as_u64().expect("a status") as u16
}

/// In a real browser (Chromium through WebDriver): bob signs in with his token,
/// presses `Approve` on the rollout's page and sees his approval counted; carol's
/// press of Slack's `Approve` (signed by slack_sdk) completes the quorum, and the
/// rollout moves on.
#[ignore = "needs chromium and chromium-driver (Debian), Python's venv and PyPI; cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_approves_in_a_browser() {
    let Some(session) = common::browser::start().await else {
        return;
    };
    let browser = session.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = python::venv(dir.path(), &["slack_sdk==3.33.5"], "Slack's signature") else {
        return;
    };
    let Site {
        mut agent,
        mut controller,
        base,
        mut alice,
        gate,
    } = site(dir.path(), &[]).await;
    sign_in_in(&browser, &base, "bob").await;
    browser.goto(&format!("{base}rollouts/web-fix")).await.unwrap();
    let said = common::browser::press(&browser, "Approve").await;
    assert!(said.contains("approval 1 of 2 recorded"), "{said}");
    assert_eq!(approvals(&mut alice, "web-fix").await, ["bob"]);
    let counted = get(&mut alice, "web-fix").await.gate.unwrap();
    assert_eq!(
        (counted.gate_id.as_str(), counted.approvals_needed),
        (gate.gate_id.as_str(), 1)
    );
    // The second approval, from Slack, completes the quorum: the rollout moves on.
    let slack = common::slack::Slack::at(&base, &bin);
    let carol = common::slack::press("U0CAROL1", "web-fix", &gate.gate_id, "9.9.carol");
    let (status, answer) = slack.post(&carol, common::slack::SECRET, common::slack::now_s()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("carol's approval counted: 2 of 2"),
        "{answer}"
    );
    assert_eq!(ended(&mut alice, "web-fix").await.state(), pb::RolloutState::Succeeded);
    // The page, reloaded, shows the gate passed and no action left.
    browser.goto(&format!("{base}rollouts/web-fix")).await.unwrap();
    let shown = browser.source().await.unwrap();
    assert!(!shown.contains(">Approve</button>"), "no Approve once it ended");
    let _ = browser.close().await;
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// In Chromium: a viewer sees no action button, and a post made from its own
/// session (with its page's CSRF token) is refused; an operator's post without the
/// token is refused; `Abort` does nothing until the rollout's name is typed, refuses
/// a wrong one, and aborts with the right one.
#[ignore = "needs chromium and chromium-driver (Debian); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_and_forged_posts_change_nothing_and_abort_needs_the_name_in_a_browser() {
    use fantoccini::Locator;
    let Some(session) = common::browser::start().await else {
        return;
    };
    let browser = session.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let Site {
        mut agent,
        mut controller,
        base,
        mut alice,
        gate,
    } = site(dir.path(), &[]).await;

    sign_in_in(&browser, &base, "vic").await;
    browser.goto(&format!("{base}rollouts/web-fix")).await.unwrap();
    let page = browser.source().await.unwrap();
    assert_eq!(buttons(&page), ["Sign out"], "a viewer sees no action");
    let csrf = field(&page, "csrf").expect("the sign-out form's token");
    let forged = format!("csrf={csrf}&gate_id={}&request_id=v-1", gate.gate_id);
    assert_eq!(
        post_from_page(&browser, "/rollouts/web-fix/approve", &forged).await,
        403
    );
    browser
        .find(Locator::XPath("//button[normalize-space(text())='Sign out']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    sign_in_in(&browser, &base, "bob").await;
    browser.goto(&format!("{base}rollouts/web-fix")).await.unwrap();
    let no_token = format!("gate_id={}&request_id=b-1", gate.gate_id);
    assert_eq!(
        post_from_page(&browser, "/rollouts/web-fix/approve", &no_token).await,
        403
    );
    assert!(approvals(&mut alice, "web-fix").await.is_empty(), "nothing counted");

    let abort = Locator::XPath("//button[normalize-space(text())='Abort']");
    let confirm = Locator::Css("input[name=confirm]");
    // Nothing typed: the browser does not send the form.
    browser.find(abort).await.unwrap().click().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        browser.find(Locator::Css("#notice")).await.is_err(),
        "no answer: not sent"
    );
    assert_eq!(
        get(&mut alice, "web-fix").await.state(),
        pb::RolloutState::AwaitingApproval
    );
    // Another name: refused, nothing changed.
    browser.find(confirm).await.unwrap().send_keys("web").await.unwrap();
    let notice = common::browser::press(&browser, "Abort").await;
    assert!(notice.contains("type the rollout's name (web-fix) first"), "{notice}");
    assert_eq!(
        get(&mut alice, "web-fix").await.state(),
        pb::RolloutState::AwaitingApproval
    );
    // Its name: aborted.
    browser.goto(&format!("{base}rollouts/web-fix")).await.unwrap();
    browser.find(confirm).await.unwrap().send_keys("web-fix").await.unwrap();
    browser.find(abort).await.unwrap().click().await.unwrap();
    assert_eq!(ended(&mut alice, "web-fix").await.state(), pb::RolloutState::Aborted);
    let _ = browser.close().await;
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// The seed story in `rollout demo --http-listen --approve-in-browser`: the demo says
/// where the gate after 60% waits, a person presses `Approve` there (Chromium), and
/// the fix goes on to 100% and the restarts; Ctrl-C ends the demo, which says it went
/// as it should.
#[ignore = "needs chromium and chromium-driver (Debian); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demos_gate_is_approved_in_the_browser() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let Some(session) = common::browser::start().await else {
        return;
    };
    let browser = session.client.clone();
    let mut demo = tokio::process::Command::new(EXE)
        .args([
            "demo",
            "--hosts",
            "500",
            "--bake",
            "1s",
            "--no-crash",
            "--http-listen",
            "127.0.0.1:0",
            "--approve-in-browser",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the demo");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut said = Vec::new();
    // Lines until one holds `mark`: what follows it on that line.
    let mut until = async |mark: &str, said: &mut Vec<String>| {
        within(180, "the demo to say it", async {
            while let Some(line) = lines.next_line().await.unwrap() {
                said.push(line.clone());
                if let Some(at) = line.find(mark) {
                    return line[at + mark.len()..].to_string();
                }
            }
            panic!("the demo ended before saying `{mark}`:\n{}", said.join("\n"));
        })
        .await
    };
    let page = until("waits for you: press Approve at ", &mut said).await;
    assert!(page.ends_with("/rollouts/exo-retry-fix"), "{page}");
    browser.goto(&page).await.unwrap();
    let notice = common::browser::press(&browser, "Approve").await;
    assert!(notice.contains("is approved and wave"), "{notice}");
    until("the dashboard stays open on ", &mut said).await;
    let _ = browser.close().await;
    // Ctrl-C ends the demo; it says it went as it should.
    let pid = nix::unistd::Pid::from_raw(demo.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        said.push(line);
    }
    let status = within(60, "the demo to stop", demo.wait()).await.unwrap();
    let said = said.join("\n");
    assert!(status.success(), "the demo failed:\n{said}");
    assert!(
        said.contains("rollout succeeded") || said.contains("succeeded"),
        "{said}"
    );
}

/// The dashboard's actions count against the principal's change budget, the one the
/// API's calls count against (`--max-changes-per-second`): past it, 429 saying so,
/// and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_actions_are_paced_as_the_apis_changes() {
    let dir = tempfile::tempdir().unwrap();
    let Site {
        mut agent,
        mut controller,
        base,
        mut alice,
        ..
    } = site(dir.path(), &["--max-changes-per-second", "1"]).await;
    let bob = Browser::sign_in(&base, "bob").await;
    let page = bob.page("rollouts/web-fix").await;
    let csrf = field(&page, "csrf").unwrap();
    // Twenty pauses in a row (each refused at the gate, each a change asked for): at 1
    // a second in bursts of 5, most are over the limit.
    let mut paced = None;
    for i in 0..20 {
        let id = format!("b-{i}");
        let (status, said) = bob
            .post("rollouts/web-fix/pause", &[("csrf", &csrf), ("request_id", &id)])
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            paced = Some(said);
            break;
        }
    }
    let said = paced.expect("twenty actions in a row are paced");
    assert!(said.contains("`bob` is over its rate limit"), "{said}");
    assert_eq!(
        get(&mut alice, "web-fix").await.state(),
        pb::RolloutState::AwaitingApproval
    );
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// `Abort` with "and roll back" ticked, the name typed: the fix is aborted and
/// `NAME-rollback` takes back the hosts it touched, as `rollout abort --rollback`
/// does; audited through the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_roll_back_from_the_dashboard() {
    let dir = tempfile::tempdir().unwrap();
    let Site {
        mut agent,
        mut controller,
        base,
        mut alice,
        ..
    } = site(dir.path(), &[]).await;
    let bob = Browser::sign_in(&base, "bob").await;
    let page = bob.page("rollouts/web-fix").await;
    assert!(page.contains("name=\"rollback\""), "a fix offers to roll back");
    let csrf = field(&page, "csrf").unwrap();
    let (status, said) = bob
        .post(
            "rollouts/web-fix/abort",
            &[
                ("csrf", csrf.as_str()),
                ("confirm", "web-fix"),
                ("reason", "retries went up"),
                ("rollback", "yes"),
                ("request_id", "b-abort"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{said}");
    assert_eq!(get(&mut alice, "web-fix").await.state(), pb::RolloutState::Aborted);
    let back = ended(&mut alice, "web-fix-rollback").await;
    assert_eq!(back.state(), pb::RolloutState::Succeeded, "{}", back.halt_reason);
    assert_eq!(back.hosts_selected, 10, "the hosts the fix touched");
    let events = timeline(&mut alice, "web-fix").await;
    assert!(
        events
            .iter()
            .any(|e| e.principal == "bob" && e.kind == "AbortRollout" && e.detail.ends_with("(through the dashboard)")),
        "{events:#?}"
    );
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
