//! The "follow the sun" view's model: every customer placed at its own local time
//! now, with its business-hours tier and the health of its hosts, grouped by time
//! zone along a 24-hour band; and the customers whose working day starts next.
//!
//! Pure: a calendar, per-customer host health and an instant in, the model out, so
//! the view is tested with a fixed clock.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use jiff::tz::TimeZone;

use crate::engine::health::Counts;
use crate::hours::{Calendar, Tier};

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

/// Counts of one tier.
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

/// Places every customer of `calendar` at `now_ms`. `health` maps a customer to its
/// hosts by what is known of them; a customer without hosts counts zero.
pub fn follow(calendar: &Calendar, health: &HashMap<String, Counts>, now_ms: i64) -> Sun {
    let now = Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH);
    let utc = now.to_zoned(TimeZone::UTC).datetime();
    let mut zones: BTreeMap<(u16, String), Zone> = BTreeMap::new();
    let mut column: HashMap<String, (u16, String)> = HashMap::new();
    let mut all: Vec<Placed> = Vec::new();
    let mut tiers: BTreeMap<Tier, TierCount> = BTreeMap::new();
    for (id, (_, schedule, status)) in calendar.snapshot(now_ms) {
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
        let t = tiers.entry(status.tier).or_default();
        t.customers += 1;
        t.hosts += hosts;
        t.down += down;
        t.unknown += unknown;
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
        let counts = |hosts, down, unknown| Counts { hosts, down, unknown };
        let health = HashMap::from([
            ("seoul".to_string(), counts(10, 2, 3)),
            ("london".to_string(), counts(4, 0, 0)),
        ]);
        let sun = follow(&calendar, &health, now);
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
        let sun = follow(&calendar, &HashMap::new(), 0);
        assert_eq!(sun.zones.len(), 1);
        assert_eq!(sun.zones[0].customers.len(), PER_ZONE);
        assert_eq!(sun.zones[0].more, 5);
    }
}
