//! Business-hours priority: which customers are in their working day now, which
//! start theirs soon, and which are off; exact in their own time zone (DST, half-hour
//! and 45-minute offsets, weekends, holidays, shifts that cross midnight).
//!
//! Pure: every function takes the instant it is asked about. The engine passes its
//! injected clock's "now"; tests pass fixed instants.
//!
//! A shift belongs to the day it starts: with hours `22:00-06:00` and workdays
//! `[mon..fri]`, Friday 23:00 and Saturday 03:00 are in hours, Saturday 23:00 is not.
//! A holiday removes the shift that starts on that date.
//!
//! A [`Customer`] (as fleet files write it: time zone, hours, workdays, holidays,
//! weight) is defined here, with the parsers of its hours and days: the fleet file
//! holds customers, this module says what their hours mean. Below `fleet`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use serde::{Deserialize, Serialize};

/// A customer whose working hours decide restart order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    /// IANA name (Asia/Seoul); never a fixed offset, so DST is right.
    pub timezone: String,
    /// Local `HH:MM-HH:MM`; an end before the start crosses midnight.
    pub hours: String,
    #[serde(default = "default_workdays")]
    pub workdays: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holidays: Vec<String>,
    #[serde(default = "default_weight", skip_serializing_if = "is_default_weight")]
    pub weight: u32,
}

impl Customer {
    /// A customer working `hours` Monday to Friday in `timezone`, weight 1, no holidays.
    pub fn weekdays(id: &str, timezone: &str, hours: &str) -> Customer {
        Customer {
            id: id.into(),
            timezone: timezone.into(),
            hours: hours.into(),
            workdays: default_workdays(),
            holidays: Vec::new(),
            weight: default_weight(),
        }
    }
}

fn default_workdays() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec()
}

fn default_weight() -> u32 {
    1
}

fn is_default_weight(w: &u32) -> bool {
    *w == 1
}

/// Parses `HH:MM-HH:MM` into minutes after local midnight.
pub fn parse_hours(text: &str) -> Result<(u16, u16), String> {
    let usage = || format!("`{text}` is not working hours: write them like 09:00-18:00");
    let (a, b) = text.split_once('-').ok_or_else(usage)?;
    let clock = |s: &str| -> Option<u16> {
        let (h, m) = s.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60 && s.trim().len() == 5).then_some(h * 60 + m)
    };
    let (start, end) = (clock(a).ok_or_else(usage)?, clock(b).ok_or_else(usage)?);
    if start == end {
        return Err(format!(
            "`{text}` starts and ends at the same time; use 00:00-23:59 for all day"
        ));
    }
    Ok((start, end))
}

/// `mon` .. `sun` to a weekday.
pub fn parse_weekday(day: &str) -> Option<jiff::civil::Weekday> {
    use jiff::civil::Weekday::*;
    Some(match day {
        "mon" => Monday,
        "tue" => Tuesday,
        "wed" => Wednesday,
        "thu" => Thursday,
        "fri" => Friday,
        "sat" => Saturday,
        "sun" => Sunday,
        _ => return None,
    })
}

/// How far ahead "starting soon" looks by default.
pub const DEFAULT_LOOKAHEAD_MS: i64 = 2 * 3600 * 1000;

/// How far ahead the next shift is searched (holidays can chain).
const SEARCH_DAYS: usize = 400;

/// A customer's place in the queue, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// A workday, inside its hours.
    InHours,
    /// Its next shift starts within the lookahead.
    StartingSoon,
    /// The rest.
    OffHours,
    /// A host that serves no customer goes last.
    NoCustomer,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::InHours => "in-hours",
            Tier::StartingSoon => "starting-soon",
            Tier::OffHours => "off-hours",
            Tier::NoCustomer => "no-customer",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A customer's working hours, compiled for fast questions.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub id: String,
    pub tz_name: String,
    tz: TimeZone,
    start_min: u16,
    end_min: u16,
    /// Monday = 0.
    workdays: [bool; 7],
    holidays: BTreeSet<Date>,
    pub weight: u32,
}

/// Where a customer stands at an instant, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub tier: Tier,
    /// The customer's wall-clock time.
    pub local: DateTime,
    /// Milliseconds until its next shift starts; 0 while in hours.
    pub until_start_ms: i64,
    /// Why it is off (weekend, holiday, before or after hours); empty in hours.
    pub off_reason: &'static str,
    /// The next (or current) shift's start, local.
    pub next_start: Option<DateTime>,
}

/// Sort key of a customer or host: tier, then time to next start, then weight
/// (higher first), then id.
pub type Key = (Tier, i64, Reverse<u32>, String);

