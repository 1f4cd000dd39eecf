//! Freezes: "stop the line". A freeze set by a person (`rollout freeze`) or a window
//! of the freeze calendar covers hosts (all of them, or those its selector matches);
//! while one does, no new operation starts on them for any rollout or restart job
//! that is not an approved emergency. Operations in flight finish.
//!
//! This module is the pure part: what a freeze covers, whether it is in force at an
//! instant, and how it is said. A person's freeze is judged on the wall clock (it
//! starts now and runs to `--until`); the calendar's windows, like business hours, on
//! the drill clock when one is in force (a game day replays Monday morning).

pub mod calendar;

use crate::inventory::Host;
use crate::plan::Selector;
use crate::proto::v1 as pb;

/// `Freeze.source` of a freeze set by a person.
pub const MANUAL: &str = "manual";
/// `Freeze.source` of a window of the freeze calendar.
pub const CALENDAR: &str = "calendar";
/// Calendar windows `rollout freezes` lists ahead.
pub const LISTED: usize = 10;
/// How far ahead the calendar's windows are kept at hand (longer windows are cut
/// here and found again as the clock moves).
pub const HORIZON_MS: i64 = 35 * 86_400_000;

/// Why a host waits, and for how long at most before it is worth asking again
/// (None: until someone acts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub why: String,
    pub wait_ms: Option<i64>,
}

/// A freeze's selector as plans write selectors.
pub fn selector(f: &pb::Freeze) -> Selector {
    f.selector.iter().map(|(k, v)| (k.clone(), v.values.clone())).collect()
}

/// The hosts a selector names, as people read it: `every host`, `hosts with region=apac`.
pub fn scope(selector: &Selector) -> String {
    if selector.is_empty() {
        return "every host".to_string();
    }
    let parts: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={}", v.join(","))).collect();
    format!("hosts with {}", parts.join(" "))
}

/// Whether a person's freeze is in force at `wall_ms`.
pub fn in_force(f: &pb::Freeze, wall_ms: i64) -> bool {
    f.ended_at_unix_ms == 0 && f.started_at_unix_ms <= wall_ms && (f.until_unix_ms == 0 || wall_ms < f.until_unix_ms)
}

/// "freeze 3 (set by alice: \"INC-1234\", until 2026-12-07T14:00:00Z)", or for a
/// calendar window "the freeze calendar's \"Monday freeze\" (until ...)".
pub fn name(f: &pb::Freeze) -> String {
    let until = match f.until_unix_ms {
        0 => "until someone unfreezes it".to_string(),
        ms => format!("until {}", crate::clock::format_instant(ms)),
    };
    if f.source == CALENDAR {
        format!("the freeze calendar's \"{}\" ({until})", f.reason)
    } else {
        format!("freeze {} (set by {}: \"{}\", {until})", f.id, f.set_by, f.reason)
    }
}

/// A calendar window as a freeze.
pub fn window_freeze(w: &calendar::Window, file: &str, drill: bool) -> pb::Freeze {
    pb::Freeze {
        reason: w.summary.clone(),
        set_by: format!("calendar {file}"),
        started_at_unix_ms: w.from_ms,
        until_unix_ms: w.until_ms,
        source: CALENDAR.into(),
        calendar_uid: w.uid.clone(),
        drill_clock: drill,
        ..Default::default()
    }
}

/// What stops the line: the freezes people set (in force or waiting for their
/// `--until` to be noticed), and the calendar's windows near the hours clock's now.
#[derive(Debug, Clone, Default)]
pub struct Board {
    manual: Vec<(pb::Freeze, Selector)>,
    windows: Vec<pb::Freeze>,
}

impl Board {
    /// A board of `manual` freezes (those ended are left out) and calendar `windows`.
    pub fn new(manual: impl IntoIterator<Item = pb::Freeze>, windows: Vec<pb::Freeze>) -> Board {
        Board {
            manual: manual
                .into_iter()
                .filter(|f| f.ended_at_unix_ms == 0)
                .map(|f| {
                    let s = selector(&f);
                    (f, s)
                })
                .collect(),
            windows,
        }
    }

    /// Nothing could hold a host: the hot path asks nothing more.
    pub fn is_empty(&self) -> bool {
        self.manual.is_empty() && self.windows.is_empty()
    }

    /// The freezes people set that have not ended.
    pub fn manual(&self) -> impl Iterator<Item = &pb::Freeze> {
        self.manual.iter().map(|(f, _)| f)
    }

    /// The calendar's windows at hand.
    pub fn windows(&self) -> &[pb::Freeze] {
        &self.windows
    }

    /// Every freeze in force at these instants (a person's on the wall clock, a
    /// window on the hours clock).
    pub fn in_force(&self, wall_ms: i64, hours_ms: i64) -> Vec<&pb::Freeze> {
        let manual = self.manual.iter().map(|(f, _)| f).filter(|f| in_force(f, wall_ms));
        let windows = self
            .windows
            .iter()
            .filter(|w| w.started_at_unix_ms <= hours_ms && hours_ms < w.until_unix_ms);
        manual.chain(windows).collect()
    }

