//! The analysis of a bake: each round of the plan's checks is measured when due
//! (every `interval` from `initial_delay` into the bake, and at its end), recorded
//! with the rollout before anything is decided from it, and judged: failed
//! measurements over `failure_limit` fail the gate at once, an inconclusive one
//! under `inconclusive: halt` halts. A bake resumed (after a pause, or by a new
//! controller after a crash) counts what was measured before and goes on from the
//! next round due, each overdue round measured as of its time, so it reaches the
//! verdict an uninterrupted one would. Checks against a baseline are not measured in
//! the last wave: no host is left on the version they compare with.

use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::rollout::Live;
use super::{Context, Result};
use crate::proto::v1 as pb;
use crate::telemetry::{Analysis, Check, Inconclusive, Vars, Verdict, fill, judge};

/// How a bake's analysis ended.
pub(super) enum Baked {
    /// Every round measured, the gate held: on to the health gate.
    Passed,
    /// Too many failed measurements: the reason names the check, its value and bound.
    Failed(String),
    /// An inconclusive measurement under `inconclusive: halt`.
    Inconclusive(String),
    /// A pause, an abort or a shutdown: the driver looks at the state again.
    Interrupted,
}

/// Runs the analysis of the bake of `wave` (from 0), which ends at `until_ms`.
pub(super) async fn bake(
    live: &Live,
    ctx: &Context,
    analysis: &Analysis,
    wave: u32,
    until_ms: i64,
    control: &mut watch::Receiver<u64>,
) -> Result<Baked> {
    let start = until_ms - live.policy.bake_ms(wave);
    let shown = wave + 1;
    // What this bake measured before it was interrupted: a round is the checks
    // measured at one instant.
    let before: Vec<pb::Measurement> = live
        .measurements()
        .into_iter()
        .filter(|m| m.wave == shown && m.at_unix_ms >= start)
        .collect();
    let mut rounds: Vec<i64> = before.iter().map(|m| m.at_unix_ms).collect();
    rounds.dedup();
    let mut round = rounds.len() as u32;
    if let Some(verdict) = decide(analysis, &before, shown) {
        return Ok(verdict);
    }
    let vars = Vars {
        version: live.plan.version.as_deref().unwrap_or_default(),
        rollout: &live.plan.name,
        wave: shown,
    };
    // In the last wave no host is left on another version: a baseline has nothing to
    // measure, so checks against one are measured in the earlier waves only.
    let baselines = (wave as usize) + 1 < live.plan.waves.len();
    let mut seen = before;
    while let Some(due) = analysis.due(round, start, until_ms) {
        let wait = Duration::from_millis((due - ctx.clock.now_ms()).max(0) as u64);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = control.changed() => return Ok(Baked::Interrupted),
            _ = ctx.shutdown.cancelled() => return Ok(Baked::Interrupted),
        }
        // Measured as of when it was due: a round a restart found overdue asks
        // Prometheus about that instant (it keeps the history), so a resumed bake sees
        // what an uninterrupted one would have seen, round by round.
        let at = due.min(ctx.clock.now_ms());
        let measured = measure(ctx, analysis, vars, at, baselines).await;
        for m in &measured {
            match Verdict::parse(&m.verdict) {
                Verdict::Pass => info!(check = %m.check, wave = shown, value = m.value, "measured: {}", m.detail),
                _ => warn!(check = %m.check, wave = shown, verdict = %m.verdict, "measured: {}", m.detail),
            }
        }
        // Recorded before it is acted on: a restart finds it and decides the same.
        live.add_measurements(&ctx.store, measured.clone())?;
        ctx.store.flush().await?;
        seen.extend(measured);
        if let Some(verdict) = decide(analysis, &seen, shown) {
            return Ok(verdict);
        }
        round += 1;
    }
    Ok(Baked::Passed)
}

/// While an approval gate waits after `wave` (from 0): one more round of the plan's
/// checks, measured now, recorded, and judged with the bake's own. None when it
/// passed (the gate's evidence then shows it, under a new gate id).
pub(super) async fn at_gate(live: &Live, ctx: &Context, analysis: &Analysis, wave: u32) -> Result<Option<Baked>> {
    let shown = wave + 1;
    let vars = Vars {
        version: live.plan.version.as_deref().unwrap_or_default(),
        rollout: &live.plan.name,
        wave: shown,
    };
    let measured = measure(ctx, analysis, vars, ctx.clock.now_ms(), true).await;
    for m in &measured {
        info!(check = %m.check, wave = shown, verdict = %m.verdict, "measured at the gate: {}", m.detail);
    }
    live.add_measurements(&ctx.store, measured)?;
    ctx.store.flush().await?;
    let seen: Vec<pb::Measurement> = live.measurements().into_iter().filter(|m| m.wave == shown).collect();
    if let Some(verdict) = decide(analysis, &seen, shown) {
        return Ok(Some(verdict));
    }
    live.remeasure_gate(&ctx.store, ctx.hours.now_ms())?;
    ctx.store.flush().await?;
    Ok(None)
}

