//! How rollouts look to a person (text) and to a script (`--output json`).

use serde_json::{Value, json};

use crate::proto::v1 as pb;

pub fn state_name(state: pb::RolloutState) -> &'static str {
    state.label()
}

pub fn wave_state_name(state: pb::WaveState) -> &'static str {
    state.label()
}

pub fn is_terminal(state: pb::RolloutState) -> bool {
    state.is_terminal()
}

/// `wave 3/6 (30%)`
pub fn wave_label(r: &pb::Rollout) -> String {
    match r.waves.get(r.current_wave as usize) {
        Some(w) => format!(
            "wave {}/{} ({})",
            w.index + 1,
            r.waves.len(),
            crate::summary::wave_name(w)
        ),
        None => "no waves".into(),
    }
}

/// One line: `exo-retry-fix #3 running wave 3/6 (30%): 1500/5000 hosts (30.0%), 0 failed`.
pub fn one_line(r: &pb::Rollout) -> String {
    let mut line = format!(
        "{} #{} {} {}: {}/{} hosts ({:.1}%), {} failed, {} in flight",
        r.name,
        r.id,
        state_name(r.state()),
        wave_label(r),
        r.hosts_succeeded,
        r.hosts_selected,
        r.percent_complete,
        r.hosts_failed,
        r.hosts_in_flight
    );
    if !r.halt_reason.is_empty() {
        line.push_str(&format!(" - {}", r.halt_reason));
    } else if !r.waiting.is_empty() {
        line.push_str(&format!(" - {}", r.waiting));
    }
    line
}

/// The detailed view of `rollout status NAME`.
pub fn detail(r: &pb::Rollout) -> String {
    let mut out = String::new();
    out.push_str(&format!("rollout    {} (id {})\n", r.name, r.id));
    out.push_str(&format!("change     {}\n", crate::summary::change(r)));
    if !r.description.is_empty() {
        out.push_str(&format!("about      {}\n", r.description));
    }
    out.push_str(&format!("state      {} at {}\n", state_name(r.state()), wave_label(r)));
    out.push_str(&format!(
        "deployed   {:.1}% of the selection: {} of {} hosts succeeded, {} failed, {} in flight, {} pending\n",
        r.percent_complete, r.hosts_succeeded, r.hosts_selected, r.hosts_failed, r.hosts_in_flight, r.hosts_pending
    ));
    out.push_str(&format!(
        "customers  {} of {} fully mitigated\n",
        r.customers_mitigated, r.customers_affected
    ));
    if r.hosts_unhealthy > 0 {
        out.push_str(&format!(
            "unhealthy  {} hosts applied fine but were unhealthy at a health gate\n",
            r.hosts_unhealthy
        ));
    }
    if r.retries > 0 {
        out.push_str(&format!("retries    {} (`rollout retry`)\n", r.retries));
    }
    if !r.halt_reason.is_empty() {
        out.push_str(&format!("reason     {}\n", r.halt_reason));
    }
    if !r.waiting.is_empty() {
        out.push_str(&format!("waiting    {}\n", r.waiting));
    }
    if !r.drill_clock.is_empty() {
        out.push_str(&format!("clock      {}\n", r.drill_clock));
    }
    if !r.limits.is_empty() {
        out.push_str(&format!("limited    {}\n", r.limits));
    }
    if let Some(g) = r
        .gate
        .as_ref()
        .filter(|_| r.state() == pb::RolloutState::AwaitingApproval)
    {
        out.push_str(&super::approve::gate(g));
        out.push_str(&format!("           approve it with `rollout approve {}`\n", r.name));
    }
    for g in &r.gates_closed {
        let who: Vec<&str> = g.approvals.iter().map(|a| a.principal.as_str()).collect();
        out.push_str(&format!(
            "gate       after {}: {} at {}{}\n",
            g.after,
            g.outcome,
            when(g.closed_at_unix_ms),
            if who.is_empty() {
                String::new()
            } else {
                format!(" (approved by {})", who.join(", "))
            }
        ));
    }
    out.push('\n');
    out.push_str(&stages(r));
    let rows = r.waves.iter().map(|w| {
        vec![
            (w.index + 1).to_string(),
            crate::summary::wave_name(w),
            w.target_hosts.to_string(),
            w.size.to_string(),
            w.succeeded.to_string(),
            w.failed.to_string(),
            w.in_flight.to_string(),
            w.pending.to_string(),
            wave_state_name(w.state()).to_string(),
        ]
    });
    out.push_str(&grid(
        &[
            "WAVE",
            "SHARE",
            "TARGET",
            "SIZE",
            "SUCCEEDED",
            "FAILED",
            "IN FLIGHT",
            "PENDING",
            "STATE",
        ],
        &[0, 1, 2, 3, 4, 5, 6, 7],
        rows,
    ));
    if !r.failures.is_empty() {
        out.push_str(&format!(
            "\nfailures by reason (`rollout hosts --rollout {} --failed` lists every host):\n",
            r.name
        ));
        out.push_str(&failure_groups(&r.failures));
    }
    if !r.measurements.is_empty() {
        out.push_str("\nanalysis (each check, wave by wave; the last measurement says why):\n");
        out.push_str(&measurements(&r.measurements));
    }
    out
}

