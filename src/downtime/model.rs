//! The cost model: a host waiting for its restart is down until the end of the
//! minute its restart is in; it costs each of its customers that customer's weight
//! for every one of those minutes inside the customer's working hours (a minute
//! counts when its middle is inside a shift: DST, weekends, holidays and overnight
//! shifts as the customer's calendar says). Restart capacity is so many hosts per
//! minute. Pure.

use std::collections::HashMap;

use super::transport;
use crate::hours::Calendar;

pub const MINUTE_MS: i64 = 60_000;

/// foldhash: the planner hashes every waiting host's customers at each batch.
type Fast<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Every customer's working minutes over a horizon of whole minutes.
#[derive(Debug, Clone)]
pub struct Horizon {
    pub start_ms: i64,
    pub minutes: usize,
    /// Customer id -> index in `working`.
    index: Fast<String, usize>,
    working: Vec<Working>,
}

/// One customer's working minutes: runs of minute indices `[first, past)`.
#[derive(Debug, Clone, Default)]
struct Working {
    weight: u64,
    runs: Vec<(usize, usize)>,
    /// `before[i]`: working minutes in runs `0..i`.
    before: Vec<usize>,
}

impl Working {
    /// Working minutes among minutes `0..end`.
    fn inside(&self, end: usize) -> usize {
        let i = self.runs.partition_point(|r| r.0 < end);
        match i {
            0 => 0,
            _ => self.before[i] - self.runs[i - 1].1.saturating_sub(end),
        }
    }
}

/// Hosts grouped by what they cost: hosts in one group cost the same at every
/// minute asked for, so any order among them is as good as any other.
#[derive(Debug, Clone, Default)]
pub struct Groups {
    /// Per group: how many hosts.
    pub supply: Vec<u64>,
    /// Per group: the cost of one of its hosts restarted at each minute asked for.
    pub cost: Vec<Vec<i64>>,
    /// Per host (in the order given): its group.
    pub of: Vec<usize>,
}

impl Horizon {
    /// `minutes` minutes from `start_ms`.
    pub fn new(calendar: &Calendar, start_ms: i64, minutes: usize) -> Horizon {
        let end_ms = start_ms + minutes as i64 * MINUTE_MS;
        // Minutes whose middle is at or after `at`.
        let index = |at: i64| ((at - start_ms - MINUTE_MS / 2).max(0) as u64).div_ceil(MINUTE_MS as u64) as usize;
        let mut names = Fast::default();
        let mut working = Vec::new();
        for s in calendar.schedules() {
            let mut w = Working {
                weight: u64::from(s.weight),
                before: vec![0],
                ..Working::default()
            };
            for (from, to) in s.shifts(start_ms, end_ms) {
                let (first, past) = (index(from).min(minutes), index(to).min(minutes));
                if past > first {
                    w.runs.push((first, past));
                    w.before.push(w.before[w.before.len() - 1] + past - first);
                }
            }
            names.insert(s.id.clone(), working.len());
            working.push(w);
        }
        Horizon {
            start_ms,
            minutes,
            index: names,
            working,
        }
    }

    fn get(&self, customer: &str) -> Option<&Working> {
        self.index.get(customer).map(|&i| &self.working[i])
    }

    fn sum(&self, customers: &[impl AsRef<str>], f: impl Fn(&Working) -> usize) -> u64 {
        customers
            .iter()
            .filter_map(|c| self.get(c.as_ref()))
            .map(|w| w.weight * f(w) as u64)
            .sum()
    }

    /// Minutes a host restarted in minute `minute` (0-based) is down within the
    /// horizon.
    fn down(&self, minute: usize) -> usize {
        (minute + 1).min(self.minutes)
    }

    /// What a host of `customers` costs when restarted in minute `minute` (0-based;
    /// past the horizon it counts the whole horizon).
    pub fn cost(&self, customers: &[impl AsRef<str>], minute: usize) -> u64 {
        self.sum(customers, |w| w.inside(self.down(minute)))
    }

    /// A customer's working minutes left in the shift it is in at minute 0 (0 when
    /// off), and the minutes until its next shift starts (None when none does
    /// within the horizon).
    pub fn day_of(&self, customer: &str) -> (usize, Option<usize>) {
        let Some(w) = self.get(customer) else {
            return (0, None);
        };
        let left = w.runs.first().filter(|r| r.0 == 0).map_or(0, |r| r.1);
        let next = w.runs.iter().find(|r| r.0 > 0).map(|r| r.0);
        (left, next)
    }

