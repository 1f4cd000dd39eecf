//! The rules of a plan, field by field: one function per field or group of fields,
//! each refusal naming the field and saying what would be accepted. YAML and gRPC
//! plans meet here (as a `PlanSpec`), so both are judged alike.

use std::time::Duration;

use super::{
    FailureAction, FieldError, Kind, MAX_BAKE, MAX_DESCRIPTION, MAX_PARALLEL, MAX_WAVES, Order, Percent, Plan,
    Selector, Threshold, bad, format_duration, parse_duration,
};
use crate::proto::v1 as pb;

pub(super) fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A plan from its structured form, or the first rule it breaks.
pub(super) fn validate(spec: &pb::PlanSpec) -> Result<Plan, FieldError> {
    name(&spec.name)?;
    let kind = kind(&spec.kind)?;
    if spec.description.len() > MAX_DESCRIPTION {
        return Err(bad(
            "description",
            format!("is longer than {MAX_DESCRIPTION} characters"),
        ));
    }
    let selector = selector(spec)?;
    let version = version(kind, &spec.version)?;
    let (stages, waves) = match super::stages::stages(spec, &selector)? {
        Some(staged) => staged,
        None => (Vec::new(), waves("waves", &spec.waves)?),
    };
    let order = Order::parse(&spec.order, Order::Stable).map_err(|m| bad("order", m))?;
    let max_parallel_share = match spec.max_parallel_share.trim() {
        "" => None,
        text => match Percent::parse(text) {
            Ok(p) if p.basis_points() > 0 => Some(p),
            Ok(_) => return Err(bad("max_parallel", "0% would send nothing: give a share above 0%")),
            Err(m) => return Err(bad("max_parallel", m)),
        },
    };
    // A share is resolved at submission (then the stored plan has both).
    let max_parallel = match (spec.max_parallel, max_parallel_share) {
        (0, Some(_)) => 0,
        (0, None) => 100,
        (n, _) if n > MAX_PARALLEL => {
            return Err(bad("max_parallel", format!("{n} is over the limit of {MAX_PARALLEL}")));
        }
        (n, _) => n,
    };
    let bake = bake(&spec.bake)?;
    let (max_failed, on_failure) = on_failure(kind, spec.on_failure.as_ref())?;
    let (rollback_waves, rollback_max_parallel) = rollback(spec.rollback.as_ref(), max_parallel)?;
    let preempt = match spec.preempt.as_str() {
        "" => None,
        p if !is_name(p) => return Err(bad("preempt", format!("`{p}` is not a rollout name"))),
        p if p == spec.name => return Err(bad("preempt", "a rollout cannot preempt itself")),
        p => Some(p.to_string()),
    };
    let progress_deadline = progress_deadline(&spec.progress_deadline)?;
    let min_healthy = min_healthy(&spec.min_healthy, bake)?;
    let analysis = super::analysis::analysis(spec.analysis.as_ref(), kind, version.as_deref(), bake)?;
    let gates = super::gates::gates(&spec.gates, kind, &waves, &stages)?;
    let fault_domain = super::fault_domain::fault_domain(spec.fault_domain.as_ref())?;
    let windows = super::windows::windows(spec.windows.as_ref())?;
    Ok(Plan {
        windows,
        emergency: spec.emergency,
        fault_domain,
        stages,
        gates,
        analysis,
        min_healthy,
        progress_deadline,
        rollback_waves,
        rollback_max_parallel,
        preempt,
        name: spec.name.clone(),
        kind,
        description: spec.description.clone(),
        selector,
        version,
        waves,
        order,
        max_parallel,
        max_parallel_share,
        bake,
        max_failed,
        on_failure,
    })
}

fn name(name: &str) -> Result<(), FieldError> {
    if name.is_empty() {
        return Err(bad("name", "is missing: give the plan a name like exo-retry-fix"));
    }
    if name.len() > 63 {
        return Err(bad(
            "name",
            format!("is {} characters long; the limit is 63", name.len()),
        ));
    }
    if !is_name(name) {
        return Err(bad(
            "name",
            format!("`{name}` may use only a-z, 0-9 and inner dashes (like exo-retry-fix)"),
        ));
    }
    Ok(())
}

