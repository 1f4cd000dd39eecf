//! Which hosts go first. The engine asks this module each time a wave is filled, so
//! an order that depends on the clock (customers' business hours) can re-rank the
//! hosts that are still waiting.

use std::collections::HashMap;

use crate::hours::{Calendar, Snapshot};
use crate::inventory::Inventory;
use crate::plan::{Order, Plan};
use crate::proto::v1 as pb;

/// FNV-1a: a stable hash (std's `DefaultHasher` may change between Rust releases,
/// which would reshuffle waves of a rollout resumed by a newer controller).
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Puts hosts in the order they should be dispatched at `now_ms`; `per_minute`, the
/// hosts expected to go a minute, is what `least-business-downtime` plans with.
pub fn arrange(hosts: &mut [String], order: Order, inventory: &Inventory, now_ms: i64, per_minute: usize) {
    match order {
        Order::LeastBusinessDowntime => {
            hosts.sort_unstable();
            let none = Vec::new();
            let lists: Vec<&[std::sync::Arc<str>]> = hosts
                .iter()
                .map(|h| inventory.host(h).map_or(none.as_slice(), |x| x.customers.as_slice()))
                .collect();
            let ranked = crate::downtime::optimum::rank(inventory.calendar(), now_ms, per_minute, &lists);
            let sorted: Vec<String> = ranked.iter().map(|&i| hosts[i].clone()).collect();
            hosts.clone_from_slice(&sorted);
        }
        // Compared in place: a key with a cloned id allocated on every comparison
        // (about 20 million allocations to arrange a million hosts).
        Order::Stable => hosts.sort_unstable_by(|a, b| stable_hash(a).cmp(&stable_hash(b)).then_with(|| a.cmp(b))),
        Order::BusinessHoursFirst | Order::OffHoursFirst => {
            let snapshot = inventory.calendar().snapshot(now_ms);
            let no_customers = Vec::new();
            hosts.sort_by_cached_key(|h| {
                let customers = inventory.host(h).map_or(&no_customers, |x| &x.customers);
                (Calendar::place(&snapshot, h, customers).key, h.clone())
            });
            if order == Order::OffHoursFirst {
                hosts.reverse();
            }
        }
    }
}

/// [`arrange`] within stages: the hosts of the plan's first stage first, each
/// stage's hosts in the plan's order (a plan without stages: [`arrange`] itself).
/// A host that no stage takes now (relabelled since it was selected) goes last.
pub fn arrange_in_stages(hosts: &mut [String], plan: &Plan, inventory: &Inventory, now_ms: i64, per_minute: usize) {
    if plan.stages.is_empty() {
        arrange(hosts, plan.order, inventory, now_ms, per_minute);
        return;
    }
    let last = plan.stages.len();
    let stages: Vec<usize> = hosts
        .iter()
        .map(|h| {
            inventory
                .host(h)
                .and_then(|x| plan.stage_of(|s| x.matches(s)))
                .unwrap_or(last)
        })
        .collect();
    let mut by_stage: Vec<usize> = (0..hosts.len()).collect();
    by_stage.sort_by_key(|&i| stages[i]);
    let sorted: Vec<String> = by_stage.iter().map(|&i| std::mem::take(&mut hosts[i])).collect();
    for (slot, h) in hosts.iter_mut().zip(sorted) {
        *slot = h;
    }
    let mut start = 0;
    for stage in 0..=last {
        let len = stages.iter().filter(|&&s| s == stage).count();
        arrange(
            &mut hosts[start..start + len],
            plan.order,
            inventory,
            now_ms,
            per_minute,
        );
        start += len;
    }
}

/// Each stage's hosts among `hosts` (one count for a plan without stages); hosts
/// no stage takes are not counted.
pub fn stage_sizes(hosts: &[String], plan: &Plan, inventory: &Inventory) -> Vec<u64> {
    let mut sizes = vec![0u64; plan.stage_count()];
    for h in hosts {
        let stage = match inventory.host(h) {
            Some(x) => plan.stage_of(|s| x.matches(s)),
            None if plan.stages.is_empty() => Some(0),
            None => None,
        };
        if let Some(s) = stage {
            sizes[s] += 1;
        }
    }
    sizes
}

/// How many of `items` have each value of `key`, most first (then by value).
pub fn count_by<T>(items: &[T], key: impl Fn(&T) -> String) -> Vec<pb::LabelCount> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for item in items {
        *counts.entry(key(item)).or_default() += 1;
    }
    let mut list: Vec<pb::LabelCount> = counts
        .into_iter()
        .map(|(value, count)| pb::LabelCount {
            value,
            count,
            budget: 0,
        })
        .collect();
    list.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    list
}

/// Whose `hosts` are, at `now_ms`: each customer's local time and business-hours
/// tier, in the hosts' order, at most `limit` customers, and why `order` takes them
/// (in its own terms). Why a wave takes these hosts, as the dry run and an approval
/// gate explain it.
pub fn explain(
    hosts: &[String],
    order: Order,
    inventory: &Inventory,
    now_ms: i64,
    limit: usize,
) -> Vec<pb::CustomerSlot> {
    let snapshot = inventory.calendar().snapshot(now_ms);
    let mut customers: Vec<pb::CustomerSlot> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for h in hosts {
        let host_customers = inventory.host(h).map(|x| x.customers.as_slice()).unwrap_or_default();
        let place = Calendar::place(&snapshot, h, host_customers);
        match index.get(&place.customer) {
            Some(&i) => customers[i].hosts += 1,
            None => {
                index.insert(place.customer.clone(), customers.len());
                let why = match order {
                    Order::LeastBusinessDowntime => downtime_why(&snapshot, &place.customer, now_ms),
                    _ => None,
                };
                customers.push(pb::CustomerSlot {
                    customer: place.customer,
                    local_time: place.local_time,
                    tier: place.key.0.as_str().to_string(),
                    why: why.unwrap_or(place.why),
                    hosts: 1,
                });
            }
        }
    }
    customers.truncate(limit);
    customers
}

/// Why `least-business-downtime` takes `customer`'s hosts at `now_ms`, in its terms
/// (None for a customer the calendar does not know).
pub fn downtime_why(snapshot: &Snapshot<'_>, customer: &str, now_ms: i64) -> Option<String> {
    snapshot
        .get(customer)
        .map(|(_, schedule, _)| crate::downtime::optimum::explain(schedule, now_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_order_is_deterministic_and_mixes_neighbours() {
        let mut a: Vec<String> = (0..100).map(|i| format!("apac-exr-{i:06}")).collect();
        let mut b = a.clone();
        b.reverse();
        let inventory = Inventory::default();
        arrange(&mut a, Order::Stable, &inventory, 0, 1);
        arrange(&mut b, Order::Stable, &inventory, 0, 1);
        assert_eq!(a, b);
        assert_ne!(a[0], "apac-exr-000000", "not simply by name");
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a reference value");
    }
}