/// The measurements of a rollout's analysis, one row per wave and check: how many,
/// how many failed or were inconclusive, and the last one.
pub fn measurements(all: &[pb::Measurement]) -> String {
    let mut rows: Vec<(u32, &str, [usize; 3], &pb::Measurement)> = Vec::new();
    for m in all {
        let i = match rows.iter().position(|(w, c, ..)| *w == m.wave && *c == m.check) {
            Some(i) => i,
            None => {
                rows.push((m.wave, &m.check, [0; 3], m));
                rows.len() - 1
            }
        };
        let row = &mut rows[i];
        row.2[0] += 1;
        match m.verdict.as_str() {
            "fail" => row.2[1] += 1,
            "inconclusive" => row.2[2] += 1,
            _ => {}
        }
        row.3 = m;
    }
    let rows = rows.into_iter().map(|(wave, check, [n, failed, unsure], last)| {
        vec![
            wave.to_string(),
            check.to_string(),
            n.to_string(),
            failed.to_string(),
            unsure.to_string(),
            format!("{}: {}", last.verdict, last.detail),
        ]
    });
    grid(
        &["WAVE", "CHECK", "MEASURED", "FAILED", "INCONCLUSIVE", "LAST"],
        &[0, 2, 3, 4],
        rows,
    )
}

/// Failures grouped by reason: how many hosts, which ones first, and why.
pub fn failure_groups(groups: &[pb::FailureGroup]) -> String {
    let rows = groups.iter().map(|g| {
        let more = g.hosts.saturating_sub(g.host_ids.len() as u64);
        let mut hosts = g.host_ids.join(", ");
        if more > 0 {
            hosts.push_str(&format!(" (+{more} more)"));
        }
        vec![g.hosts.to_string(), g.kind.clone(), g.reason.clone(), hosts]
    });
    grid(&["HOSTS", "KIND", "REASON", "FIRST HOSTS"], &[0], rows)
}

