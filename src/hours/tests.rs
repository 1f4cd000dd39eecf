//! The calendar's tests: hours, shifts, tiers and explanations at fixed instants.
use super::*;

#[test]
fn hours_may_cross_midnight() {
    assert_eq!(parse_hours("22:00-06:00").unwrap(), (1320, 360));
    assert!(parse_hours("09:00-09:00").is_err());
    assert!(parse_hours("24:00-06:00").is_err());
}

fn customer(id: &str, tz: &str, hours: &str, days: &[&str], holidays: &[&str]) -> Schedule {
    Schedule::new(&Customer {
        id: id.into(),
        timezone: tz.into(),
        hours: hours.into(),
        workdays: days.iter().map(|d| d.to_string()).collect(),
        holidays: holidays.iter().map(|d| d.to_string()).collect(),
        weight: 1,
    })
    .unwrap()
}

const WEEK: &[&str] = &["mon", "tue", "wed", "thu", "fri"];

/// Unix ms of a UTC instant written `2026-03-09T13:30`.
fn utc(s: &str) -> i64 {
    format!("{s}:00Z").parse::<Timestamp>().unwrap().as_millisecond()
}

fn tier(s: &Schedule, at: &str) -> Tier {
    s.status(utc(at), DEFAULT_LOOKAHEAD_MS).tier
}

#[test]
fn seoul_in_hours_before_start_at_start_and_at_end() {
    let c = customer("contoso", "Asia/Seoul", "09:00-18:00", WEEK, &[]);
    // Tue 2026-11-24 09:30 KST = 00:30 UTC.
    assert_eq!(tier(&c, "2026-11-24T00:30"), Tier::InHours);
    let st = c.status(utc("2026-11-24T00:30"), DEFAULT_LOOKAHEAD_MS);
    assert_eq!(c.explain(&st), "09:30 Tue Asia/Seoul, in hours (09:00-18:00)");
    // 08:15 KST: 45 minutes before start.
    let st = c.status(utc("2026-11-23T23:15"), DEFAULT_LOOKAHEAD_MS);
    assert_eq!((st.tier, st.until_start_ms), (Tier::StartingSoon, 45 * 60_000));
    assert_eq!(c.explain(&st), "08:15 Tue Asia/Seoul, starts in 45m (09:00-18:00)");
    // Exactly at start: in; exactly at end: out.
    assert_eq!(tier(&c, "2026-11-24T00:00"), Tier::InHours);
    assert_eq!(tier(&c, "2026-11-24T09:00"), Tier::OffHours);
    assert_eq!(tier(&c, "2026-11-24T08:59"), Tier::InHours);
    // 06:59 KST: 2h01m before start is off hours; 07:00 is starting soon.
    assert_eq!(tier(&c, "2026-11-23T21:59"), Tier::OffHours);
    assert_eq!(tier(&c, "2026-11-23T22:00"), Tier::StartingSoon);
}

#[test]
fn weekends_and_holidays_are_off() {
    let c = customer("contoso", "Asia/Seoul", "09:00-18:00", WEEK, &["2026-12-25"]);
    // Sat 2026-11-28 10:00 KST.
    let st = c.status(utc("2026-11-28T01:00"), DEFAULT_LOOKAHEAD_MS);
    assert_eq!((st.tier, st.off_reason), (Tier::OffHours, "not a workday"));
    assert_eq!(
        c.explain(&st),
        "10:00 Sat Asia/Seoul, off hours (not a workday), next start Mon 09:00 in 1d23h"
    );
    // Fri 2026-12-25 10:00 KST: a holiday on a Friday.
    let st = c.status(utc("2026-12-25T01:00"), DEFAULT_LOOKAHEAD_MS);
    assert_eq!((st.tier, st.off_reason), (Tier::OffHours, "holiday"));
    // Sunday 07:30: next start is Monday 09:00, 1h30m away: starting soon.
    assert_eq!(tier(&c, "2026-11-29T22:30"), Tier::StartingSoon);
}

