//! What a notification says: the CloudEvent `data` of a rollout or restart job as of
//! the change it reports. Which notifications a transition makes is the step
//! function's decision (`engine::state`); the outbox writes them in the
//! transition's own transaction.

use serde_json::{Value, json};

use crate::event_type::EventType;
use crate::proto::v1 as pb;

/// Failure groups an event's data carries at most.
const FAILURES: usize = 5;

/// The first notification of a new rollout, written with its record (whose count
/// it starts): `rollout.submitted`, with the selection as planned.
pub(crate) fn submitted(
    record: &mut pb::RolloutRecord,
    plan: &crate::plan::Plan,
    hosts: &[&str],
    inventory: &crate::inventory::Inventory,
) -> pb::Notification {
    let customers: std::collections::HashSet<&str> = hosts
        .iter()
        .filter_map(|h| inventory.host(h))
        .flat_map(|h| h.customers.iter().map(|c| c.as_ref()))
        .collect();
    let sizes = match record.stage_hosts.is_empty() {
        true => vec![hosts.len() as u64],
        false => record.stage_hosts.clone(),
    };
    let mut shown = pb::Rollout {
        id: record.id,
        name: record.name.clone(),
        kind: plan.kind.as_str().to_string(),
        description: plan.description.clone(),
        version: plan.version.clone().unwrap_or_default(),
        state: pb::RolloutState::Pending as i32,
        waves: plan
            .waves
            .iter()
            .enumerate()
            .map(|(k, p)| pb::Wave {
                index: k as u32,
                percent: p.to_string(),
                target_hosts: plan.wave_target(k, &sizes),
                stage: plan
                    .stages
                    .get(plan.stage_of_wave(k))
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                ..Default::default()
            })
            .collect(),
        hosts_selected: hosts.len() as u64,
        hosts_pending: hosts.len() as u64,
        customers_affected: customers.len() as u64,
        created_at_unix_ms: record.created_at_unix_ms,
        submitted_by: record.submitted_by.clone(),
        rolls_back: record.rolls_back.clone(),
        ..Default::default()
    };
    shown.summary = crate::summary::rollout(&shown);
    record.notices = 1;
    pb::Notification {
        id: format!("rollout-{}-1", record.id),
        r#type: EventType::Submitted.to_string(),
        subject: record.name.clone(),
        rollout_id: record.id,
        job_id: 0,
        seq: 1,
        at_unix_ms: record.created_at_unix_ms,
        data_json: data(&shown, 1).to_string(),
        controller: String::new(),
        freeze_id: 0,
    }
}

/// The CloudEvent's `data` for rollout `r` (a snapshot as of the change) as the
/// `seq`th notification: the contract's fields, the gate when one is open or was
/// just approved, and the status text as `message`. The controller that acted is
/// added when it is delivered.
pub(crate) fn data(r: &pb::Rollout, seq: u64) -> Value {
    let wave = r.waves.get(r.current_wave as usize);
    let gate = r
        .gate
        .as_ref()
        .or(r.gates_closed.last().filter(|g| g.outcome == "approved"));
    json!({
        "rollout": r.name,
        "kind": r.kind,
        "seq": seq,
        "state": r.state().label(),
        "wave": r.current_wave + 1,
        "wave_percent": wave.map(|w| w.percent.as_str()).unwrap_or_default(),
        "stage": wave.map(|w| w.stage.as_str()).unwrap_or_default(),
        "percent_complete": r.percent_complete,
        "hosts_succeeded": r.hosts_succeeded,
        "hosts_failed": r.hosts_failed,
        "hosts_selected": r.hosts_selected,
        "customers_mitigated": r.customers_mitigated,
        "customers_affected": r.customers_affected,
        "failures": r.failures.iter().take(FAILURES).map(|g| json!({
            "reason": g.reason,
            "count": g.hosts,
            "hosts": g.host_ids,
        })).collect::<Vec<_>>(),
        "gate": gate.map(|g| json!({
            "gate_id": g.gate_id,
            "after": g.after,
            "approvals_needed": g.approvals_needed,
            "approvals_required": g.approvals_required,
            "approved_by": g.approvals.iter().map(|a| a.principal.as_str()).collect::<Vec<_>>(),
            "deadline_unix_ms": g.deadline_unix_ms,
            "outcome": g.outcome,
        })),
        "message": r.summary,
    })
}

/// A restart job's notification: `restart.started` (seq 1, written with the job)
/// or `restart.completed` (seq 2, written with its outcome), its data the job as of
/// then with the status text as `message`.
pub(crate) fn job(j: &pb::RestartJob, kind: EventType, at_ms: i64) -> pb::Notification {
    let seq = if kind == EventType::RestartStarted { 1 } else { 2 };
    let data = json!({
        "job": j.id,
        "kind": "restart",
        "seq": seq,
        "state": j.state().label(),
        "outcome": (seq == 2).then(|| j.state().label()),
        "order": j.order,
        "hosts_total": j.hosts_total,
        "hosts_restarted": j.hosts_restarted,
        "hosts_failed": j.hosts_failed,
        "hosts_in_flight": j.hosts_in_flight,
        "hosts_pending": j.hosts_pending,
        "hosts_skipped": j.skipped.len(),
        "tiers": j.tiers.iter().map(|t| json!({
            "tier": t.tier,
            "total": t.total,
            "restarted": t.restarted,
        })).collect::<Vec<_>>(),
        "reason": j.reason,
        "message": j.summary,
    });
    pb::Notification {
        id: format!("restart-{}-{seq}", j.id),
        r#type: kind.to_string(),
        subject: j.id.to_string(),
        rollout_id: 0,
        job_id: j.id,
        seq,
        at_unix_ms: at_ms,
        data_json: data.to_string(),
        controller: String::new(),
        freeze_id: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data carries the contract's fields, the gate just approved, and the
    /// status text as its message.
    #[test]
    fn the_data_has_the_contract_fields() {
        let r = pb::Rollout {
            name: "exo-retry-fix".into(),
            kind: "fix".into(),
            state: pb::RolloutState::Running as i32,
            current_wave: 1,
            waves: vec![
                pb::Wave {
                    percent: "10%".into(),
                    ..Default::default()
                },
                pb::Wave {
                    percent: "100%".into(),
                    ..Default::default()
                },
            ],
            hosts_selected: 200,
            hosts_succeeded: 20,
            gates_closed: vec![pb::Gate {
                gate_id: "0123456789ab".into(),
                after: "10%".into(),
                outcome: "approved".into(),
                approvals: vec![pb::Approval {
                    principal: "bob".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            summary: "The fix ...".into(),
            ..Default::default()
        };
        let d = data(&r, 4);
        for field in [
            "rollout",
            "kind",
            "seq",
            "state",
            "wave",
            "wave_percent",
            "percent_complete",
            "hosts_succeeded",
            "hosts_failed",
            "hosts_selected",
            "customers_mitigated",
            "customers_affected",
            "failures",
            "gate",
            "message",
        ] {
            assert!(d.get(field).is_some(), "{field} in {d}");
        }
        assert_eq!((d["seq"].as_u64(), d["wave"].as_u64()), (Some(4), Some(2)));
        assert_eq!(d["wave_percent"], "100%");
        assert_eq!(d["state"], "running");
        assert_eq!(d["gate"]["approved_by"][0], "bob");
        assert_eq!(d["message"], "The fix ...");
    }
}
