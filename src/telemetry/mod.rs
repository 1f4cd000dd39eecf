//! Telemetry gates: a plan's `analysis:`, checks on a Prometheus measured during
//! every bake. This file holds the pure parts, tested with plain values: the
//! validated form, the queries with their templates filled, when each measurement of
//! a bake is due, and what a value means against its bounds. [`prometheus`] asks
//! Prometheus (it computes; we only compare); the engine's driver runs the loop and
//! keeps the measurements with the rollout.

pub mod prometheus;

use std::time::Duration;

use crate::proto::v1 as pb;

/// The templates a query may use.
pub const TEMPLATES: [&str; 3] = ["{{version}}", "{{rollout}}", "{{wave}}"];

/// A plan's analysis, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The Prometheus HTTP API's base URL.
    pub prometheus: String,
    /// Measurements start this long into each bake.
    pub initial_delay: Duration,
    /// A measurement of every check this often, and one at the bake's end.
    pub interval: Duration,
    /// Failed measurements a bake tolerates.
    pub failure_limit: u32,
    pub inconclusive: Inconclusive,
    pub checks: Vec<Check>,
}

/// What an inconclusive measurement (Prometheus unreachable, a query error, no value)
/// does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inconclusive {
    /// Fail closed: halt the rollout, saying why.
    Halt,
    /// Record it and go on: it counts neither as a pass nor as a failure.
    Continue,
}

impl Inconclusive {
    pub fn as_str(self) -> &'static str {
        match self {
            Inconclusive::Halt => "halt",
            Inconclusive::Continue => "continue",
        }
    }
}

/// One check: a query and its bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub query: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The same measure for the hosts not changed, and the most the value may be as a
    /// share of it.
    pub baseline: Option<(String, f64)>,
}

impl Analysis {
    /// The analysis as the structured message, every default written out.
    pub fn to_spec(&self) -> pb::AnalysisSpec {
        pb::AnalysisSpec {
            prometheus: self.prometheus.clone(),
            initial_delay: crate::text::format_duration(self.initial_delay),
            interval: crate::text::format_duration(self.interval),
            failure_limit: self.failure_limit,
            inconclusive: self.inconclusive.as_str().into(),
            checks: self
                .checks
                .iter()
                .map(|c| pb::AnalysisCheckSpec {
                    name: c.name.clone(),
                    query: c.query.clone(),
                    min: c.min,
                    max: c.max,
                    baseline: c.baseline.as_ref().map(|b| b.0.clone()).unwrap_or_default(),
                    max_ratio: c.baseline.as_ref().map(|b| b.1),
                })
                .collect(),
        }
    }

    /// When measurement round `k` (from 0) of a bake from `start_ms` to `end_ms` is
    /// due: every `interval` from `initial_delay` into the bake, and the last one at
    /// its end. None once the round at the end is past.
    pub fn due(&self, k: u32, start_ms: i64, end_ms: i64) -> Option<i64> {
        let first = start_ms + self.initial_delay.as_millis() as i64;
        let every = self.interval.as_millis().max(1) as i64;
        // Rounds strictly inside the bake, then the one at its end.
        let inside = if first < end_ms {
            (end_ms - first - 1) / every + 1
        } else {
            0
        };
        match i64::from(k) {
            k if k < inside => Some(first + k * every),
            k if k == inside => Some(end_ms),
            _ => None,
        }
    }
}

/// What a query's templates are filled with.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    pub version: &'a str,
    pub rollout: &'a str,
    /// 1-based.
    pub wave: u32,
}

/// `query` with its templates filled.
pub fn fill(query: &str, vars: Vars<'_>) -> String {
    query
        .replace("{{version}}", vars.version)
        .replace("{{rollout}}", vars.rollout)
        .replace("{{wave}}", &vars.wave.to_string())
}

/// The first `{{...}}` of `query` that is not a known template, if any.
pub fn unknown_template(query: &str) -> Option<&str> {
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start..];
        let end = after.find("}}").map_or(after.len(), |e| e + 2);
        let template = &after[..end];
        if !TEMPLATES.contains(&template) {
            return Some(template);
        }
        rest = &after[end..];
    }
    None
}

/// A measurement's conclusion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    pub fn parse(text: &str) -> Verdict {
        match text {
            "pass" => Verdict::Pass,
            "fail" => Verdict::Fail,
            _ => Verdict::Inconclusive,
        }
    }
}

