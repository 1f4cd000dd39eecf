//! The freeze calendar (`rollout serve --freeze-calendar FILE`): an iCalendar file
//! (RFC 5545, as AWS Systems Manager's Change Calendar and every calendar program
//! write it) whose events are freeze windows, their SUMMARY the reason.
//!
//! The `icalendar` crate parses the file (content lines, folding, parameters); the
//! `rrule` crate expands recurrences (RRULE, RDATE, EXDATE, in the event's TZID, so a
//! weekly 09:00 in Seoul stays 09:00 across the year). An event without DTEND or
//! DURATION lasts a day when it is a date (`VALUE=DATE`), else nothing (RFC 5545
//! §3.6.1) and is refused, since a freeze of no length freezes nothing. A time without
//! a zone (floating) is read as UTC, and the README says so. Cancelled events
//! (`STATUS:CANCELLED`) freeze nothing.

use std::str::FromStr;

use rrule::{RRuleSet, Tz};

/// Occurrences of one event expanded per question at most.
const MAX_OCCURRENCES: u16 = 500;
/// Events a calendar may hold.
const MAX_EVENTS: usize = 1_000;

/// One event of the calendar.
#[derive(Debug, Clone)]
struct Event {
    uid: String,
    summary: String,
    /// The start as rrule reads it (with its zone), and the recurrence lines.
    rules: String,
    recurring: bool,
    start_ms: i64,
    length_ms: i64,
}

/// One window of the calendar: an occurrence of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub uid: String,
    pub summary: String,
    pub from_ms: i64,
    pub until_ms: i64,
}

/// A parsed freeze calendar.
#[derive(Debug, Clone, Default)]
pub struct Calendar {
    events: Vec<Event>,
}

impl Calendar {
    /// Parses iCalendar text; the error is one line naming the event and the fix.
    pub fn parse(text: &str) -> Result<Calendar, String> {
        let unfolded = icalendar::parser::unfold(text);
        let parsed = icalendar::parser::read_calendar(&unfolded)
            .map_err(|e| format!("not an iCalendar file (RFC 5545): {}", first_line(&e)))?;
        let mut events = Vec::new();
        for c in parsed.components.iter().filter(|c| c.name.as_str() == "VEVENT") {
            if let Some(event) = event(c)? {
                events.push(event);
            }
        }
        if events.len() > MAX_EVENTS {
            return Err(format!(
                "{} events; a freeze calendar holds at most {MAX_EVENTS}: use recurring events (RRULE)",
                events.len()
            ));
        }
        Ok(Calendar { events })
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Every window that overlaps `[from_ms, to_ms)`, soonest first.
    pub fn windows(&self, from_ms: i64, to_ms: i64) -> Vec<Window> {
        let mut out = Vec::new();
        for e in &self.events {
            let window = |start: i64| Window {
                uid: e.uid.clone(),
                summary: e.summary.clone(),
                from_ms: start,
                until_ms: start + e.length_ms,
            };
            if !e.recurring {
                if e.start_ms < to_ms && e.start_ms + e.length_ms > from_ms {
                    out.push(window(e.start_ms));
                }
                continue;
            }
            let Ok(set) = RRuleSet::from_str(&e.rules) else {
                continue;
            };
            let (Some(after), Some(before)) = (instant(from_ms - e.length_ms), instant(to_ms)) else {
                continue;
            };
            for start in set.after(after).before(before).all(MAX_OCCURRENCES).dates {
                let start = start.timestamp_millis();
                if start < to_ms && start + e.length_ms > from_ms {
                    out.push(window(start));
                }
            }
        }
        out.sort_by(|a, b| (a.from_ms, &a.uid).cmp(&(b.from_ms, &b.uid)));
        out.dedup();
        out
    }
}

fn instant(ms: i64) -> Option<chrono::DateTime<Tz>> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.with_timezone(&Tz::UTC))
}

fn first_line(e: &str) -> String {
    crate::text::one_line(e.lines().find(|l| !l.trim().is_empty()).unwrap_or(e)).into_owned()
}

