//! What business-hours order buys: customer-minutes of downtime inside customers'
//! working hours, weighted by customer weight, when a whole fleet is down and
//! restarts proceed at a fixed capacity.
//!
//! Model: at the start instant every host of a 100,000-host generated fleet (seed 7,
//! customers over 24 IANA zones) is down; C hosts are restarted per minute; a host is
//! down until the end of the minute its restart is in. A customer suffers, for each of
//! its hosts that is down, every minute that falls inside its business hours (DST,
//! weekends, holidays and overnight shifts included), times its weight. Three orders:
//! business-hours-first (the controller's own `RestartQueue`, re-ranked every minute),
//! host-id order, and a seeded random order. Start times every 3 hours of a weekday
//! (Wed 2026-11-25) and of a Sunday (2026-11-29), UTC.
//!
//! Run: `cargo bench --bench restart_order` (optionally `-- HOSTS PER_MINUTE`).

use std::collections::HashMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rollout::engine::queue::{Budget, Candidate, RestartQueue};
use rollout::fleet::{GenerateOptions, generate};
use rollout::hours::{Calendar, Tier};
use rollout::plan::Order;

const MINUTE_MS: i64 = 60_000;

fn utc(s: &str) -> i64 {
    format!("{s}:00Z")
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .unwrap_or(0)
}

/// Weighted customer-minutes in business hours while each host waits for its restart.
/// `minute_of[h]`: the minute (0-based) in which host h is restarted.
fn cost(hosts: &[Candidate], minute_of: &HashMap<String, usize>, prefix: &HashMap<&str, Vec<u64>>) -> u64 {
    hosts
        .iter()
        .map(|h| {
            let down = minute_of[h.host.as_str()] + 1;
            h.customers.iter().map(|c| prefix[c.as_str()][down]).sum::<u64>()
        })
        .sum()
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
    let weight: HashMap<&str, u64> = fleet
        .customers
        .iter()
        .map(|c| (c.id.as_str(), u64::from(c.weight)))
        .collect();
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
    println!(
        "| start (UTC)              | business-hours-first | host-id order | random order | vs host-id | vs random |"
    );
    println!(
        "|--------------------------|---------------------:|--------------:|-------------:|-----------:|----------:|"
    );
    let mut totals: HashMap<&str, [u64; 3]> = HashMap::new();
    let started = Instant::now();
    for (day, date) in [("weekday", "2026-11-25"), ("sunday", "2026-11-29")] {
        for hour in (0..24).step_by(3) {
            let t0 = utc(&format!("{date}T{hour:02}:00"));
            // Per customer: weighted in-hours minutes, as prefix sums over the horizon.
            let prefix: HashMap<&str, Vec<u64>> = fleet
                .customers
                .iter()
                .map(|c| {
                    let schedule = calendar.schedule(&c.id).expect("customer");
                    let mut p = vec![0u64; minutes + 1];
                    for m in 0..minutes {
                        let mid = t0 + m as i64 * MINUTE_MS + MINUTE_MS / 2;
                        let inside = schedule.status(mid, calendar.lookahead_ms).tier == Tier::InHours;
                        p[m + 1] = p[m] + if inside { weight[c.id.as_str()] } else { 0 };
                    }
                    (c.id.as_str(), p)
                })
                .collect();
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
                cost(&hosts, &bhf, &prefix),
                cost(&hosts, &id_order, &prefix),
                cost(&hosts, &random, &prefix),
            ];
            let t = totals.entry(day).or_default();
            for i in 0..3 {
                t[i] += c[i];
            }
            let reduction = |base: u64| less(c[0], base);
            println!(
                "| {date} {hour:02}:00 {day:<7} | {:>20} | {:>13} | {:>12} | {:>9.1}% | {:>8.1}% |",
                c[0],
                c[1],
                c[2],
                reduction(c[1]),
                reduction(c[2])
            );
        }
    }
    println!();
    for day in ["weekday", "sunday"] {
        let t = totals[day];
        let reduction = |base: u64| less(t[0], base);
        println!(
            "{day}: all 8 start times together, business-hours-first {} vs host-id {} ({:.1}% less) vs random {} ({:.1}% less)",
            t[0],
            t[1],
            reduction(t[1]),
            t[2],
            reduction(t[2])
        );
    }
    eprintln!("(computed in {:.1} s)", started.elapsed().as_secs_f64());
}
