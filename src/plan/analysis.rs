//! A plan's `analysis:` block: as written in YAML (strict, like the rest of the
//! plan), and its rules. Each refusal names the field (`analysis.checks[1].max_ratio`)
//! and says what would be accepted.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::validate::is_name;
use super::{FieldError, Kind, Scalar, bad, format_duration, parse_duration};
use crate::proto::v1 as pb;
use crate::telemetry::{Analysis, Check, Inconclusive, unknown_template};

/// Checks in one plan at most.
const MAX_CHECKS: usize = 20;
/// A query's length at most.
const MAX_QUERY: usize = 4096;
/// The shortest interval between measurements.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AnalysisFile {
    prometheus: String,
    #[serde(default)]
    initial_delay: Option<Scalar>,
    #[serde(default)]
    interval: Option<Scalar>,
    #[serde(default)]
    failure_limit: Option<u32>,
    #[serde(default)]
    inconclusive: Option<String>,
    #[serde(default)]
    checks: Vec<CheckFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    name: String,
    query: String,
    #[serde(default)]
    min: Option<f64>,
    #[serde(default)]
    max: Option<f64>,
    #[serde(default)]
    baseline: Option<String>,
    #[serde(default)]
    max_ratio: Option<f64>,
}

impl AnalysisFile {
    pub(super) fn into_spec(self) -> pb::AnalysisSpec {
        pb::AnalysisSpec {
            prometheus: self.prometheus,
            initial_delay: self.initial_delay.map(Scalar::into_text).unwrap_or_default(),
            interval: self.interval.map(Scalar::into_text).unwrap_or_default(),
            failure_limit: self.failure_limit.unwrap_or(0),
            inconclusive: self.inconclusive.unwrap_or_default(),
            checks: self
                .checks
                .into_iter()
                .map(|c| pb::AnalysisCheckSpec {
                    name: c.name,
                    query: c.query,
                    min: c.min,
                    max: c.max,
                    baseline: c.baseline.unwrap_or_default(),
                    max_ratio: c.max_ratio,
                })
                .collect(),
        }
    }
}

