//! Stop the line, through the real controller, simulator and CLI (processes of their
//! own): `rollout freeze` mid-rollout holds it (the percentage stays, the rollout says
//! on which freeze it waits), a new submission is refused naming the freeze, the
//! controller SIGKILLed during the freeze still holds it after the restart, `rollout
//! unfreeze` lets it finish at 100%, and no host started while it was frozen; the
//! webhook gets `freeze.started` and `freeze.ended`, signed as every other event.
//! The freeze calendar: an iCalendar weekly window freezes a rollout when the drill
//! clock enters it, and a re-read at SIGHUP (the occurrence excepted) lets it go.

mod common;

use std::time::Duration;

use common::receiver::{Mode, Receiver};
use common::stages::host_times;
use common::*;
use rollout::cli::connect;
use rollout::proto::v1 as pb;

/// Held: nothing in flight, the hosts said to wait on `on`, and the count of hosts
/// done the same for three seconds.
async fn held(client: &mut Client, name: &str, on: &str) -> pb::Rollout {
    let r = until(client, name, 60, "the rollout to wait on the freeze", |r| {
        r.hosts_in_flight == 0 && r.waiting.contains(on)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = get(client, name).await;
    assert_eq!(later.hosts_succeeded, r.hosts_succeeded, "nothing started while frozen");
    assert_eq!(later.state(), pb::RolloutState::Running);
    assert!(later.hosts_succeeded < later.hosts_selected, "{later:?}");
    assert!(
        later.summary.contains(on),
        "the status text says why: {}",
        later.summary
    );
    later
}

/// `rollout ARGS --server URL`, which must succeed: its standard output.
async fn cli(url: &str, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["--server", url]);
    let out = rollout(&all).await;
    assert!(out.status.success(), "rollout {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_holds_a_rollout_through_a_sigkill_and_unfreeze_lets_it_finish() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let receiver = Receiver::start(Mode::Ok).await;
    let sinks = receiver.sinks_file(dir.path(), "bridge", "    events: [\"freeze.*\"]\n");
    let (mut agent, _fleet, fleet_file) = spawn_simulator(dir.path(), 400, "100..200", &log).await;
    let flags: Vec<&std::ffi::OsStr> = vec!["--notify".as_ref(), sinks.as_os_str()];
    let mut controller = spawn_controller(&data, &fleet_file, &flags, &log).await;
    let mut url = format!("http://{}", controller.addr);
    let mut client = connect(&url).await.unwrap();
    let mut spec = plan("held-fix", &["10%", "50%", "100%"], "0");
    spec.max_parallel = 4;
    submit(&mut client, spec).await;
    until(&mut client, "held-fix", 60, "a tenth of the fleet", |r| {
        r.hosts_succeeded >= 40
    })
    .await;

    let said = cli(&url, &["freeze", "--reason", "INC-1234 stop the line", "--until", "2h"]).await;
    assert!(said.starts_with("freeze "), "{said}");
    assert!(said.contains("in force: every host until"), "{said}");
    let id: u64 = said
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("the freeze's id");
    let on = format!("frozen by freeze {id} (set by anonymous: \"INC-1234 stop the line\", until ");
    let before = held(&mut client, "held-fix", &on).await;

    // A new submission is refused, naming the freeze.
    let plan_file = dir.path().join("apac.yaml");
    std::fs::write(
        &plan_file,
        "name: apac-fix\nkind: fix\nversion: '2.0'\nselector: {region: apac}\nwaves: [100%]\n",
    )
    .unwrap();
    let refused = rollout(&["submit", plan_file.to_str().unwrap(), "--server", &url]).await;
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains(&format!("frozen by freeze {id}")), "{err}");
    assert!(err.contains(&format!("`rollout unfreeze {id}`")), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // The controller dies during the freeze; the new one holds the line still.
    controller.kill9().await.unwrap();
    controller = spawn_controller(&data, &fleet_file, &flags, &log).await;
    url = format!("http://{}", controller.addr);
    client = connect(&url).await.unwrap();
    let after = held(&mut client, "held-fix", &on).await;
    assert_eq!(after.hosts_succeeded, before.hosts_succeeded);
    let listed = cli(&url, &["freezes"]).await;
    assert!(listed.contains(&format!("freeze {id} in force")), "{listed}");

    let unfrozen = cli(&url, &["unfreeze", &id.to_string()]).await;
    assert!(unfrozen.contains("unfrozen by anonymous"), "{unfrozen}");
    let done = ended(&mut client, "held-fix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    assert_eq!(done.percent_complete, 100.0);
    assert!(done.waiting.is_empty());

    // No host started between the freeze and its end.
    let list = cli(&url, &["freezes", "--all", "--output", "json"]).await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let f = &list["freezes"][0];
    let (from, to) = (
        f["started_at_unix_ms"].as_i64().unwrap(),
        f["ended_at_unix_ms"].as_i64().unwrap(),
    );
    assert!(to > from + 6_000, "{f}");
    let times = host_times(&url, "held-fix").await;
    let started_frozen: Vec<_> = times.iter().filter(|(_, (s, _))| *s > from && *s < to).collect();
    assert!(started_frozen.is_empty(), "started while frozen: {started_frozen:?}");

    // The room was told, signed as every event is.
    receiver
        .until(60, "freeze.ended", |e| e["type"] == "freeze.ended")
        .await;
    let events = receiver.delivered();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["freeze.started", "freeze.ended"]);
    let message = events[0]["data"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(&format!(
            "Freeze {id} started: anonymous stopped the line for every host (INC-1234 stop the line)"
        )),
        "{message}"
    );
    assert!(message.contains("held-fix"), "{message}");
    assert_eq!(events[1]["data"]["freeze"]["ended_by"], "unfrozen by anonymous");
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    receiver::judged_by_other_libraries(dir.path(), &receiver.requests(), &receiver.secret);
}

/// A weekly window, Mondays 09:00-12:00 in Seoul since November, one Monday excepted.
fn weekly(excepted: &[&str]) -> String {
    let mut ics = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//rollout tests//EN\r\nBEGIN:VEVENT\r\nUID:apac-monday-freeze\r\nSUMMARY:APAC Monday morning: no changes\r\nDTSTART;TZID=Asia/Seoul:20261102T090000\r\nDTEND;TZID=Asia/Seoul:20261102T120000\r\nRRULE:FREQ=WEEKLY;BYDAY=MO\r\n",
    );
    for day in excepted {
        ics.push_str(&format!("EXDATE;TZID=Asia/Seoul:{day}T090000\r\n"));
    }
    ics.push_str("END:VEVENT\r\nEND:VCALENDAR\r\n");
    ics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekly_calendar_window_freezes_a_rollout_when_the_drill_clock_enters_it() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let calendar = dir.path().join("freeze.ics");
    std::fs::write(&calendar, weekly(&["20261116"])).unwrap();
    let (mut agent, _fleet, fleet_file) = spawn_simulator(dir.path(), 600, "150..250", &log).await;
    // Monday 2026-12-07, 08:59:45 in Seoul: the window opens 15 s after the start.
    let flags: Vec<&std::ffi::OsStr> = vec![
        "--freeze-calendar".as_ref(),
        calendar.as_os_str(),
        "--drill-clock".as_ref(),
        "2026-12-06T23:59:45Z".as_ref(),
    ];
    let mut controller = spawn_controller(&data, &fleet_file, &flags, &log).await;
    let url = format!("http://{}", controller.addr);
    let mut client = connect(&url).await.unwrap();
    let listed = cli(&url, &["freezes"]).await;
    assert!(
        listed.contains(
            "2026-12-07T00:00:00Z .. 2026-12-07T03:00:00Z  APAC Monday morning: no changes (on the drill clock)"
        ),
        "{listed}"
    );
    let mut spec = plan("calendar-fix", &["10%", "100%"], "0");
    spec.max_parallel = 4;
    submit(&mut client, spec).await;
    held(
        &mut client,
        "calendar-fix",
        "frozen by the freeze calendar's \"APAC Monday morning: no changes\"",
    )
    .await;

    // Today is excepted after all: re-read at SIGHUP, the rollout goes on.
    std::fs::write(&calendar, weekly(&["20261116", "20261207"])).unwrap();
    controllers::signal(&controller, libc::SIGHUP);
    let done = ended(&mut client, "calendar-fix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    let audit = text(&rollout(&["audit", "--server", &url]).await.stdout);
    assert!(audit.contains("freeze calendar read"), "{audit}");
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// A fleet of Seoul's and New York's hosts, and a few without customers, for a
/// simulator at `agent`.
fn two_cities(agent: &str) -> String {
    let mut out = String::from(
        "customers:\n  - {id: contoso-seoul, timezone: Asia/Seoul, hours: '09:00-18:00'}\n  - {id: fabrikam-ny, timezone: America/New_York, hours: '09:00-17:00'}\nhosts:\n",
    );
    for (prefix, customer, n) in [
        ("seoul", "contoso-seoul", 20),
        ("ny", "fabrikam-ny", 20),
        ("lab", "", 4),
    ] {
        for i in 0..n {
            let customers = if customer.is_empty() {
                String::new()
            } else {
                format!(", customers: [{customer}]")
            };
            out.push_str(&format!(
                "  - {{id: {prefix}-{i:02}, address: '{agent}', labels: {{service: mail}}{customers}}}\n"
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avoid_business_hours_deploys_new_york_at_night_and_seoul_after_its_day_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let (sim_file, fleet_file) = (dir.path().join("sim.yaml"), dir.path().join("fleet.yaml"));
    std::fs::write(&sim_file, two_cities("127.0.0.1:1")).unwrap();
    let sim_args = [
        "agent".as_ref(),
        "--simulate".as_ref(),
        sim_file.as_os_str(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    let mut agent = spawn_rollout(sim_args, &log, "the simulator").await;
    std::fs::write(&fleet_file, two_cities(&agent.addr.to_string())).unwrap();
    // Monday 17:59:30 in Seoul (03:59:30 in New York): Seoul works for 30 s more.
    let flags: Vec<&std::ffi::OsStr> = vec!["--drill-clock".as_ref(), "2026-12-07T08:59:30Z".as_ref()];
    let spawned_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut controller = spawn_controller(&data, &fleet_file, &flags, &log).await;
    let url = format!("http://{}", controller.addr);
    let mut client = connect(&url).await.unwrap();
    let plan_file = dir.path().join("risky.yaml");
    std::fs::write(
        &plan_file,
        "name: risky-network-change\nkind: fix\nversion: '2.0'\nselector: {service: mail}\nwaves: [50%, 100%]\nbake: 0s\norder: off-hours-first\nwindows:\n  avoid: business-hours\n  lookahead: 2h\n",
    )
    .unwrap();
    // The dry run says when each wave can start and end: Seoul's hosts at 18:00 KST.
    let dry = cli(
        &url,
        &[
            "submit",
            plan_file.to_str().unwrap(),
            "--dry-run",
            "--at",
            "2026-12-07T08:30:00Z",
        ],
    )
    .await;
    assert!(
        dry.contains("starts 2026-12-07T08:30:00Z, expected to end 2026-12-07T08:31:00Z"),
        "{dry}"
    );
    assert!(
        dry.contains("starts 2026-12-07T08:31:00Z, expected to end 2026-12-07T09:01:00Z (one minute a host, max_parallel at once); 20 hosts wait at its start: seoul-"),
        "{dry}"
    );
    cli(&url, &["submit", plan_file.to_str().unwrap()]).await;
    let waiting = until(&mut client, "risky-network-change", 60, "Seoul's hosts to wait", |r| {
        r.waiting
            .contains("waits for contoso-seoul's working day to end at 18:00 KST")
    })
    .await;
    assert!(
        waiting.summary.contains("contoso-seoul's working day"),
        "{}",
        waiting.summary
    );
    let done = ended(&mut client, "risky-network-change").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    let times = host_times(&url, "risky-network-change").await;
    assert_eq!(times.len(), 44);
    // 18:00 in Seoul is 30 s after the drill clock started, which was after we spawned.
    let seoul_evening = spawned_at + 30_000;
    for (host, (started, _)) in &times {
        if host.starts_with("seoul-") {
            assert!(*started >= seoul_evening, "{host} started before 18:00 KST");
        }
    }
    let first_seoul = times
        .iter()
        .filter(|(h, _)| h.starts_with("seoul-"))
        .map(|(_, (s, _))| *s)
        .min()
        .unwrap();
    let last_ny = times
        .iter()
        .filter(|(h, _)| !h.starts_with("seoul-"))
        .map(|(_, (s, _))| *s)
        .max()
        .unwrap();
    assert!(last_ny < first_seoul, "New York's and the lab's hosts went first");
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
