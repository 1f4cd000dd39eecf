//! The simulated service's traffic, so that a real Prometheus can tell the seed
//! incident's story: every host serves a steady [`REQUESTS_PER_SECOND`], about
//! [`RETRY_RATIO`] of them retried; hosts running a faulty version (`rollout agent
//! --simulate --faulty-version VERSION[:FACTOR]`) retry FACTOR times as many (the
//! retry storm of the outage; default [`FAULTY_FACTOR`]). The counters advance in real
//! time and are computed when scraped (`--metrics-listen`):
//! `rollout_sim_requests_total{version}` and `rollout_sim_retried_requests_total{version}`,
//! by `host` too with `--metrics-per-host`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

/// Requests each host serves per second.
pub const REQUESTS_PER_SECOND: f64 = 10.0;
/// Share of a healthy version's requests that are retried.
pub const RETRY_RATIO: f64 = 0.01;
/// How many times as many retries a faulty version makes, unless said otherwise.
pub const FAULTY_FACTOR: f64 = 20.0;

/// `VERSION[:FACTOR]`, as `--faulty-version` takes it.
pub fn parse_faulty(text: &str) -> Result<(String, f64), String> {
    let (version, factor) = match text.rsplit_once(':') {
        Some((v, f)) => {
            let factor: f64 = f
                .parse()
                .map_err(|_| format!("--faulty-version {text}: `{f}` is not a factor (a number like 20)"))?;
            if !(factor.is_finite() && factor >= 0.0) {
                return Err(format!("--faulty-version {text}: the factor must be a number >= 0"));
            }
            (v, factor)
        }
        None => (text, FAULTY_FACTOR),
    };
    if version.is_empty() {
        return Err(format!("--faulty-version {text}: name a version (VERSION[:FACTOR])"));
    }
    Ok((version.to_string(), factor))
}

/// One host's traffic: its version now, since when, and what it served before.
#[derive(Debug)]
struct HostTraffic {
    version: String,
    since: Instant,
    /// (requests, retried) served under earlier versions, by version.
    before: BTreeMap<String, (f64, f64)>,
}

/// Every simulated host's traffic.
#[derive(Debug)]
pub struct Traffic {
    hosts: Mutex<HashMap<String, HostTraffic>>,
    /// Retry factor by version (1 for the others).
    faulty: HashMap<String, f64>,
    per_host: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
    version: String,
}

impl Traffic {
    /// Hosts (id, version) serving from now on.
    pub fn new<'a>(
        hosts: impl IntoIterator<Item = (&'a str, &'a str)>,
        faulty: HashMap<String, f64>,
        per_host: bool,
    ) -> Traffic {
        let now = Instant::now();
        let hosts = hosts
            .into_iter()
            .map(|(id, version)| {
                let t = HostTraffic {
                    version: version.to_string(),
                    since: now,
                    before: BTreeMap::new(),
                };
                (id.to_string(), t)
            })
            .collect();
        Traffic {
            hosts: Mutex::new(hosts),
            faulty,
            per_host,
        }
    }

    fn retry_ratio(&self, version: &str) -> f64 {
        RETRY_RATIO * self.faulty.get(version).copied().unwrap_or(1.0)
    }

    /// (requests, retried) served by a host on `version` for `seconds`.
    fn served(&self, version: &str, seconds: f64) -> (f64, f64) {
        let requests = REQUESTS_PER_SECOND * seconds;
        (requests, requests * self.retry_ratio(version))
    }

    /// `host` runs `version` from now on.
    pub fn switch(&self, host: &str, version: &str) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = hosts.get_mut(host) else {
            return;
        };
        if t.version == version {
            return;
        }
        let now = Instant::now();
        let (requests, retried) = self.served(&t.version, now.duration_since(t.since).as_secs_f64());
        let sum = t.before.entry(std::mem::take(&mut t.version)).or_default();
        sum.0 += requests;
        sum.1 += retried;
        t.version = version.to_string();
        t.since = now;
    }

    /// (requests, retried) so far, by (host, version): every host's, or summed by
    /// version (host empty).
    fn totals(&self, at: Instant) -> BTreeMap<(String, String), (f64, f64)> {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let mut totals: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
        for (id, t) in hosts.iter() {
            let host = if self.per_host { id.clone() } else { String::new() };
            let now = self.served(&t.version, at.duration_since(t.since).as_secs_f64());
            let served = t.before.iter().map(|(v, s)| (v, *s)).chain([(&t.version, now)]);
            for (version, (requests, retried)) in served {
                let sum = totals.entry((host.clone(), version.clone())).or_default();
                sum.0 += requests;
                sum.1 += retried;
            }
        }
        totals
    }
}

