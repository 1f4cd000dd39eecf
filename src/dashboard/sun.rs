//! The "follow the sun" view's model: every customer placed at its own local time
//! now, with its business-hours tier and the health of its hosts, grouped by time
//! zone along a 24-hour band; and the customers whose working day starts next.
//!
//! Pure: a calendar, per-customer host health and an instant in, the model out, so
//! the view is tested with a fixed clock.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::engine::health::Counts;
use crate::hours::{Calendar, Tier};
use crate::inventory::Host;

/// Customers drawn per time zone at most; the rest are counted.
pub const PER_ZONE: usize = 40;
/// Customers listed under "whose day starts next".
pub const NEXT: usize = 12;

/// A customer where it stands now.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub id: String,
    pub tier: Tier,
    pub weight: u32,
    /// Its hosts in the inventory, how many of them are known to be down (unhealthy
    /// or unreachable), and how many nobody measured.
    pub hosts: u64,
    pub down: u64,
    pub unknown: u64,
    /// "07:45 Mon Europe/London, starts in 1h15m (09:00-17:30)".
    pub why: String,
    /// Until its next shift starts; 0 in hours.
    pub until_start_ms: i64,
    pub zone: String,
}

/// The customers whose clocks read the same now (one column of the band): one or
/// more time zones of the same offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// The IANA names, sorted.
    pub names: Vec<String>,
    /// "UTC+05:30".
    pub offset: String,
    /// Its local time now: minutes since local midnight, and "HH:MM Tue".
    pub minute: u16,
    pub local: String,
    /// Best first (tier, then the soonest start, then weight), at most [`PER_ZONE`].
    pub customers: Vec<Placed>,
    /// Customers of the zone not drawn.
    pub more: usize,
}

/// The hosts, and which are known down or unknown now.
pub struct Fleet<'a> {
    pub hosts: &'a [Host],
    pub down: &'a HashSet<String>,
    pub unknown: &'a HashSet<String>,
}

impl Fleet<'_> {
    /// Per customer, its hosts by what is known of them; and per tier, the distinct
    /// hosts whose best customer (the earliest tier) is in it: a host serving three
    /// customers counts once.
    fn counts(&self, tier_of: &HashMap<&str, Tier>) -> (HashMap<String, Counts>, BTreeMap<Tier, Counts>) {
        let mut customers: HashMap<String, Counts> = HashMap::new();
        let mut tiers: BTreeMap<Tier, Counts> = BTreeMap::new();
        for h in self.hosts {
            let (down, unknown) = (self.down.contains(&h.id), self.unknown.contains(&h.id));
            let add = |c: &mut Counts| {
                c.hosts += 1;
                c.down += u64::from(down);
                c.unknown += u64::from(unknown);
            };
            for c in &h.customers {
                add(customers.entry(c.to_string()).or_default());
            }
            if let Some(best) = h.customers.iter().filter_map(|c| tier_of.get(&**c)).min() {
                add(tiers.entry(*best).or_default());
            }
        }
        (customers, tiers)
    }
}

/// Counts of one tier: its customers, and the distinct hosts it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TierCount {
    pub customers: u64,
    pub hosts: u64,
    pub down: u64,
    pub unknown: u64,
}

/// The whole view.
#[derive(Debug, Clone, PartialEq)]
pub struct Sun {
    /// Sorted by local time, midnight first.
    pub zones: Vec<Zone>,
    /// Customers off hours now, soonest start first, at most [`NEXT`].
    pub next: Vec<Placed>,
    pub tiers: BTreeMap<Tier, TierCount>,
    pub now_utc: String,
}