/// A property as a content line again (`EXDATE;TZID=Asia/Seoul:20261214T090000`),
/// for the rrule parser.
fn line(p: &icalendar::parser::Property<'_>) -> String {
    let mut out = p.name.as_str().to_string();
    for param in &p.params {
        out.push(';');
        out.push_str(param.key.as_str());
        if let Some(v) = &param.val {
            out.push('=');
            out.push_str(v.as_str());
        }
    }
    out.push(':');
    out.push_str(p.val.as_str());
    out
}

/// Whether a date-time property is a date (`VALUE=DATE`, or eight digits).
fn is_date(p: &icalendar::parser::Property<'_>) -> bool {
    p.params
        .iter()
        .any(|x| x.key.as_str() == "VALUE" && x.val.as_ref().is_some_and(|v| v.as_str() == "DATE"))
        || (p.val.as_str().len() == 8 && p.val.as_str().bytes().all(|b| b.is_ascii_digit()))
}

/// A DTSTART-like property as rrule reads it: a date becomes its midnight, a
/// floating time is read as UTC.
fn start_line(p: &icalendar::parser::Property<'_>) -> String {
    let value = p.val.as_str().trim();
    let zoned = p.params.iter().find(|x| x.key.as_str() == "TZID");
    let value = if is_date(p) {
        format!("{value}T000000")
    } else {
        value.to_string()
    };
    match zoned {
        Some(tz) => format!("DTSTART;TZID={}:{value}", tz.val.as_ref().map_or("", |v| v.as_str())),
        None if value.ends_with('Z') => format!("DTSTART:{value}"),
        None => format!("DTSTART:{value}Z"),
    }
}

/// The instant a DTSTART-like property names, through rrule's reading of it.
fn at(p: &icalendar::parser::Property<'_>, what: &str, uid: &str) -> Result<(String, i64), String> {
    let start = start_line(p);
    // rrule reads a start only with something to generate from it.
    let set = RRuleSet::from_str(&format!("{start}\nRRULE:FREQ=DAILY;COUNT=1")).map_err(|e| {
        format!(
            "event `{uid}`: {what} `{}` does not parse ({e}): write it as 20261207T090000Z or with a TZID",
            crate::text::one_line(p.val.as_str())
        )
    })?;
    Ok((start, set.get_dt_start().timestamp_millis()))
}