/// The analysis of a plan of `kind` (with `version`, if any) whose bakes last `bake`.
pub(super) fn analysis(
    spec: Option<&pb::AnalysisSpec>,
    kind: Kind,
    version: Option<&str>,
    bake: Duration,
) -> Result<Option<Analysis>, FieldError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    if bake.is_zero() {
        return Err(bad(
            "bake",
            "is 0s, but analysis measures during bakes: give bake a duration (e.g. 5m)",
        ));
    }
    let prometheus = prometheus_url(&spec.prometheus)?;
    let duration = |field: &str, text: &str, default: Duration| match text {
        "" => Ok(default),
        t => parse_duration(t).map_err(|m| bad(format!("analysis.{field}"), m)),
    };
    let initial_delay = duration("initial_delay", &spec.initial_delay, Duration::ZERO)?;
    let interval = duration("interval", &spec.interval, Duration::from_secs(60))?;
    if interval < MIN_INTERVAL {
        return Err(bad(
            "analysis.interval",
            format!("{} is shorter than 1s", format_duration(interval)),
        ));
    }
    let inconclusive = match spec.inconclusive.as_str() {
        "" | "halt" => Inconclusive::Halt,
        "continue" => Inconclusive::Continue,
        other => {
            return Err(bad(
                "analysis.inconclusive",
                format!("`{other}` is not a choice: use halt (the default: fail closed) or continue"),
            ));
        }
    };
    if spec.checks.is_empty() {
        return Err(bad(
            "analysis.checks",
            "is empty: give at least one check (name, query, and min, max or baseline with max_ratio)",
        ));
    }
    if spec.checks.len() > MAX_CHECKS {
        return Err(bad(
            "analysis.checks",
            format!("has {} checks; the limit is {MAX_CHECKS}", spec.checks.len()),
        ));
    }
    let mut names = HashSet::new();
    let mut checks = Vec::new();
    for (i, c) in spec.checks.iter().enumerate() {
        let at = |field: &str| format!("analysis.checks[{i}].{field}");
        if !is_name(&c.name) {
            return Err(bad(
                at("name"),
                format!("`{}` may use only a-z, 0-9 and inner dashes (like retry-ratio)", c.name),
            ));
        }
        if !names.insert(c.name.as_str()) {
            return Err(bad(at("name"), format!("`{}` names two checks", c.name)));
        }
        query(&at("query"), &c.query, kind, version)?;
        for (field, bound) in [("min", c.min), ("max", c.max), ("max_ratio", c.max_ratio)] {
            if bound.is_some_and(|b| !b.is_finite()) {
                return Err(bad(at(field), "is not a finite number"));
            }
        }
        if let (Some(min), Some(max)) = (c.min, c.max)
            && min > max
        {
            return Err(bad(at("min"), format!("{min} is above max {max}")));
        }
        let baseline = match (c.baseline.as_str(), c.max_ratio) {
            ("", None) => None,
            ("", Some(_)) => {
                return Err(bad(
                    at("max_ratio"),
                    "needs a baseline: the query of the same measure for the hosts not changed",
                ));
            }
            (_, None) => {
                return Err(bad(
                    at("baseline"),
                    "needs max_ratio: the most the value may be as a share of the baseline (0.5: at least halved)",
                ));
            }
            (b, Some(r)) => {
                query(&at("baseline"), b, kind, version)?;
                if r <= 0.0 {
                    return Err(bad(at("max_ratio"), format!("{r} is not above 0")));
                }
                Some((b.to_string(), r))
            }
        };
        if c.min.is_none() && c.max.is_none() && baseline.is_none() {
            return Err(bad(
                at("name"),
                format!(
                    "check `{}` has no bound: give min, max, or baseline with max_ratio",
                    c.name
                ),
            ));
        }
        checks.push(Check {
            name: c.name.clone(),
            query: c.query.clone(),
            min: c.min,
            max: c.max,
            baseline,
        });
    }
    Ok(Some(Analysis {
        prometheus,
        initial_delay,
        interval,
        failure_limit: spec.failure_limit,
        inconclusive,
        checks,
    }))
}