/// A table whose columns line up whatever their content (no borders, two spaces
/// between columns); columns listed in `right` are right-aligned (numbers).
pub fn grid(header: &[&str], right: &[usize], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(comfy_table::CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A page of per-host results (`rollout hosts --rollout NAME`).
pub fn host_results(hosts: &[pb::HostResult]) -> String {
    let rows = hosts.iter().map(|h| {
        let mut reason = h.reason.lines().next().unwrap_or("").to_string();
        if h.outcome_unknown {
            reason.push_str(" (outcome unknown)");
        }
        vec![
            h.host_id.clone(),
            if h.wave == 0 { "-".into() } else { h.wave.to_string() },
            h.state.clone(),
            h.attempt.to_string(),
            h.operation_id.clone(),
            when(h.started_at_unix_ms),
            when(h.finished_at_unix_ms),
            if h.previous_version.is_empty() && h.version.is_empty() {
                String::new()
            } else {
                format!("{} -> {}", h.previous_version, h.version)
            },
            reason,
        ]
    });
    grid(
        &[
            "HOST",
            "WAVE",
            "STATE",
            "ATTEMPT",
            "OPERATION",
            "STARTED",
            "ENDED",
            "VERSION",
            "REASON",
        ],
        &[1, 3],
        rows,
    )
}

/// A host result as a script reads it.
pub fn host_result_json(h: &pb::HostResult) -> Value {
    json!({
        "host_id": h.host_id,
        "wave": h.wave,
        "state": h.state,
        "operation_id": h.operation_id,
        "attempt": h.attempt,
        "started_at_unix_ms": h.started_at_unix_ms,
        "finished_at_unix_ms": h.finished_at_unix_ms,
        "previous_version": h.previous_version,
        "version": h.version,
        "reason": h.reason,
        "outcome_unknown": h.outcome_unknown,
        "unhealthy": h.unhealthy,
        "history": h.history.iter().map(|a| json!({
            "attempt": a.attempt,
            "operation_id": a.operation_id,
            "state": a.state,
            "reason": a.reason,
            "started_at_unix_ms": a.started_at_unix_ms,
            "finished_at_unix_ms": a.finished_at_unix_ms,
        })).collect::<Vec<_>>(),
    })
}

/// An instant in UTC, to the second ("-" for none).
pub fn when(ms: i64) -> String {
    if ms == 0 {
        "-".into()
    } else {
        crate::clock::format_instant(ms)
    }
}

/// The table of `rollout status`.
pub fn table(rollouts: &[pb::Rollout]) -> String {
    if rollouts.is_empty() {
        return "no rollouts yet; submit one with `rollout submit PLAN.yaml`\n".into();
    }
    let rows = rollouts.iter().map(|r| {
        vec![
            r.name.clone(),
            r.id.to_string(),
            state_name(r.state()).to_string(),
            wave_label(r),
            format!("{:.1}%", r.percent_complete),
            format!("{}/{}", r.hosts_succeeded, r.hosts_selected),
            r.hosts_failed.to_string(),
        ]
    });
    grid(
        &["NAME", "ID", "STATE", "WAVE", "DONE", "HOSTS", "FAILED"],
        &[1, 4, 5, 6],
        rows,
    )
}

pub fn json(r: &pb::Rollout) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "kind": r.kind,
        "version": r.version,
        "description": r.description,
        "state": state_name(r.state()),
        "current_wave": r.current_wave + 1,
        "waves": r.waves.iter().map(|w| json!({
            "wave": w.index + 1,
            "stage": w.stage,
            "percent": w.percent,
            "target_hosts": w.target_hosts,
            "size": w.size,
            "succeeded": w.succeeded,
            "failed": w.failed,
            "in_flight": w.in_flight,
            "pending": w.pending,
            "max_failed": w.max_failed,
            "state": wave_state_name(w.state()),
        })).collect::<Vec<_>>(),
        "stages": r.stages.iter().map(|s| json!({
            "name": s.name,
            "hosts": s.hosts,
            "succeeded": s.succeeded,
            "failed": s.failed,
            "first_wave": s.first_wave + 1,
            "waves": s.waves,
            "state": s.state,
        })).collect::<Vec<_>>(),
        "hosts_selected": r.hosts_selected,
        "hosts_succeeded": r.hosts_succeeded,
        "hosts_failed": r.hosts_failed,
        "hosts_in_flight": r.hosts_in_flight,
        "hosts_pending": r.hosts_pending,
        "percent_complete": r.percent_complete,
        "customers_affected": r.customers_affected,
        "customers_mitigated": r.customers_mitigated,
        "halt_reason": r.halt_reason,
        "hosts_unhealthy": r.hosts_unhealthy,
        "retries": r.retries,
        "failures": r.failures.iter().map(|g| json!({
            "reason": g.reason,
            "kind": g.kind,
            "hosts": g.hosts,
            "host_ids": g.host_ids,
        })).collect::<Vec<_>>(),
        "drill_clock": r.drill_clock,
        "limits": r.limits,
        "waiting": r.waiting,
        "emergency": r.emergency,
        "measurements": r.measurements.iter().map(|m| json!({
            "check": m.check,
            "wave": m.wave,
            "at_unix_ms": m.at_unix_ms,
            "value": if m.value.is_finite() { json!(m.value) } else { Value::Null },
            "baseline": m.baseline,
            "verdict": m.verdict,
            "detail": m.detail,
        })).collect::<Vec<_>>(),
        "summary": r.summary,
        "submitted_by": r.submitted_by,
        "gate": r.gate.as_ref().filter(|_| r.state() == pb::RolloutState::AwaitingApproval).map(super::approve::gate_json),
        "gates_closed": r.gates_closed.iter().map(super::approve::gate_json).collect::<Vec<_>>(),
        "created_at_unix_ms": r.created_at_unix_ms,
        "updated_at_unix_ms": r.updated_at_unix_ms,
        "finished_at_unix_ms": r.finished_at_unix_ms,
    })
}

