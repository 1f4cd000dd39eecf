//! What business-hours order buys: customer-minutes of downtime inside customers'
//! working hours, weighted by customer weight, when a whole fleet is down and
//! restarts proceed at a fixed capacity.
//!
//! Model: at the start instant every host of a 100,000-host generated fleet (seed 7,
//! customers over 24 IANA zones) is down; C hosts are restarted per minute; a host is
//! down until the end of the minute its restart is in. A customer suffers, for each of
//! its hosts that is down, every minute that falls inside its business hours (DST,
//! weekends, holidays and overnight shifts included), times its weight
//! (`rollout::downtime::model`). The exact optimum (the least any order can reach: a
//! transportation problem solved by min-cost flow, `rollout::downtime::transport`)
//! and three orders against it: business-hours-first (the controller's own
//! `RestartQueue`, re-ranked every minute), host-id order, and a seeded random order. Start times every 3 hours of a weekday
//! (Wed 2026-11-25) and of a Sunday (2026-11-29), UTC.
//!
//! Run: `cargo bench --bench restart_order` (optionally `-- HOSTS PER_MINUTE`).

use std::collections::HashMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rollout::downtime::model::{Horizon, optimum};
use rollout::downtime::optimum::rank;
use rollout::engine::queue::{Budget, Candidate, RestartQueue};
use rollout::hours::Calendar;
use rollout::inventory::{GenerateOptions, generate};
use rollout::plan::Order;

use rollout::downtime::model::MINUTE_MS;

fn utc(s: &str) -> i64 {
    format!("{s}:00Z")
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .unwrap_or(0)
}

/// Weighted customer-minutes in business hours while each host waits for its restart.
/// `minute_of[h]`: the minute (0-based) in which host h is restarted.
fn cost(hosts: &[Candidate], minute_of: &HashMap<String, usize>, horizon: &Horizon) -> u64 {
    hosts
        .iter()
        .map(|h| horizon.cost(&h.customers, minute_of[h.host.as_str()]))
        .sum()
}

/// How much more `ours` is than the optimum, in percent.
fn gap(ours: u64, best: u64) -> f64 {
    if best == 0 {
        if ours == 0 { 0.0 } else { f64::INFINITY }
    } else {
        100.0 * (ours as f64 - best as f64) / best as f64
    }
}

