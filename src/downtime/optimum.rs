//! The order that costs customers the least working time (`least-business-downtime`):
//! at each batch, the exact optimum of the cost model ([`super::model`]) for the hosts
//! still waiting, at the restart capacity measured so far, over a horizon of buckets
//! (minute by minute for the first minutes, then each about an eighth longer than the
//! time before it), and the hosts the optimum restarts first go first. Re-planned at
//! every batch, so the coarse far end only has to be right on average. Pure.

use super::model::{Horizon, MINUTE_MS};
use super::transport;
use crate::hours::{Calendar, Schedule};

/// Minutes planned ahead at most (two weeks): a queue longer than that is planned as
/// if its tail all went at the end.
pub const MAX_MINUTES: usize = 14 * 24 * 60;

/// The buckets of a horizon of `minutes`: `[start, end)` minute ranges covering it.
pub fn buckets(minutes: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < minutes.max(1) {
        let len = (start / 8).max(1);
        let end = (start + len).min(minutes.max(1));
        out.push((start, end));
        start = end;
    }
    out
}

/// Ranks `hosts` (each one's customers) at `now_ms` with `per_minute` restarts a
/// minute: indices into `hosts`, the first to restart first. Hosts the optimum puts
/// in the same bucket go by how much working time they lose per minute now (most
/// first), then in the order given.
pub fn rank<S: AsRef<str>>(calendar: &Calendar, now_ms: i64, per_minute: usize, hosts: &[&[S]]) -> Vec<usize> {
    let per_minute = per_minute.max(1);
    let minutes = hosts.len().div_ceil(per_minute).clamp(1, MAX_MINUTES);
    let horizon = Horizon::new(calendar, now_ms - now_ms.rem_euclid(MINUTE_MS), minutes);
    let spans = buckets(minutes);
    // Each bucket is priced at its middle minute; the first bucket is minute 0 alone,
    // so a group's first cost is also what it loses per minute now.
    let middles: Vec<usize> = spans.iter().map(|&(a, b)| (a + b - 1) / 2).collect();
    let groups = horizon.groups(hosts.iter().copied(), &middles);
    let mut capacity: Vec<u64> = spans.iter().map(|&(a, b)| ((b - a) * per_minute) as u64).collect();
    // A queue longer than the horizon: its tail goes in the last bucket.
    let planned: u64 = capacity.iter().sum();
    if let Some(last) = capacity.last_mut() {
        *last += (hosts.len() as u64).saturating_sub(planned);
    }
    let plan = match transport::solve(&groups.supply, &capacity, &groups.cost) {
        Ok(plan) => plan,
        // Cannot happen (capacity covers every host); keep the given order if it does.
        Err(_) => return (0..hosts.len()).collect(),
    };
    // Each group's hosts take its buckets, earliest first, in the order given; then
    // one sort of packed keys: bucket, most lost per minute now, position.
    let mut left: Vec<std::collections::VecDeque<(usize, u64)>> =
        plan.units.into_iter().map(|u| u.into_iter().collect()).collect();
    let mut keys: Vec<u64> = Vec::with_capacity(hosts.len());
    for (i, &g) in groups.of.iter().enumerate() {
        let q = &mut left[g];
        let bucket = q.front().map_or(spans.len(), |f| f.0);
        if let Some(front) = q.front_mut() {
            front.1 -= 1;
            if front.1 == 0 {
                q.pop_front();
            }
        }
        let rate = groups.cost[g].first().copied().unwrap_or(0).clamp(0, RATE_MAX);
        keys.push(((bucket as u64) << 56) | (((RATE_MAX - rate) as u64) << 32) | i as u64);
    }
    keys.sort_unstable();
    keys.into_iter().map(|k| (k & 0xffff_ffff) as usize).collect()
}

/// The largest rate the packed sort keys of [`rank`] tell apart (24 bits; more
/// sorts as equal).
const RATE_MAX: i64 = (1 << 24) - 1;

/// Why a customer's host goes where it does at `now_ms`, in the order's own terms:
/// "2h58m of its working day left now; restarting it later costs 5 working minutes
/// per minute", "starts in 20m; restarted now, it loses none of its day", "off hours,
/// next start in 14h05m: restarting it now costs no working time".
pub fn explain(schedule: &Schedule, now_ms: i64) -> String {
    let minutes = |ms: i64| (ms.max(0) / MINUTE_MS) as usize;
    let shifts = schedule.shifts(now_ms, now_ms + 1);
    if let Some(&(_, end)) = shifts.iter().find(|&&(from, to)| from <= now_ms && now_ms < to) {
        let weight = schedule.weight;
        return format!(
            "{} of its working day left now; restarting it later costs {weight} working minute{} per minute",
            span(minutes(end - now_ms)),
            if weight == 1 { "" } else { "s" }
        );
    }
    let status = schedule.status(now_ms, i64::MAX);
    match status.until_start_ms {
        i64::MAX => "no working day ahead: restarting it costs no working time".to_string(),
        until if until <= crate::hours::DEFAULT_LOOKAHEAD_MS => {
            format!(
                "starts in {}; restarted now, it loses none of its day",
                span(minutes(until))
            )
        }
        until => format!(
            "off hours, next start in {}: restarting it now costs no working time",
            span(minutes(until))
        ),
    }
}

/// `2h58m`, `20m`, `2d3h`.
fn span(minutes: usize) -> String {
    match (minutes / 1440, (minutes % 1440) / 60, minutes % 60) {
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h{m:02}m"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_horizon_minute_by_minute_first() {
        let b = buckets(500);
        assert_eq!(
            &b[..9],
            &[(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (7, 8), (8, 9)]
        );
        assert_eq!(b.last().unwrap().1, 500);
        assert!(b.windows(2).all(|w| w[0].1 == w[1].0));
        assert!(b.len() < 50, "{} buckets", b.len());
        assert!(buckets(MAX_MINUTES).len() < 80);
    }
}
