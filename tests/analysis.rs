//! Waves gated by telemetry, with a real Prometheus (Debian's `prometheus`) scraping
//! the simulator's traffic every second: the seed incident's retry storm, measured.
//! Skipped without a `prometheus` binary, failing instead with
//! ROLLOUT_PROMETHEUS_TESTS=required.

mod common;

use std::path::Path;
use std::time::Duration;

use common::prometheus::LocalPrometheus;
use common::*;
use rollout::cli::process::Spawned;
use rollout::inventory::FleetFile;
use rollout::proto::v1 as pb;

const HOSTS: usize = 200;
/// What the fleet runs: in these tests, the version with the retry storm.
const OLD: &str = "15.20.8207.11";
/// The fix: retries as usual.
const FIX: &str = "15.20.8207.12";
/// A "fix" that fixes nothing: it storms too.
const BAD: &str = "15.20.8207.13";

/// The share of requests retried on the version being deployed, over 5 s.
const RETRY_RATIO: &str = "sum(rate(rollout_sim_retried_requests_total{version=\"{{version}}\"}[5s])) / sum(rate(rollout_sim_requests_total{version=\"{{version}}\"}[5s]))";
/// The same on every other version.
const BASELINE: &str = "sum(rate(rollout_sim_retried_requests_total{version!=\"{{version}}\"}[5s])) / sum(rate(rollout_sim_requests_total{version!=\"{{version}}\"}[5s]))";

/// A simulated fleet whose traffic is served as metrics, `faulty` versions storming;
/// a Prometheus scraping it; the fleet the controller is given.
struct Telemetry {
    agent: Spawned,
    prometheus: LocalPrometheus,
    fleet: FleetFile,
    dir: tempfile::TempDir,
    /// The CA of Prometheus's certificate, when it serves TLS.
    ca: Option<std::path::PathBuf>,
}

impl Telemetry {
    /// A `rollout serve` process on this site's fleet and a data dir of the site's
    /// (the same one each time), with `extra` flags.
    async fn controller(&self, extra: &[&str]) -> Spawned {
        let fleet_file = self.dir.path().join("fleet.yaml");
        std::fs::write(&fleet_file, self.fleet.to_yaml()).unwrap();
        let data = self.dir.path().join("data");
        let extra: Vec<&std::ffi::OsStr> = extra.iter().map(|a| a.as_ref()).collect();
        let log = self.dir.path().join("controller.log");
        spawn_controller(&data, &fleet_file, &extra, &log).await
    }