fn kind(kind: &str) -> Result<Kind, FieldError> {
    match kind {
        "fix" => Ok(Kind::Fix),
        "rollback" => Ok(Kind::Rollback),
        "restart" => Ok(Kind::Restart),
        "" => Err(bad("kind", "is missing: use fix, rollback or restart")),
        other => Err(bad(
            "kind",
            format!("`{other}` is not a kind: use fix, rollback or restart"),
        )),
    }
}

fn selector(spec: &pb::PlanSpec) -> Result<Selector, FieldError> {
    if spec.selector.is_empty() {
        return Err(bad(
            "selector",
            "is empty: name at least one label (e.g. service: exchange-routing); a plan never targets every host implicitly",
        ));
    }
    labels("selector", &spec.selector)
}

/// A selector's labels and values, checked (`field` names it in errors).
pub(super) fn labels(
    field: &str,
    given: &std::collections::HashMap<String, pb::LabelValues>,
) -> Result<Selector, FieldError> {
    let mut selector = Selector::new();
    for (key, values) in given {
        if let Err(e) = crate::ident::label_key(key) {
            return Err(bad(format!("{field}.{}", e.shown), e.to_string()));
        }
        if values.values.is_empty() {
            return Err(bad(format!("{field}.{key}"), "lists no values: give at least one"));
        }
        if let Some(i) = values.values.iter().position(|v| v.trim().is_empty()) {
            return Err(bad(format!("{field}.{key}[{i}]"), "is empty"));
        }
        let mut vals = values.values.clone();
        vals.sort();
        vals.dedup();
        selector.insert(key.clone(), vals);
    }
    Ok(selector)
}

fn version(kind: Kind, version: &str) -> Result<Option<String>, FieldError> {
    match (kind, version) {
        (Kind::Fix, "") => Err(bad(
            "version",
            "is required for a fix: the build to deploy, like 15.20.8207.12",
        )),
        (_, "") => Ok(None),
        (Kind::Restart, v) => Err(bad(
            "version",
            format!("`{v}`: a restart keeps each host's version; remove the field"),
        )),
        (_, v) => match crate::ident::version(v) {
            Ok(()) => Ok(Some(v.to_string())),
            Err(e) => Err(bad("version", e.to_string())),
        },
    }
}

/// Cumulative waves as `field` (`waves`, `stages[1].waves`) lists them.
pub(super) fn waves(field: &str, list: &[String]) -> Result<Vec<Percent>, FieldError> {
    if list.is_empty() {
        return Err(bad(field, "is empty: list cumulative shares like [1%, 10%, 50%, 100%]"));
    }
    if list.len() > MAX_WAVES {
        return Err(bad(
            field,
            format!("has {} waves; the limit is {MAX_WAVES}", list.len()),
        ));
    }
    let mut waves = Vec::with_capacity(list.len());
    for (i, w) in list.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let p = Percent::parse(w).map_err(|m| bad(&field, m))?;
        if p.basis_points() == 0 {
            return Err(bad(&field, "is 0%: every wave must add hosts"));
        }
        if let Some(prev) = waves.last()
            && p <= *prev
        {
            return Err(bad(
                &field,
                format!("waves are cumulative and must strictly increase: {p} after {prev}"),
            ));
        }
        waves.push(p);
    }
    if let Some(last) = waves.last()
        && *last != Percent::FULL
    {
        return Err(bad(
            format!("{field}[{}]", waves.len() - 1),
            format!("waves must end at 100%, got {last}"),
        ));
    }
    Ok(waves)
}

fn bake(bake: &str) -> Result<Duration, FieldError> {
    match bake {
        "" => Ok(Duration::from_secs(300)),
        b => bake_at("bake", b),
    }
}

