//! The restart queue: which waiting hosts to restart next, at a given instant, within
//! each customer's disruption budget. Pure: the caller passes the clock's "now", so
//! the order is re-decided at every batch and tests move time by hand.

use std::collections::HashMap;

use super::order::stable_hash;
use crate::hours::{Calendar, Placement, Snapshot};
use crate::plan::{Order, Threshold};

/// A host waiting to be restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub host: String,
    pub customers: Vec<String>,
    /// Healthy hosts count against their customers' budget; restarting an unhealthy
    /// one cannot make things worse.
    pub healthy: bool,
}

/// Per customer: how many healthy hosts may be down at once, and how many are.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    allowed: HashMap<String, u64>,
    down: HashMap<String, u64>,
}

impl Budget {
    /// `sizes`: each customer's host count. A share rounds down but allows at least
    /// one host, or a small customer could never be restarted.
    pub fn new(threshold: Threshold, sizes: &HashMap<String, u64>) -> Budget {
        let allowed = sizes
            .iter()
            .map(|(c, &n)| (c.clone(), threshold.allowed(n).max(1)))
            .collect();
        Budget {
            allowed,
            down: HashMap::new(),
        }
    }

    pub fn allowed(&self, customer: &str) -> u64 {
        self.allowed.get(customer).copied().unwrap_or(1)
    }

    fn admits(&self, c: &Candidate) -> bool {
        !c.healthy
            || c.customers
                .iter()
                .all(|x| self.down.get(x).copied().unwrap_or(0) < self.allowed(x))
    }

    /// A host goes down (its restart is sent).
    pub fn hold(&mut self, customers: &[String], healthy: bool) {
        if healthy {
            for c in customers {
                *self.down.entry(c.clone()).or_default() += 1;
            }
        }
    }

    /// A host is back (its restart returned, either way).
    pub fn release(&mut self, customers: &[String], healthy: bool) {
        if healthy {
            for c in customers {
                if let Some(n) = self.down.get_mut(c) {
                    *n = n.saturating_sub(1);
                }
            }
        }
    }
}

/// Hosts waiting for a restart.
#[derive(Debug, Clone, Default)]
pub struct RestartQueue {
    waiting: Vec<Candidate>,
    /// Restarts expected a minute: what `least-business-downtime` plans with.
    per_minute: usize,
}

impl RestartQueue {
    pub fn new(waiting: Vec<Candidate>) -> RestartQueue {
        RestartQueue { waiting, per_minute: 1 }
    }

