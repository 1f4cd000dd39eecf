//! The dashboard on an incident room's wall, in a real Chromium against real
//! processes: a fix that halts (a simulator failing three deploys in ten) and the
//! rollback its abort starts. The list shows each rollout's version, start time and
//! why it stopped; a rollout's page its running time, an estimate of the end (or why
//! there is none), one halt reason with its hosts grouped by message, and how fresh
//! it is ("live · updated Ns ago", then "disconnected" when the controller is gone);
//! a rollback reads as one; the type is larger on a wide screen; /sun counts each
//! host once; the controllers page and `rollout controllers` give the dashboard's URL.

mod common;

use std::time::Duration;

use common::browser::text_of;
use common::*;
use fantoccini::Locator;

/// Waits (at most `secs`) until the element `css` of the page shows text `ok` accepts.
async fn until_text(browser: &fantoccini::Client, css: &str, secs: u64, ok: impl Fn(&str) -> bool) -> String {
    let what = format!("`{css}` to show what the test waits for");
    within(secs, &what, async {
        loop {
            let said = text_of(browser, css).await;
            if ok(&said) {
                return said;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
}

/// The text of `css` once the page shows it (the live script may be replacing the
/// fragment the element is in when it is first read).
async fn shown(browser: &fantoccini::Client, css: &str) -> String {
    until_text(browser, css, 30, |t| !t.is_empty()).await
}

#[ignore = "needs chromium and chromium-driver (Debian); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_fix_and_its_rollback_on_the_wall() {
    let Some(session) = common::browser::start().await else {
        return;
    };
    let browser = session.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut agent, fleet, ctl_fleet) =
        spawn_simulator_with(dir.path(), 200, "20..40", &log, &["--fail-rate", "0.3"]).await;
    let extra = ["--http-listen".as_ref(), "127.0.0.1:0".as_ref()];
    let mut controller = spawn_controller(&dir.path().join("data"), &ctl_fleet, &extra, &log).await;
    let base = controller.line_after("dashboard on ").await.unwrap();
    let server = format!("http://{}", controller.addr);
    let mut client = rollout::cli::connect(&server).await.unwrap();
    // Wave 1 is 20 hosts: with three deploys in ten failing and none tolerated, it halts.
    submit(&mut client, plan("wall-fix", &["10%", "100%"], "0")).await;
    within(
        60,
        "the fix to halt",
        watch_until(&mut client, "wall-fix", halted_or_done),
    )
    .await;

    // The list: version, start time, and why it stopped, its hosts grouped by message.
    browser.goto(&base).await.unwrap();
    let row = "tr[data-rollout='wall-fix']";
    assert!(!shown(&browser, &format!("{row} td.version")).await.is_empty());
    let started = shown(&browser, &format!("{row} td.started")).await;
    assert!(started.ends_with("UTC"), "{started}");
    let why = shown(&browser, &format!("{row} .why")).await;
    assert!(why.starts_with("wave 1: "), "{why}");
    // The rollout's page: one reason, its message said once for all its hosts.
    browser.goto(&format!("{base}rollouts/wall-fix")).await.unwrap();
    let reason = shown(&browser, "#halt-reason").await;
    assert_eq!(
        reason.matches("simulated deploy failure").count(),
        1,
        "one message for every host that shares it: {reason}"
    );
    let summary = shown(&browser, "#summary").await;
    assert!(
        !summary.contains("wave 1: "),
        "the reason is said once, below: {summary}"
    );
    assert!(summary.contains("It halted: why is below."), "{summary}");
    let times = shown(&browser, "#times").await;
    assert!(times.starts_with("Started "), "{times}");
    assert!(times.contains("no estimate of the end: halted"), "{times}");
    let live = until_text(&browser, "#liveness", 30, |t| t.starts_with("live · updated")).await;
    assert!(live.ends_with("s ago"), "{live}");

    // Abort and roll back: the rollback reads as one, on the list and its page.
    let out = rollout(&[
        "abort",
        "wall-fix",
        "--reason",
        "wrong build",
        "--rollback",
        "--yes",
        "--server",
        &server,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    within(
        60,
        "the rollback to stop",
        watch_until(&mut client, "wall-fix-rollback", halted_or_done),
    )
    .await;
    browser.goto(&base).await.unwrap();
    let version = shown(&browser, "tr[data-rollout='wall-fix-rollback'] td.version").await;
    assert!(version.contains("→ previous"), "{version}");
    browser
        .goto(&format!("{base}rollouts/wall-fix-rollback"))
        .await
        .unwrap();
    let headline = shown(&browser, ".headline .sub").await;
    assert!(headline.starts_with("rollback of build"), "{headline}");
    assert!(headline.contains("to the previous version"), "{headline}");
    let summary = shown(&browser, "#summary").await;
    assert!(summary.starts_with("The rollback of build"), "{summary}");

    // Follow the sun: each host once, whatever number of customers it serves.
    browser.goto(&format!("{base}sun")).await.unwrap();
    let legend = shown(&browser, ".legend").await;
    let counted: u64 = legend
        .split(" hosts down")
        .filter_map(|part| part.rsplit(" of ").next()?.trim().parse::<u64>().ok())
        .sum();
    let with_customers = fleet.hosts.iter().filter(|h| !h.customers.is_empty()).count() as u64;
    assert_eq!(counted, with_customers, "{legend}");

    // The controllers page, and the CLI, give the dashboard's URL.
    browser.goto(&format!("{base}controllers")).await.unwrap();
    let link = browser
        .find(Locator::Css("table a"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(link.trim_end_matches('/'), base.trim_end_matches('/'));
    let out = rollout(&["controllers", "--server", &server]).await;
    assert!(
        text(&out.stdout).contains(base.trim_end_matches('/')),
        "{}",
        text(&out.stdout)
    );

    // A wide screen: larger type.
    let font = |browser: fantoccini::Client| async move {
        let size = browser
            .execute("return getComputedStyle(document.documentElement).fontSize", vec![])
            .await
            .unwrap();
        size.as_str().unwrap_or_default().to_string()
    };
    assert_eq!(font(browser.clone()).await, "16px");
    browser.set_window_size(2000, 1200).await.unwrap();
    assert_eq!(font(browser.clone()).await, "20px");

    // The controller gone: the page says it is disconnected.
    browser.goto(&format!("{base}rollouts/wall-fix")).await.unwrap();
    until_text(&browser, "#liveness", 30, |t| t.starts_with("live")).await;
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    let gone = until_text(&browser, "#liveness", 40, |t| t.starts_with("disconnected")).await;
    assert!(gone.contains("last update"), "{gone}");
    let _ = browser.close().await;
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