    async fn stop(mut self) {
        assert_eq!(self.agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
        self.prometheus.kill();
    }
}

async fn site(faulty: &[&str]) -> Option<Telemetry> {
    site_with(faulty, false).await
}

/// The same, Prometheus's API served over TLS with a private CA when `tls`.
async fn site_with(faulty: &[&str], tls: bool) -> Option<Telemetry> {
    let dir = tempfile::tempdir().unwrap();
    let sim_fleet = dir.path().join("sim.yaml");
    std::fs::write(&sim_fleet, fleet(HOSTS, "127.0.0.1:1").to_yaml()).unwrap();
    let mut args = vec![
        "agent".to_string(),
        "--simulate".into(),
        sim_fleet.display().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--metrics-listen".into(),
        "127.0.0.1:0".into(),
    ];
    for f in faulty {
        args.extend(["--faulty-version".to_string(), f.to_string()]);
    }
    let log = dir.path().join("agent.log");
    let mut agent = spawn_rollout(&args, &log, "the simulator").await;
    let metrics = agent.line_after("traffic metrics on ").await.unwrap();
    let target = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let certs = tls.then(|| {
        let ca = common::certs::Ca::new(dir.path(), "metrics");
        (ca.issue("prometheus"), ca.cert.clone())
    });
    let files = certs
        .as_ref()
        .map(|(pem, ca)| (pem.cert.as_path(), pem.key.as_path(), ca.as_path()));
    let Some(prometheus) = LocalPrometheus::start_with(&[target], files).await else {
        agent.kill9().await.ok();
        return None;
    };
    // Until the old version's traffic is in Prometheus.
    within(60, "Prometheus to scrape the simulator", async {
        while prometheus
            .value(&format!("sum(rollout_sim_requests_total{{version=\"{OLD}\"}})"))
            .await
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let fleet = fleet(HOSTS, &agent.addr.to_string());
    Some(Telemetry {
        agent,
        prometheus,
        fleet,
        dir,
        ca: certs.map(|(_, ca)| ca),
    })
}

/// A fix to `version` in waves [10%, 100%] baking 6 s, measured from 3 s into each
/// bake every second, with `checks` (YAML list items) and `extra` analysis settings.
fn plan_yaml(name: &str, version: &str, prometheus: &str, extra: &str, checks: &str, action: &str) -> String {
    format!(
        "name: {name}\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: {version}\nwaves: [10%, 100%]\nmax_parallel: 50\nbake: 6s\non_failure:\n  max_failed: 0\n  action: {action}\nanalysis:\n  prometheus: {prometheus}\n  initial_delay: 3s\n  interval: 1s\n{extra}  checks:\n{checks}"
    )
}

fn retry_ratio_check(max: f64) -> String {
    format!("    - name: retry-ratio\n      query: '{RETRY_RATIO}'\n      max: {max}\n")
}

fn better_than_before_check() -> String {
    format!(
        "    - name: better-than-before\n      query: '{RETRY_RATIO}'\n      baseline: '{BASELINE}'\n      max_ratio: 0.5\n"
    )
}

async fn submit_yaml(client: &mut Client, yaml: String) -> pb::Rollout {
    client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Yaml(yaml)),
            source_name: "analysis.yaml".into(),
            ..Default::default()
        })
        .await
        .expect("the plan is accepted")
        .into_inner()
        .rollout
        .expect("a rollout")
}

async fn until_ended_or_halted(client: &mut Client, name: &str) -> pb::Rollout {
    within(
        120,
        "the rollout to end or halt",
        watch_until(client, name, |r| {
            r.state().is_terminal() || r.state() == pb::RolloutState::Halted
        }),
    )
    .await
    .pop()
    .unwrap()
}