    /// The hosts waiting, in no particular order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.waiting
    }

    /// Sets the restarts expected a minute (the job's measured pace).
    pub fn set_pace(&mut self, per_minute: usize) {
        self.per_minute = per_minute.max(1);
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Indices of the waiting hosts in the order they would go at `now_ms`, and the
    /// plan `least-business-downtime` made (what its explanations read).
    fn order_at(&self, order: Order, calendar: &Calendar, now_ms: i64, snapshot: &Snapshot<'_>) -> (Vec<usize>, bool) {
        let mut idx: Vec<usize> = (0..self.waiting.len()).collect();
        let w = &self.waiting;
        match order {
            Order::Stable => idx.sort_by_cached_key(|&i| (stable_hash(&w[i].host), &w[i].host)),
            Order::BusinessHoursFirst => {
                idx.sort_by_cached_key(|&i| (Calendar::rank(snapshot, &w[i].customers), &w[i].host))
            }
            Order::OffHoursFirst => {
                idx.sort_by_cached_key(|&i| std::cmp::Reverse((Calendar::rank(snapshot, &w[i].customers), &w[i].host)))
            }
            Order::LeastBusinessDowntime => {
                idx.sort_by(|&a, &b| w[a].host.cmp(&w[b].host));
                let lists: Vec<&[String]> = idx.iter().map(|&i| w[i].customers.as_slice()).collect();
                let ranked = crate::downtime::optimum::rank(calendar, now_ms, self.per_minute, &lists);
                let order = ranked.iter().map(|&i| idx[i]).collect();
                return (order, true);
            }
        }
        (idx, false)
    }

    /// Where a picked host stands, in the terms of the order that picked it.
    fn placement(snapshot: &Snapshot<'_>, downtime: bool, now_ms: i64, c: &Candidate) -> Placement {
        let mut place = Calendar::place(snapshot, &c.host, &c.customers);
        if downtime && let Some(why) = super::order::downtime_why(snapshot, &place.customer, now_ms) {
            place.why = format!("{}: {why}", place.customer);
        }
        place
    }

    /// Every waiting host in the order it would go at `now_ms`, with its placement.
    pub fn ranked(&self, order: Order, calendar: &Calendar, now_ms: i64) -> Vec<(Candidate, Placement)> {
        let snapshot = calendar.snapshot(now_ms);
        let (order, plan) = self.order_at(order, calendar, now_ms, &snapshot);
        order
            .into_iter()
            .map(|i| {
                let c = &self.waiting[i];
                (c.clone(), Self::placement(&snapshot, plan, now_ms, c))
            })
            .collect()
    }

    /// Takes up to `n` hosts, best first at `now_ms`, that the budget admits; the
    /// budget holds them. Hosts the budget refuses wait for a later batch.
    pub fn take(
        &mut self,
        n: usize,
        order: Order,
        calendar: &Calendar,
        now_ms: i64,
        budget: &mut Budget,
        held: &mut dyn FnMut(&str) -> bool,
    ) -> Vec<(Candidate, Placement)> {
        let snapshot = calendar.snapshot(now_ms);
        let mut chosen = vec![false; self.waiting.len()];
        let mut taken = Vec::new();
        let (ranked, plan) = self.order_at(order, calendar, now_ms, &snapshot);
        for i in ranked {
            if taken.len() >= n {
                break;
            }
            let c = &self.waiting[i];
            if budget.admits(c) && !held(&c.host) {
                budget.hold(&c.customers, c.healthy);
                chosen[i] = true;
                taken.push((c.clone(), Self::placement(&snapshot, plan, now_ms, c)));
            }
        }
        let mut i = 0;
        self.waiting.retain(|_| {
            i += 1;
            !chosen[i - 1]
        });
        taken
    }
}

/// The orders a dry run prices, the chosen one first.
const PRICED: [Order; 3] = [Order::LeastBusinessDowntime, Order::BusinessHoursFirst, Order::Stable];

/// Re-rankings at most in a priced run (a long queue is re-ranked every few minutes).
const PRICE_RERANKS: usize = 24;

/// What restarting `waiting` from `now_ms` at `per_minute` a minute costs in each
/// order (the chosen one first, then the others): weighted customer-minutes of
/// downtime inside working hours under [`crate::downtime::model`], each order
/// re-ranked as it goes (every minute, or every few minutes of a long queue), the
/// disruption budget left aside.
pub fn prices(
    waiting: &[Candidate],
    calendar: &Calendar,
    now_ms: i64,
    per_minute: usize,
    chosen: Order,
) -> Vec<(Order, u64)> {
    let per_minute = per_minute.max(1);
    let minutes = waiting
        .len()
        .div_ceil(per_minute)
        .clamp(1, crate::downtime::optimum::MAX_MINUTES);
    let horizon = crate::downtime::model::Horizon::new(calendar, now_ms, minutes);
    let every = minutes.div_ceil(PRICE_RERANKS).max(1);
    let mut orders = vec![chosen];
    orders.extend(PRICED.iter().copied().filter(|o| *o != chosen));
    orders
        .into_iter()
        .map(|order| {
            let mut q = RestartQueue::new(waiting.to_vec());
            q.set_pace(per_minute);
            let (mut cost, mut minute) = (0, 0);
            while !q.is_empty() {
                let at = now_ms + minute as i64 * crate::downtime::model::MINUTE_MS;
                let batch = q.take(
                    per_minute * every,
                    order,
                    calendar,
                    at,
                    &mut Budget::default(),
                    &mut |_| false,
                );
                for (i, (c, _)) in batch.iter().enumerate() {
                    cost += horizon.cost(&c.customers, minute + i / per_minute);
                }
                minute += every;
            }
            (order, cost)
        })
        .collect()
}