/// One VEVENT, or None when it freezes nothing (cancelled).
fn event(c: &icalendar::parser::Component<'_>) -> Result<Option<Event>, String> {
    let prop = |name: &str| c.find_prop(name);
    let uid = prop("UID").map_or_else(|| "(no UID)".to_string(), |p| p.val.as_str().to_string());
    let uid = crate::text::one_line(&uid).into_owned();
    if prop("STATUS").is_some_and(|p| p.val.as_str().eq_ignore_ascii_case("CANCELLED")) {
        return Ok(None);
    }
    let summary = prop("SUMMARY").map_or_else(
        || "a window of the freeze calendar".to_string(),
        |p| crate::text::one_line(&p.val.as_str().replace("\\,", ",").replace("\\;", ";")).into_owned(),
    );
    let start = prop("DTSTART").ok_or_else(|| format!("event `{uid}` has no DTSTART: give when the freeze starts"))?;
    let (start_rule, start_ms) = at(start, "DTSTART", &uid)?;
    let length_ms = if let Some(end) = prop("DTEND") {
        at(end, "DTEND", &uid)?.1 - start_ms
    } else if let Some(d) = prop("DURATION") {
        let span: jiff::SignedDuration = d.val.as_str().trim().parse().map_err(|e| {
            format!(
                "event `{uid}`: DURATION `{}` does not parse ({e}): write it as PT2H or P1D",
                crate::text::one_line(d.val.as_str())
            )
        })?;
        span.as_millis() as i64
    } else if is_date(start) {
        86_400_000
    } else {
        0
    };
    if length_ms <= 0 {
        return Err(format!(
            "event `{uid}` ends before it starts or lasts no time: give it a DTEND after its DTSTART, or a DURATION"
        ));
    }
    let mut rules = start_rule;
    let mut recurring = false;
    for p in &c.properties {
        if matches!(p.name.as_str(), "RRULE" | "RDATE" | "EXDATE" | "EXRULE") {
            recurring |= matches!(p.name.as_str(), "RRULE" | "RDATE");
            rules.push('\n');
            rules.push_str(&line(p));
        }
    }
    if recurring {
        RRuleSet::from_str(&rules).map_err(|e| format!("event `{uid}`: its recurrence does not parse: {e}"))?;
    }
    Ok(Some(Event {
        uid,
        summary,
        rules,
        recurring,
        start_ms,
        length_ms,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEEKLY: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:weekly-1\r\nSUMMARY:Monday morning freeze\\, APAC\r\nDTSTART;TZID=Asia/Seoul:20261207T090000\r\nDTEND;TZID=Asia/Seoul:20261207T120000\r\nRRULE:FREQ=WEEKLY;BYDAY=MO\r\nEXDATE;TZID=Asia/Seoul:20261214T090000\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:once\r\nSUMMARY:Year-end\r\nDTSTART;VALUE=DATE:20261231\r\nEND:VEVENT\r\nBEGIN:VEVENT\r\nUID:gone\r\nSTATUS:CANCELLED\r\nDTSTART:20261201T000000Z\r\nDURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    fn ms(text: &str) -> i64 {
        text.parse::<jiff::Timestamp>().map(|t| t.as_millisecond()).unwrap_or(0)
    }

    #[test]
    fn weekly_windows_follow_their_zone_and_skip_exdates() {
        let cal = Calendar::parse(WEEKLY).map_err(|e| e.to_string()).unwrap_or_default();
        let w = cal.windows(ms("2026-12-01T00:00:00Z"), ms("2026-12-29T00:00:00Z"));
        let starts: Vec<(&str, i64)> = w.iter().map(|w| (w.uid.as_str(), w.from_ms)).collect();
        // 09:00 KST is 00:00 UTC; the 14th is excepted.
        assert_eq!(
            starts,
            vec![
                ("weekly-1", ms("2026-12-07T00:00:00Z")),
                ("weekly-1", ms("2026-12-21T00:00:00Z")),
                ("weekly-1", ms("2026-12-28T00:00:00Z")),
            ]
        );
        assert_eq!(w[0].until_ms - w[0].from_ms, 3 * 3_600_000);
        assert_eq!(w[0].summary, "Monday morning freeze, APAC");
        let year_end = cal.windows(ms("2026-12-31T12:00:00Z"), ms("2026-12-31T13:00:00Z"));
        assert_eq!(year_end.len(), 1);
        assert_eq!(year_end[0].until_ms - year_end[0].from_ms, 86_400_000);
        // The cancelled event freezes nothing.
        assert!(
            cal.windows(ms("2026-12-01T00:00:00Z"), ms("2026-12-01T02:00:00Z"))
                .is_empty()
        );
    }

    #[test]
    fn a_window_in_force_is_found_from_inside_it() {
        let cal = Calendar::parse(WEEKLY).unwrap_or_default();
        let inside = ms("2026-12-21T01:30:00Z");
        let w = cal.windows(inside, inside + 1);
        assert_eq!(w.len(), 1);
        assert!(w[0].from_ms <= inside && inside < w[0].until_ms);
    }

    #[test]
    fn bad_calendars_are_refused_in_one_line() {
        for (text, says) in [
            ("not a calendar", "not an iCalendar file"),
            (
                "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nSUMMARY:s\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
                "event `x` has no DTSTART",
            ),
            (
                "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:y\r\nDTSTART:20261207T090000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
                "event `y` ends before it starts or lasts no time",
            ),
            (
                "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:z\r\nDTSTART;TZID=Mars/Olympus:20261207T090000\r\nDURATION:PT1H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
                "event `z`: DTSTART",
            ),
            (
                "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:r\r\nDTSTART:20261207T090000Z\r\nDURATION:PT1H\r\nRRULE:FREQ=SOMETIMES\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
                "event `r`: its recurrence does not parse",
            ),
        ] {
            let e = Calendar::parse(text).err().unwrap_or_default();
            assert!(e.contains(says), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