/// How much less `ours` is than `base`, in percent.
fn less(ours: u64, base: u64) -> f64 {
    if base == 0 {
        0.0
    } else {
        100.0 * (base as f64 - ours as f64) / base as f64
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(100_000);
    let per_minute = args.get(1).copied().unwrap_or(1_000);
    let fleet = generate(&GenerateOptions {
        hosts: n,
        agent: "127.0.0.1:7070".into(),
        seed: 7,
        unhealthy_rate: 0.0,
    });
    let calendar = Calendar::new(&fleet.customers).expect("generated customers are valid");
    let hosts: Vec<Candidate> = fleet
        .hosts
        .iter()
        .map(|h| Candidate {
            host: h.id.clone(),
            customers: rollout::inventory::strings(&h.customers),
            healthy: false,
        })
        .collect();
    let minutes = n.div_ceil(per_minute);
    let zones: std::collections::HashSet<&str> = fleet.customers.iter().map(|c| c.timezone.as_str()).collect();
    println!(
        "{} hosts, {} customers in {} time zones, {} restarts per minute ({} minutes to restart all)",
        n,
        fleet.customers.len(),
        zones.len(),
        per_minute,
        minutes
    );
    println!();
    println!("Weighted customer-minutes of downtime inside business hours (lower is better):");
    println!();
    println!("Each order's cost, and in brackets its gap to the optimum (the least any order can reach).");
    println!();
    println!(
        "| start (UTC)              |     optimum | least-business-downtime | business-hours-first | host-id order          | random order           | lbd vs tiered |"
    );
    println!(
        "|--------------------------|------------:|---------------------:|---------------------:|-----------------------:|-----------------------:|----------:|"
    );
    let mut totals: HashMap<&str, [u64; 5]> = HashMap::new();
    let mut replan_ms = Vec::new();
    let mut solve_ms = Vec::new();
    let started = Instant::now();
    for (day, date) in [("weekday", "2026-11-25"), ("sunday", "2026-11-29")] {
        for hour in (0..24).step_by(3) {
            let t0 = utc(&format!("{date}T{hour:02}:00"));
            let horizon = Horizon::new(&calendar, t0, minutes);
            let solving = Instant::now();
            let best = optimum(
                &horizon,
                hosts.iter().map(|h| h.customers.as_slice()),
                per_minute as u64,
            )
            .expect("the capacity fits every host");
            solve_ms.push(solving.elapsed().as_secs_f64() * 1000.0);
            // Business-hours-first: the controller's queue, re-ranked each minute.
            let mut queue = RestartQueue::new(hosts.clone());
            let mut budget = Budget::default();
            let mut bhf: HashMap<String, usize> = HashMap::with_capacity(n);
            let mut minute = 0;
            while !queue.is_empty() {
                let now = t0 + minute as i64 * MINUTE_MS;
                for (c, _) in queue.take(
                    per_minute,
                    Order::BusinessHoursFirst,
                    &calendar,
                    now,
                    &mut budget,
                    &mut |_| false,
                ) {
                    bhf.insert(c.host, minute);
                }
                minute += 1;
            }
            let mut by_id: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
            by_id.sort_unstable();
            let slots = |order: &[&str]| -> HashMap<String, usize> {
                order
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (h.to_string(), i / per_minute))
                    .collect()
            };
            let id_order = slots(&by_id);
            let mut shuffled = by_id.clone();
            shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
            let random = slots(&shuffled);
            // Least-business-downtime: the controller's own planner, re-planned each minute.
            let mut waiting: Vec<usize> = (0..n).collect();
            waiting.sort_by(|&a, &b| hosts[a].host.cmp(&hosts[b].host));
            let mut lbd: HashMap<String, usize> = HashMap::with_capacity(n);
            let mut minute = 0;
            while !waiting.is_empty() {
                let now = t0 + minute as i64 * MINUTE_MS;
                let lists: Vec<&[String]> = waiting.iter().map(|&i| hosts[i].customers.as_slice()).collect();
                let planning = Instant::now();
                let ranked = rank(&calendar, now, per_minute, &lists);
                if minute == 0 {
                    replan_ms.push(planning.elapsed().as_secs_f64() * 1000.0);
                }
                let mut chosen = vec![false; waiting.len()];
                for &i in ranked.iter().take(per_minute) {
                    chosen[i] = true;
                    lbd.insert(hosts[waiting[i]].host.clone(), minute);
                }
                let mut i = 0;
                waiting.retain(|_| {
                    i += 1;
                    !chosen[i - 1]
                });
                minute += 1;
            }
            let c = [
                best,
                cost(&hosts, &lbd, &horizon),
                cost(&hosts, &bhf, &horizon),
                cost(&hosts, &id_order, &horizon),
                cost(&hosts, &random, &horizon),
            ];
            let t = totals.entry(day).or_default();
            for i in 0..5 {
                t[i] += c[i];
            }
            println!(
                "| {date} {hour:02}:00 {day:<7} | {:>11} | {:>12} ({:>+5.1}%) | {:>12} ({:>+5.1}%) | {:>12} ({:>+7.1}%) | {:>12} ({:>+7.1}%) | {:>+8.1}% |",
                c[0],
                c[1],
                gap(c[1], c[0]),
                c[2],
                gap(c[2], c[0]),
                c[3],
                gap(c[3], c[0]),
                c[4],
                gap(c[4], c[0]),
                -less(c[1], c[2]),
            );
        }
    }
    println!();
    for day in ["weekday", "sunday"] {
        let t = totals[day];
        println!(
            "{day}, all 8 start times together: optimum {}; least-business-downtime {} ({:+.2}% over the optimum, {:.1}% less than business-hours-first); business-hours-first {} ({:+.2}% over the optimum, {:.1}% less than host-id order {}); random {}",
            t[0],
            t[1],
            gap(t[1], t[0]),
            less(t[1], t[2]),
            t[2],
            gap(t[2], t[0]),
            less(t[2], t[3]),
            t[3],
            t[4],
        );
    }
    replan_ms.sort_by(f64::total_cmp);
    println!(
        "least-business-downtime: planning a batch of {} waiting hosts took {:.1} ms (median of {}, slowest {:.1} ms)",
        n,
        replan_ms[replan_ms.len() / 2],
        replan_ms.len(),
        replan_ms[replan_ms.len() - 1]
    );
    solve_ms.sort_by(f64::total_cmp);
    println!(
        "exact optimum: {} hosts into {} minutes, solved in {:.0} ms (median of {}, slowest {:.0} ms)",
        n,
        minutes,
        solve_ms[solve_ms.len() / 2],
        solve_ms.len(),
        solve_ms[solve_ms.len() - 1]
    );
    eprintln!("(computed in {:.1} s)", started.elapsed().as_secs_f64());
}
