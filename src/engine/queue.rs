//! The restart queue: which waiting hosts to restart next, at a given instant, within
//! each customer's disruption budget. Pure: the caller passes the clock's "now", so
//! the order is re-decided at every batch and tests move time by hand.

use std::collections::HashMap;

use super::order::stable_hash;
use crate::hours::{Calendar, Placement};
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
}

impl RestartQueue {
    pub fn new(waiting: Vec<Candidate>) -> RestartQueue {
        RestartQueue { waiting }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Indices of the waiting hosts in the order they would go at `now_ms`.
    fn order_at(&self, order: Order, snapshot: &Snapshot<'_>) -> Vec<usize> {
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
        }
        idx
    }

    /// Every waiting host in the order it would go at `now_ms`, with its placement.
    pub fn ranked(&self, order: Order, calendar: &Calendar, now_ms: i64) -> Vec<(Candidate, Placement)> {
        let snapshot = calendar.snapshot(now_ms);
        self.order_at(order, &snapshot)
            .into_iter()
            .map(|i| {
                let c = &self.waiting[i];
                (c.clone(), Calendar::place(&snapshot, &c.host, &c.customers))
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
    ) -> Vec<(Candidate, Placement)> {
        let snapshot = calendar.snapshot(now_ms);
        let mut chosen = vec![false; self.waiting.len()];
        let mut taken = Vec::new();
        for i in self.order_at(order, &snapshot) {
            if taken.len() >= n {
                break;
            }
            let c = &self.waiting[i];
            if budget.admits(c) {
                budget.hold(&c.customers, c.healthy);
                chosen[i] = true;
                taken.push((c.clone(), Calendar::place(&snapshot, &c.host, &c.customers)));
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

/// Every customer's status at one instant (see [`Calendar::snapshot`]).
type Snapshot<'a> = HashMap<&'a str, (crate::hours::Key, &'a crate::hours::Schedule, crate::hours::Status)>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Customer;
    use crate::hours::Tier;

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
        let first = q.take(1, Order::BusinessHoursFirst, &cal, utc("2026-11-24T00:30"), &mut budget);
        assert_eq!(first[0].0.host, "s1");
        assert_eq!(first[0].1.key.0, Tier::InHours);
        // Ten hours later: 19:30 in Seoul (off), 10:30 in London (in hours).
        let second = q.take(1, Order::BusinessHoursFirst, &cal, utc("2026-11-24T10:30"), &mut budget);
        assert_eq!(second[0].0.host, "l1");
        assert_eq!(second[0].1.why, "10:30 Tue Europe/London, in hours (09:00-18:00)");
        // Off-hours-first is the reverse.
        let third = q.take(1, Order::OffHoursFirst, &cal, utc("2026-11-24T10:30"), &mut budget);
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
        let batch = q.take(10, Order::Stable, &cal, now, &mut budget);
        let healthy = batch.iter().filter(|(c, _)| c.healthy).count();
        assert_eq!((batch.len(), healthy), (6, 2), "4 unhealthy + 2 healthy");
        let mut q = RestartQueue::new((0..4).map(|i| host(&format!("g{i}"), "c", true)).collect());
        assert!(
            q.take(10, Order::Stable, &cal, now, &mut budget).is_empty(),
            "budget used up"
        );
        budget.release(&["c".into()], true);
        assert_eq!(q.take(10, Order::Stable, &cal, now, &mut budget).len(), 1);
        assert_eq!(q.len(), 3);
    }
}