#[test]
fn half_hour_and_45_minute_offsets() {
    // Kolkata is UTC+05:30: Mon 2026-11-23 09:00 IST = 03:30 UTC.
    let c = customer("infy", "Asia/Kolkata", "09:00-18:00", WEEK, &[]);
    assert_eq!(tier(&c, "2026-11-23T03:29"), Tier::StartingSoon);
    assert_eq!(tier(&c, "2026-11-23T03:30"), Tier::InHours);
    // St John's is UTC-03:30 in winter: Mon 09:00 NST = 12:30 UTC.
    let c = customer("nl", "America/St_Johns", "09:00-17:00", WEEK, &[]);
    assert_eq!(tier(&c, "2026-11-23T12:29"), Tier::StartingSoon);
    assert_eq!(tier(&c, "2026-11-23T12:30"), Tier::InHours);
    // Chatham is UTC+13:45 in (southern) summer: Mon 2026-11-23 09:00 = Sun 19:15 UTC.
    let c = customer("chatham", "Pacific/Chatham", "09:00-17:00", WEEK, &[]);
    assert_eq!(tier(&c, "2026-11-22T19:14"), Tier::StartingSoon);
    assert_eq!(tier(&c, "2026-11-22T19:15"), Tier::InHours);
}

#[test]
fn dst_changes_of_2026() {
    // New York springs forward on Sun 2026-03-08. Mon 09:30 EDT = 13:30 UTC
    // (with the winter offset it would be 08:30, before hours).
    let ny = customer("ny", "America/New_York", "09:00-17:00", WEEK, &[]);
    assert_eq!(tier(&ny, "2026-03-09T13:30"), Tier::InHours);
    assert_eq!(tier(&ny, "2026-03-09T12:59"), Tier::StartingSoon);
    // A shift starting inside the gap (02:30 does not exist on 03-08) starts at 03:30 EDT.
    let night = customer("night", "America/New_York", "02:30-06:00", &["sun"], &[]);
    let st = night.status(utc("2026-03-08T07:00"), DEFAULT_LOOKAHEAD_MS);
    assert_eq!((st.tier, st.until_start_ms), (Tier::StartingSoon, 30 * 60_000));
    assert_eq!(tier(&night, "2026-03-08T07:30"), Tier::InHours);
    // Falls back on Sun 2026-11-01: Mon 09:00 EST = 14:00 UTC.
    assert_eq!(tier(&ny, "2026-11-02T13:59"), Tier::StartingSoon);
    assert_eq!(tier(&ny, "2026-11-02T14:00"), Tier::InHours);
    // London: BST from Sun 2026-03-29; Mon 09:00 BST = 08:00 UTC.
    let london = customer("uk", "Europe/London", "09:00-17:30", WEEK, &[]);
    assert_eq!(tier(&london, "2026-03-30T08:00"), Tier::InHours);
    assert_eq!(
        tier(&london, "2026-03-27T08:30"),
        Tier::StartingSoon,
        "the Friday before: GMT"
    );
    // Back to GMT on Sun 2026-10-25: Mon 09:00 GMT = 09:00 UTC.
    assert_eq!(tier(&london, "2026-10-26T08:30"), Tier::StartingSoon);
    // Sydney leaves DST on Sun 2026-04-05 (+11 -> +10): Mon 09:00 AEST = Sun 23:00 UTC.
    let syd = customer("au", "Australia/Sydney", "09:00-17:00", WEEK, &[]);
    assert_eq!(tier(&syd, "2026-04-05T22:45"), Tier::StartingSoon);
    assert_eq!(tier(&syd, "2026-04-05T23:00"), Tier::InHours);
    // And enters DST on Sun 2026-10-04: Mon 09:00 AEDT = Sun 22:00 UTC.
    assert_eq!(tier(&syd, "2026-10-04T22:00"), Tier::InHours);
}

