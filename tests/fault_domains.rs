//! Fault domains through the real controller, simulator and CLI: with
//! `fault_domain: {label: zone, max_unavailable: 10%}`, at no instant were more than
//! a tenth of any zone's hosts in flight (per-host start and finish times from
//! `rollout hosts --rollout NAME --output json`); with `domains_at_once: 1`, at no
//! instant were two zones' hosts in flight together within a wave.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::agent::simulator::Latency;
use rollout::proto::v1 as pb;

/// One host's attempt as the CLI lists it.
struct Ran {
    zone: String,
    wave: u64,
    started: i64,
    finished: i64,
}

async fn ran(h: &Harness, name: &str) -> Vec<Ran> {
    let zone_of: HashMap<String, String> = h
        .sim
        .fleet
        .hosts
        .iter()
        .map(|x| (x.id.clone(), x.labels.get("zone").expect("a zone").to_string()))
        .collect();
    listed_hosts(&h.controller.url, name)
        .await
        .iter()
        .map(|x| Ran {
            zone: zone_of[x["host_id"].as_str().unwrap()].clone(),
            wave: x["wave"].as_u64().unwrap(),
            started: x["started_at_unix_ms"].as_i64().unwrap(),
            finished: x["finished_at_unix_ms"].as_i64().unwrap(),
        })
        .collect()
}

/// The most hosts of each zone in flight at one instant (a host's interval is
/// [started, finished): one that finished at t is no longer in flight at t).
fn peak_per_zone(ran: &[Ran]) -> BTreeMap<String, u64> {
    let mut events: Vec<(i64, i8, &str)> = Vec::new();
    for r in ran {
        events.push((r.started, 1, &r.zone));
        events.push((r.finished, -1, &r.zone));
    }
    events.sort_by_key(|(t, d, _)| (*t, *d));
    let mut now: HashMap<&str, i64> = HashMap::new();
    let mut peak: BTreeMap<String, u64> = BTreeMap::new();
    for (_, d, zone) in events {
        let n = now.entry(zone).or_default();
        *n += i64::from(d);
        let p = peak.entry(zone.to_string()).or_default();
        *p = (*p).max(*n as u64);
    }
    peak
}

fn zoned(name: &str, at_once: u32) -> pb::PlanSpec {
    let mut spec = plan(name, &["10%", "100%"], "0");
    spec.max_parallel = 200;
    spec.fault_domain = Some(pb::FaultDomainSpec {
        label: "zone".into(),
        max_unavailable: "10%".into(),
        domains_at_once: at_once,
    });
    spec
}

fn simulated() -> SimulatorOptions {
    SimulatorOptions {
        latency_ms: Latency::Uniform { min_ms: 10, max_ms: 60 },
        ..Default::default()
    }
}

/// At no instant were more than 10% of any zone's hosts in flight, though
/// max_parallel would have sent 200 at once; every host still ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_zone_ever_has_more_than_its_budget_in_flight() {
    let mut h = Harness::start(900, simulated()).await;
    submit(&mut h.client, zoned("zonal", 0)).await;
    let done = ended(&mut h.client, "zonal").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    let ran = ran(&h, "zonal").await;
    assert_eq!(ran.len(), 900);
    let mut size: HashMap<&str, u64> = HashMap::new();
    for r in &ran {
        *size.entry(&r.zone).or_default() += 1;
    }
    assert_eq!(size.len(), 9, "three zones in each of three regions: {size:?}");
    let peak = peak_per_zone(&ran);
    for (zone, p) in &peak {
        let budget = (size[zone.as_str()] / 10).max(1);
        assert!(
            *p <= budget,
            "{zone}: {p} in flight at once, over its budget of {budget}"
        );
    }
    // The budget was reached: the limit did the work, not the latency.
    assert!(
        peak.iter().any(|(z, p)| *p == (size[z.as_str()] / 10).max(1)),
        "{peak:?}"
    );
    h.stop().await;
}

/// With domains_at_once: 1, a wave finishes one zone before it starts another: no two
/// zones' hosts of one wave were ever in flight together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_zone_at_a_time_within_a_wave() {
    let mut h = Harness::start(450, simulated()).await;
    submit(&mut h.client, zoned("one-zone", 1)).await;
    let done = ended(&mut h.client, "one-zone").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    let ran = ran(&h, "one-zone").await;
    for wave in [1, 2] {
        let of_wave: Vec<&Ran> = ran.iter().filter(|r| r.wave == wave).collect();
        for a in &of_wave {
            for b in &of_wave {
                let overlap = a.started < b.finished && b.started < a.finished;
                assert!(
                    a.zone == b.zone || !overlap,
                    "wave {wave}: {} [{}, {}) and {} [{}, {}) in flight together",
                    a.zone,
                    a.started,
                    a.finished,
                    b.zone,
                    b.started,
                    b.finished
                );
            }
        }
    }
    h.stop().await;
}