/// A bake as `field` gives it.
pub(super) fn bake_at(field: &str, text: &str) -> Result<Duration, FieldError> {
    let bake = parse_duration(text).map_err(|m| bad(field, m))?;
    if bake > MAX_BAKE {
        return Err(bad(
            field,
            format!("{} is longer than 24h; split the plan instead", format_duration(bake)),
        ));
    }
    Ok(bake)
}

fn on_failure(kind: Kind, spec: Option<&pb::OnFailureSpec>) -> Result<(Threshold, FailureAction), FieldError> {
    let default_failure = pb::OnFailureSpec::default();
    let on_failure = spec.unwrap_or(&default_failure);
    let max_failed = match on_failure.max_failed.as_str() {
        "" => Threshold::Count(0),
        m => Threshold::parse(m).map_err(|msg| bad("on_failure.max_failed", msg))?,
    };
    let action = match on_failure.action.as_str() {
        "" | "halt" => FailureAction::Halt,
        "rollback" if kind == Kind::Fix => FailureAction::Rollback,
        "rollback" => {
            return Err(bad("on_failure.action", "rollback applies to fix plans only; use halt"));
        }
        "continue" if on_failure.max_failed.is_empty() => {
            return Err(bad(
                "on_failure.action",
                "continue needs an explicit on_failure.max_failed: how many of the whole selection may fail before the rollout halts anyway",
            ));
        }
        "continue" => FailureAction::Continue,
        other => {
            return Err(bad(
                "on_failure.action",
                format!("`{other}` is not an action: use halt, rollback or continue"),
            ));
        }
    };
    Ok((max_failed, action))
}

fn rollback(spec: Option<&pb::RollbackSpec>, max_parallel: u32) -> Result<(Vec<Percent>, u32), FieldError> {
    let default_rollback = pb::RollbackSpec::default();
    let rollback = spec.unwrap_or(&default_rollback);
    let waves = if rollback.waves.is_empty() {
        vec![Percent::FULL]
    } else {
        let mut waves = Vec::new();
        for (i, w) in rollback.waves.iter().enumerate() {
            let field = format!("rollback.waves[{i}]");
            let p = Percent::parse(w).map_err(|m| bad(&field, m))?;
            if p.basis_points() == 0 || waves.last().is_some_and(|prev| p <= *prev) {
                return Err(bad(
                    &field,
                    "rollback waves are cumulative and must strictly increase from above 0%",
                ));
            }
            waves.push(p);
        }
        if waves.len() > MAX_WAVES || waves.last() != Some(&Percent::FULL) {
            return Err(bad(
                "rollback.waves",
                format!("must end at 100% within {MAX_WAVES} waves"),
            ));
        }
        waves
    };
    let max_parallel = match rollback.max_parallel {
        // Four times the plan's, once a share is resolved (Plan::resolved).
        0 => (max_parallel.saturating_mul(4)).min(MAX_PARALLEL),
        n if n > MAX_PARALLEL => {
            return Err(bad(
                "rollback.max_parallel",
                format!("{n} is over the limit of {MAX_PARALLEL}"),
            ));
        }
        n => n,
    };
    Ok((waves, max_parallel))
}

fn progress_deadline(deadline: &str) -> Result<Duration, FieldError> {
    let deadline = match deadline {
        "" => Duration::from_secs(30 * 60),
        d => parse_duration(d).map_err(|m| bad("progress_deadline", m))?,
    };
    if deadline < Duration::from_secs(1) {
        return Err(bad("progress_deadline", "must be at least 1s (default 30m)"));
    }
    Ok(deadline)
}

fn min_healthy(floor: &str, bake: Duration) -> Result<Option<Percent>, FieldError> {
    let min_healthy = match floor {
        "" => None,
        m => Some(Percent::parse(m).map_err(|msg| bad("min_healthy", msg))?),
    };
    if min_healthy.is_some() && bake.is_zero() {
        return Err(bad(
            "min_healthy",
            "is checked at the end of each bake, and this plan has no bake: set bake (e.g. 1m) or drop min_healthy",
        ));
    }
    Ok(min_healthy)
}