/// When the next round at an open gate after `wave` (from 0) is due: an interval
/// after the wave's last measurement.
pub(super) fn next_at_gate(live: &Live, analysis: &Analysis, wave: u32, now_ms: i64) -> i64 {
    let last = live
        .measurements()
        .iter()
        .filter(|m| m.wave == wave + 1)
        .map(|m| m.at_unix_ms)
        .max()
        .unwrap_or(now_ms);
    last + analysis.interval.as_millis() as i64
}

/// The gate's verdict from a bake's measurements so far, if they decide it.
fn decide(analysis: &Analysis, measured: &[pb::Measurement], wave: u32) -> Option<Baked> {
    let failed: Vec<&pb::Measurement> = measured
        .iter()
        .filter(|m| m.verdict == Verdict::Fail.as_str())
        .collect();
    if failed.len() > analysis.failure_limit as usize {
        // Every check that failed in the deciding round, not only the last one.
        let last = failed[failed.len() - 1];
        let round: Vec<&&pb::Measurement> = failed.iter().filter(|m| m.at_unix_ms == last.at_unix_ms).collect();
        let what = match round.as_slice() {
            [one] => format!("check `{}` failed: {}", one.check, one.detail),
            all => {
                let each: Vec<String> = all.iter().map(|m| format!("`{}` {}", m.check, m.detail)).collect();
                format!("{} checks failed: {}", all.len(), each.join("; "))
            }
        };
        return Some(Baked::Failed(format!(
            "analysis of wave {wave}: {what} ({} failed measurements, failure_limit {})",
            failed.len(),
            analysis.failure_limit
        )));
    }
    if analysis.inconclusive == Inconclusive::Halt
        && let Some(m) = measured.iter().find(|m| m.verdict == Verdict::Inconclusive.as_str())
    {
        return Some(Baked::Inconclusive(format!(
            "analysis of wave {wave}: check `{}` inconclusive: {} (inconclusive: halt)",
            m.check, m.detail
        )));
    }
    None
}

/// One round: every check (with a baseline, only when `baselines`) measured at `at`,
/// at the same time.
async fn measure(ctx: &Context, analysis: &Analysis, vars: Vars<'_>, at: i64, baselines: bool) -> Vec<pb::Measurement> {
    let checks = analysis
        .checks
        .iter()
        .filter(|c| baselines || c.baseline.is_none())
        .map(|check| measure_one(ctx, &analysis.prometheus, check, vars, at));
    futures::future::join_all(checks).await
}

async fn measure_one(ctx: &Context, base: &str, check: &Check, vars: Vars<'_>, at: i64) -> pb::Measurement {
    let ask = |promql: String| async move {
        match &ctx.prometheus {
            Some(p) => p.query(base, &promql, at).await,
            None => Err("the controller has no Prometheus client (see its log)".to_string()),
        }
    };
    let value = ask(fill(&check.query, vars)).await;
    let baseline = match &check.baseline {
        Some((query, _)) => Some(ask(fill(query, vars)).await),
        None => None,
    };
    let (verdict, detail) = judge(check, value.clone(), baseline.clone());
    pb::Measurement {
        check: check.name.clone(),
        wave: vars.wave,
        at_unix_ms: at,
        value: value.unwrap_or(f64::NAN),
        baseline: baseline.and_then(|b| b.ok()),
        verdict: verdict.as_str().into(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(check: &str, at: i64, verdict: &str, detail: &str) -> pb::Measurement {
        pb::Measurement {
            check: check.into(),
            wave: 1,
            at_unix_ms: at,
            verdict: verdict.into(),
            detail: detail.into(),
            ..Default::default()
        }
    }

    /// A gate failed by analysis names every check that failed in the deciding round.
    #[test]
    fn a_failed_round_names_every_check_that_failed_in_it() {
        let analysis = Analysis {
            prometheus: String::new(),
            initial_delay: Duration::ZERO,
            interval: Duration::from_secs(1),
            failure_limit: 0,
            inconclusive: Inconclusive::Halt,
            checks: Vec::new(),
        };
        let one = [measured("retry-ratio", 1, "fail", "0.2 > max 0.05")];
        let Some(Baked::Failed(why)) = decide(&analysis, &one, 1) else {
            panic!("one failure over a limit of 0 fails");
        };
        assert_eq!(
            why,
            "analysis of wave 1: check `retry-ratio` failed: 0.2 > max 0.05 (1 failed measurements, failure_limit 0)"
        );
        let both = [
            measured("retry-ratio", 2, "fail", "0.2 > max 0.05"),
            measured("latency", 2, "pass", "0.1 <= max 0.3"),
            measured("errors", 2, "fail", "0.09 > max 0.01"),
        ];
        let Some(Baked::Failed(why)) = decide(&analysis, &both, 1) else {
            panic!("two failures fail");
        };
        assert_eq!(
            why,
            "analysis of wave 1: 2 checks failed: `retry-ratio` 0.2 > max 0.05; `errors` 0.09 > max 0.01 (2 failed measurements, failure_limit 0)"
        );
    }
}