impl Schedule {
    pub fn new(c: &Customer) -> Result<Schedule, String> {
        let tz = TimeZone::get(&c.timezone).map_err(|e| format!("{}: time zone {}: {e}", c.id, c.timezone))?;
        let (start_min, end_min) = parse_hours(&c.hours)?;
        let mut workdays = [false; 7];
        for d in &c.workdays {
            let day = parse_weekday(d).ok_or_else(|| format!("{}: `{d}` is not a day", c.id))?;
            workdays[day.to_monday_zero_offset() as usize] = true;
        }
        let holidays = c
            .holidays
            .iter()
            .map(|d| d.parse::<Date>().map_err(|e| format!("{}: holiday {d}: {e}", c.id)))
            .collect::<Result<_, _>>()?;
        Ok(Schedule {
            id: c.id.clone(),
            tz_name: c.timezone.clone(),
            tz,
            start_min,
            end_min,
            workdays,
            holidays,
            weight: c.weight,
        })
    }

    fn crosses_midnight(&self) -> bool {
        self.end_min < self.start_min
    }

    fn works(&self, d: Date) -> bool {
        self.workdays[d.weekday().to_monday_zero_offset() as usize] && !self.holidays.contains(&d)
    }

    fn at(&self, d: Date, minute: u16) -> Option<Zoned> {
        let dt = d.at((minute / 60) as i8, (minute % 60) as i8, 0, 0);
        // A start inside a DST gap moves forward, as a person's clock would.
        self.tz.to_zoned(dt).ok()
    }

    /// The shift that starts on `d`: its start and end instants.
    fn shift(&self, d: Date) -> Option<(Zoned, Zoned)> {
        let start = self.at(d, self.start_min)?;
        let end_day = if self.crosses_midnight() { d.tomorrow().ok()? } else { d };
        let end = self.at(end_day, self.end_min)?;
        Some((start, end))
    }

    /// Where the customer stands at `now` (unix ms).
    pub fn status(&self, now_ms: i64, lookahead_ms: i64) -> Status {
        let now = Timestamp::from_millisecond(now_ms).unwrap_or(Timestamp::UNIX_EPOCH);
        let local = now.to_zoned(self.tz.clone());
        let today = local.date();
        let yesterday = today.yesterday().unwrap_or(today);
        for d in [yesterday, today] {
            if let Some((start, end)) = self.shift(d)
                && self.works(d)
                && start.timestamp() <= now
                && now < end.timestamp()
            {
                return Status {
                    tier: Tier::InHours,
                    local: local.datetime(),
                    until_start_ms: 0,
                    off_reason: "",
                    next_start: Some(start.datetime()),
                };
            }
        }
        let mut d = today;
        let mut next = None;
        for _ in 0..SEARCH_DAYS {
            if self.works(d)
                && let Some((start, _)) = self.shift(d)
                && start.timestamp() > now
            {
                next = Some(start);
                break;
            }
            match d.tomorrow() {
                Ok(t) => d = t,
                Err(_) => break,
            }
        }
        let until = next
            .as_ref()
            .map_or(i64::MAX, |s| s.timestamp().as_millisecond() - now_ms);
        let off_reason = if self.holidays.contains(&today) {
            "holiday"
        } else if !self.workdays[today.weekday().to_monday_zero_offset() as usize] {
            "not a workday"
        } else if u16::try_from(local.hour() as i32 * 60 + local.minute() as i32).unwrap_or(0) < self.start_min {
            "before hours"
        } else {
            "after hours"
        };
        Status {
            tier: if until <= lookahead_ms {
                Tier::StartingSoon
            } else {
                Tier::OffHours
            },
            local: local.datetime(),
            until_start_ms: until,
            off_reason,
            next_start: next.map(|z| z.datetime()),
        }
    }

    /// The working shifts that overlap `[from_ms, to_ms)`, as unix ms, in order (a
    /// shift is counted on the day it starts, as [`Schedule::status`] counts it).
    pub fn shifts(&self, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
        let at = |ms: i64| {
            Timestamp::from_millisecond(ms)
                .unwrap_or(Timestamp::UNIX_EPOCH)
                .to_zoned(self.tz.clone())
        };
        let (first, last) = (at(from_ms).date(), at(to_ms).date());
        let mut d = first.yesterday().unwrap_or(first);
        let mut out = Vec::new();
        while d <= last {
            if self.works(d)
                && let Some((start, end)) = self.shift(d)
            {
                let (start, end) = (start.timestamp().as_millisecond(), end.timestamp().as_millisecond());
                if start < to_ms && end > from_ms {
                    out.push((start, end));
                }
            }
            match d.tomorrow() {
                Ok(t) => d = t,
                Err(_) => break,
            }
        }
        out
    }

    /// When the customer's working day no longer holds a change back, from `now_ms`:
    /// None while it does not (neither in hours nor starting within `lookahead_ms`);
    /// else the end of the shift that holds it (a later shift starting within the
    /// lookahead of that end holds on), with the local time it is said in ("18:00 KST").
    pub fn quiet_from(&self, now_ms: i64, lookahead_ms: i64) -> Option<(i64, String)> {
        const DAY: i64 = 86_400_000;
        let mut open = now_ms;
        for (start, end) in self.shifts(now_ms - DAY, now_ms + 8 * DAY) {
            if start - lookahead_ms <= open && open < end {
                open = end;
            }
        }
        (open > now_ms).then(|| {
            let local = Timestamp::from_millisecond(open)
                .unwrap_or(Timestamp::UNIX_EPOCH)
                .to_zoned(self.tz.clone());
            (open, local.strftime("%H:%M %Z").to_string())
        })
    }

