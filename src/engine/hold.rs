//! Why a host waits although its wave took it: a freeze covers it, or (a plan with
//! `windows:`) one of its customers is in its working day or about to start it.
//! Asked for each host when a batch is taken; a rollout or restart job keeps the
//! hosts that wait in their place and says why ([`Waiting`]).

use crate::freeze::{Board, Hold};
use crate::inventory::Inventory;
use crate::plan::Windows;

/// Everything that may hold a host at one instant.
pub(crate) struct Holds<'a> {
    /// None: nothing is frozen, or the rollout is an approved emergency.
    board: Option<&'a Board>,
    windows: Option<Windows>,
    inventory: &'a Inventory,
    wall_ms: i64,
    hours_ms: i64,
}

impl<'a> Holds<'a> {
    pub fn new(
        board: Option<&'a Board>,
        windows: Option<Windows>,
        inventory: &'a Inventory,
        wall_ms: i64,
        hours_ms: i64,
    ) -> Holds<'a> {
        Holds {
            board: board.filter(|b| !b.is_empty()),
            windows,
            inventory,
            wall_ms,
            hours_ms,
        }
    }

    /// Nothing can hold a host: the hot path asks nothing.
    pub fn is_empty(&self) -> bool {
        self.board.is_none() && self.windows.is_none()
    }

    /// Why `host` may not start now, if it may not.
    pub fn of(&self, host: &str) -> Option<Hold> {
        if self.is_empty() {
            return None;
        }
        let h = self.inventory.host(host)?;
        if let Some(hold) = self.board.and_then(|b| b.holding(h, self.wall_ms, self.hours_ms)) {
            return Some(hold);
        }
        let windows = self.windows?;
        let lookahead = windows.lookahead.as_millis() as i64;
        let calendar = self.inventory.calendar();
        // The window opens when no customer holds it any more: a customer's day may
        // end as another's begins, so look again from each end (a few times at most).
        let mut at = self.hours_ms;
        let mut last = None;
        for _ in 0..8 {
            let holding = h
                .customers
                .iter()
                .filter_map(|c| calendar.schedule(c))
                .filter_map(|s| s.quiet_from(at, lookahead).map(|(open, local)| (open, local, s)))
                .max_by_key(|(open, _, _)| *open);
            match holding {
                Some((open, local, s)) => {
                    if last.is_none() {
                        last = Some(format!("waits for {}'s working day to end at {local}", s.id));
                    }
                    at = open;
                }
                None => break,
            }
        }
        last.map(|why| Hold {
            why,
            wait_ms: Some(at - self.hours_ms),
        })
    }
}

/// What a rollout's or job's waiting hosts are told: how many, the first one's
/// reason, and when to look again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Waiting {
    pub hosts: u64,
    pub first: Option<(String, Hold)>,
    /// The soonest any of them may start (ms from now); None: someone must act.
    pub wake_ms: Option<i64>,
}

impl Waiting {
    pub fn add(&mut self, host: &str, hold: Hold) {
        self.hosts += 1;
        if let Some(w) = hold.wait_ms {
            self.wake_ms = Some(self.wake_ms.map_or(w, |x| x.min(w)));
        }
        if self.first.is_none() {
            self.first = Some((host.to_string(), hold));
        }
    }

