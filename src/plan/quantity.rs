//! The small value types of a plan: percentages and failure thresholds (durations are
//! [`crate::text`]'s).
//!
//! Percentages are kept in basis points (1% = 100) so that wave arithmetic is exact
//! integer arithmetic: a wave's size never depends on floating-point rounding.

use std::fmt;

/// A share of the selected hosts, in basis points (`10000` is 100%).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Percent(u32);

impl Percent {
    pub const FULL: Percent = Percent(10_000);

    pub fn from_basis_points(bp: u32) -> Percent {
        Percent(bp)
    }

    pub fn basis_points(self) -> u32 {
        self.0
    }

    /// `ceil(self * n)`: how many of `n` hosts this share covers.
    pub fn of(self, n: u64) -> u64 {
        (u64::from(self.0) * n).div_ceil(10_000)
    }

    /// Parses `10%`, `0.5%`, `12.25%`. The `%` is required so that `10` is never
    /// silently read as 10% or as 10 hosts.
    pub fn parse(text: &str) -> Result<Percent, String> {
        let t = text.trim();
        let Some(number) = t.strip_suffix('%') else {
            return Err(format!("`{t}` is not a percentage: write it like 10%"));
        };
        let number = number.trim();
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !(frac.is_empty() || digits(frac)) {
            return Err(format!("`{t}` is not a percentage: write it like 10% or 0.5%"));
        }
        if frac.len() > 2 {
            return Err(format!("`{t}` has more than two decimals; the finest step is 0.01%"));
        }
        let whole: u64 = whole
            .parse()
            .map_err(|_| format!("`{t}` is out of range: percentages go up to 100%"))?;
        let frac_bp: u64 = match frac.len() {
            0 => 0,
            1 => u64::from(frac.as_bytes()[0] - b'0') * 10,
            _ => frac.parse().unwrap_or(0),
        };
        let bp = whole.saturating_mul(100).saturating_add(frac_bp);
        if bp > 10_000 {
            return Err(format!("`{t}` is over 100%"));
        }
        Ok(Percent(bp as u32))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{whole}%"),
            f2 if f2 % 10 == 0 => write!(f, "{whole}.{}%", f2 / 10),
            f2 => write!(f, "{whole}.{f2:02}%"),
        }
    }
}

/// How many failures a wave tolerates: an absolute count or a share of the wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Count(u64),
    Share(Percent),
}

impl Threshold {
    /// Parses `3` (hosts) or `2%` (of the wave).
    pub fn parse(text: &str) -> Result<Threshold, String> {
        let t = text.trim();
        if t.ends_with('%') {
            return Percent::parse(t).map(Threshold::Share);
        }
        t.parse::<u64>()
            .map(Threshold::Count)
            .map_err(|_| format!("`{t}` is neither a host count (3) nor a percentage (2%)"))
    }

    /// The number of failed hosts a wave of `size` hosts may have without halting.
    /// A share rounds down: 2% of 20 hosts tolerates 0 failures, not 1.
    pub fn allowed(self, size: u64) -> u64 {
        match self {
            Threshold::Count(n) => n,
            Threshold::Share(p) => u64::from(p.basis_points()) * size / 10_000,
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Count(n) => write!(f, "{n}"),
            Threshold::Share(p) => write!(f, "{p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_parses_and_displays_exactly() {
        for (text, bp, shown) in [
            ("1%", 100, "1%"),
            ("0.5%", 50, "0.5%"),
            ("12.25%", 1225, "12.25%"),
            ("100%", 10_000, "100%"),
        ] {
            let p = Percent::parse(text).unwrap();
            assert_eq!(p.basis_points(), bp, "{text}");
            assert_eq!(p.to_string(), shown);
        }
        for bad in ["10", "abc%", "101%", "1.234%", "-1%", "%", "1e2%"] {
            assert!(Percent::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn percent_of_hosts_rounds_up() {
        assert_eq!(Percent::parse("1%").unwrap().of(2_000), 20);
        assert_eq!(Percent::parse("1%").unwrap().of(50), 1);
        assert_eq!(Percent::parse("10%").unwrap().of(7), 1);
        assert_eq!(Percent::FULL.of(12_345), 12_345);
    }

    #[test]
    fn threshold_share_rounds_down() {
        assert_eq!(Threshold::parse("2%").unwrap().allowed(20), 0);
        assert_eq!(Threshold::parse("2%").unwrap().allowed(1_000), 20);
        assert_eq!(Threshold::parse("3").unwrap().allowed(1), 3);
        assert!(Threshold::parse("three").is_err());
    }
}