    pub fn key(&self, status: &Status) -> Key {
        (
            status.tier,
            status.until_start_ms,
            Reverse(self.weight),
            self.id.clone(),
        )
    }

    /// "09:30 Tue Asia/Seoul, in hours (09:00-18:00)"; "07:45 Mon Europe/London, starts
    /// in 1h15m"; "23:10 Sat America/New_York, off hours (not a workday), next start
    /// Mon 09:00 in 33h50m".
    pub fn explain(&self, s: &Status) -> String {
        let local = format!(
            "{} {} {}",
            s.local.strftime("%H:%M"),
            s.local.strftime("%a"),
            self.tz_name
        );
        let hours = format!(
            "{:02}:{:02}-{:02}:{:02}",
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60
        );
        match s.tier {
            Tier::InHours => format!("{local}, in hours ({hours})"),
            Tier::StartingSoon => {
                format!("{local}, starts in {} ({hours})", span(s.until_start_ms))
            }
            _ => match &s.next_start {
                Some(n) => format!(
                    "{local}, off hours ({}), next start {} in {}",
                    s.off_reason,
                    n.strftime("%a %H:%M"),
                    span(s.until_start_ms)
                ),
                None => format!("{local}, off hours ({}), no workday ahead", s.off_reason),
            },
        }
    }
}

/// `1h15m`, `45m`, `2d3h`.
fn span(ms: i64) -> String {
    let mins = (ms + 59_999) / 60_000;
    let (d, h, m) = (mins / 1440, (mins % 1440) / 60, mins % 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// Every customer's key, schedule and status at one instant, by id (see
/// [`Calendar::snapshot`]).
pub type Snapshot<'a> = HashMap<&'a str, (Key, &'a Schedule, Status)>;

/// Every customer's schedule, and the questions the engine asks of them.
#[derive(Debug, Default, Clone)]
pub struct Calendar {
    schedules: HashMap<String, Schedule>,
    pub lookahead_ms: i64,
}

/// Why a host is where it is in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub key: Key,
    /// The customer that gave the host its priority (its best one).
    pub customer: String,
    pub local_time: String,
    pub why: String,
}

impl Calendar {
    pub fn new<'a>(customers: impl IntoIterator<Item = &'a Customer>) -> Result<Calendar, String> {
        let schedules = customers
            .into_iter()
            .map(|c| Schedule::new(c).map(|s| (c.id.clone(), s)))
            .collect::<Result<_, _>>()?;
        Ok(Calendar {
            schedules,
            lookahead_ms: DEFAULT_LOOKAHEAD_MS,
        })
    }

    /// Every customer's schedule, in no particular order.
    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values()
    }

    pub fn schedule(&self, id: &str) -> Option<&Schedule> {
        self.schedules.get(id)
    }

    /// Status of every customer at `now`: computed once per batch, shared by hosts.
    pub fn snapshot(&self, now_ms: i64) -> Snapshot<'_> {
        self.schedules
            .values()
            .map(|s| {
                let st = s.status(now_ms, self.lookahead_ms);
                (s.id.as_str(), (s.key(&st), s, st))
            })
            .collect()
    }

    /// A host's rank among others, without the explanation: cheap, for sorting many
    /// hosts. Borrowed from the snapshot; a host with no customer goes last.
    pub fn rank<'a>(snapshot: &'a Snapshot<'_>, customers: &[impl AsRef<str>]) -> (Tier, i64, Reverse<u32>, &'a str) {
        customers
            .iter()
            .filter_map(|c| snapshot.get(c.as_ref()))
            .map(|(k, _, _)| (k.0, k.1, k.2, k.3.as_str()))
            .min()
            .unwrap_or((Tier::NoCustomer, i64::MAX, Reverse(0), ""))
    }

    /// A host's place: its best customer's key (a host with none goes last).
    pub fn place(snapshot: &Snapshot<'_>, host_id: &str, customers: &[impl AsRef<str>]) -> Placement {
        let best = customers
            .iter()
            .filter_map(|c| snapshot.get(c.as_ref()))
            .min_by(|a, b| a.0.cmp(&b.0));
        match best {
            Some((key, schedule, status)) => Placement {
                key: key.clone(),
                customer: schedule.id.clone(),
                local_time: format!("{} {}", status.local.strftime("%Y-%m-%d %H:%M %a"), schedule.tz_name),
                why: schedule.explain(status),
            },
            None => Placement {
                key: (Tier::NoCustomer, i64::MAX, Reverse(0), host_id.to_string()),
                customer: String::new(),
                local_time: String::new(),
                why: "serves no customer".into(),
            },
        }
    }
}

#[cfg(test)]
mod tests;