/// The incident's fix: the fleet storms (OLD retries 20 times as much), the fix does
/// not. Every gate passes, the baseline check included (the fix's retry ratio is a
/// twentieth of the old one's, under max_ratio 0.5), the rollout reaches 100%, and
/// the measurements are in GetRollout and in the audit log.
#[ignore = "needs prometheus (Debian's prometheus); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_fix_passes_every_gate_against_a_real_prometheus() {
    let Some(site) = site(&[OLD]).await else {
        return;
    };
    let controller = Controller::start(&site.dir.path().join("data"), &site.fleet).await;
    let mut client = controller.client().await;
    let checks = retry_ratio_check(0.05) + &better_than_before_check();
    let yaml = plan_yaml("fix", FIX, &site.prometheus.url, "", &checks, "halt");
    submit_yaml(&mut client, yaml).await;
    let done = until_ended_or_halted(&mut client, "fix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    let m = &done.measurements;
    let of = |check: &str, wave: u32| m.iter().filter(|x| x.check == check && x.wave == wave).count();
    assert!(of("retry-ratio", 1) >= 3 && of("retry-ratio", 2) >= 3, "{m:?}");
    assert!(of("better-than-before", 1) >= 3, "{m:?}");
    assert_eq!(of("better-than-before", 2), 0, "no baseline is left in the last wave");
    assert!(m.iter().all(|x| x.verdict == "pass"), "{m:?}");
    let ratio = m.iter().find(|x| x.check == "retry-ratio").unwrap().value;
    assert!((ratio - 0.01).abs() < 0.002, "the fix retries 1%: {ratio}");
    let compared = m.iter().find(|x| x.check == "better-than-before").unwrap();
    assert!(
        (compared.baseline.unwrap() - 0.2).abs() < 0.02,
        "the old version retries 20%: {compared:?}"
    );
    let events = timeline(&mut client, "fix").await;
    assert!(
        events
            .iter()
            .any(|e| e.kind == "measurement" && e.detail.contains("check `retry-ratio` pass")),
        "{events:?}"
    );
    // `rollout status NAME`: the analysis, check by check and wave by wave.
    let status = rollout(&["--server", &controller.url, "status", "fix"]).await;
    let shown = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(shown.contains("analysis (each check, wave by wave"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.trim_start().starts_with('1') && l.contains("better-than-before") && l.contains("pass: ")),
        "{shown}"
    );
    let json = rollout(&["--server", &controller.url, "status", "fix", "--output", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["measurements"].as_array().unwrap().len(), m.len());
    controller.stop().await;
    site.stop().await;
}

/// A fix to a version that storms too: the first wave's analysis fails and the
/// rollout halts, the reason naming the check, its value and its bound; the baseline
/// check fails as well (its ratio is about 1, over max_ratio 0.5).
#[ignore = "needs prometheus (Debian's prometheus); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_fix_halts_in_its_first_bake_naming_the_check_and_the_value() {
    let Some(site) = site(&[OLD, BAD]).await else {
        return;
    };
    let controller = Controller::start(&site.dir.path().join("data"), &site.fleet).await;
    let mut client = controller.client().await;
    let yaml = plan_yaml("bad", BAD, &site.prometheus.url, "", &retry_ratio_check(0.05), "halt");
    submit_yaml(&mut client, yaml).await;
    let halted = until_ended_or_halted(&mut client, "bad").await;
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(
        halted
            .halt_reason
            .starts_with("analysis of wave 1: check `retry-ratio` failed: 0.2 > max 0.05"),
        "{}",
        halted.halt_reason
    );
    assert_eq!(halted.hosts_succeeded, HOSTS as u64 / 10, "only the first wave ran");
    // The baseline check alone: the new version is no better than the old one.
    client.abort_rollout(action("bad")).await.unwrap();
    let yaml = plan_yaml(
        "bad-vs-old",
        BAD,
        &site.prometheus.url,
        "",
        &better_than_before_check(),
        "halt",
    );
    submit_yaml(&mut client, yaml).await;
    let halted = until_ended_or_halted(&mut client, "bad-vs-old").await;
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(
        halted.halt_reason.starts_with("analysis of wave 1: check `better-than-before` failed: 0.2 is 1 of the baseline 0.2, more than max_ratio 0.5"),
        "{}",
        halted.halt_reason
    );
    controller.stop().await;
    site.stop().await;
}

/// Prometheus killed during a bake. Under `inconclusive: continue` the rollout goes on
/// and records the inconclusive measurements; under the default (`halt`) the next
/// rollout halts, saying Prometheus was unreachable.
#[ignore = "needs prometheus (Debian's prometheus); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_lost_mid_bake_halts_by_default_and_is_recorded_under_continue() {
    let Some(mut site) = site(&[OLD]).await else {
        return;
    };
    let controller = Controller::start(&site.dir.path().join("data"), &site.fleet).await;
    let mut client = controller.client().await;
    let url = site.prometheus.url.clone();
    let carry_on = "  inconclusive: continue\n";
    let yaml = plan_yaml("carry-on", FIX, &url, carry_on, &retry_ratio_check(0.05), "halt");
    submit_yaml(&mut client, yaml).await;
    within(
        60,
        "the first measurement",
        watch_until(&mut client, "carry-on", |r| !r.measurements.is_empty()),
    )
    .await;
    site.prometheus.kill();
    let done = until_ended_or_halted(&mut client, "carry-on").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    let unsure: Vec<&pb::Measurement> = done
        .measurements
        .iter()
        .filter(|m| m.verdict == "inconclusive")
        .collect();
    assert!(!unsure.is_empty(), "{:?}", done.measurements);
    assert!(
        unsure
            .iter()
            .all(|m| m.detail.contains("unreachable") && m.value.is_nan()),
        "{unsure:?}"
    );

    let yaml = plan_yaml("fail-closed", BAD, &url, "", &retry_ratio_check(0.05), "halt");
    submit_yaml(&mut client, yaml).await;
    let halted = until_ended_or_halted(&mut client, "fail-closed").await;
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(
        halted.halt_reason.starts_with(&format!(
            "analysis of wave 1: check `retry-ratio` inconclusive: Prometheus at {url} unreachable"
        )),
        "{}",
        halted.halt_reason
    );
    controller.stop().await;
    site.stop().await;
}