    /// "3 hosts wait: s-1 frozen by freeze 2 (set by ...)"; empty when none waits.
    pub fn text(&self) -> String {
        match &self.first {
            None => String::new(),
            Some((host, hold)) if self.hosts == 1 => format!("1 host waits: {host} {}", hold.why),
            Some((host, hold)) => format!("{} hosts wait: {host} {} (and others)", self.hosts, hold.why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{FleetFile, Inventory};
    use crate::proto::v1 as pb;

    const FLEET: &str = "\
customers:
  - {id: contoso-seoul, timezone: Asia/Seoul, hours: '09:00-18:00'}
  - {id: fabrikam-ny, timezone: America/New_York, hours: '09:00-17:00'}
hosts:
  - {id: seoul-1, address: 'a:1', labels: {region: apac}, customers: [contoso-seoul]}
  - {id: ny-1, address: 'a:1', labels: {region: amer}, customers: [fabrikam-ny]}
  - {id: both-1, address: 'a:1', labels: {region: amer}, customers: [contoso-seoul, fabrikam-ny]}
  - {id: lab-1, address: 'a:1', labels: {region: amer}}
";

    fn inventory() -> Inventory {
        let fleet = FleetFile::parse(FLEET, "fleet.yaml").map_err(|e| e.to_string());
        fleet
            .and_then(|f| Inventory::new(f).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn ms(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).unwrap_or(0)
    }

    fn windows() -> Option<Windows> {
        Some(Windows {
            lookahead: std::time::Duration::from_secs(7_200),
        })
    }

    /// Who may start at `at` (Monday 2026-12-07 unless said), and why the others wait.
    fn open_at(inventory: &Inventory, at: &str) -> Vec<(String, Option<String>)> {
        let holds = Holds::new(None, windows(), inventory, 0, ms(at));
        ["seoul-1", "ny-1", "both-1", "lab-1"]
            .iter()
            .map(|h| (h.to_string(), holds.of(h).map(|x| x.why)))
            .collect()
    }

    #[test]
    fn a_window_opens_host_by_host_as_each_customers_day_ends() {
        let inv = inventory();
        // 17:59 KST Monday = 03:59 EST Monday: Seoul works; New York sleeps (its day
        // starts at 09:00, five hours away).
        let at = open_at(&inv, "2026-12-07T08:59:00Z");
        assert_eq!(
            at[0].1.as_deref(),
            Some("waits for contoso-seoul's working day to end at 18:00 KST")
        );
        assert_eq!(at[1].1, None, "New York's night: open");
        assert!(at[2].1.is_some(), "a host of both customers waits for Seoul");
        assert_eq!(at[3].1, None, "hosts without customers never wait");
        // 18:00 KST: Seoul's day is over; New York is still five hours from its own.
        let at = open_at(&inv, "2026-12-07T09:00:00Z");
        assert!(at.iter().all(|(_, why)| why.is_none()), "{at:?}");
        // 07:30 EST: New York starts within the two hours' lookahead.
        let at = open_at(&inv, "2026-12-07T12:30:00Z");
        assert_eq!(
            at[1].1.as_deref(),
            Some("waits for fabrikam-ny's working day to end at 17:00 EST")
        );
        assert_eq!(at[0].1, None);
    }

    #[test]
    fn the_wait_is_until_the_last_customers_day_ends() {
        let inv = inventory();
        // 16:00 EST Monday (06:00 KST Tuesday): New York works until 17:00 EST, which
        // is 07:00 KST, two hours before Seoul's day starts (within the lookahead): the
        // host waits on to the end of Seoul's day, 18:00 KST Tuesday.
        let at = ms("2026-12-07T21:00:00Z");
        let holds = Holds::new(None, windows(), &inv, 0, at);
        let hold = holds.of("both-1").map(|h| (h.why, h.wait_ms));
        assert_eq!(
            hold,
            Some((
                "waits for fabrikam-ny's working day to end at 17:00 EST".to_string(),
                Some(ms("2026-12-08T09:00:00Z") - at)
            ))
        );
    }

    #[test]
    fn a_freeze_holds_before_any_window_and_ends_at_its_time() {
        let inv = inventory();
        let freeze = pb::Freeze {
            id: 4,
            reason: "INC-1234".into(),
            set_by: "alice".into(),
            started_at_unix_ms: 1_000,
            until_unix_ms: 61_000,
            source: crate::freeze::MANUAL.into(),
            ..Default::default()
        };
        let board = Board::new([freeze], Vec::new());
        let during = Holds::new(Some(&board), None, &inv, 30_000, 0);
        let hold = during.of("lab-1").map(|h| h.wait_ms);
        assert_eq!(hold, Some(Some(31_000)));
        let after = Holds::new(Some(&board), None, &inv, 61_000, 0);
        assert_eq!(after.of("lab-1"), None);
        let mut waiting = Waiting::default();
        for h in ["lab-1", "ny-1"] {
            if let Some(hold) = during.of(h) {
                waiting.add(h, hold);
            }
        }
        assert!(
            waiting
                .text()
                .starts_with("2 hosts wait: lab-1 frozen by freeze 4 (set by alice")
        );
        assert_eq!(waiting.wake_ms, Some(31_000));
    }
}

/// How long a host's operation is taken to last when a dry run says when waves
/// start and end (the pace the dry run's order prices use: `max_parallel` a minute).
pub(crate) const DEPLOY_MS: i64 = 60_000;

/// When a wave is expected to start and end, given what holds its hosts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Expected {
    /// 0 (and `end_ms` 0): a freeze without an end holds some host.
    pub start_ms: i64,
    pub end_ms: i64,
    /// Hosts that wait when the wave starts, and the first one's reason.
    pub waiting: u64,
    pub why: String,
}

/// Each wave's expected start and end from `at`: its hosts each take
/// [`DEPLOY_MS`], `max_parallel` at once, none before `hold` lets it (asked at the
/// wave's start: the wait it says is when the host may go), the next wave after the
/// wave's bake (`bakes_ms`). Gates are left out: people approve when they do.
pub(crate) fn expect(
    waves: &[&[String]],
    bakes_ms: &[i64],
    max_parallel: usize,
    at: i64,
    hold: impl Fn(&str, i64) -> Option<Hold>,
) -> Vec<Expected> {
    let mut out = Vec::with_capacity(waves.len());
    let mut t = at;
    for (k, hosts) in waves.iter().enumerate() {
        let mut e = Expected::default();
        let mut opens = Vec::with_capacity(hosts.len());
        let mut forever = false;
        for h in hosts.iter() {
            match hold(h, t) {
                None => opens.push(t),
                Some(hold) => {
                    e.waiting += 1;
                    if e.why.is_empty() {
                        e.why = format!("{h} {}", hold.why);
                    }
                    match hold.wait_ms {
                        Some(w) => opens.push(t + w),
                        None => forever = true,
                    }
                }
            }
        }
        if forever {
            // Nothing after it can be said either.
            out.push(e);
            out.extend((k + 1..waves.len()).map(|_| Expected::default()));
            return out;
        }
        opens.sort_unstable();
        // The places, as the times they are free again (a min-heap).
        let places = max_parallel.clamp(1, opens.len().max(1));
        let mut free: std::collections::BinaryHeap<std::cmp::Reverse<i64>> =
            (0..places).map(|_| std::cmp::Reverse(t)).collect();
        let (mut first, mut last) = (i64::MAX, t);
        for open in opens {
            let std::cmp::Reverse(at) = free.pop().unwrap_or(std::cmp::Reverse(t));
            let start = at.max(open);
            first = first.min(start);
            last = last.max(start + DEPLOY_MS);
            free.push(std::cmp::Reverse(start + DEPLOY_MS));
        }
        e.start_ms = if first == i64::MAX { t } else { first };
        e.end_ms = last;
        t = last + bakes_ms.get(k).copied().unwrap_or(0);
        out.push(e);
    }
    out
}

#[cfg(test)]
mod expect_tests {
    use super::*;

    fn hosts(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    #[test]
    fn waves_follow_the_pace_and_wait_for_their_hosts_windows() {
        let (a, b) = (hosts("ny", 4), hosts("seoul", 4));
        // Seoul's hosts may go only from t = 10 minutes.
        let hold = |h: &str, t: i64| {
            (h.starts_with("seoul") && t < 600_000).then(|| Hold {
                why: "waits for contoso-seoul's working day to end at 18:00 KST".into(),
                wait_ms: Some(600_000 - t),
            })
        };
        let e = expect(&[&a, &b], &[120_000, 0], 2, 0, hold);
        // Four hosts two at a time: two minutes; a two-minute bake; Seoul at 10 minutes.
        assert_eq!((e[0].start_ms, e[0].end_ms, e[0].waiting), (0, 120_000, 0));
        assert_eq!((e[1].start_ms, e[1].end_ms, e[1].waiting), (600_000, 720_000, 4));
        assert!(
            e[1].why.starts_with("seoul-0 waits for contoso-seoul's"),
            "{}",
            e[1].why
        );
    }

    #[test]
    fn a_freeze_without_an_end_leaves_the_times_unsaid() {
        let a = hosts("h", 2);
        let hold = |_: &str, _: i64| {
            Some(Hold {
                why: "frozen by freeze 3".into(),
                wait_ms: None,
            })
        };
        let e = expect(&[&a, &a], &[0, 0], 10, 5, hold);
        assert_eq!((e[0].start_ms, e[0].end_ms, e[0].waiting), (0, 0, 2));
        assert_eq!(e[1], Expected::default());
    }
}
