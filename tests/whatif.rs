//! What-if previews: `--dry-run --at TIME` orders and explains waves and restarts as
//! they would be at that instant. The expected order is computed here independently
//! of `src/hours.rs`, straight from jiff's time zone database.

mod common;

use common::*;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use rollout::agent::SimulatorOptions;
use rollout::inventory::{Customer, FleetFile, Host};
use rollout::proto::v1 as pb;

/// (id, zone, hours, workdays, weight)
const CUSTOMERS: [(&str, &str, &str, &[&str], u32); 5] = [
    (
        "seoul",
        "Asia/Seoul",
        "09:00-18:00",
        &["mon", "tue", "wed", "thu", "fri"],
        5,
    ),
    (
        "auckland",
        "Pacific/Auckland",
        "09:00-17:00",
        &["mon", "tue", "wed", "thu", "fri"],
        1,
    ),
    (
        "london",
        "Europe/London",
        "08:00-17:00",
        &["mon", "tue", "wed", "thu", "fri"],
        1,
    ),
    (
        "newyork",
        "America/New_York",
        "09:00-17:00",
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        1,
    ),
    (
        "la",
        "America/Los_Angeles",
        "09:00-17:00",
        &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
        1,
    ),
];

fn the_fleet(addr: &str) -> FleetFile {
    let customers = CUSTOMERS
        .iter()
        .map(|(id, tz, hours, days, weight)| Customer {
            id: id.to_string(),
            timezone: tz.to_string(),
            hours: hours.to_string(),
            workdays: days.iter().map(|d| d.to_string()).collect(),
            holidays: Vec::new(),
            weight: *weight,
        })
        .collect();
    let hosts = CUSTOMERS
        .iter()
        .map(|(id, ..)| {
            let mut labels = rollout::inventory::Labels::default();
            labels.insert("service".into(), "exchange-routing".into());
            labels.insert("region".into(), "apac".into());
            Host {
                id: format!("host-{id}"),
                address: addr.to_string().into(),
                labels,
                customers: vec![(*id).into()],
                version: Some("1.0".into()),
                healthy: true,
            }
        })
        .collect();
    FleetFile { customers, hosts }
}

/// The business-hours order at `at`, by the rules DESIGN.md states: in hours first,
/// then those starting within 2 h (soonest first), then the rest by time to their
/// next start; ties by higher weight, then id.
fn expected_order(at: &str) -> Vec<String> {
    let now: Timestamp = at.parse().unwrap();
    let day = |d: jiff::civil::Weekday| match d {
        jiff::civil::Weekday::Monday => "mon",
        jiff::civil::Weekday::Tuesday => "tue",
        jiff::civil::Weekday::Wednesday => "wed",
        jiff::civil::Weekday::Thursday => "thu",
        jiff::civil::Weekday::Friday => "fri",
        jiff::civil::Weekday::Saturday => "sat",
        jiff::civil::Weekday::Sunday => "sun",
    };
    let mut ranked: Vec<(u8, i64, std::cmp::Reverse<u32>, String)> = CUSTOMERS
        .iter()
        .map(|(id, tz, hours, days, weight)| {
            let tz = TimeZone::get(tz).unwrap();
            let (start, end) = hours.split_once('-').unwrap();
            let start: Time = start.parse().unwrap();
            let end: Time = end.parse().unwrap();
            let local = now.to_zoned(tz.clone());
            let today: Date = local.date();
            let works = |d: Date| days.contains(&day(d.weekday()));
            let in_hours = works(today) && local.time() >= start && local.time() < end;
            // The next start: the first workday at `start`, local, after now.
            let next = (0..8)
                .map(|k| today.checked_add(k.days()).unwrap())
                .filter(|d| works(*d))
                .map(|d| d.to_datetime(start).to_zoned(tz.clone()).unwrap().timestamp())
                .find(|t| *t > now)
                .unwrap();
            let until = next.as_millisecond() - now.as_millisecond();
            let (tier, key) = if in_hours {
                (0, 0)
            } else if until <= 2 * 3_600_000 {
                (1, until)
            } else {
                (2, until)
            };
            (tier, key, std::cmp::Reverse(*weight), format!("host-{id}"))
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|r| r.3).collect()
}

fn plan_yaml() -> String {
    "name: whatif\nkind: fix\nselector: {service: exchange-routing}\nversion: \"2.0\"\nwaves: [100%]\norder: business-hours-first\n".into()
}

/// Runs the CLI's what-if preview: `ARGS --dry-run --at AT --server SERVER`.
async fn preview(args: &[&str], at: &str, server: &str) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend(["--dry-run", "--at", at, "--server", server]);
    rollout(&all).await
}

