//! Approval gates for people: the open gate as `rollout status`, `rollout watch`
//! and `rollout approve` show it (evidence, the next wave's impact, who approved,
//! who is still needed), and `rollout approve` itself, which sends the gate id it
//! showed, so nobody approves a view that changed meanwhile.

use std::process::ExitCode;

use serde_json::{Value, json};

use super::client::{connect, rollout_named};
use super::render::when;
use crate::proto::v1 as pb;
use crate::{Error, Result};

/// Hosts and customers of the next wave a terminal shows (JSON has every one kept).
const SHOWN: usize = 8;

/// The open gate in lines, for `status`, `watch` and `approve`.
pub fn gate(g: &pb::Gate) -> String {
    let mut out = format!(
        "gate       after {} (wave {}), gate id {}: {} of {} approvals, {} more needed ({} or above{})\n",
        g.after,
        g.wave,
        g.gate_id,
        g.approvals.len(),
        g.approvals_required,
        g.approvals_needed,
        g.role,
        if g.four_eyes { ", not the submitter" } else { "" }
    );
    out.push_str(&format!(
        "           opened {}; {}\n",
        when(g.opened_at_unix_ms),
        if g.deadline_unix_ms == 0 {
            "waits until approved or aborted".to_string()
        } else {
            format!("deadline {} (then {})", when(g.deadline_unix_ms), g.on_timeout)
        }
    ));
    for a in &g.approvals {
        out.push_str(&format!(
            "           approved by {} ({}) at {}{}\n",
            a.principal,
            a.role,
            when(a.at_unix_ms),
            if a.comment.is_empty() {
                String::new()
            } else {
                format!(": {}", crate::text::one_line(&a.comment))
            }
        ));
    }
    if let Some(e) = &g.evidence {
        out.push_str(&evidence(g.wave, e));
    }
    out
}

fn evidence(wave: u32, e: &pb::GateEvidence) -> String {
    let mut out = format!("evidence   {}\n", crate::summary::evidence(wave, e));
    for m in &e.measurements {
        out.push_str(&format!("           check `{}` {}: {}\n", m.check, m.verdict, m.detail));
    }
    if let Some(next) = &e.next_wave {
        out.push_str(&super::render::wave_takes(next, SHOWN, "next wave  ", "           "));
    }
    out
}

/// The gate as `--output json` shows it.
pub fn gate_json(g: &pb::Gate) -> Value {
    let e = g.evidence.clone().unwrap_or_default();
    let next = e.next_wave.unwrap_or_default();
    json!({
        "gate_id": g.gate_id,
        "after": g.after,
        "wave": g.wave,
        "opened_at_unix_ms": g.opened_at_unix_ms,
        "deadline_unix_ms": if g.deadline_unix_ms == 0 { Value::Null } else { json!(g.deadline_unix_ms) },
        "approvals_required": g.approvals_required,
        "approvals_needed": g.approvals_needed,
        "role": g.role,
        "four_eyes": g.four_eyes,
        "on_timeout": g.on_timeout,
        "approvals": g.approvals.iter().map(|a| json!({
            "principal": a.principal,
            "role": a.role,
            "at_unix_ms": a.at_unix_ms,
            "comment": a.comment,
        })).collect::<Vec<_>>(),
        "evidence": {
            "wave_size": e.wave_size,
            "hosts_succeeded": e.hosts_succeeded,
            "hosts_failed": e.hosts_failed,
            "hosts_unhealthy": e.hosts_unhealthy,
            "percent_complete": e.percent_complete,
            "verdicts": e.measurements.iter().map(|m| json!({
                "check": m.check,
                "verdict": m.verdict,
                "detail": m.detail,
            })).collect::<Vec<_>>(),
        },
        "next_wave": {
            "wave": next.index + 1,
            "percent": next.percent,
            "hosts": next.new_hosts,
            "cumulative_hosts": next.cumulative_hosts,
            "host_ids": next.host_ids,
            "customers": super::json::customers(&next.customers),
        },
        "outcome": g.outcome,
        "closed_at_unix_ms": if g.closed_at_unix_ms == 0 { Value::Null } else { json!(g.closed_at_unix_ms) },
    })
}

/// `rollout approve NAME`: fetches the open gate, shows it, asks on a terminal
/// (unless `yes`), and approves the gate id it showed.
pub async fn approve(
    server: &str,
    name: &str,
    comment: String,
    yes: bool,
    request_id: String,
    output: super::Output,
) -> Result<ExitCode> {
    let json = output == super::Output::Json;
    if json && !yes {
        return Err(Error::Usage(
            "with --output json nobody reads the gate before confirming: look at it with `rollout status NAME --output json` (its `gate`), then pass --yes".into(),
        ));
    }
    let mut client = connect(server).await?;
    let r = rollout_named(&mut client, name).await?;
    let Some(open) = r
        .gate
        .as_ref()
        .filter(|_| r.state() == pb::RolloutState::AwaitingApproval)
    else {
        return Err(Error::Usage(format!(
            "rollout `{}` (id {}) is {}, not awaiting approval: there is no gate to approve",
            r.name,
            r.id,
            r.state().label()
        )));
    };
    if !json {
        println!(
            "rollout    {} (id {}), submitted by {}",
            r.name,
            r.id,
            if r.submitted_by.is_empty() {
                "-"
            } else {
                &r.submitted_by
            }
        );
        print!("{}", gate(open));
    }
    if !yes
        && !super::ask::confirm(
            &format!("approve gate {} of `{}`?", open.gate_id, r.name),
            "look at the gate above and pass --yes to approve it",
        )?
    {
        println!("not approved");
        return Ok(ExitCode::FAILURE);
    }
    let answer = client
        .approve_rollout(pb::ApproveRolloutRequest {
            name: r.name.clone(),
            id: r.id,
            gate_id: open.gate_id.clone(),
            comment,
            request_id,
        })
        .await?
        .into_inner();
    if json {
        super::json::print(&super::json::approved(&answer));
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", answer.message);
    if let Some(r) = &answer.rollout {
        println!("{}", super::render::one_line(r));
    }
    Ok(ExitCode::SUCCESS)
}
