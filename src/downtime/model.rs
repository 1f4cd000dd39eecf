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

/// Every customer's working minutes over a horizon of whole minutes.
#[derive(Debug, Clone)]
pub struct Horizon {
    pub start_ms: i64,
    pub minutes: usize,
    customers: HashMap<String, Working>,
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

impl Horizon {
    /// `minutes` minutes from `start_ms`.
    pub fn new(calendar: &Calendar, start_ms: i64, minutes: usize) -> Horizon {
        let end_ms = start_ms + minutes as i64 * MINUTE_MS;
        // Minutes whose middle is at or after `at`.
        let index = |at: i64| ((at - start_ms - MINUTE_MS / 2).max(0) as u64).div_ceil(MINUTE_MS as u64) as usize;
        let customers = calendar
            .schedules()
            .map(|s| {
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
                (s.id.clone(), w)
            })
            .collect();
        Horizon {
            start_ms,
            minutes,
            customers,
        }
    }

    fn sum(&self, customers: &[impl AsRef<str>], f: impl Fn(&Working) -> usize) -> u64 {
        customers
            .iter()
            .filter_map(|c| self.customers.get(c.as_ref()))
            .map(|w| w.weight * f(w) as u64)
            .sum()
    }

    /// What a host of `customers` costs when restarted in minute `minute` (0-based;
    /// past the horizon it counts the whole horizon).
    pub fn cost(&self, customers: &[impl AsRef<str>], minute: usize) -> u64 {
        let down = (minute + 1).min(self.minutes);
        self.sum(customers, |w| w.inside(down))
    }

    /// Weighted working minutes `customers` lose per minute of waiting, minute by
    /// minute: the rate the cost grows at.
    pub fn rate(&self, customers: &[impl AsRef<str>], minute: usize) -> u64 {
        if minute >= self.minutes {
            return 0;
        }
        self.sum(customers, |w| w.inside(minute + 1) - w.inside(minute))
    }

    /// A customer's working minutes left in the shift it is in at minute 0 (0 when
    /// off), and the minutes until its next shift starts (None when none does
    /// within the horizon).
    pub fn day_of(&self, customer: &str) -> (usize, Option<usize>) {
        let Some(w) = self.customers.get(customer) else {
            return (0, None);
        };
        let left = w.runs.first().filter(|r| r.0 == 0).map_or(0, |r| r.1);
        let next = w.runs.iter().find(|r| r.0 > 0).map(|r| r.0);
        (left, next)
    }
}

/// Hosts grouped by their customers (sorted): interchangeable under the model.
/// The groups' customers, how many hosts each has, and each host's group.
pub fn classes<'a, S: AsRef<str> + 'a>(
    hosts: impl IntoIterator<Item = &'a [S]>,
) -> (Vec<Vec<String>>, Vec<u64>, Vec<usize>) {
    // Keyed by borrowed names: one allocation per class, not per host.
    let mut index: HashMap<Vec<&'a str>, usize> = HashMap::new();
    let (mut keys, mut counts, mut of): (Vec<Vec<String>>, Vec<u64>, Vec<usize>) = (Vec::new(), Vec::new(), Vec::new());
    for customers in hosts {
        let mut key: Vec<&'a str> = customers.iter().map(|c| c.as_ref()).collect();
        key.sort_unstable();
        let k = match index.get(&key) {
            Some(&k) => k,
            None => {
                keys.push(key.iter().map(|c| c.to_string()).collect());
                counts.push(0);
                index.insert(key, keys.len() - 1);
                keys.len() - 1
            }
        };
        counts[k] += 1;
        of.push(k);
    }
    (keys, counts, of)
}

/// The best order's cost, and where it puts each class of hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Optimum {
    pub cost: u64,
    /// Each class's customers (see [`classes`]).
    pub classes: Vec<Vec<String>>,
    /// Per class: (minute, hosts restarted in it).
    pub minutes: Vec<Vec<(usize, u64)>>,
}

/// The least cost any order can reach restarting `hosts` (their customers) at
/// `per_minute` a minute from the horizon's start. Exact: a transportation problem
/// over classes with equal costs (see [`transport`]).
pub fn optimum<'a, S: AsRef<str> + 'a>(
    horizon: &Horizon,
    hosts: impl IntoIterator<Item = &'a [S]>,
    per_minute: u64,
) -> Result<Optimum, transport::Infeasible> {
    let (keys, counts, _) = classes(hosts);
    // Classes whose costs are equal minute by minute are interchangeable too.
    let mut rows: HashMap<Vec<i64>, usize> = HashMap::new();
    let (mut supply, mut cost, mut merged) = (Vec::new(), Vec::new(), vec![0; keys.len()]);
    for (k, key) in keys.iter().enumerate() {
        let row: Vec<i64> = (0..horizon.minutes).map(|m| horizon.cost(key, m) as i64).collect();
        let next = supply.len();
        let i = *rows.entry(row.clone()).or_insert(next);
        if i == next {
            supply.push(0);
            cost.push(row);
        }
        supply[i] += counts[k];
        merged[k] = i;
    }
    let capacity = vec![per_minute; horizon.minutes];
    let best = transport::solve(&supply, &capacity, &cost)?;
    // Back to the classes by customers: each takes its share of its merged row's minutes.
    let mut left: Vec<Vec<(usize, u64)>> = best.units.clone();
    let per_class = keys
        .iter()
        .enumerate()
        .map(|(k, _)| {
            let mut want = counts[k];
            let mut mine = Vec::new();
            for (minute, n) in left[merged[k]].iter_mut() {
                let take = want.min(*n);
                if take > 0 {
                    mine.push((*minute, take));
                    *n -= take;
                    want -= take;
                }
            }
            mine
        })
        .collect();
    Ok(Optimum {
        cost: best.cost as u64,
        classes: keys,
        minutes: per_class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Customer;

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
        assert_eq!((0..4).map(|m| h.rate(&["seoul"], m)).collect::<Vec<_>>(), [2, 2, 0, 0]);
        assert_eq!(h.cost(&["seoul"], 0), 2, "down for the minute of its restart");
        assert_eq!(h.cost(&["seoul"], 3), 4);
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
        let best = optimum(&h, hosts.iter().map(|h| h.as_slice()), 2).unwrap().cost;
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