/// `on_failure.action: rollback`: a failed gate ends the rollout and returns the hosts
/// it touched to the version they ran before.
#[ignore = "needs prometheus (Debian's prometheus); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_gate_with_rollback_returns_the_touched_hosts() {
    let Some(site) = site(&[OLD, BAD]).await else {
        return;
    };
    let controller = Controller::start(&site.dir.path().join("data"), &site.fleet).await;
    let mut client = controller.client().await;
    let yaml = plan_yaml(
        "bad",
        BAD,
        &site.prometheus.url,
        "",
        &retry_ratio_check(0.05),
        "rollback",
    );
    submit_yaml(&mut client, yaml).await;
    let failed = until_ended_or_halted(&mut client, "bad").await;
    assert_eq!(failed.state(), pb::RolloutState::Failed);
    assert!(
        failed
            .halt_reason
            .contains("check `retry-ratio` failed: 0.2 > max 0.05")
            && failed.halt_reason.ends_with("rolling back every host it touched"),
        "{}",
        failed.halt_reason
    );
    within(60, "every host back on the old version", async {
        loop {
            let versions: Vec<String> = probe_all(&site.agent.addr.to_string(), &site.fleet)
                .await
                .into_iter()
                .map(|(_, p)| p.version)
                .collect();
            if versions.iter().all(|v| v == OLD) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    controller.stop().await;
    site.stop().await;
}

/// A controller killed (SIGKILL) during a bake with analysis: the next one resumes the
/// bake, counts the measurements taken before, and halts at the same failed
/// measurement an uninterrupted analysis would have (the third, failure_limit 2).
#[ignore = "needs prometheus (Debian's prometheus); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_bake_resumes_the_analysis_and_reaches_the_same_verdict() {
    let Some(site) = site(&[OLD, BAD]).await else {
        return;
    };
    let mut first = site.controller(&[]).await;
    let mut client = rollout::cli::connect(&format!("http://{}", first.addr)).await.unwrap();
    let extra = "  failure_limit: 2\n";
    let yaml = plan_yaml(
        "bad",
        BAD,
        &site.prometheus.url,
        extra,
        &retry_ratio_check(0.05),
        "halt",
    )
    .replace("bake: 6s", "bake: 20s");
    submit_yaml(&mut client, yaml).await;
    let fails = |r: &pb::Rollout| r.measurements.iter().filter(|m| m.verdict == "fail").count();
    within(
        60,
        "the first failed measurement",
        watch_until(&mut client, "bad", |r| fails(r) >= 1),
    )
    .await;
    first.kill9().await.unwrap();
    let mut second = site.controller(&[]).await;
    let mut client = rollout::cli::connect(&format!("http://{}", second.addr)).await.unwrap();
    let halted = until_ended_or_halted(&mut client, "bad").await;
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(
        halted.halt_reason.ends_with("(3 failed measurements, failure_limit 2)"),
        "{}",
        halted.halt_reason
    );
    assert_eq!(fails(&halted), 3, "{:?}", halted.measurements);
    let mut at: Vec<i64> = halted.measurements.iter().map(|m| m.at_unix_ms).collect();
    let taken = at.len();
    at.dedup();
    assert_eq!(at.len(), taken, "one measurement per round, none twice");
    assert_eq!(second.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    site.stop().await;
}

/// The dashboard's rollout page charts each check, in a real browser: a point per
/// measurement, the bound, and the baseline of the check that has one.
#[ignore = "needs chromium and chromedriver (Debian's); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_charts_each_check_in_a_browser() {
    let Some(site) = site(&[OLD]).await else {
        return;
    };
    let Some(session) = common::browser::start().await else {
        site.stop().await;
        return;
    };
    let browser = &session.client;
    let mut controller = site.controller(&["--http-listen", "127.0.0.1:0"]).await;
    let dashboard = controller.line_after("dashboard on ").await.unwrap();
    let mut client = rollout::cli::connect(&format!("http://{}", controller.addr))
        .await
        .unwrap();
    let checks = retry_ratio_check(0.05) + &better_than_before_check();
    submit_yaml(
        &mut client,
        plan_yaml("fix", FIX, &site.prometheus.url, "", &checks, "halt"),
    )
    .await;
    let done = until_ended_or_halted(&mut client, "fix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    browser.goto(&format!("{dashboard}rollouts/fix")).await.unwrap();
    let points = browser
        .find_all(fantoccini::Locator::Css(
            "svg.chart[data-check='retry-ratio'] circle.pass",
        ))
        .await
        .unwrap();
    let measured = done.measurements.iter().filter(|m| m.check == "retry-ratio").count();
    assert_eq!(points.len(), measured, "a point per measurement");
    let bound = browser
        .find_all(fantoccini::Locator::Css(
            "svg.chart[data-check='retry-ratio'] line[data-bound='max']",
        ))
        .await
        .unwrap();
    assert_eq!(bound.len(), 1, "the max bound");
    let baseline = browser
        .find_all(fantoccini::Locator::Css(
            "svg.chart[data-check='better-than-before'] polyline.baseline",
        ))
        .await
        .unwrap();
    assert_eq!(baseline.len(), 1, "the baseline's line");
    let caption = common::browser::text_of(browser, "figure.chart figcaption").await;
    assert!(
        caption.starts_with("retry-ratio") && caption.contains("0 failed"),
        "{caption}"
    );
    // The timeline keeps what people and the controller did: the measurements are
    // on the charts.
    let page = common::browser::text_of(browser, "main").await;
    assert!(page.contains("Timeline") && page.contains("succeeded"), "{page}");
    assert!(!page.contains("check `retry-ratio` pass"), "{page}");
    // The controller's metrics (served beside the dashboard) count them too.
    let metrics = reqwest::get(format!("{dashboard}metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let counted =
        format!("rollout_analysis_measurements{{rollout=\"fix\",check=\"retry-ratio\",verdict=\"pass\"}} {measured}");
    assert!(metrics.contains(&counted), "{counted} in {metrics}");
    let last: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rollout_analysis_value{rollout=\"fix\",check=\"retry-ratio\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the last value in {metrics}"));
    assert!((last - 0.01).abs() < 0.002, "the fix retries 1%: {last}");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-analysis.png");
    std::fs::write(&shot, browser.screenshot().await.unwrap()).unwrap();
    println!("screenshot: {}", shot.display());
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    site.stop().await;
}

/// A Prometheus serving its API over TLS with a private CA: without the CA the
/// measurements are inconclusive and the rollout halts, saying why; with
/// `--prometheus-ca` they pass.
#[ignore = "needs prometheus (Debian's prometheus); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_prometheus_is_trusted_with_its_ca() {
    let Some(site) = site_with(&[OLD], true).await else {
        return;
    };
    assert!(site.prometheus.url.starts_with("https://"));
    let mut controller = site.controller(&[]).await;
    let mut client = rollout::cli::connect(&format!("http://{}", controller.addr))
        .await
        .unwrap();
    let yaml = plan_yaml(
        "untrusted",
        FIX,
        &site.prometheus.url,
        "",
        &retry_ratio_check(0.05),
        "halt",
    );
    submit_yaml(&mut client, yaml).await;
    let halted = until_ended_or_halted(&mut client, "untrusted").await;
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(
        halted.halt_reason.contains("unreachable") && halted.halt_reason.to_lowercase().contains("certificate"),
        "{}",
        halted.halt_reason
    );
    client.abort_rollout(action("untrusted")).await.unwrap();
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));

    let ca = site.ca.as_ref().unwrap().display().to_string();
    let mut controller = site.controller(&["--prometheus-ca", &ca]).await;
    let mut client = rollout::cli::connect(&format!("http://{}", controller.addr))
        .await
        .unwrap();
    let yaml = plan_yaml(
        "trusted",
        FIX,
        &site.prometheus.url,
        "",
        &retry_ratio_check(0.05),
        "halt",
    );
    submit_yaml(&mut client, yaml).await;
    let done = until_ended_or_halted(&mut client, "trusted").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert!(
        done.measurements.iter().all(|m| m.verdict == "pass"),
        "{:?}",
        done.measurements
    );
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    site.stop().await;
}