/// An http(s) URL with a host, without query or fragment, as written (less a
/// trailing slash).
fn prometheus_url(text: &str) -> Result<String, FieldError> {
    const FIELD: &str = "analysis.prometheus";
    if text.trim().is_empty() {
        return Err(bad(
            FIELD,
            "is missing: give the Prometheus HTTP API's base URL (e.g. http://127.0.0.1:9090)",
        ));
    }
    let url = reqwest::Url::parse(text).map_err(|e| {
        bad(
            FIELD,
            format!("`{text}` is not a URL ({e}): give e.g. http://prometheus.internal:9090"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(bad(
            FIELD,
            format!("`{text}` is not an http:// or https:// URL with a host"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            FIELD,
            format!("`{text}` has a query or fragment: give the base URL only"),
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn query(field: &str, query: &str, kind: Kind, version: Option<&str>) -> Result<(), FieldError> {
    if query.trim().is_empty() {
        return Err(bad(field, "is empty: give a PromQL expression"));
    }
    if query.len() > MAX_QUERY {
        return Err(bad(
            field,
            format!("is {} characters long; the limit is {MAX_QUERY}", query.len()),
        ));
    }
    if let Some(t) = unknown_template(query) {
        return Err(bad(
            field,
            format!("`{t}` is not a template: use {{{{version}}}}, {{{{rollout}}}} or {{{{wave}}}}"),
        ));
    }
    if query.contains("{{version}}") && version.is_none() {
        return Err(bad(
            field,
            format!(
                "uses {{{{version}}}}, but a {} plan without `version` has none",
                kind.as_str()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::plan::Plan;

    const PLAN: &str = "\
name: exo-retry-fix
kind: fix
selector:
  service: exchange-routing
version: 15.20.8207.12
waves: [1%, 100%]
bake: 1m
analysis:
  prometheus: http://127.0.0.1:9090
  initial_delay: 10s
  interval: 10s
  checks:
    - name: retry-ratio
      query: sum(rate(retried{version=\"{{version}}\"}[30s])) / sum(rate(requests{version=\"{{version}}\"}[30s]))
      max: 0.05
    - name: better-than-before
      query: sum(rate(retried{version=\"{{version}}\"}[30s]))
      baseline: sum(rate(retried{version!=\"{{version}}\"}[30s]))
      max_ratio: 0.5
";

    #[test]
    fn an_analysis_is_read_with_its_defaults_and_round_trips() {
        let plan = Plan::from_yaml(PLAN, "p.yaml").unwrap();
        let a = plan.analysis.as_ref().unwrap();
        assert_eq!(a.prometheus, "http://127.0.0.1:9090");
        assert_eq!(a.interval, std::time::Duration::from_secs(10));
        assert_eq!((a.failure_limit, a.inconclusive.as_str()), (0, "halt"));
        assert_eq!(a.checks[1].baseline.as_ref().map(|b| b.1), Some(0.5));
        assert_eq!(Plan::from_spec(&plan.to_spec()).unwrap(), plan);
    }

    #[test]
    fn bad_analyses_are_refused_at_the_field_with_its_place() {
        let cases = [
            (
                PLAN.replace("http://127.0.0.1:9090", "127.0.0.1:9090"),
                "p.yaml:9:3: analysis.prometheus: `127.0.0.1:9090` is not a URL (relative URL without a base): give e.g. http://prometheus.internal:9090",
            ),
            (
                PLAN.replace("      max: 0.05\n", ""),
                "p.yaml:13:7: analysis.checks[0].name: check `retry-ratio` has no bound: give min, max, or baseline with max_ratio",
            ),
            (
                PLAN.replace("      max_ratio: 0.5\n", ""),
                "p.yaml:18:7: analysis.checks[1].baseline: needs max_ratio: the most the value may be as a share of the baseline (0.5: at least halved)",
            ),
            (
                PLAN.replace(
                    "      baseline: sum(rate(retried{version!=\"{{version}}\"}[30s]))\n",
                    "",
                ),
                "p.yaml:18:7: analysis.checks[1].max_ratio: needs a baseline: the query of the same measure for the hosts not changed",
            ),
            (
                PLAN.replace(
                    "      query: sum(rate(retried{version=\"{{version}}\"}[30s]))\n",
                    "      query: \" \"\n",
                ),
                "p.yaml:17:7: analysis.checks[1].query: is empty: give a PromQL expression",
            ),
            (
                PLAN.replace("[30s])) / sum", "[30s])) / {{ver}} / sum"),
                "p.yaml:14:7: analysis.checks[0].query: `{{ver}}` is not a template: use {{version}}, {{rollout}} or {{wave}}",
            ),
            (
                PLAN.replace("  interval:", "  intervl:"),
                "p.yaml:11:3: analysis: unknown field `intervl`: did you mean `interval`?",
            ),
            (
                PLAN.replace("bake: 1m", "bake: 0s"),
                "p.yaml:7:1: bake: is 0s, but analysis measures during bakes: give bake a duration (e.g. 5m)",
            ),
            (
                PLAN.replace("  interval: 10s\n", "  interval: 10s\n  inconclusive: ignore\n"),
                "p.yaml:12:3: analysis.inconclusive: `ignore` is not a choice: use halt (the default: fail closed) or continue",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .map(|(text, expected)| (Plan::from_yaml(text, "p.yaml").unwrap_err().to_string(), expected))
            .filter(|(got, expected)| got != *expected)
            .map(|(got, expected)| format!("got    {got}\nwanted {expected}"))
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }
}