/// Places every customer of `calendar` at `now_ms`, with its hosts of `fleet` by what
/// is known of them (a customer without hosts counts zero).
pub fn follow(calendar: &Calendar, fleet: &Fleet, now_ms: i64) -> Sun {
    let now = Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let utc = now.to_zoned(TimeZone::UTC).datetime();
    let snapshot = calendar.snapshot(now_ms);
    let tier_of: HashMap<&str, Tier> = snapshot.iter().map(|(id, (_, _, status))| (*id, status.tier)).collect();
    let (health, distinct) = fleet.counts(&tier_of);
    let mut zones: BTreeMap<(u16, String), Zone> = BTreeMap::new();
    let mut column: HashMap<String, (u16, String)> = HashMap::new();
    let mut all: Vec<Placed> = Vec::new();
    let mut tiers: BTreeMap<Tier, TierCount> = BTreeMap::new();
    for (tier, c) in distinct {
        let t = tiers.entry(tier).or_default();
        (t.hosts, t.down, t.unknown) = (c.hosts, c.down, c.unknown);
    }
    for (id, (_, schedule, status)) in snapshot {
        let Counts { hosts, down, unknown } = health.get(id).copied().unwrap_or_default();
        let placed = Placed {
            id: id.to_string(),
            tier: status.tier,
            weight: schedule.weight,
            hosts,
            down,
            unknown,
            why: schedule.explain(&status),
            until_start_ms: status.until_start_ms,
            zone: schedule.tz_name.clone(),
        };
        tiers.entry(status.tier).or_default().customers += 1;
        let local = status.local;
        let minute = (local.hour() as u16) * 60 + local.minute() as u16;
        let offset = offset(local.duration_since(utc).as_secs().div_euclid(60));
        let key = (minute, offset.clone());
        let zone = zones.entry(key.clone()).or_insert_with(|| Zone {
            names: Vec::new(),
            offset,
            minute,
            local: local.strftime("%H:%M %a").to_string(),
            customers: Vec::new(),
            more: 0,
        });
        if !zone.names.contains(&schedule.tz_name) {
            zone.names.push(schedule.tz_name.clone());
            zone.names.sort();
        }
        column.insert(schedule.tz_name.clone(), key);
        all.push(placed);
    }
    let rank = |p: &Placed| (p.tier, p.until_start_ms, std::cmp::Reverse(p.weight), p.id.clone());
    all.sort_by_key(rank);
    for p in &all {
        if let Some(z) = column.get(&p.zone).and_then(|k| zones.get_mut(k)) {
            if z.customers.len() < PER_ZONE {
                z.customers.push(p.clone());
            } else {
                z.more += 1;
            }
        }
    }
    let next = all
        .iter()
        .filter(|p| p.tier != Tier::InHours && p.until_start_ms != i64::MAX)
        .take(NEXT)
        .cloned()
        .collect();
    // Keys sort by local time, midnight first.
    let zones: Vec<Zone> = zones.into_values().collect();
    Sun {
        zones,
        next,
        tiers,
        now_utc: utc.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// "UTC+05:30", "UTC-03:30", "UTC".
fn offset(minutes: i64) -> String {
    if minutes == 0 {
        return "UTC".into();
    }
    let sign = if minutes < 0 { '-' } else { '+' };
    let m = minutes.abs();
    format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Customer;

    fn customer(id: &str, tz: &str, hours: &str) -> Customer {
        Customer::weekdays(id, tz, hours)
    }

    /// `n` hosts named `prefix-i` serving `customers`.
    fn hosts(prefix: &str, n: usize, customers: &[&str]) -> Vec<Host> {
        (0..n)
            .map(|i| Host {
                id: format!("{prefix}-{i}"),
                address: "127.0.0.1:1".into(),
                labels: Default::default(),
                customers: customers.iter().map(|c| (*c).into()).collect(),
                version: None,
                healthy: true,
            })
            .collect()
    }

    fn ids(prefix: &str, range: std::ops::Range<usize>) -> HashSet<String> {
        range.map(|i| format!("{prefix}-{i}")).collect()
    }

    #[test]
    fn customers_are_placed_at_their_local_time_with_their_tier() {
        let calendar = Calendar::new(&[
            customer("seoul", "Asia/Seoul", "09:00-18:00"),
            customer("london", "Europe/London", "09:00-17:30"),
            customer("kolkata", "Asia/Kolkata", "09:00-18:00"),
            customer("newyork", "America/New_York", "09:00-17:00"),
            customer("tokyo", "Asia/Tokyo", "08:00-17:00"),
        ])
        .unwrap();
        // Wednesday 2026-11-25 07:45 UTC: Seoul 16:45 (in hours), London 07:45 (starts
        // in 1h15m), Kolkata 13:15 (in hours), New York 02:45 (off hours).
        let now = "2026-11-25T07:45:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        let mut all = hosts("s", 10, &["seoul"]);
        all.extend(hosts("l", 4, &["london"]));
        let (down, unknown) = (ids("s", 0..2), ids("s", 2..5));
        let fleet = Fleet {
            hosts: &all,
            down: &down,
            unknown: &unknown,
        };
        let sun = follow(&calendar, &fleet, now);
        let zones: Vec<(String, &str, &str)> = sun
            .zones
            .iter()
            .map(|z| (z.names.join(" "), z.offset.as_str(), z.local.as_str()))
            .collect();
        let zone = |n: &str, o: &'static str, l: &'static str| (n.to_string(), o, l);
        assert_eq!(
            zones,
            [
                zone("America/New_York", "UTC-05:00", "02:45 Wed"),
                zone("Europe/London", "UTC", "07:45 Wed"),
                zone("Asia/Kolkata", "UTC+05:30", "13:15 Wed"),
                zone("Asia/Seoul Asia/Tokyo", "UTC+09:00", "16:45 Wed"),
            ]
        );
        // Seoul and Tokyo share a column; Seoul's hosts are partly down.
        let seoul = sun.zones[3].customers.iter().find(|c| c.id == "seoul").unwrap();
        assert_eq!(
            (seoul.tier, seoul.hosts, seoul.down, seoul.unknown),
            (Tier::InHours, 10, 2, 3)
        );
        // Whose day starts next: London first (1h15m), then New York (6h15m).
        let next: Vec<&str> = sun.next.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(next, ["london", "newyork"]);
        assert_eq!(sun.next[0].tier, Tier::StartingSoon);
        assert!(sun.next[0].why.contains("starts in 1h15m"), "{}", sun.next[0].why);
        assert_eq!(sun.tiers[&Tier::InHours].customers, 3);
        assert_eq!(sun.tiers[&Tier::InHours].down, 2);
        assert_eq!(sun.tiers[&Tier::InHours].unknown, 3);
        assert_eq!(sun.now_utc, "2026-11-25 07:45 UTC");
    }

    #[test]
    fn a_crowded_zone_draws_its_best_customers_and_counts_the_rest() {
        let customers: Vec<Customer> = (0..PER_ZONE + 5)
            .map(|i| customer(&format!("c{i:03}"), "Asia/Tokyo", "09:00-18:00"))
            .collect();
        let calendar = Calendar::new(&customers).unwrap();
        let none = HashSet::new();
        let fleet = Fleet {
            hosts: &[],
            down: &none,
            unknown: &none,
        };
        let sun = follow(&calendar, &fleet, 0);
        assert_eq!(sun.zones.len(), 1);
        assert_eq!(sun.zones[0].customers.len(), PER_ZONE);
        assert_eq!(sun.zones[0].more, 5);
    }

    #[test]
    fn a_host_of_several_customers_counts_once_in_the_best_tier() {
        let calendar = Calendar::new(&[
            customer("seoul", "Asia/Seoul", "09:00-18:00"),
            customer("london", "Europe/London", "09:00-17:30"),
            customer("newyork", "America/New_York", "09:00-17:00"),
        ])
        .unwrap();
        // Seoul in hours, London starting soon, New York off hours.
        let now = "2026-11-25T07:45:00Z".parse::<Timestamp>().unwrap().as_millisecond();
        let mut all = hosts("shared", 5, &["seoul", "london", "newyork"]);
        all.extend(hosts("ny", 3, &["newyork"]));
        let (down, none) = (ids("shared", 0..1), HashSet::new());
        let fleet = Fleet {
            hosts: &all,
            down: &down,
            unknown: &none,
        };
        let sun = follow(&calendar, &fleet, now);
        let hosts_of = |t: Tier| sun.tiers.get(&t).map(|c| (c.hosts, c.down)).unwrap_or_default();
        assert_eq!(
            hosts_of(Tier::InHours),
            (5, 1),
            "the shared hosts, once, in Seoul's tier"
        );
        assert_eq!(hosts_of(Tier::StartingSoon), (0, 0));
        assert_eq!(hosts_of(Tier::OffHours), (3, 0));
        let total: u64 = sun.tiers.values().map(|t| t.hosts).sum();
        assert_eq!(total, 8, "every host once: the fleet's size");
        // Each customer still counts all of its hosts.
        let newyork = sun
            .zones
            .iter()
            .flat_map(|z| &z.customers)
            .find(|c| c.id == "newyork")
            .unwrap();
        assert_eq!(newyork.hosts, 8);
    }
}
