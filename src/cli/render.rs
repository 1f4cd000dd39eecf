//! How rollouts look to a person (text) and to a script (`--output json`).

use serde_json::{Value, json};

use crate::proto::v1 as pb;

pub fn state_name(state: pb::RolloutState) -> &'static str {
    match state {
        pb::RolloutState::Unspecified => "unknown",
        pb::RolloutState::Pending => "pending",
        pb::RolloutState::Running => "running",
        pb::RolloutState::Baking => "baking",
        pb::RolloutState::Paused => "paused",
        pb::RolloutState::Halted => "halted",
        pb::RolloutState::RollingBack => "rolling-back",
        pb::RolloutState::Succeeded => "succeeded",
        pb::RolloutState::Failed => "failed",
        pb::RolloutState::Aborted => "aborted",
    }
}

pub fn wave_state_name(state: pb::WaveState) -> &'static str {
    match state {
        pb::WaveState::Unspecified => "unknown",
        pb::WaveState::Pending => "pending",
        pb::WaveState::Running => "running",
        pb::WaveState::Baking => "baking",
        pb::WaveState::Done => "done",
        pb::WaveState::Halted => "halted",
    }
}

pub fn is_terminal(state: pb::RolloutState) -> bool {
    matches!(
        state,
        pb::RolloutState::Succeeded | pb::RolloutState::Failed | pb::RolloutState::Aborted
    )
}

/// `wave 3/6 (30%)`
pub fn wave_label(r: &pb::Rollout) -> String {
    match r.waves.get(r.current_wave as usize) {
        Some(w) => format!("wave {}/{} ({})", w.index + 1, r.waves.len(), w.percent),
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
    }
    line
}

/// The detailed view of `rollout status NAME`.
pub fn detail(r: &pb::Rollout) -> String {
    let mut out = String::new();
    out.push_str(&format!("rollout    {} (id {})\n", r.name, r.id));
    out.push_str(&format!("kind       {} {}\n", r.kind, r.version));
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
    if !r.halt_reason.is_empty() {
        out.push_str(&format!("reason     {}\n", r.halt_reason));
    }
    out.push_str("\nwave  share  target   size  succeeded  failed  in-flight  pending  state\n");
    for w in &r.waves {
        out.push_str(&format!(
            "{:>4}  {:>5}  {:>6}  {:>5}  {:>9}  {:>6}  {:>9}  {:>7}  {}\n",
            w.index + 1,
            w.percent,
            w.target_hosts,
            w.size,
            w.succeeded,
            w.failed,
            w.in_flight,
            w.pending,
            wave_state_name(w.state())
        ));
    }
    out
}

/// The table of `rollout status`.
pub fn table(rollouts: &[pb::Rollout]) -> String {
    if rollouts.is_empty() {
        return "no rollouts yet; submit one with `rollout submit PLAN.yaml`\n".into();
    }
    let mut out = format!(
        "{:<24} {:>5}  {:<10} {:<18} {:>7}  {:>15}\n",
        "NAME", "ID", "STATE", "WAVE", "DONE", "HOSTS"
    );
    for r in rollouts {
        out.push_str(&format!(
            "{:<24} {:>5}  {:<10} {:<18} {:>6.1}%  {:>15}\n",
            r.name,
            r.id,
            state_name(r.state()),
            wave_label(r),
            r.percent_complete,
            format!("{}/{}", r.hosts_succeeded, r.hosts_selected)
        ));
    }
    out
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
        "hosts_selected": r.hosts_selected,
        "hosts_succeeded": r.hosts_succeeded,
        "hosts_failed": r.hosts_failed,
        "hosts_in_flight": r.hosts_in_flight,
        "hosts_pending": r.hosts_pending,
        "percent_complete": r.percent_complete,
        "customers_affected": r.customers_affected,
        "customers_mitigated": r.customers_mitigated,
        "halt_reason": r.halt_reason,
        "created_at_unix_ms": r.created_at_unix_ms,
        "updated_at_unix_ms": r.updated_at_unix_ms,
        "finished_at_unix_ms": r.finished_at_unix_ms,
    })
}

/// The dry run's per-wave listing.
pub fn preview(r: &pb::Rollout, waves: &[pb::WavePreview]) -> String {
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
    for w in waves {
        let more = w.new_hosts.saturating_sub(w.host_ids.len() as u64);
        let customers: Vec<String> = w
            .customers
            .iter()
            .map(|c| format!("    {} ({} hosts): {} [{}]", c.customer, c.hosts, c.why, c.tier))
            .collect();
        out.push_str(&format!(
            "wave {} ({:>4}): +{} hosts, {} in total: {}{}\n",
            w.index + 1,
            w.percent,
            w.new_hosts,
            w.cumulative_hosts,
            w.host_ids.join(", "),
            if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            }
        ));
        for line in customers {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}