/// [`prices`] as the API says them, the chosen order first.
pub fn price_list(
    waiting: &[Candidate],
    calendar: &Calendar,
    now_ms: i64,
    per_minute: usize,
    chosen: Order,
) -> Vec<crate::proto::v1::OrderPrice> {
    prices(waiting, calendar, now_ms, per_minute, chosen)
        .into_iter()
        .enumerate()
        .map(|(i, (order, cost))| crate::proto::v1::OrderPrice {
            order: order.as_str().to_string(),
            working_minutes: cost,
            chosen: i == 0,
            per_minute: per_minute as u32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hours::Tier;
    use crate::inventory::Customer;

    fn customer(id: &str, tz: &str) -> Customer {
        Customer::weekdays(id, tz, "09:00-18:00")
    }

    fn host(id: &str, customer: &str, healthy: bool) -> Candidate {
        Candidate {
            host: id.into(),
            customers: vec![customer.into()],
            healthy,
        }
    }

    fn utc(s: &str) -> i64 {
        format!("{s}:00Z").parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    /// The order is decided at each batch: when the clock moves from Seoul's morning
    /// to London's, the next batch serves London first.
    #[test]
    fn the_order_changes_when_the_clock_moves_between_batches() {
        let cal = Calendar::new(&[customer("seoul", "Asia/Seoul"), customer("london", "Europe/London")]).unwrap();
        let mut q = RestartQueue::new(vec![
            host("l1", "london", false),
            host("l2", "london", false),
            host("s1", "seoul", false),
            host("s2", "seoul", false),
        ]);
        let mut budget = Budget::default();
        // Tue 09:30 in Seoul, 00:30 in London.
        let first = q.take(
            1,
            Order::BusinessHoursFirst,
            &cal,
            utc("2026-11-24T00:30"),
            &mut budget,
            &mut |_| false,
        );
        assert_eq!(first[0].0.host, "s1");
        assert_eq!(first[0].1.key.0, Tier::InHours);
        // Ten hours later: 19:30 in Seoul (off), 10:30 in London (in hours).
        let second = q.take(
            1,
            Order::BusinessHoursFirst,
            &cal,
            utc("2026-11-24T10:30"),
            &mut budget,
            &mut |_| false,
        );
        assert_eq!(second[0].0.host, "l1");
        assert_eq!(second[0].1.why, "10:30 Tue Europe/London, in hours (09:00-18:00)");
        // Off-hours-first is the reverse.
        let third = q.take(
            1,
            Order::OffHoursFirst,
            &cal,
            utc("2026-11-24T10:30"),
            &mut budget,
            &mut |_| false,
        );
        assert_eq!(third[0].0.host, "s2");
    }

    /// Healthy hosts of one customer never exceed the budget; unhealthy ones do not count.
    #[test]
    fn the_budget_holds_healthy_hosts_only() {
        let cal = Calendar::new(&[customer("c", "Asia/Seoul")]).unwrap();
        let sizes = [("c".to_string(), 8u64)].into();
        let mut budget = Budget::new(Threshold::Share(crate::plan::Percent::from_basis_points(2_500)), &sizes);
        assert_eq!(budget.allowed("c"), 2);
        let mut q = RestartQueue::new((0..6).map(|i| host(&format!("h{i}"), "c", i >= 4)).collect());
        let now = utc("2026-11-24T00:30");
        let batch = q.take(10, Order::Stable, &cal, now, &mut budget, &mut |_| false);
        let healthy = batch.iter().filter(|(c, _)| c.healthy).count();
        assert_eq!((batch.len(), healthy), (6, 2), "4 unhealthy + 2 healthy");
        let mut q = RestartQueue::new((0..4).map(|i| host(&format!("g{i}"), "c", true)).collect());
        assert!(
            q.take(10, Order::Stable, &cal, now, &mut budget, &mut |_| false)
                .is_empty(),
            "budget used up"
        );
        budget.release(&["c".into()], true);
        assert_eq!(
            q.take(10, Order::Stable, &cal, now, &mut budget, &mut |_| false).len(),
            1
        );
        assert_eq!(q.len(), 3);
    }

    fn hosts(prefix: &str, customer: &str, n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| host(&format!("{prefix}{i:03}"), customer, false))
            .collect()
    }

    /// Restarts the whole queue `per_minute` a minute from `t0` in `order`, planned
    /// again every minute as a job does; its cost under the model, and the batches.
    fn run(
        cal: &Calendar,
        waiting: Vec<Candidate>,
        order: Order,
        t0: i64,
        per_minute: usize,
    ) -> (u64, Vec<Vec<(Candidate, Placement)>>) {
        let all = waiting.clone();
        let minutes = waiting.len().div_ceil(per_minute);
        let horizon = crate::downtime::model::Horizon::new(cal, t0, minutes);
        let mut q = RestartQueue::new(waiting);
        q.set_pace(per_minute);
        let mut budget = Budget::default();
        let mut batches = Vec::new();
        let mut cost = 0;
        for m in 0..minutes {
            let batch = q.take(per_minute, order, cal, t0 + m as i64 * 60_000, &mut budget, &mut |_| {
                false
            });
            cost += batch.iter().map(|(c, _)| horizon.cost(&c.customers, m)).sum::<u64>();
            batches.push(batch);
        }
        let best =
            crate::downtime::model::optimum(&horizon, all.iter().map(|c| c.customers.as_slice()), per_minute as u64)
                .unwrap();
        assert_eq!(cost, best, "{order:?} reaches the optimum the model computes");
        (cost, batches)
    }

    fn customers_of(batch: &[(Candidate, Placement)]) -> Vec<&str> {
        let mut c: Vec<&str> = batch.iter().map(|(c, _)| c.customers[0].as_str()).collect();
        c.dedup();
        c
    }

    /// The instant: 05:32 UTC on a Wednesday, Sydney at 16:32 (28 minutes of
    /// its day left), Seoul at 14:32 (3h28m left), one restart a minute for an hour.
    /// The tiers put Sydney first (by name); the least-downtime order puts Seoul
    /// first, and reaches the optimum.
    #[test]
    fn least_downtime_serves_the_customer_with_more_of_its_day_left() {
        let cal = Calendar::new(&[
            Customer::weekdays("contoso-seoul", "Asia/Seoul", "09:00-18:00"),
            Customer::weekdays("alpine-sydney", "Australia/Sydney", "09:00-17:00"),
        ])
        .unwrap();
        let waiting = [hosts("a", "alpine-sydney", 30), hosts("c", "contoso-seoul", 30)].concat();
        let t0 = utc("2026-11-25T05:32");
        let (_, batches) = run(&cal, waiting.clone(), Order::LeastBusinessDowntime, t0, 1);
        assert_eq!(customers_of(&batches[0]), ["contoso-seoul"]);
        assert_eq!(
            batches[0][0].1.why,
            "contoso-seoul: 3h28m of its working day left now; restarting it later costs 1 working minute per minute"
        );
        let mut q = RestartQueue::new(waiting);
        let tiered = q.take(
            1,
            Order::BusinessHoursFirst,
            &cal,
            t0,
            &mut Budget::default(),
            &mut |_| false,
        );
        assert_eq!(customers_of(&tiered), ["alpine-sydney"], "the tiers go by name here");
    }

    /// A customer who starts in 20 minutes behind a long queue of customers in hours:
    /// restarted now it loses none of its day, so its hosts go before the day it would
    /// otherwise lose.
    #[test]
    fn least_downtime_restarts_a_customer_about_to_start_before_it_starts() {
        let cal = Calendar::new(&[
            Customer::weekdays("wingtip-auckland", "Pacific/Auckland", "09:00-17:00"),
            Customer::weekdays("fabrikam-tokyo", "Asia/Tokyo", "09:00-18:00"),
        ])
        .unwrap();
        // Tue 19:40 UTC: Auckland 08:40 Wed (starts in 20m), Tokyo 04:40 Wed (starts
        // in 4h20m): Auckland goes while its restart costs it nothing.
        let waiting = [hosts("f", "fabrikam-tokyo", 40), hosts("w", "wingtip-auckland", 10)].concat();
        let t0 = utc("2026-11-24T19:40");
        let (_, batches) = run(&cal, waiting, Order::LeastBusinessDowntime, t0, 2);
        assert_eq!(customers_of(&batches[0]), ["wingtip-auckland"]);
        assert_eq!(
            batches[0][0].1.why,
            "wingtip-auckland: starts in 20m; restarted now, it loses none of its day"
        );
    }

    /// A Sunday-to-Thursday week and a DST day: on Sunday 2026-03-08 New York moves its
    /// clocks forward, so its 09:00 start is 13:00 UTC (14:00 the day before); Dubai
    /// (no DST) works Sunday, in hours at 16:50. At 12:50 UTC New York starts in 10
    /// minutes, and the order reaches the optimum through the change.
    #[test]
    fn least_downtime_reads_the_clocks_through_a_dst_day_and_a_sunday_week() {
        let sunday_week = |id: &str, tz: &str| Customer {
            workdays: ["sun", "mon", "tue", "wed", "thu"].map(String::from).to_vec(),
            ..Customer::weekdays(id, tz, "09:00-17:00")
        };
        let cal = Calendar::new(&[
            sunday_week("emirates-dubai", "Asia/Dubai"),
            sunday_week("hudson-newyork", "America/New_York"),
        ])
        .unwrap();
        let waiting = [hosts("e", "emirates-dubai", 20), hosts("h", "hudson-newyork", 20)].concat();
        let t0 = utc("2026-03-08T12:50");
        run(&cal, waiting.clone(), Order::LeastBusinessDowntime, t0, 2);
        let mut q = RestartQueue::new(waiting);
        q.set_pace(2);
        let why = |customer: &str| {
            q.ranked(Order::LeastBusinessDowntime, &cal, t0)
                .into_iter()
                .find(|(c, _)| c.customers[0] == customer)
                .map(|(_, p)| p.why)
                .unwrap()
        };
        assert_eq!(
            why("emirates-dubai"),
            "emirates-dubai: 10m of its working day left now; restarting it later costs 1 working minute per minute"
        );
        assert_eq!(
            why("hudson-newyork"),
            "hudson-newyork: starts in 10m; restarted now, it loses none of its day",
            "09:00 EDT, the day the clocks moved"
        );
    }

    /// An overnight shift (22:00-06:00) at 05:00 local has an hour left; a day
    /// customer at 09:30 has its whole day: the day customer goes first, and the
    /// order reaches the optimum.
    #[test]
    fn least_downtime_counts_an_overnight_shift_to_its_end() {
        let cal = Calendar::new(&[
            Customer::weekdays("night-london", "Europe/London", "22:00-06:00"),
            Customer::weekdays("day-seoul", "Asia/Seoul", "09:00-18:00"),
        ])
        .unwrap();
        // Wed 00:30 UTC: London 00:30 in its Tuesday night shift (5h30m left), Seoul
        // 09:30 (8h30m left).
        let waiting = [hosts("n", "night-london", 30), hosts("d", "day-seoul", 30)].concat();
        let t0 = utc("2026-11-25T00:30");
        let (_, batches) = run(&cal, waiting, Order::LeastBusinessDowntime, t0, 1);
        assert_eq!(customers_of(&batches[0]), ["day-seoul"]);
        assert_eq!(
            batches[0][0].1.why,
            "day-seoul: 8h30m of its working day left now; restarting it later costs 1 working minute per minute"
        );
        let night = batches
            .iter()
            .flatten()
            .find(|(c, _)| c.customers[0] == "night-london")
            .unwrap();
        assert!(
            night.1.why.starts_with("night-london: 5h00m of its working day left"),
            "restarted at 01:00, its night shift counted to 06:00: {}",
            night.1.why
        );
    }
}