async fn wave_order(client: &mut Client, at: Option<&str>) -> Result<Vec<String>, tonic::Status> {
    let response = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Yaml(plan_yaml())),
            dry_run: at.is_some(),
            at_unix_ms: at.map_or(0, |a| a.parse::<Timestamp>().unwrap().as_millisecond()),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(response.preview[0].host_ids.clone())
}

async fn restart_order(client: &mut Client, at: &str, dry_run: bool) -> Result<Vec<String>, tonic::Status> {
    let mut selector = std::collections::HashMap::new();
    selector.insert(
        "service".to_string(),
        pb::LabelValues {
            values: vec!["exchange-routing".into()],
        },
    );
    let job = client
        .trigger_restart(pb::TriggerRestartRequest {
            selector,
            dry_run,
            at_unix_ms: at.parse::<Timestamp>().unwrap().as_millisecond(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .job
        .unwrap();
    Ok(job.hosts.into_iter().map(|h| h.host_id).collect())
}

/// Two instants: a Wednesday in Seoul's working hours, and the Sunday New York leaves
/// daylight saving time (08:30 EST there; an offset-only clock would say 09:30, in
/// hours). The dry runs of a plan and of a restart, at each, give the order computed
/// here; the controller's own clock (a Saturday) does not matter. A real submission
/// or restart with an instant is refused with InvalidArgument, and the CLI prints
/// what it previewed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_at_an_instant_give_the_order_of_that_instant() {
    let sim = Sim::start_fleet(SimulatorOptions::default(), the_fleet).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at("2026-11-28T23:00");
    let controller = Controller::start_with_clock(&dir.path().join("data"), &sim.fleet, clock).await;
    let mut client = controller.client().await;

    let seoul_morning = "2026-12-02T02:00:00Z";
    let new_york_dst_end = "2026-11-01T13:30:00Z";
    assert_eq!(
        expected_order(seoul_morning),
        ["host-seoul", "host-auckland", "host-london", "host-newyork", "host-la"]
    );
    assert_eq!(
        expected_order(new_york_dst_end),
        ["host-newyork", "host-la", "host-auckland", "host-seoul", "host-london"]
    );
    for at in [seoul_morning, new_york_dst_end] {
        let expected = expected_order(at);
        assert_eq!(
            wave_order(&mut client, Some(at)).await.unwrap(),
            expected,
            "plan at {at}"
        );
        assert_eq!(
            restart_order(&mut client, at, true).await.unwrap(),
            expected,
            "restart at {at}"
        );
    }

    // An instant on a real change is refused, and nothing is created.
    let refused = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Yaml(plan_yaml())),
            at_unix_ms: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("dry runs only"), "{}", refused.message());
    let refused = restart_order(&mut client, seoul_morning, false).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    let listed = client
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.rollouts.is_empty());

    // The CLI: the same preview, said to be a what-if.
    let plan = dir.path().join("whatif.yaml");
    std::fs::write(&plan, plan_yaml()).unwrap();
    let plan = plan.display().to_string();
    let out = preview(&["submit", &plan], new_york_dst_end, &controller.url).await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains("what-if: ordered and explained as at 2026-11-01T13:30:00Z"),
        "{shown}"
    );
    assert!(
        shown.contains("wave 1 (100%): +5 hosts, 5 in total: host-newyork, host-la"),
        "{shown}"
    );
    assert!(shown.contains("08:30 Sun America/New_York, starts in 30m"), "{shown}");
    let out = preview(
        &["restart", "--selector", "service=exchange-routing"],
        seoul_morning,
        &controller.url,
    )
    .await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(shown.contains("11:00 Wed Asia/Seoul, in hours"), "{shown}");
    // --at without --dry-run is a usage error, before any call.
    let out = rollout(&["submit", &plan, "--at", seoul_morning, "--server", &controller.url]).await;
    assert_ne!(out.status.code(), Some(0));
    let out = preview(&["submit", &plan], "monday 9am", &controller.url).await;
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("RFC 3339"), "{}", text(&out.stderr));

    controller.stop().await;
    sim.stop().await;
}