/// A value as people read it: up to four significant decimals.
pub fn show(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.001 && v.abs() < 1e6) {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// Judges what Prometheus said of `check` (`value`, and `baseline` for a check with
/// one; Err: why there is no number): the verdict, and why in a sentence.
pub fn judge(check: &Check, value: Result<f64, String>, baseline: Option<Result<f64, String>>) -> (Verdict, String) {
    let value = match value {
        Ok(v) => v,
        Err(why) => return (Verdict::Inconclusive, why),
    };
    if let Some(min) = check.min
        && value < min
    {
        return (Verdict::Fail, format!("{} < min {}", show(value), show(min)));
    }
    if let Some(max) = check.max
        && value > max
    {
        return (Verdict::Fail, format!("{} > max {}", show(value), show(max)));
    }
    let Some((_, max_ratio)) = &check.baseline else {
        return (Verdict::Pass, bounds_held(check, value));
    };
    let base = match baseline {
        Some(Ok(b)) => b,
        Some(Err(why)) => return (Verdict::Inconclusive, format!("baseline: {why}")),
        None => return (Verdict::Inconclusive, "baseline: not measured".into()),
    };
    if base <= 0.0 {
        return (
            Verdict::Inconclusive,
            format!("baseline is {}: no ratio to compare with max_ratio", show(base)),
        );
    }
    let ratio = value / base;
    if ratio > *max_ratio {
        (
            Verdict::Fail,
            format!(
                "{} is {} of the baseline {}, more than max_ratio {}",
                show(value),
                show(ratio),
                show(base),
                show(*max_ratio)
            ),
        )
    } else {
        (
            Verdict::Pass,
            format!(
                "{} is {} of the baseline {} (max_ratio {})",
                show(value),
                show(ratio),
                show(base),
                show(*max_ratio)
            ),
        )
    }
}

fn bounds_held(check: &Check, value: f64) -> String {
    match (check.min, check.max) {
        (Some(min), Some(max)) => format!("{} within [{}, {}]", show(value), show(min), show(max)),
        (Some(min), None) => format!("{} >= min {}", show(value), show(min)),
        (None, Some(max)) => format!("{} <= max {}", show(value), show(max)),
        (None, None) => show(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(min: Option<f64>, max: Option<f64>, ratio: Option<f64>) -> Check {
        Check {
            name: "retry-ratio".into(),
            query: "q".into(),
            min,
            max,
            baseline: ratio.map(|r| ("b".to_string(), r)),
        }
    }

    fn analysis(initial_delay: u64, interval: u64) -> Analysis {
        Analysis {
            prometheus: "http://127.0.0.1:9090".into(),
            initial_delay: Duration::from_secs(initial_delay),
            interval: Duration::from_secs(interval),
            failure_limit: 0,
            inconclusive: Inconclusive::Halt,
            checks: vec![check(None, Some(0.05), None)],
        }
    }

    #[test]
    fn measurements_are_due_every_interval_from_the_delay_and_at_the_end() {
        // A 60 s bake from t = 1000 s, measured from 10 s in, every 20 s.
        let a = analysis(10, 20);
        let due: Vec<i64> = (0..6).map_while(|k| a.due(k, 1_000_000, 1_060_000)).collect();
        assert_eq!(due, [1_010_000, 1_030_000, 1_050_000, 1_060_000]);
        // A round that would fall on the end is the end's.
        let a = analysis(0, 30);
        let due: Vec<i64> = (0..6).map_while(|k| a.due(k, 0, 60_000)).collect();
        assert_eq!(due, [0, 30_000, 60_000]);
        // A delay longer than the bake: only the end.
        let a = analysis(120, 10);
        assert_eq!(a.due(0, 0, 60_000), Some(60_000));
        assert_eq!(a.due(1, 0, 60_000), None);
    }

    #[test]
    fn templates_are_filled_and_unknown_ones_named() {
        let q = "rate(x{version=\"{{version}}\",rollout=\"{{rollout}}\"}[1m]) * {{wave}}";
        let vars = Vars {
            version: "15.20.8207.12",
            rollout: "fix",
            wave: 2,
        };
        assert_eq!(
            fill(q, vars),
            "rate(x{version=\"15.20.8207.12\",rollout=\"fix\"}[1m]) * 2"
        );
        assert_eq!(unknown_template(q), None);
        assert_eq!(unknown_template("x{v=\"{{ver}}\"}"), Some("{{ver}}"));
        assert_eq!(unknown_template("x{{"), Some("{{"));
    }

    #[test]
    fn a_value_is_judged_against_its_bounds_and_its_baseline() {
        let max = check(None, Some(0.05), None);
        assert_eq!(judge(&max, Ok(0.01), None).0, Verdict::Pass);
        let (v, why) = judge(&max, Ok(0.21), None);
        assert_eq!((v, why.as_str()), (Verdict::Fail, "0.21 > max 0.05"));
        let min = check(Some(0.99), None, None);
        assert_eq!(judge(&min, Ok(0.9), None).1, "0.9 < min 0.99");
        let (v, why) = judge(&max, Err("Prometheus at http://x unreachable".into()), None);
        assert_eq!(
            (v, why.as_str()),
            (Verdict::Inconclusive, "Prometheus at http://x unreachable")
        );

        let halve = check(None, None, Some(0.5));
        assert_eq!(judge(&halve, Ok(0.004), Some(Ok(0.01))).0, Verdict::Pass);
        let (v, why) = judge(&halve, Ok(0.008), Some(Ok(0.01)));
        assert_eq!(v, Verdict::Fail);
        assert_eq!(why, "0.008 is 0.8 of the baseline 0.01, more than max_ratio 0.5");
        assert_eq!(judge(&halve, Ok(0.0), Some(Ok(0.0))).0, Verdict::Inconclusive);
        assert_eq!(
            judge(&halve, Ok(0.1), Some(Err("empty result".into()))).1,
            "baseline: empty result"
        );
    }

    #[test]
    fn values_read_plainly() {
        assert_eq!(show(0.05), "0.05");
        assert_eq!(show(20.0), "20");
        assert_eq!(show(0.0), "0");
        assert_eq!(show(0.000012), "1.200e-5");
    }
}