    /// `hosts` (each one's customers) grouped by their costs at `minutes`. Each
    /// customer's costs are computed once, each host's customers looked up once.
    pub fn groups<'a, S: AsRef<str> + 'a>(
        &self,
        hosts: impl IntoIterator<Item = &'a [S]>,
        minutes: &[usize],
    ) -> Groups {
        let per_customer: Vec<Vec<i64>> = self
            .working
            .iter()
            .map(|w| {
                minutes
                    .iter()
                    .map(|&m| (w.weight * w.inside(self.down(m)) as u64) as i64)
                    .collect()
            })
            .collect();
        // Hosts by their customers (sorted indices; unknown ones cost nothing) first,
        // then those sets by their cost rows.
        let mut sets: Fast<Vec<usize>, usize> = Fast::default();
        let mut rows: Fast<Vec<i64>, usize> = Fast::default();
        let mut groups = Groups::default();
        let mut key = Vec::new();
        for customers in hosts {
            key.clear();
            key.extend(customers.iter().filter_map(|c| self.index.get(c.as_ref()).copied()));
            key.sort_unstable();
            let group = match sets.get(key.as_slice()) {
                Some(&g) => g,
                None => {
                    let mut row = vec![0i64; minutes.len()];
                    for &c in &key {
                        row.iter_mut().zip(&per_customer[c]).for_each(|(r, x)| *r += x);
                    }
                    let next = groups.supply.len();
                    let g = *rows.entry(row.clone()).or_insert(next);
                    if g == next {
                        groups.supply.push(0);
                        groups.cost.push(row);
                    }
                    sets.insert(key.clone(), g);
                    g
                }
            };
            groups.supply[group] += 1;
            groups.of.push(group);
        }
        groups
    }
}

/// The least cost any order can reach restarting `hosts` (their customers) at
/// `per_minute` a minute from the horizon's start. Exact: a transportation problem
/// over groups of hosts with equal costs (see [`transport`]).
pub fn optimum<'a, S: AsRef<str> + 'a>(
    horizon: &Horizon,
    hosts: impl IntoIterator<Item = &'a [S]>,
    per_minute: u64,
) -> Result<u64, transport::Infeasible> {
    let minutes: Vec<usize> = (0..horizon.minutes).collect();
    let groups = horizon.groups(hosts, &minutes);
    let capacity = vec![per_minute; horizon.minutes];
    Ok(transport::solve(&groups.supply, &capacity, &groups.cost)?.cost as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Customer;

    fn customer(id: &str, tz: &str, hours: &str) -> Customer {
        Customer {
            weight: 2,
            ..Customer::weekdays(id, tz, hours)
        }
    }

    fn utc(s: &str) -> i64 {
        format!("{s}:00Z").parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    /// Minutes count by their middle, against the customer's own clock: Seoul's
    /// 09:00-18:00 on a Wednesday is 00:00-09:00 UTC.
    #[test]
    fn minutes_inside_working_hours_are_counted_with_their_weight() {
        let cal = Calendar::new(&[customer("seoul", "Asia/Seoul", "09:00-18:00")]).unwrap();
        let h = Horizon::new(&cal, utc("2026-11-25T08:58"), 4);
        // 08:58 and 08:59 UTC are in hours (17:58, 17:59 KST); 09:00 and 09:01 are not.
        // Each minute of waiting in hours costs its weight (2); out of hours, nothing.
        assert_eq!((0..4).map(|m| h.cost(&["seoul"], m)).collect::<Vec<_>>(), [2, 4, 4, 4]);
        assert_eq!(h.cost(&["seoul"], 0), 2, "down for the minute of its restart");
        assert_eq!(h.cost(&["nobody"], 3), 0);
    }

    /// Brute force over every order of four hosts, two a minute.
    #[test]
    fn the_optimum_is_the_best_order() {
        let cal = Calendar::new(&[
            customer("seoul", "Asia/Seoul", "09:00-18:00"),
            customer("sydney", "Australia/Sydney", "09:00-17:00"),
            customer("london", "Europe/London", "09:00-17:00"),
        ])
        .unwrap();
        // 05:32 UTC on a Wednesday: Seoul 14:32, Sydney 16:32, London 05:32.
        let h = Horizon::new(&cal, utc("2026-11-25T05:32"), 60);
        let hosts: Vec<Vec<&str>> = vec![vec!["seoul"], vec!["sydney"], vec!["london"], vec!["seoul", "sydney"]];
        let best = optimum(&h, hosts.iter().map(|h| h.as_slice()), 2).unwrap();
        let mut least = u64::MAX;
        for order in [
            [0, 1, 2, 3],
            [0, 2, 1, 3],
            [0, 3, 1, 2],
            [1, 2, 0, 3],
            [1, 3, 0, 2],
            [2, 3, 0, 1],
        ] {
            let c: u64 = order.iter().enumerate().map(|(i, &x)| h.cost(&hosts[x], i / 2)).sum();
            least = least.min(c);
        }
        assert_eq!(best, least);
    }
}
