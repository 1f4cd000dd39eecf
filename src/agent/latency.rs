//! How long a simulated deploy takes: uniform between two bounds (`5..50`, in
//! milliseconds, or one number), or log-normal with a long tail
//! (`lognormal:60s,p99=5m`: half the deploys take under a minute, one in a hundred
//! over five), which is what real fleets show: most hosts are quick, a few are slow,
//! and the slow ones set how long a wave takes. Each operation's time is drawn from
//! its id, so a run is reproducible.

use std::fmt;
use std::time::Duration;

use rand::SeedableRng;
use rand_distr::Distribution;

/// The 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874_040_841;

/// A distribution of deploy times.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Latency {
    /// Uniform between `min_ms` and `max_ms`, both included.
    Uniform { min_ms: u64, max_ms: u64 },
    /// Log-normal with this median and 99th percentile.
    LogNormal { median: Duration, p99: Duration },
}

impl Default for Latency {
    fn default() -> Latency {
        Latency::Uniform { min_ms: 0, max_ms: 0 }
    }
}

impl From<(u64, u64)> for Latency {
    fn from((min_ms, max_ms): (u64, u64)) -> Latency {
        Latency::Uniform { min_ms, max_ms }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Latency::Uniform { min_ms, max_ms } => write!(f, "{min_ms}..{max_ms} ms"),
            Latency::LogNormal { median, p99 } => write!(
                f,
                "log-normal, median {}, p99 {}",
                crate::text::format_duration(*median),
                crate::text::format_duration(*p99)
            ),
        }
    }
}

impl Latency {
    /// Parses `MIN..MAX` or `N` (milliseconds), or `lognormal:MEDIAN,p99=P99` (durations).
    pub fn parse(text: &str) -> Result<Latency, String> {
        if let Some(rest) = text.trim().strip_prefix("lognormal:") {
            let usage = || {
                format!(
                    "`{text}` is not a log-normal latency: write it like lognormal:60s,p99=5m (median, then the 99th percentile)"
                )
            };
            let (median, p99) = rest.split_once(",p99=").ok_or_else(usage)?;
            let median = crate::text::parse_duration(median).map_err(|_| usage())?;
            let p99 = crate::text::parse_duration(p99).map_err(|_| usage())?;
            if median.is_zero() || p99 < median {
                return Err(format!(
                    "`{text}`: the median must be above zero and the p99 at least the median"
                ));
            }
            return Ok(Latency::LogNormal { median, p99 });
        }
        let usage = || format!("`{text}` is not a latency: write it like 5..50 (milliseconds) or lognormal:60s,p99=5m");
        let (a, b) = text.split_once("..").unwrap_or((text, text));
        let (min_ms, max_ms): (u64, u64) = (
            a.trim().parse().map_err(|_| usage())?,
            b.trim().parse().map_err(|_| usage())?,
        );
        if min_ms > max_ms {
            return Err(format!("`{text}`: the minimum is above the maximum"));
        }
        Ok(Latency::Uniform { min_ms, max_ms })
    }

    /// True when every operation answers at once.
    pub fn is_zero(&self) -> bool {
        matches!(self, Latency::Uniform { max_ms: 0, .. })
    }

    /// The time of the operation whose uniform draw is `unit` (in [0, 1)) and whose
    /// hash is `seed`.
    pub fn sample(&self, unit: f64, seed: u64) -> Duration {
        match *self {
            Latency::Uniform { min_ms, max_ms } => {
                let ms = min_ms + ((max_ms - min_ms + 1) as f64 * unit) as u64;
                Duration::from_millis(ms.min(max_ms))
            }
            Latency::LogNormal { median, p99 } => {
                let mu = median.as_secs_f64().ln();
                let sigma = (p99.as_secs_f64() / median.as_secs_f64()).ln() / Z99;
                // Parameters checked at parse: sigma >= 0, mu finite.
                let Ok(dist) = rand_distr::LogNormal::new(mu, sigma) else {
                    return median;
                };
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                Duration::from_secs_f64(dist.sample(&mut rng).min(86_400.0))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse() {
        assert_eq!(
            Latency::parse("5..50").unwrap(),
            Latency::Uniform { min_ms: 5, max_ms: 50 }
        );
        assert_eq!(Latency::parse("7").unwrap(), Latency::Uniform { min_ms: 7, max_ms: 7 });
        assert_eq!(
            Latency::parse("lognormal:60s,p99=5m").unwrap(),
            Latency::LogNormal {
                median: Duration::from_secs(60),
                p99: Duration::from_secs(300)
            }
        );
        for bad in [
            "50..5",
            "fast",
            "lognormal:60s",
            "lognormal:5m,p99=1m",
            "lognormal:0s,p99=1m",
        ] {
            assert!(Latency::parse(bad).is_err(), "{bad}");
        }
    }

    /// Over many draws the median and 99th percentile are the ones asked for.
    #[test]
    fn a_log_normal_has_the_median_and_tail_asked_for() {
        let latency = Latency::parse("lognormal:60s,p99=5m").unwrap();
        let mut times: Vec<f64> = (0..20_000u64)
            .map(|i| latency.sample(0.0, i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).as_secs_f64())
            .collect();
        times.sort_by(f64::total_cmp);
        let (median, p99) = (times[10_000], times[19_800]);
        assert!((55.0..65.0).contains(&median), "median {median}");
        assert!((270.0..330.0).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn uniform_stays_in_its_bounds() {
        let latency = Latency::Uniform { min_ms: 10, max_ms: 20 };
        assert_eq!(latency.sample(0.0, 1), Duration::from_millis(10));
        assert_eq!(latency.sample(0.999_999, 1), Duration::from_millis(20));
    }
}