#[test]
fn hours_crossing_midnight_belong_to_the_day_they_start() {
    let c = customer("noc", "Europe/London", "22:00-06:00", WEEK, &[]);
    // Fri 2026-11-27 23:00 GMT and Sat 03:00 are in the Friday shift.
    assert_eq!(tier(&c, "2026-11-27T23:00"), Tier::InHours);
    assert_eq!(tier(&c, "2026-11-28T03:00"), Tier::InHours);
    // Sat 06:00 ends it; Sat 23:00 is not a shift (Saturday is not a workday).
    assert_eq!(tier(&c, "2026-11-28T06:00"), Tier::OffHours);
    assert_eq!(tier(&c, "2026-11-28T23:00"), Tier::OffHours);
    // Sun 21:00: Sunday has no shift; the next one starts Monday 22:00.
    let st = c.status(utc("2026-11-29T21:00"), DEFAULT_LOOKAHEAD_MS);
    assert_eq!(st.tier, Tier::OffHours);
    assert_eq!(st.until_start_ms, 25 * 3600 * 1000);
}

#[test]
fn a_host_takes_its_best_customer() {
    let customers = [
        Customer {
            id: "seoul".into(),
            timezone: "Asia/Seoul".into(),
            hours: "09:00-18:00".into(),
            workdays: WEEK.iter().map(|d| d.to_string()).collect(),
            holidays: vec![],
            weight: 1,
        },
        Customer {
            id: "newyork".into(),
            timezone: "America/New_York".into(),
            hours: "09:00-17:00".into(),
            workdays: WEEK.iter().map(|d| d.to_string()).collect(),
            holidays: vec![],
            weight: 10,
        },
    ];
    let cal = Calendar::new(&customers).unwrap();
    let both = ["newyork".to_string(), "seoul".to_string()];
    // Tue 09:30 in Seoul = Mon 19:30 in New York: Seoul wins despite its weight.
    let snap = cal.snapshot(utc("2026-11-24T00:30"));
    let p = Calendar::place(&snap, "h1", &both);
    assert_eq!((p.key.0, p.customer.as_str()), (Tier::InHours, "seoul"));
    assert_eq!(p.local_time, "2026-11-24 09:30 Tue Asia/Seoul");
    // Mon 10:00 in New York = Tue 00:00 in Seoul: New York wins.
    let snap = cal.snapshot(utc("2026-11-23T15:00"));
    assert_eq!(Calendar::place(&snap, "h1", &both).customer, "newyork");
    // No customer: last.
    assert_eq!(Calendar::place(&snap, "h2", &[] as &[&str]).key.0, Tier::NoCustomer);
}

#[test]
fn ties_go_to_weight_then_id() {
    let mk = |id: &str, weight| Customer {
        id: id.into(),
        timezone: "Asia/Tokyo".into(),
        hours: "09:00-18:00".into(),
        workdays: WEEK.iter().map(|d| d.to_string()).collect(),
        holidays: vec![],
        weight,
    };
    let cal = Calendar::new(&[mk("b", 1), mk("a", 1), mk("c", 5)]).unwrap();
    let snap = cal.snapshot(utc("2026-11-24T01:00"));
    let mut keys: Vec<Key> = ["a", "b", "c"].iter().map(|c| snap[c].0.clone()).collect();
    keys.sort();
    let order: Vec<&str> = keys.iter().map(|k| k.3.as_str()).collect();
    assert_eq!(order, ["c", "a", "b"]);
}

#[test]
fn the_working_day_holds_a_change_until_it_ends_and_the_lookahead_before_the_next() {
    let seoul = customer("contoso-seoul", "Asia/Seoul", "09:00-18:00", WEEK, &[]);
    let two_hours = 2 * 3_600_000;
    // Mon 17:59 KST: held until 18:00 KST, said in Seoul's time.
    assert_eq!(
        seoul.quiet_from(utc("2026-12-07T08:59"), two_hours),
        Some((utc("2026-12-07T09:00"), "18:00 KST".to_string()))
    );
    // Mon 18:00 KST: open (the next start is 15 hours away).
    assert_eq!(seoul.quiet_from(utc("2026-12-07T09:00"), two_hours), None);
    // Tue 07:30 KST: the day starts within the lookahead: held until it ends.
    assert_eq!(
        seoul.quiet_from(utc("2026-12-07T22:30"), two_hours),
        Some((utc("2026-12-08T09:00"), "18:00 KST".to_string()))
    );
    // Sat noon: open.
    assert_eq!(seoul.quiet_from(utc("2026-12-12T03:00"), two_hours), None);
}
