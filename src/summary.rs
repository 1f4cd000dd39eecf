//! The status text: one plain-English paragraph per rollout and per restart job, as
//! the seed incident's operators wrote them by hand ("the fix has been deployed to
//! about 60% of the affected environment..."). Deterministic: made from a snapshot
//! alone, times in UTC, so every event's message, `rollout status --summary`,
//! GetRollout's `summary` and the dashboard's headline say the same words.

use crate::proto::v1 as pb;

/// Reason groups a paragraph quotes at most.
const REASONS: usize = 3;

/// The paragraph for a rollout.
pub fn rollout(r: &pb::Rollout) -> String {
    let mut out = vec![how_far(r)];
    out.extend(next(r));
    out.extend(waiting(&r.waiting));
    out.extend(failures(r));
    out.extend(drill(&r.drill_clock));
    out.join(" ")
}

/// What the rollout is and how far it got.
fn how_far(r: &pb::Rollout) -> String {
    let what = match r.kind.as_str() {
        "fix" => format!("The fix (build {})", r.version),
        "rollback" => format!("The {}", rollback(r)),
        _ => "The restart".to_string(),
    };
    let percent = whole_percent(r.hosts_succeeded, r.hosts_selected);
    if r.state() == pb::RolloutState::Pending {
        return format!(
            "{what} has not started yet: {} hosts of {} customers are selected.",
            count(r.hosts_selected),
            count(r.customers_affected)
        );
    }
    let done = match r.kind.as_str() {
        "fix" => "has been deployed to",
        "rollback" => "has reached",
        _ => "has been done on",
    };
    format!(
        "{what} {done} {}{percent}% of the affected environment ({} of {} hosts; {} of {} customers fully mitigated).",
        stage(r).map(|s| format!("{s}; ")).unwrap_or_default(),
        count(r.hosts_succeeded),
        count(r.hosts_selected),
        count(r.customers_mitigated),
        count(r.customers_affected)
    )
}

/// What a rollback does, as a noun: "rollback to build 15.20.1", "rollback of build
/// 15.20.8207.12 to the previous version" (an automatic one), "rollback to each
/// host's previous version".
pub fn rollback(r: &pb::Rollout) -> String {
    match (r.version.as_str(), r.rolls_back.as_str()) {
        ("", "") => "rollback to each host's previous version".to_string(),
        ("", from) => format!("rollback of build {from} to the previous version"),
        (to, _) => format!("rollback to build {to}"),
    }
}

/// The change a rollout makes, as its headline says it: "fix to build X", a
/// rollback as [`rollback`] says it, "restart".
pub fn change(r: &pb::Rollout) -> String {
    match r.kind.as_str() {
        "fix" => format!("fix to build {}", r.version),
        "rollback" => rollback(r),
        other => other.to_string(),
    }
}

/// The stage the rollout is in and how far it got there, for a plan with stages:
/// "stage apac: 50% (100 of 200 hosts)".
pub fn stage(r: &pb::Rollout) -> Option<String> {
    let current = r.current_wave;
    let s = r
        .stages
        .iter()
        .find(|s| s.first_wave <= current && current < s.first_wave + s.waves)?;
    Some(format!(
        "stage {}: {}% ({} of {} hosts)",
        s.name,
        whole_percent(s.succeeded, s.hosts),
        count(s.succeeded),
        count(s.hosts)
    ))
}

/// A wave as people name it: `30%`, or `apac/50%` in a plan with stages.
pub fn wave_name(w: &pb::Wave) -> String {
    match w.stage.as_str() {
        "" => w.percent.clone(),
        stage => format!("{stage}/{}", w.percent),
    }
}

/// What happens next, and when.
fn next(r: &pb::Rollout) -> Option<String> {
    let waves = r.waves.len();
    let current = r.current_wave as usize;
    let next_wave = r.waves.get(current + 1).map(wave_name);
    let bake = r.plan.as_ref().map(|p| p.bake.as_str()).unwrap_or_default();
    Some(match r.state() {
        pb::RolloutState::Unspecified | pb::RolloutState::Pending => return None,
        pb::RolloutState::Running | pb::RolloutState::RollingBack => {
            let wave = r.waves.get(current);
            format!(
                "Wave {} of {waves} ({}) is running: {} hosts in flight, {} waiting.",
                current + 1,
                wave.map(wave_name).unwrap_or_default(),
                count(r.hosts_in_flight),
                count(wave.map_or(0, |w| w.pending))
            )
        }
        pb::RolloutState::Baking => match next_wave {
            Some(p) => format!(
                "The next wave ({p}) starts after the {bake} bake, at about {}.",
                clock(r.bake_until_unix_ms)
            ),
            None => format!(
                "The last wave bakes until about {}; then the rollout ends.",
                clock(r.bake_until_unix_ms)
            ),
        },
        pb::RolloutState::AwaitingApproval => match &r.gate {
            Some(g) => gate(g, &r.submitted_by),
            None => "It waits for approval before the next wave.".to_string(),
        },
        pb::RolloutState::Paused => format!(
            "It is paused at wave {} of {waves}; nothing more is sent until it is resumed.",
            current + 1
        ),
        pb::RolloutState::Halted => format!("It halted: {}.", trim(&r.halt_reason)),
        pb::RolloutState::Succeeded => "Every selected host has it.".to_string(),
        pb::RolloutState::CompletedWithFailures => format!(
            "Every wave ran, but {} hosts failed; `rollout retry {}` re-runs them.",
            count(r.hosts_failed),
            r.name
        ),
        pb::RolloutState::Failed => format!("It failed: {}.", trim(&r.halt_reason)),
        pb::RolloutState::Aborted => format!("It was aborted: {}.", trim(&r.halt_reason)),
    })
}

