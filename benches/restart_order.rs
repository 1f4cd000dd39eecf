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
use rollout::engine::queue::{Budget, Candidate, RestartQueue};
use rollout::fleet::{GenerateOptions, generate};
use rollout::hours::Calendar;
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

/// A greedy order over classes of interchangeable hosts: at each minute the classes
/// with the highest `key(class, minute)` restart first, `per_minute` hosts a minute.
fn greedy(
    keys: &[Vec<String>],
    counts: &[u64],
    horizon: &Horizon,
    per_minute: u64,
    key: impl Fn(&[String], usize) -> i64,
) -> u64 {
    let mut left = counts.to_vec();
    let mut total = 0;
    let mut minute = 0;
    while left.iter().any(|&n| n > 0) {
        let mut order: Vec<usize> = (0..keys.len()).filter(|&k| left[k] > 0).collect();
        order.sort_by_cached_key(|&k| std::cmp::Reverse(key(&keys[k], minute)));
        let mut room = per_minute;
        for k in order {
            let take = room.min(left[k]);
            left[k] -= take;
            room -= take;
            total += take * horizon.cost(&keys[k], minute);
            if room == 0 {
                break;
            }
        }
        minute += 1;
    }
    total
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
            customers: rollout::fleet::strings(&h.customers),
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
        "| start (UTC)              |     optimum | business-hours-first  | host-id order          | random order           | tiered vs host-id |"
    );
    println!(
        "|--------------------------|------------:|----------------------:|-----------------------:|-----------------------:|------------------:|"
    );
    let mut totals: HashMap<&str, [u64; 4]> = HashMap::new();
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
            .expect("the capacity fits every host")
            .cost;
            solve_ms.push(solving.elapsed().as_secs_f64() * 1000.0);
            // Business-hours-first: the controller's queue, re-ranked each minute.
            let mut queue = RestartQueue::new(hosts.clone());
            let mut budget = Budget::default();
            let mut bhf: HashMap<String, usize> = HashMap::with_capacity(n);
            let mut minute = 0;
            while !queue.is_empty() {
                let now = t0 + minute as i64 * MINUTE_MS;
                for (c, _) in queue.take(per_minute, Order::BusinessHoursFirst, &calendar, now, &mut budget) {
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
            let c = [
                best,
                cost(&hosts, &bhf, &horizon),
                cost(&hosts, &id_order, &horizon),
                cost(&hosts, &random, &horizon),
            ];
            let (keys, counts, _) = rollout::downtime::model::classes(hosts.iter().map(|h| h.customers.as_slice()));
            let last = minutes - 1;
            let w = |c: &[String], m: usize, end: usize| horizon.cost(c, end.max(m)) as i64 - horizon.cost(c, m) as i64;
            let variants = [
                greedy(&keys, &counts, &horizon, per_minute as u64, |c, m| w(c, m, last)),
                greedy(&keys, &counts, &horizon, per_minute as u64, |c, m| {
                    w(c, m, m + (last - m) / 2)
                }),
                greedy(&keys, &counts, &horizon, per_minute as u64, |c, m| {
                    w(c, m, m + (last - m) / 4)
                }),
                greedy(&keys, &counts, &horizon, per_minute as u64, |c, m| {
                    horizon.rate(c, m) as i64 * 1_000_000 + w(c, m, last)
                }),
                // Each minute's loss weighted by the chance the host still waits then,
                // were it not taken now (its slot uniform over the rest of the queue).
                greedy(&keys, &counts, &horizon, per_minute as u64, |c, m| {
                    (m + 1..=last)
                        .map(|t| horizon.rate(c, t) as i64 * (last + 1 - t) as i64)
                        .sum()
                }),
            ];
            eprintln!(
                "  variants: {}",
                variants
                    .iter()
                    .map(|&v| format!("{v} ({:+.2}%)", gap(v, c[0])))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
            let t = totals.entry(day).or_default();
            for i in 0..4 {
                t[i] += c[i];
            }
            println!(
                "| {date} {hour:02}:00 {day:<7} | {:>11} | {:>12} ({:>+6.1}%) | {:>12} ({:>+7.1}%) | {:>12} ({:>+7.1}%) | {:>9.1}% |",
                c[0],
                c[1],
                gap(c[1], c[0]),
                c[2],
                gap(c[2], c[0]),
                c[3],
                gap(c[3], c[0]),
                less(c[1], c[2]),
            );
        }
    }
    println!();
    for day in ["weekday", "sunday"] {
        let t = totals[day];
        println!(
            "{day}: all 8 start times together: optimum {}; business-hours-first {} ({:+.1}% over the optimum, {:.1}% less than host-id order {}; random {})",
            t[0],
            t[1],
            gap(t[1], t[0]),
            less(t[1], t[2]),
            t[2],
            t[3],
        );
    }
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