/// The dry runs price each order at an instant (Wednesday in Seoul's working hours):
/// the expected weighted customer-minutes inside working hours of the chosen order and
/// of the others, at `max_parallel` a minute. The tiered order's price is its own
/// previewed order's cost under the model, computed here; least-business-downtime
/// costs no more than either other order; the CLI says it in one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_price_each_order_at_the_instant() {
    let sim = Sim::start_fleet(SimulatorOptions::default(), the_fleet).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = FixedClock::at("2026-11-28T23:00");
    let controller = Controller::start_with_clock(&dir.path().join("data"), &sim.fleet, clock).await;
    let mut client = controller.client().await;
    let seoul_morning = "2026-12-02T02:00:00Z";
    let at = seoul_morning.parse::<Timestamp>().unwrap().as_millisecond();
    let job = client
        .trigger_restart(pb::TriggerRestartRequest {
            host_ids: sim.fleet.hosts.iter().map(|h| h.id.clone()).collect(),
            max_parallel: 1,
            dry_run: true,
            at_unix_ms: at,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let priced: Vec<(&str, u64, bool)> = job
        .prices
        .iter()
        .map(|p| (p.order.as_str(), p.working_minutes, p.chosen))
        .collect();
    assert_eq!(
        priced.iter().map(|p| (p.0, p.2)).collect::<Vec<_>>(),
        [
            ("business-hours-first", true),
            ("least-business-downtime", false),
            ("stable", false)
        ]
    );
    let calendar = rollout::hours::Calendar::new(&sim.fleet.customers).unwrap();
    let horizon = rollout::downtime::model::Horizon::new(&calendar, at, 5);
    let customer_of = |host: &str| {
        let h = sim.fleet.hosts.iter().find(|h| h.id == host).unwrap();
        rollout::inventory::strings(&h.customers)
    };
    let tiered: u64 = job
        .hosts
        .iter()
        .enumerate()
        .map(|(minute, h)| horizon.cost(&customer_of(&h.host_id), minute))
        .sum();
    assert!(tiered > 0, "Seoul and Auckland work then");
    assert_eq!(priced[0].1, tiered, "the tiered order's price is its order's cost");
    assert!(priced[1].1 <= priced[0].1 && priced[1].1 <= priced[2].1, "{priced:?}");

    let out = preview(
        &[
            "restart",
            "--selector",
            "service=exchange-routing",
            "--max-parallel",
            "1",
            "--order",
            "least-business-downtime",
        ],
        seoul_morning,
        &controller.url,
    )
    .await;
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    assert!(
        shown.contains(&format!(
            "expected, at 1 restart a minute: this order (least-business-downtime): {} customer-minutes in working hours; business-hours-first: {}; stable: ",
            priced[1].1, priced[0].1
        )),
        "{shown}"
    );
    // A plan's dry run, in each order: what the CLI prints.
    let plan = dir.path().join("whatif.yaml");
    let dry_submit = async |order: &str| {
        std::fs::write(&plan, plan_yaml().replace("business-hours-first", order)).unwrap();
        let path = plan.display().to_string();
        let out = preview(&["submit", &path], seoul_morning, &controller.url).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let shown = dry_submit("business-hours-first").await;
    assert!(shown.contains("this order (business-hours-first): "), "{shown}");
    // A fix's hosts are deployed, not restarted.
    assert!(
        shown.contains("expected, at 100 deploys a minute: this order"),
        "{shown}"
    );
    // A plan in least-business-downtime order previews its waves in that order's terms.
    let shown = dry_submit("least-business-downtime").await;
    for why in [
        "seoul (1 host): 7h00m of its working day left now; restarting it later costs 5 working minutes per minute",
        "auckland (1 host): 2h00m of its working day left now; restarting it later costs 1 working minute per minute",
        "this order (least-business-downtime): ",
    ] {
        assert!(shown.contains(why), "{why:?} not in {shown}");
    }
    controller.stop().await;
    sim.stop().await;
}
