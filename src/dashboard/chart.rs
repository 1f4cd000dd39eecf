//! A small chart per analysis check on a rollout's page, rendered on the server as
//! SVG: the measured values over the rollout's time, a point per measurement coloured
//! by its verdict, the bounds as dashed lines, and the baseline (for a check with one)
//! as a second, grey line. No script, no library: an `<svg>` in the page.

use maud::{Markup, html};

use crate::proto::v1 as pb;
use crate::telemetry::show;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 140.0;
/// Room for the axis labels.
const LEFT: f64 = 56.0;
const PAD: f64 = 10.0;

/// One chart per check of the plan's analysis, in the plan's order.
pub fn analysis(r: &pb::Rollout) -> Markup {
    let checks = r
        .plan
        .as_ref()
        .and_then(|p| p.analysis.as_ref())
        .map(|a| a.checks.as_slice());
    let Some(checks) = checks else {
        return html! {};
    };
    html! {
        div.charts {
            @for check in checks {
                (chart(check, &r.measurements))
            }
        }
    }
}

fn chart(check: &pb::AnalysisCheckSpec, all: &[pb::Measurement]) -> Markup {
    let ms: Vec<&pb::Measurement> = all.iter().filter(|m| m.check == check.name).collect();
    let last = ms.last();
    let (t0, t1) = match (ms.first(), last) {
        (Some(a), Some(b)) if b.at_unix_ms > a.at_unix_ms => (a.at_unix_ms, b.at_unix_ms),
        (Some(a), _) => (a.at_unix_ms - 1, a.at_unix_ms + 1),
        _ => (0, 1),
    };
    let values = ms
        .iter()
        .flat_map(|m| [Some(m.value), m.baseline])
        .flatten()
        .chain([check.min, check.max].into_iter().flatten())
        .filter(|v| v.is_finite());
    let top = values.fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE) * 1.15;
    let x = |t: i64| LEFT + (t - t0) as f64 / (t1 - t0) as f64 * (WIDTH - LEFT - PAD);
    let y = |v: f64| HEIGHT - PAD - v / top * (HEIGHT - 2.0 * PAD);
    let line = |pick: &dyn Fn(&pb::Measurement) -> Option<f64>| -> String {
        ms.iter()
            .filter_map(|m| {
                pick(m)
                    .filter(|v| v.is_finite())
                    .map(|v| format!("{:.1},{:.1}", x(m.at_unix_ms), y(v)))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let values_line = line(&|m| Some(m.value));
    let baseline_line = line(&|m| m.baseline);
    let failed = ms.iter().filter(|m| m.verdict == "fail").count();
    let caption = match last {
        Some(m) => format!(
            "{} measurements, {failed} failed; last: {}: {}",
            ms.len(),
            m.verdict,
            m.detail
        ),
        None => "not measured yet".to_string(),
    };
    html! {
        figure.chart {
            figcaption { strong { (check.name) } " " span.num { (caption) } }
            svg.chart data-check=(check.name) viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) width=(WIDTH) height=(HEIGHT) role="img" {
                title { (check.name) ": " (caption) }
                line.axis x1=(LEFT) y1=(y(0.0)) x2=(WIDTH - PAD) y2=(y(0.0)) {}
                text.tick x=(LEFT - 4.0) y=(y(0.0)) { "0" }
                text.tick x=(LEFT - 4.0) y=(y(top / 1.15) + 4.0) { (show(top / 1.15)) }
                @for (bound, value) in [("max", check.max), ("min", check.min)] {
                    @if let Some(v) = value {
                        line.bound data-bound=(bound) x1=(LEFT) y1=(y(v)) x2=(WIDTH - PAD) y2=(y(v)) {}
                        text.tick x=(WIDTH - PAD) y=(y(v) - 3.0) text-anchor="end" { (bound) " " (show(v)) }
                    }
                }
                @if !baseline_line.is_empty() {
                    polyline.baseline points=(baseline_line) {}
                }
                @if !values_line.is_empty() {
                    polyline.values points=(values_line) {}
                }
                @for m in &ms {
                    @let v = if m.value.is_finite() { m.value } else { 0.0 };
                    circle class=(m.verdict) cx=(format!("{:.1}", x(m.at_unix_ms))) cy=(format!("{:.1}", y(v))) r="3" {
                        title { "wave " (m.wave) ": " (m.verdict) ": " (m.detail) }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_per_check_with_its_points_bounds_and_baseline() {
        let m = |check: &str, at, value, baseline, verdict: &str| pb::Measurement {
            check: check.into(),
            wave: 1,
            at_unix_ms: at,
            value,
            baseline,
            verdict: verdict.into(),
            detail: "why".into(),
        };
        let r = pb::Rollout {
            plan: Some(pb::PlanSpec {
                analysis: Some(pb::AnalysisSpec {
                    checks: vec![
                        pb::AnalysisCheckSpec {
                            name: "retry-ratio".into(),
                            max: Some(0.05),
                            ..Default::default()
                        },
                        pb::AnalysisCheckSpec {
                            name: "better".into(),
                            baseline: "b".into(),
                            max_ratio: Some(0.5),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            measurements: vec![
                m("retry-ratio", 1_000, 0.01, None, "pass"),
                m("better", 1_000, 0.01, Some(0.2), "pass"),
                m("retry-ratio", 2_000, 0.2, None, "fail"),
                m("retry-ratio", 3_000, f64::NAN, None, "inconclusive"),
            ],
            ..Default::default()
        };
        let html = analysis(&r).into_string();
        assert_eq!(html.matches("<svg").count(), 2, "{html}");
        assert!(html.contains("data-check=\"retry-ratio\""));
        assert_eq!(html.matches("<circle").count(), 4);
        assert!(html.contains("class=\"fail\"") && html.contains("class=\"inconclusive\""));
        assert!(html.contains("data-bound=\"max\""));
        assert!(html.contains("class=\"baseline\""));
        assert!(html.contains("3 measurements, 1 failed; last: inconclusive: why"));
        // No analysis, no charts.
        assert_eq!(analysis(&pb::Rollout::default()).into_string(), "");
    }
}