    /// The freeze that holds `host` at these instants, said as the host's reason to
    /// wait; the one that ends last when several do.
    pub fn holding(&self, host: &Host, wall_ms: i64, hours_ms: i64) -> Option<Hold> {
        let mut found: Option<(i64, &pb::Freeze, Option<i64>)> = None;
        for (f, s) in &self.manual {
            if in_force(f, wall_ms) && host.matches(s) {
                let left = (f.until_unix_ms != 0).then(|| f.until_unix_ms - wall_ms);
                let end = left.unwrap_or(i64::MAX);
                if found.is_none_or(|(e, _, _)| end > e) {
                    found = Some((end, f, left));
                }
            }
        }
        for w in &self.windows {
            if w.started_at_unix_ms <= hours_ms && hours_ms < w.until_unix_ms {
                let left = w.until_unix_ms - hours_ms;
                if found.is_none_or(|(e, _, _)| left > e) {
                    found = Some((left, w, Some(left)));
                }
            }
        }
        found.map(|(_, f, left)| Hold {
            why: format!("frozen by {}", name(f)),
            wait_ms: left,
        })
    }

    /// The first freeze in force that covers any of `hosts`, and how many of them it
    /// covers (a submission is refused naming it).
    pub fn covering<'a>(
        &self,
        hosts: impl Iterator<Item = &'a Host>,
        wall_ms: i64,
        hours_ms: i64,
    ) -> Option<(pb::Freeze, u64)> {
        let force = self.in_force(wall_ms, hours_ms);
        if force.is_empty() {
            return None;
        }
        let selectors: Vec<Selector> = force.iter().map(|f| selector(f)).collect();
        let mut counts = vec![0u64; force.len()];
        for h in hosts {
            for (i, s) in selectors.iter().enumerate() {
                if h.matches(s) {
                    counts[i] += 1;
                }
            }
        }
        counts
            .iter()
            .position(|&n| n > 0)
            .and_then(|i| force.get(i).map(|f| ((*f).clone(), counts[i])))
    }

    /// The calendar's windows in force at `hours_ms` and the next ones, at most
    /// [`LISTED`], soonest first.
    pub fn next_windows(&self, hours_ms: i64) -> Vec<pb::Freeze> {
        self.windows
            .iter()
            .filter(|w| w.until_unix_ms > hours_ms)
            .take(LISTED)
            .cloned()
            .collect()
    }

    /// When something on the board starts or ends next after these instants, as a
    /// wait from now (the engine looks again then).
    pub fn next_change_ms(&self, wall_ms: i64, hours_ms: i64) -> Option<i64> {
        let manual = self
            .manual
            .iter()
            .map(|(f, _)| f.until_unix_ms)
            .filter(|&u| u != 0)
            .map(|u| (u - wall_ms).max(0));
        let windows = self
            .windows
            .iter()
            .flat_map(|w| [w.started_at_unix_ms, w.until_unix_ms])
            .filter(|&t| t > hours_ms)
            .map(|t| t - hours_ms);
        manual.chain(windows).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, region: &str) -> Host {
        Host {
            id: id.into(),
            address: "".into(),
            labels: [("region".to_string(), region.to_string())].into(),
            customers: Vec::new(),
            version: None,
            healthy: true,
        }
    }

    fn freeze(id: u64, selector: &[(&str, &str)], started: i64, until: i64) -> pb::Freeze {
        pb::Freeze {
            id,
            reason: "INC-1234".into(),
            set_by: "alice".into(),
            selector: selector
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        pb::LabelValues {
                            values: vec![v.to_string()],
                        },
                    )
                })
                .collect(),
            started_at_unix_ms: started,
            until_unix_ms: until,
            source: MANUAL.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_freeze_holds_the_hosts_it_covers_until_its_time() {
        let board = Board::new([freeze(3, &[("region", "apac")], 1_000, 61_000)], Vec::new());
        let (apac, eu) = (host("a1", "apac"), host("e1", "eu"));
        let hold = board.holding(&apac, 2_000, 0).map(|h| (h.why, h.wait_ms));
        assert_eq!(
            hold,
            Some((
                "frozen by freeze 3 (set by alice: \"INC-1234\", until 1970-01-01T00:01:01Z)".to_string(),
                Some(59_000)
            ))
        );
        assert_eq!(board.holding(&eu, 2_000, 0), None);
        // Not yet, and no longer.
        assert_eq!(board.holding(&apac, 500, 0), None);
        assert_eq!(board.holding(&apac, 61_000, 0), None);
        assert_eq!(board.next_change_ms(2_000, 0), Some(59_000));
    }

    #[test]
    fn an_ended_freeze_holds_nothing_and_one_without_until_holds_until_unfrozen() {
        let mut ended = freeze(1, &[], 0, 0);
        ended.ended_at_unix_ms = 10;
        let open = freeze(2, &[], 0, 0);
        let board = Board::new([ended, open], Vec::new());
        let hold = board.holding(&host("x", "eu"), i64::MAX / 2, 0);
        assert_eq!(hold.map(|h| h.wait_ms), Some(None));
        assert_eq!(board.manual().count(), 1);
    }

    #[test]
    fn calendar_windows_are_judged_on_the_hours_clock() {
        let w = calendar::Window {
            uid: "u".into(),
            summary: "Monday freeze".into(),
            from_ms: 100,
            until_ms: 200,
        };
        let board = Board::new([], vec![window_freeze(&w, "freeze.ics", true)]);
        let h = host("x", "eu");
        assert!(
            board
                .holding(&h, 0, 150)
                .is_some_and(|h| h.why.contains("\"Monday freeze\""))
        );
        assert_eq!(board.holding(&h, 150, 250), None);
        let covered = board
            .covering([&h].into_iter(), 0, 150)
            .map(|(f, n)| (f.calendar_uid, n));
        assert_eq!(covered, Some(("u".to_string(), 1)));
        assert_eq!(board.next_change_ms(0, 50), Some(50));
    }
}