/// The dry run's per-wave listing.
pub fn preview(r: &pb::Rollout, waves: &[pb::WavePreview]) -> String {
    let plan = r.plan.as_ref().and_then(|spec| crate::plan::Plan::from_spec(spec).ok());
    let mut out = format!(
        "dry run: `{}` would {} {} hosts in {} waves (nothing was started)\n",
        r.name,
        if r.kind == "fix" {
            format!("deploy {} to", r.version)
        } else {
            "roll back".to_string()
        },
        r.hosts_selected,
        waves.len()
    );
    if let Some(spec) = r.plan.as_ref().filter(|s| !s.max_parallel_share.is_empty()) {
        out.push_str(&format!(
            "max_parallel {} of the selection: {} hosts at once\n",
            spec.max_parallel_share, spec.max_parallel
        ));
    }
    if !r.limits.is_empty() {
        out.push_str(&format!("limited: {}\n", r.limits));
    }
    if let Some(p) = &plan {
        for (s, n) in p.stages.iter().zip(&r.stages) {
            out.push_str(&format!(
                "stage {}: {} hosts in {} waves{}\n",
                s.name,
                n.hosts,
                s.waves.len(),
                if n.hosts == 0 { " (none matched: skipped)" } else { "" }
            ));
        }
        if let Some(fd) = &p.fault_domain {
            out.push_str(&format!("fault domains: {}\n", fd.describe()));
        }
    }
    if let Some(w) = plan.as_ref().and_then(|p| p.windows) {
        out.push_str(&format!("windows: {}\n", w.describe()));
    }
    for w in waves {
        out.push_str(&wave_takes(w, usize::MAX, "", "    "));
        out.push_str(&spread(w, "    "));
        out.push_str(&expected(w, "    "));
        if let Some((_, gate)) = plan.as_ref().and_then(|p| p.gate_after(w.index)) {
            out.push_str(&format!("  then hold for approval: gate {}\n", gate.describe()));
        }
    }
    out
}

/// What a wave takes, as the dry run and a gate explain it: a line with its hosts (at
/// most `limit` named), then a line per customer, with its local time and tier (at most
/// `limit`), `indent` before each.
pub fn wave_takes(w: &pb::WavePreview, limit: usize, label: &str, indent: &str) -> String {
    let named = &w.host_ids[..w.host_ids.len().min(limit)];
    let more = |n: u64| if n > 0 { format!(" (+{n} more)") } else { String::new() };
    let mut out = format!(
        "{label}wave {} ({:>4}): +{} hosts, {} in total: {}{}\n",
        w.index + 1,
        w.percent,
        w.new_hosts,
        w.cumulative_hosts,
        named.join(", "),
        more(w.new_hosts.saturating_sub(named.len() as u64))
    );
    for c in w.customers.iter().take(limit) {
        out.push_str(&format!(
            "{indent}{} ({} {}): {} [{}]\n",
            c.customer,
            c.hosts,
            if c.hosts == 1 { "host" } else { "hosts" },
            c.why,
            c.tier
        ));
    }
    if w.customers.len() > limit {
        out.push_str(&format!(
            "{indent}(+{} more customers; `--output json` lists them)\n",
            w.customers.len() - limit
        ));
    }
    out
}

/// When a wave can start and is expected to end, with windows or a freeze in the
/// way; empty otherwise.
fn expected(w: &pb::WavePreview, indent: &str) -> String {
    let waits = match w.waiting_hosts {
        0 => String::new(),
        n => format!("; {n} hosts wait at its start: {}", w.waits),
    };
    match (w.starts_at_unix_ms, w.waiting_hosts) {
        (0, 0) => String::new(),
        (0, _) => format!("{indent}cannot start before the freeze is lifted{waits}\n"),
        (start, _) => format!(
            "{indent}starts {}, expected to end {} (one minute a host, max_parallel at once){waits}\n",
            crate::clock::format_instant(start),
            crate::clock::format_instant(w.ends_at_unix_ms)
        ),
    }
}

/// Where a wave's hosts are: per region, per fault domain (with its budget), and its
/// customers per business-hours tier; a line each, `indent` before.
fn spread(w: &pb::WavePreview, indent: &str) -> String {
    let list = |counts: &[pb::LabelCount], with_budget: bool| {
        counts
            .iter()
            .map(|c| match with_budget {
                true => format!("{} {} (at most {} at once)", c.value, c.count, c.budget),
                false => format!("{} {}", c.value, c.count),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    if !w.regions.is_empty() {
        out.push_str(&format!("{indent}regions: {}\n", list(&w.regions, false)));
    }
    if !w.domains.is_empty() {
        out.push_str(&format!("{indent}fault domains: {}\n", list(&w.domains, true)));
    }
    if !w.tiers.is_empty() {
        out.push_str(&format!("{indent}customers by tier now: {}\n", list(&w.tiers, false)));
    }
    out
}

/// A plan's stages as a row above the waves: `stages  canary done (12) > apac running
/// (120 of 200) > rest not-started (800)`; empty for a plan without stages.
fn stages(r: &pb::Rollout) -> String {
    if r.stages.is_empty() {
        return String::new();
    }
    let each: Vec<String> = r
        .stages
        .iter()
        .map(|s| match s.state.as_str() {
            "running" => format!("{} running ({} of {})", s.name, s.succeeded, s.hosts),
            state => format!("{} {state} ({})", s.name, s.hosts),
        })
        .collect();
    format!("stages     {}\n", each.join(" > "))
}