/// The analysis goes on measuring while an approval gate waits: each round is new
/// evidence (the gate id changes, so an approval of the earlier view is refused, the
/// approver told to look again), and a round that cannot be measured closes the gate
/// as it would have failed the bake (inconclusive: halt).
#[ignore = "needs prometheus (Debian's prometheus); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analysis_goes_on_while_a_gate_waits() {
    let Some(mut site) = site(&[OLD]).await else {
        return;
    };
    let controller = Controller::start(&site.dir.path().join("data"), &site.fleet).await;
    let mut client = controller.client().await;
    let yaml = plan_yaml(
        "watched-gate",
        FIX,
        &site.prometheus.url,
        "",
        &retry_ratio_check(0.05),
        "halt",
    ) + "gates:\n  - after: 10%\n";
    submit_yaml(&mut client, yaml).await;
    let first = within(
        120,
        "the gate to open",
        watch_until(&mut client, "watched-gate", |r| {
            r.state() == pb::RolloutState::AwaitingApproval || r.state().is_terminal()
        }),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(
        first.state(),
        pb::RolloutState::AwaitingApproval,
        "{}",
        first.halt_reason
    );
    let seen = first.gate.unwrap();
    let measured = seen.evidence.as_ref().unwrap().measurements.len();
    assert!(measured >= 3, "the bake's verdicts are the gate's evidence: {measured}");
    let later = within(
        60,
        "a round measured at the gate",
        watch_until(&mut client, "watched-gate", |r| {
            r.gate.as_ref().is_some_and(|g| g.gate_id != seen.gate_id)
        }),
    )
    .await
    .pop()
    .unwrap();
    let now = later.gate.unwrap();
    assert!(now.evidence.unwrap().measurements.len() > measured);
    let stale = client
        .approve_rollout(pb::ApproveRolloutRequest {
            name: "watched-gate".into(),
            gate_id: seen.gate_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    assert!(
        stale
            .message()
            .contains("the gate changed since you looked: look again"),
        "{stale:?}"
    );
    // Prometheus gone: the next round is inconclusive and the gate closes in a halt.
    site.prometheus.kill();
    let halted = until_ended_or_halted(&mut client, "watched-gate").await;
    assert_eq!(halted.state(), pb::RolloutState::Halted, "{}", halted.halt_reason);
    assert!(halted.halt_reason.contains("inconclusive"), "{}", halted.halt_reason);
    assert_eq!(halted.gates_closed[0].outcome, "halted");
    assert_eq!(halted.hosts_succeeded, 20, "the next wave never started");
    controller.stop().await;
    site.stop().await;
}
