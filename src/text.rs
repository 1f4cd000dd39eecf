//! Text helpers every module prints with: input quoted on one line, and durations
//! as plans and config files write them (`5m`, `1h 30m`, `0s`). Below everything
//! that uses them: this module imports nothing of the crate.

use std::borrow::Cow;
use std::time::Duration;

/// `text` with its control characters (newlines, carriage returns, tabs, NUL) written
/// as escapes, so that an error quoting input always stays on one line.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Parses `5m`, `30s`, `1h 30m`, `500ms`, `0s`. A bare number is refused: `5`
/// could mean seconds or minutes, and a wrong guess during an incident is costly.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|_| format!("`{t}` is not a duration: write it like 30s, 5m or 1h30m"))
}

/// Formats a duration the way plans write it (`5m`, `1h 30m`, `0s`).
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    humantime::format_duration(d).to_string()
}

/// The name among `names` closest to a misspelt `text` ("did you mean"): within a
/// third of its length in edits (Damerau-Levenshtein, `max_paralel` is one edit from
/// `max_parallel`), or None.
pub fn closest<'a>(text: &str, names: &[&'a str]) -> Option<&'a str> {
    let bound = (text.chars().count() / 3).max(1);
    names
        .iter()
        .map(|n| (strsim::damerau_levenshtein(text, n), *n))
        .filter(|(d, _)| *d <= bound)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closest_name() {
        let names = ["max_parallel", "order", "bake", "max-in-flight"];
        assert_eq!(closest("max_paralel", &names), Some("max_parallel"));
        assert_eq!(closest("max-inflight", &names), Some("max-in-flight"));
        assert_eq!(closest("bkae", &names), Some("bake"));
        assert_eq!(closest("listen", &names), None);
    }

    #[test]
    fn quoted_input_stays_on_one_line() {
        assert_eq!(one_line("plain `text`"), "plain `text`");
        assert_eq!(one_line("a\nb\r\tc\0"), "a\\nb\\r\\tc\\u{0}");
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
