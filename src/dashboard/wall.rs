//! What a dashboard on an incident room's wall says beside the counts: when a
//! rollout started, how long it has run, when it is expected to end at the pace so
//! far, and (in the page's header, kept by the live script) how fresh the page is.
//! The estimate is pure, on a given instant, and tested so.

use maud::{Markup, html};

use crate::proto::v1 as pb;

/// When `r` is expected to end, at the pace it has kept since it started (hosts done
/// over time elapsed, bakes and waits included); None once it ended, while it waits
/// for people (a gate, a pause, a halt), or before a host is done.
pub fn expected_end(r: &pb::Rollout, now_ms: i64) -> Option<i64> {
    let state = r.state();
    let waits_for_people = matches!(
        state,
        pb::RolloutState::Paused | pb::RolloutState::Halted | pb::RolloutState::AwaitingApproval
    );
    if state.is_terminal() || waits_for_people || r.created_at_unix_ms <= 0 {
        return None;
    }
    let done = r.hosts_succeeded + r.hosts_failed;
    let elapsed = now_ms - r.created_at_unix_ms;
    if done == 0 || elapsed <= 0 {
        return None;
    }
    let left = r.hosts_selected.saturating_sub(done);
    let per_host = elapsed as f64 / done as f64;
    Some(now_ms + (left as f64 * per_host) as i64)
}

/// Why there is no estimate, in a few words.
fn no_estimate(r: &pb::Rollout) -> &'static str {
    match r.state() {
        pb::RolloutState::AwaitingApproval => "waits for an approval",
        pb::RolloutState::Paused => "paused",
        pb::RolloutState::Halted => "halted: waits for a person",
        _ => "no host done yet",
    }
}

/// "Started 17:33:00 UTC · running for 12m 5s · expected to end about 17:58 UTC (in
/// 11m), at the pace so far"; "took 25m 3s" once it ended. The running time and the
/// "in" are kept current by the live script (data-since, data-until).
pub fn times(r: &pb::Rollout, now_ms: i64) -> Markup {
    let ended = r.finished_at_unix_ms > 0 && r.state().is_terminal();
    html! {
        p.times #times {
            "Started " span.started { (clock(r.created_at_unix_ms)) }
            " · "
            @if ended {
                "took " span.elapsed { (span_of(r.finished_at_unix_ms - r.created_at_unix_ms)) }
                ", ended " (clock(r.finished_at_unix_ms))
            } @else {
                "running for " span.elapsed data-since=(r.created_at_unix_ms) { (span_of(now_ms - r.created_at_unix_ms)) }
                " · "
                @match expected_end(r, now_ms) {
                    Some(end) => {
                        "expected to end about " span #eta data-until=(end) { (clock(end)) }
                        " (in " span.until data-until=(end) { (span_of(end - now_ms)) } "), at the pace so far"
                    }
                    None => { "no estimate of the end: " (no_estimate(r)) }
                }
            }
        }
    }
}

/// "17:33:00 UTC" (the day too when it is not today's).
pub fn clock(ms: i64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms) else {
        return String::new();
    };
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d").to_string();
    if t.strftime("%Y-%m-%d").to_string() == today {
        t.strftime("%H:%M:%S UTC").to_string()
    } else {
        t.strftime("%Y-%m-%d %H:%M UTC").to_string()
    }
}

/// "1h 2m", "12m 5s", "40s".
pub fn span_of(ms: i64) -> String {
    let s = (ms.max(0) / 1000) as u64;
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// One line of why a rollout stopped, for the list (the whole text in its title).
pub fn short_reason(reason: &str) -> String {
    const MAX: usize = 110;
    if reason.chars().count() <= MAX {
        return reason.to_string();
    }
    let cut: String = reason.chars().take(MAX).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(selected: u64, done: u64, started: i64) -> pb::Rollout {
        pb::Rollout {
            state: pb::RolloutState::Running as i32,
            hosts_selected: selected,
            hosts_succeeded: done,
            created_at_unix_ms: started,
            ..Default::default()
        }
    }

    #[test]
    fn the_end_is_expected_at_the_pace_so_far() {
        // 250 of 1,000 hosts in 10 minutes: 30 more minutes.
        let r = running(1000, 250, 1_000_000);
        assert_eq!(expected_end(&r, 1_600_000), Some(1_600_000 + 1_800_000));
        // Nothing done yet: no estimate.
        assert_eq!(expected_end(&running(1000, 0, 1_000_000), 1_600_000), None);
    }

    #[test]
    fn no_estimate_while_people_decide_or_once_it_ended() {
        for state in [
            pb::RolloutState::AwaitingApproval,
            pb::RolloutState::Paused,
            pb::RolloutState::Halted,
            pb::RolloutState::Succeeded,
            pb::RolloutState::Aborted,
        ] {
            let mut r = running(100, 50, 1);
            r.state = state as i32;
            assert_eq!(expected_end(&r, 60_000), None, "{state:?}");
        }
    }

    #[test]
    fn spans_and_reasons_read_short() {
        assert_eq!(span_of(40_000), "40s");
        assert_eq!(span_of(725_000), "12m 5s");
        assert_eq!(span_of(3_720_000), "1h 2m");
        assert_eq!(span_of(-5), "0s");
        let long = "wave 1: ".to_string() + &"x".repeat(200);
        assert!(short_reason(&long).ends_with('…') && short_reason(&long).chars().count() == 111);
    }
}
