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