/// An open gate: what it waits for, who approved, the deadline.
fn gate(g: &pb::Gate, submitter: &str) -> String {
    let next = g
        .evidence
        .as_ref()
        .and_then(|e| e.next_wave.as_ref())
        .map(|w| format!(" ({}, {} more hosts)", w.percent, count(w.new_hosts)))
        .unwrap_or_default();
    let which = if g.index == crate::plan::EMERGENCY_GATE {
        "its first wave, as an emergency plan that passes freezes once approved"
    } else {
        "the next wave"
    };
    let mut text = format!(
        "It waits for approval before {which}{next}: {} more {} needed, {} of {} so far ({} or above{}).",
        g.approvals_needed,
        if g.approvals_needed == 1 {
            "approval"
        } else {
            "approvals"
        },
        g.approvals.len(),
        g.approvals_required,
        g.role,
        if g.four_eyes && !submitter.is_empty() {
            format!(", not the submitter {submitter}")
        } else {
            String::new()
        }
    );
    if !g.approvals.is_empty() {
        let who: Vec<&str> = g.approvals.iter().map(|a| a.principal.as_str()).collect();
        text.push_str(&format!(" Approved so far by {}.", who.join(", ")));
    }
    if g.deadline_unix_ms > 0 {
        text.push_str(&format!(
            " The gate times out at {} (then {}).",
            clock(g.deadline_unix_ms),
            g.on_timeout
        ));
    }
    text
}

/// What failed and why: the top reasons with their counts.
fn failures(r: &pb::Rollout) -> Option<String> {
    let failed: Vec<&pb::FailureGroup> = r.failures.iter().filter(|g| g.kind != "unhealthy").collect();
    let unhealthy: Vec<&pb::FailureGroup> = r.failures.iter().filter(|g| g.kind == "unhealthy").collect();
    let mut out = Vec::new();
    if r.hosts_failed > 0 {
        out.push(format!(
            "{} {} failed{}.",
            count(r.hosts_failed),
            hosts(r.hosts_failed),
            reasons(&failed)
        ));
    }
    if r.hosts_unhealthy > 0 {
        out.push(format!(
            "{} {} applied it but were unhealthy after a bake{}.",
            count(r.hosts_unhealthy),
            hosts(r.hosts_unhealthy),
            reasons(&unhealthy)
        ));
    }
    (!out.is_empty()).then(|| out.join(" "))
}

fn reasons(groups: &[&pb::FailureGroup]) -> String {
    if groups.is_empty() {
        return String::new();
    }
    let mut shown: Vec<String> = groups
        .iter()
        .take(REASONS)
        .map(|g| format!("{} ({})", trim(&g.reason), count(g.hosts)))
        .collect();
    if groups.len() > REASONS {
        shown.push(format!("and {} other reasons", groups.len() - REASONS));
    }
    format!(": {}", shown.join(", "))
}

/// The paragraph for a restart job.
pub fn restart_job(j: &pb::RestartJob) -> String {
    let done = j.hosts_restarted + j.hosts_failed;
    let mut out = vec![match j.state() {
        pb::RestartJobState::Running | pb::RestartJobState::Unspecified => format!(
            "Targeted restarts (job {}) are in progress: {} of {} hosts restarted ({}%), {} in flight, {} waiting, customers in their working day first.",
            j.id,
            count(j.hosts_restarted),
            count(j.hosts_total),
            whole_percent(j.hosts_restarted, j.hosts_total),
            count(j.hosts_in_flight),
            count(j.hosts_pending)
        ),
        state => format!(
            "Targeted restarts (job {}) {}: {} of {} hosts restarted ({}%).",
            j.id,
            match state {
                pb::RestartJobState::Succeeded => "are done",
                pb::RestartJobState::CompletedWithFailures => "are done, with failures",
                pb::RestartJobState::Failed => "failed",
                _ => "were cancelled",
            },
            count(j.hosts_restarted),
            count(j.hosts_total),
            whole_percent(j.hosts_restarted, j.hosts_total)
        ),
    }];
    if !j.tiers.is_empty() {
        let tiers: Vec<String> = j
            .tiers
            .iter()
            .map(|t| format!("{} {} of {}", t.tier, count(t.restarted), count(t.total)))
            .collect();
        out.push(format!("By business hours: {}.", tiers.join(", ")));
    }
    if j.hosts_failed > 0 {
        out.push(format!(
            "{} of the {} done failed to restart.",
            count(j.hosts_failed),
            count(done)
        ));
    }
    if !j.skipped.is_empty() {
        out.push(format!(
            "{} hosts were left alone (see `rollout restart` for why).",
            count(j.skipped.len() as u64)
        ));
    }
    if !j.reason.is_empty() {
        out.push(format!("{}.", trim(&j.reason)));
    }
    out.extend(waiting(&j.waiting));
    out.extend(drill(&j.drill_clock));
    out.join(" ")
}

