//! The `--output json` shapes of the answers that are not a rollout (whose shape is
//! [`super::render::json`]): a submission and its dry run, a restart job, an
//! approval, a freeze, a test notification, a plan check. Each is a contract (README,
//! "Output as JSON"): fields are added, never renamed or removed.

use serde_json::{Value, json};

use crate::proto::v1 as pb;

/// Prints `value` as one line of JSON.
pub fn print(value: &Value) {
    println!("{value}");
}

/// `rollout submit [--dry-run]`'s answer.
pub fn submitted(response: &pb::SubmitPlanResponse, dry_run: bool) -> Value {
    let rollout = response.rollout.clone().unwrap_or_default();
    json!({
        "dry_run": dry_run,
        "replayed": response.replayed,
        "rollout": super::render::json(&rollout),
        "preview": response.preview.iter().map(preview).collect::<Vec<_>>(),
        "conflicts": response.conflicts.iter().map(|c| json!({
            "holder": c.holder,
            "shared_hosts": c.shared_hosts,
        })).collect::<Vec<_>>(),
        "prices": prices(&response.prices),
    })
}

/// One wave of a dry run: its hosts, who they serve, when it would run.
fn preview(w: &pb::WavePreview) -> Value {
    let counts = |list: &[pb::LabelCount]| {
        list.iter()
            .map(|c| json!({"value": c.value, "count": c.count, "budget": c.budget}))
            .collect::<Vec<_>>()
    };
    json!({
        "wave": w.index + 1,
        "percent": w.percent,
        "cumulative_hosts": w.cumulative_hosts,
        "new_hosts": w.new_hosts,
        "host_ids": w.host_ids,
        "customers": customers(&w.customers),
        "regions": counts(&w.regions),
        "domains": counts(&w.domains),
        "tiers": counts(&w.tiers),
        "starts_at_unix_ms": w.starts_at_unix_ms,
        "ends_at_unix_ms": w.ends_at_unix_ms,
        "waiting_hosts": w.waiting_hosts,
        "waits": w.waits,
    })
}

/// The customers a wave takes: each one's hosts in it, local time, tier and why.
pub fn customers(list: &[pb::CustomerSlot]) -> Value {
    Value::Array(
        list.iter()
            .map(|c| {
                json!({
                    "customer": c.customer,
                    "hosts": c.hosts,
                    "local_time": c.local_time,
                    "tier": c.tier,
                    "why": c.why,
                })
            })
            .collect(),
    )
}

/// What each restart order would cost customers, the chosen one marked.
fn prices(list: &[pb::OrderPrice]) -> Value {
    Value::Array(
        list.iter()
            .map(|p| {
                json!({
                    "order": p.order,
                    "working_minutes": p.working_minutes,
                    "chosen": p.chosen,
                    "per_minute": p.per_minute,
                })
            })
            .collect(),
    )
}

/// A restart job; its hosts in restart order when it was asked with them.
pub fn job(j: &pb::RestartJob) -> Value {
    json!({
        "id": j.id,
        "state": j.state().label(),
        "order": j.order,
        "max_parallel": j.max_parallel,
        "max_unavailable": j.max_unavailable,
        "hosts_total": j.hosts_total,
        "hosts_restarted": j.hosts_restarted,
        "hosts_failed": j.hosts_failed,
        "hosts_in_flight": j.hosts_in_flight,
        "hosts_pending": j.hosts_pending,
        "skipped": j.skipped.iter().map(|s| json!({"host_id": s.host_id, "reason": s.reason})).collect::<Vec<_>>(),
        "tiers": j.tiers.iter().map(|t| json!({"tier": t.tier, "total": t.total, "restarted": t.restarted})).collect::<Vec<_>>(),
        "batches": j.batches,
        "hosts": j.hosts.iter().map(|h| json!({
            "position": h.position,
            "host_id": h.host_id,
            "state": restart_host_state(h.state()),
            "batch": h.batch,
            "customer": h.customer,
            "local_time": h.local_time,
            "tier": h.tier,
            "why": h.why,
            "was_healthy": h.was_healthy,
            "detail": h.detail,
        })).collect::<Vec<_>>(),
        "reason": j.reason,
        "waiting": j.waiting,
        "summary": j.summary,
        "drill_clock": j.drill_clock,
        "prices": prices(&j.prices),
        "emergency": j.emergency,
        "submitted_by": j.submitted_by,
        "emergency_approval": j.emergency_approval.as_ref().map(approval),
        "request_id": j.request_id,
        "created_at_unix_ms": j.created_at_unix_ms,
        "updated_at_unix_ms": j.updated_at_unix_ms,
        "finished_at_unix_ms": j.finished_at_unix_ms,
    })
}

fn restart_host_state(s: pb::RestartHostState) -> &'static str {
    match s {
        pb::RestartHostState::Unspecified => "unknown",
        pb::RestartHostState::Pending => "pending",
        pb::RestartHostState::Dispatched => "dispatched",
        pb::RestartHostState::Restarted => "restarted",
        pb::RestartHostState::Failed => "failed",
    }
}

/// Who approved, when and why.
pub fn approval(a: &pb::Approval) -> Value {
    json!({
        "principal": a.principal,
        "role": a.role,
        "at_unix_ms": a.at_unix_ms,
        "comment": a.comment,
        "request_id": a.request_id,
    })
}

/// `rollout approve`'s answer.
pub fn approved(a: &pb::ApproveRolloutResponse) -> Value {
    json!({
        "counted": a.counted,
        "replayed": a.replayed,
        "message": a.message,
        "rollout": a.rollout.as_ref().map(super::render::json),
    })
}

/// A freeze, set by a person or a window of the freeze calendar.
pub fn freeze(f: &pb::Freeze) -> Value {
    json!({
        "id": f.id,
        "source": f.source,
        "reason": f.reason,
        "set_by": f.set_by,
        "selector": crate::freeze::selector(f),
        "started_at_unix_ms": f.started_at_unix_ms,
        "until_unix_ms": f.until_unix_ms,
        "ended_at_unix_ms": f.ended_at_unix_ms,
        "ended_by": f.ended_by,
        "calendar_uid": f.calendar_uid,
        "request_id": f.request_id,
    })
}

/// `rollout notify test`'s answer.
pub fn notify_test(a: &pb::NotifyTestResponse) -> Value {
    json!({
        "sink": a.sink,
        "delivered": a.delivered,
        "answer": a.answer,
        "id": a.id,
        "took_ms": a.took_ms,
    })
}
