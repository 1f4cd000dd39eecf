//! A headless Chromium driven over WebDriver: Debian's `chromium` and
//! `chromium-driver`, started by the test on a free loopback port and killed when
//! dropped. Without them a test says it skipped; `.ci/run` installs them and sets
//! ROLLOUT_BROWSER_TESTS=required, so there a missing browser fails the test.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

/// chromedriver and Chromium, when installed.
fn programs() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().map(PathBuf::from).find(|p| p.exists()).or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .flat_map(|d| names.iter().map(move |n| d.join(n)))
                .find(|p| p.exists())
        })
    };
    let driver = find(&["/usr/bin/chromedriver", "chromedriver"])?;
    let chromium = find(&["/usr/bin/chromium", "chromium", "chromium-browser"])?;
    Some((driver, chromium))
}

/// A browser session, with the chromedriver behind it.
pub struct Browser {
    pub client: fantoccini::Client,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

/// Starts chromedriver and a headless Chromium through it, or None (saying the test
/// is skipped) when they are not installed.
pub async fn start() -> Option<Browser> {
    let Some((driver, chromium)) = programs() else {
        rollout::testing::skip(
            "ROLLOUT_BROWSER_TESTS",
            "no chromium and chromedriver: install Debian's chromium and chromium-driver",
        );
        return None;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(&driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let profile = tempfile::tempdir().unwrap();
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1200", format!("--user-data-dir={}", profile.path().display()),
            ]
        }
    }))
    .unwrap();
    let webdriver = format!("http://127.0.0.1:{port}");
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let started = Instant::now();
    let client = loop {
        match fantoccini::ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&webdriver)
            .await
        {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start Chromium through chromedriver: {e}"),
        }
    };
    Some(Browser {
        client,
        _driver: driver,
        _profile: profile,
    })
}

/// Chromium outlives a killed chromedriver (it is reparented, not stopped): every
/// process started with this session's profile directory is killed with it.
impl Drop for Browser {
    fn drop(&mut self) {
        let flag = format!("--user-data-dir={}", self._profile.path().display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if cmdline.split(|b| *b == 0).any(|arg| arg == flag.as_bytes()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// The text of the first element `css` selects ("" when none).
pub async fn text_of(browser: &fantoccini::Client, css: &str) -> String {
    match browser.find(fantoccini::Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Presses the button labelled `label` on the page `browser` shows; the notice of
/// the page that answers, once it has loaded.
pub async fn press(browser: &fantoccini::Client, label: &str) -> String {
    browser
        .find(fantoccini::Locator::XPath(&format!(
            "//button[normalize-space(text())='{label}']"
        )))
        .await
        .unwrap_or_else(|_| panic!("the page offers {label}"))
        .click()
        .await
        .unwrap();
    notice(browser).await
}

/// The notice heading the page an action answered with, once it has loaded.
pub async fn notice(browser: &fantoccini::Client) -> String {
    browser
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(fantoccini::Locator::Css("#notice"))
        .await
        .expect("the page answering the action")
        .text()
        .await
        .unwrap()
}