/// Why hosts wait (a freeze, a customer's working day): "Now 3 hosts wait: ...".
fn waiting(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| format!("Now {}.", trim(text)))
}

/// `freeze.started`'s paragraph: who stopped the line, for which hosts, why, until
/// when, and what it holds.
pub fn freeze_started(f: &pb::Freeze, running: &[String]) -> String {
    let selector = crate::freeze::selector(f);
    let mut out = vec![format!(
        "Freeze {} started: {} stopped the line for {} ({}), {}.",
        f.id,
        f.set_by,
        crate::freeze::scope(&selector),
        trim(&f.reason),
        match f.until_unix_ms {
            0 => "until someone unfreezes it".to_string(),
            ms => format!("until {}", clock(ms)),
        }
    )];
    out.push(
        "No new operation starts on those hosts for any rollout or restart job but an approved emergency; operations in flight finish."
            .to_string(),
    );
    out.push(not_finished(running, "They wait"));
    out.push(format!("`rollout unfreeze {}` ends it.", f.id));
    out.join(" ")
}

/// `freeze.ended`'s paragraph.
pub fn freeze_ended(f: &pb::Freeze, running: &[String]) -> String {
    let selector = crate::freeze::selector(f);
    let lasted = std::time::Duration::from_millis((f.ended_at_unix_ms - f.started_at_unix_ms).max(0) as u64);
    [
        format!(
            "Freeze {} ended ({}) after {}: {} may take new operations again.",
            f.id,
            trim(&f.ended_by),
            crate::text::format_duration(lasted),
            crate::freeze::scope(&selector)
        ),
        not_finished(running, "They go on"),
    ]
    .join(" ")
}

/// "Rollouts not finished: a, b. {then}." or that there are none.
fn not_finished(running: &[String], then: &str) -> String {
    if running.is_empty() {
        return "No rollout is unfinished.".to_string();
    }
    let shown: Vec<&str> = running.iter().take(5).map(String::as_str).collect();
    let more = running.len().saturating_sub(shown.len());
    format!(
        "Rollouts not finished: {}{}. {then} where they cover those hosts.",
        shown.join(", "),
        if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        }
    )
}

/// The drill clock's own sentence ("Drill clock in force: ..."), when one is.
fn drill(text: &str) -> Option<String> {
    let text = trim(text);
    let mut chars = text.chars();
    let first = chars.next()?;
    Some(format!("{}{}.", first.to_uppercase(), chars.as_str()))
}

/// Floor of part/whole in percent: "60%" is said only once 60% is done.
fn whole_percent(part: u64, whole: u64) -> u64 {
    (part * 100).checked_div(whole).unwrap_or(0)
}

/// A gate's evidence in one line, as the CLI, the dashboard and Slack show it: the
/// wave it follows and how that wave went, and the whole rollout then.
pub fn evidence(wave: u32, e: &pb::GateEvidence) -> String {
    // Only an emergency plan's gate comes before wave 1.
    if wave == 0 {
        return format!(
            "before the first wave (an emergency plan): {} hosts selected, nothing sent yet",
            count(e.hosts_selected)
        );
    }
    format!(
        "wave {wave}: {} of {} hosts succeeded, {} failed, {} unhealthy after the bake; {:.1}% of {} selected hosts done",
        e.hosts_succeeded, e.wave_size, e.hosts_failed, e.hosts_unhealthy, e.percent_complete, e.hosts_selected
    )
}

/// 6012 -> "6,012".
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn hosts(n: u64) -> &'static str {
    if n == 1 { "host" } else { "hosts" }
}

/// "17:45 UTC".
fn clock(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(
        |_| "an unknown time".to_string(),
        |t| t.strftime("%H:%M UTC").to_string(),
    )
}

/// A sentence inside ours: on one line, without its own final stop.
fn trim(text: &str) -> String {
    crate::text::one_line(text).trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests;