impl prometheus_client::collector::Collector for Traffic {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.totals(Instant::now());
        type Pick = fn(&(f64, f64)) -> f64;
        let metrics: [(&str, &str, Pick); 2] = [
            ("rollout_sim_requests", "Requests the simulated hosts served", |s| s.0),
            (
                "rollout_sim_retried_requests",
                "Of those, requests that were retries",
                |s| s.1,
            ),
        ];
        for (name, help, pick) in metrics {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
            for ((host, version), sums) in &totals {
                let counter = ConstCounter::new(pick(sums));
                if self.per_host {
                    let labels = HostLabels {
                        host: host.clone(),
                        version: version.clone(),
                    };
                    counter.encode(family.encode_family(&labels)?)?;
                } else {
                    let labels = VersionLabels {
                        version: version.clone(),
                    };
                    counter.encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// The exposition of `traffic`, in OpenMetrics text.
pub fn render(traffic: &std::sync::Arc<Traffic>) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(traffic.clone()));
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        text.clear();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counters_advance_with_time_and_a_faulty_version_retries_more() {
        let faulty = HashMap::from([("bad".to_string(), 20.0)]);
        let traffic = Traffic::new([("h1", "old"), ("h2", "old")], faulty, false);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let totals = traffic.totals(at(10));
        let (requests, retried) = totals[&(String::new(), "old".to_string())];
        assert!(
            (requests - 200.0).abs() < 1.0,
            "two hosts, 10 s, 10 per second: {requests}"
        );
        assert!((retried / requests - RETRY_RATIO).abs() < 1e-9);
        traffic.switch("h1", "bad");
        let later = traffic.totals(Instant::now() + Duration::from_secs(10));
        let (requests, retried) = later[&(String::new(), "bad".to_string())];
        assert!((requests - 100.0).abs() < 1.0, "{requests}");
        assert!((retried / requests - 0.2).abs() < 1e-9, "20 times 1%");
        // What h1 served on the old version stays counted there.
        let (old, _) = later[&(String::new(), "old".to_string())];
        assert!((100.0..210.0).contains(&old), "{old}");
    }

    #[test]
    fn faulty_versions_parse_with_or_without_a_factor() {
        assert_eq!(parse_faulty("15.20.1"), Ok(("15.20.1".into(), FAULTY_FACTOR)));
        assert_eq!(parse_faulty("15.20.1:5"), Ok(("15.20.1".into(), 5.0)));
        assert!(parse_faulty("15.20.1:x").unwrap_err().contains("not a factor"));
        assert!(parse_faulty(":3").is_err());
    }

    #[test]
    fn the_exposition_has_both_counters_by_version() {
        let traffic = std::sync::Arc::new(Traffic::new([("h1", "v1")], HashMap::new(), false));
        let text = render(&traffic);
        assert!(text.contains("# TYPE rollout_sim_requests counter"), "{text}");
        assert!(text.contains("rollout_sim_requests_total{version=\"v1\"}"), "{text}");
        assert!(
            text.contains("rollout_sim_retried_requests_total{version=\"v1\"}"),
            "{text}"
        );
        let per_host = std::sync::Arc::new(Traffic::new([("h1", "v1")], HashMap::new(), true));
        assert!(render(&per_host).contains("rollout_sim_requests_total{host=\"h1\",version=\"v1\"}"));
    }
}
