//! Approval gates, as pure rules: how a gate opens (its id, deadline and
//! evidence), whether an approval counts (role, four-eyes, a stale view, the same
//! principal twice), and the reason a gate that timed out gives. No I/O, no clock:
//! the caller passes the time, the store writes what these return.

use prost::Message;
use sha2::{Digest, Sha256};

use crate::plan::Gate;
use crate::proto::v1 as pb;
use crate::text::format_duration;

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The caller's role is below the gate's (PermissionDenied).
    Role(String),
    /// Four-eyes, a stale gate id, or no gate open (FailedPrecondition).
    Precondition(String),
}

/// What an approval that was not refused did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Recorded; `quorum` when it was the last one needed.
    Yes { quorum: bool },
    /// This principal had approved this gate already: it counts once.
    Again,
}

/// A gate opening after wave `gate.wave`: `opened` is how many gates this rollout
/// opened before (so a gate opened again has a new id), `evidence` what the
/// approvers will look at.
pub(crate) fn open(
    rollout_id: u64,
    index: usize,
    gate: &Gate,
    opened: u32,
    now_ms: i64,
    evidence: pb::GateEvidence,
) -> pb::Gate {
    let mut open = pb::Gate {
        gate_id: String::new(),
        index: index as u32,
        wave: gate.wave + 1,
        after: gate.after.to_string(),
        opened_at_unix_ms: now_ms,
        deadline_unix_ms: gate.timeout.map_or(0, |t| now_ms + t.as_millis() as i64),
        approvals_required: gate.approvals,
        approvals_needed: gate.approvals,
        role: gate.role.as_str().to_string(),
        four_eyes: gate.four_eyes,
        on_timeout: gate.on_timeout.as_str().to_string(),
        approvals: Vec::new(),
        evidence: Some(evidence),
        outcome: String::new(),
        closed_at_unix_ms: 0,
    };
    open.gate_id = gate_id(rollout_id, opened, &open);
    open
}

/// A short digest of the rollout, the opening and everything the gate shows (not
/// who approved it): it changes whenever the evidence behind the gate does.
pub(crate) fn gate_id(rollout_id: u64, opened: u32, gate: &pb::Gate) -> String {
    let shown = pb::Gate {
        gate_id: String::new(),
        approvals: Vec::new(),
        approvals_needed: 0,
        ..gate.clone()
    };
    let mut h = Sha256::new();
    h.update(rollout_id.to_be_bytes());
    h.update(opened.to_be_bytes());
    h.update(shown.encode_to_vec());
    let digest = h.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The open gate with the analysis' verdicts of its wave so far: a new measurement
/// taken while it waits is new evidence, so the gate id changes (approvals already
/// given stand; an approver who looked before must look again).
pub(crate) fn remeasured(open: &mut pb::Gate, rollout_id: u64, opened: u32, measurements: Vec<pb::Measurement>) {
    if let Some(evidence) = open.evidence.as_mut() {
        evidence.measurements = measurements;
    }
    open.gate_id = gate_id(rollout_id, opened, open);
}

/// Judges an approval of `open` by `principal` with `role`, who looked at
/// `gate_id`, of a rollout `submitter` submitted.
pub(crate) fn judge(
    open: &pb::Gate,
    gate: &Gate,
    submitter: &str,
    principal: &str,
    role: &str,
    gate_id: &str,
) -> Result<Counted, Refused> {
    if !gate.role.admits(role) {
        return Err(Refused::Role(format!(
            "the gate after {} needs the role {} or above to approve; {principal} is {role}",
            open.after,
            gate.role.as_str()
        )));
    }
    if gate_id.is_empty() {
        return Err(Refused::Precondition(format!(
            "name the gate you looked at: the open gate is {} (`rollout approve` shows it and sends it)",
            open.gate_id
        )));
    }
    if gate_id != open.gate_id {
        return Err(Refused::Precondition(format!(
            "the gate changed since you looked: look again (you saw gate {gate_id}; the open gate is {})",
            open.gate_id
        )));
    }
    if gate.four_eyes && principal == submitter {
        return Err(Refused::Precondition(format!(
            "four-eyes: {submitter} submitted this rollout; another {} must approve",
            gate.role.as_str()
        )));
    }
    if open.approvals.iter().any(|a| a.principal == principal) {
        return Ok(Counted::Again);
    }
    Ok(Counted::Yes {
        quorum: open.approvals_needed <= 1,
    })
}

/// Adds a counted approval to the open gate.
pub(crate) fn record(open: &mut pb::Gate, approval: pb::Approval) {
    open.approvals.push(approval);
    open.approvals_needed = open.approvals_needed.saturating_sub(1);
}

/// What an approval did, in a sentence for the approver.
pub(crate) fn said(open: &pb::Gate, counted: &Counted, principal: &str) -> String {
    match counted {
        Counted::Again => format!(
            "{principal} had approved this gate already: an approval counts once per principal ({} of {}; {} more needed)",
            open.approvals.len(),
            open.approvals_required,
            open.approvals_needed
        ),
        Counted::Yes { quorum: true } => format!(
            "approval {} of {} recorded: the gate after {} is approved and wave {} starts now",
            open.approvals.len(),
            open.approvals_required,
            open.after,
            open.wave + 1
        ),
        Counted::Yes { quorum: false } => format!(
            "approval {} of {} recorded; {} more needed",
            open.approvals.len(),
            open.approvals_required,
            open.approvals_needed
        ),
    }
}

/// Why a gate that timed out stopped the rollout: the gate, its wait and the
/// approvals it had.
pub(crate) fn timed_out(open: &pb::Gate, now_ms: i64) -> String {
    let waited = std::time::Duration::from_millis((now_ms - open.opened_at_unix_ms).max(0) as u64 / 1000 * 1000);
    let who: Vec<&str> = open.approvals.iter().map(|a| a.principal.as_str()).collect();
    format!(
        "the gate after {} (wave {}) timed out after waiting {} with {} of {} approvals{} (on_timeout: {})",
        open.after,
        open.wave,
        format_duration(waited),
        open.approvals.len(),
        open.approvals_required,
        if who.is_empty() {
            String::new()
        } else {
            format!(" ({})", who.join(", "))
        },
        open.on_timeout
    )
}

/// Closes the open gate as `outcome` at `now_ms`, into the list of closed ones.
pub(crate) fn close(record: &mut pb::RolloutRecord, outcome: &str, now_ms: i64) {
    if let Some(mut gate) = record.gate.take() {
        gate.outcome = outcome.to_string();
        gate.closed_at_unix_ms = now_ms;
        record.gates_closed.push(gate);
    }
}

/// The approval with `request_id` on any gate of the rollout, open or closed.
pub(crate) fn answered<'a>(record: &'a pb::RolloutRecord, request_id: &str) -> Option<&'a pb::Approval> {
    if request_id.is_empty() {
        return None;
    }
    record
        .gate
        .iter()
        .chain(record.gates_closed.iter())
        .flat_map(|g| g.approvals.iter())
        .find(|a| a.request_id == request_id)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::{GateRole, OnTimeout};

    fn gate(approvals: u32, four_eyes: bool) -> Gate {
        Gate {
            wave: 1,
            after: "10%".into(),
            approvals,
            role: GateRole::Operator,
            four_eyes,
            timeout: Some(Duration::from_secs(7200)),
            on_timeout: OnTimeout::Halt,
        }
    }

    fn evidence(failed: u64) -> pb::GateEvidence {
        pb::GateEvidence {
            wave_size: 10,
            hosts_succeeded: 10 - failed,
            hosts_failed: failed,
            ..Default::default()
        }
    }

    fn approval(principal: &str) -> pb::Approval {
        pb::Approval {
            principal: principal.into(),
            role: "operator".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_gate_opens_with_its_deadline_and_an_id_bound_to_what_it_shows() {
        let g = gate(2, true);
        let a = open(7, 0, &g, 0, 1_000, evidence(0));
        assert_eq!(a.deadline_unix_ms, 1_000 + 7_200_000);
        assert_eq!((a.wave, a.after.as_str(), a.approvals_needed), (2, "10%", 2));
        assert_eq!(a.gate_id.len(), 12);
        // The same opening is the same gate; other evidence, or a later opening, is not.
        assert_eq!(open(7, 0, &g, 0, 1_000, evidence(0)).gate_id, a.gate_id);
        assert_ne!(open(7, 0, &g, 0, 1_000, evidence(1)).gate_id, a.gate_id);
        assert_ne!(open(7, 0, &g, 1, 1_000, evidence(0)).gate_id, a.gate_id);
        assert_ne!(open(8, 0, &g, 0, 1_000, evidence(0)).gate_id, a.gate_id);
        // Approvals do not change the id; a new measurement does.
        let mut b = a.clone();
        record(&mut b, approval("bob"));
        assert_eq!(gate_id(7, 0, &b), a.gate_id);
        let before = b.gate_id.clone();
        let m = pb::Measurement {
            check: "retry-ratio".into(),
            verdict: "pass".into(),
            ..Default::default()
        };
        remeasured(&mut b, 7, 0, vec![m]);
        assert_ne!(b.gate_id, before);
        assert_eq!(b.approvals.len(), 1, "approvals given stand");
        let forever = Gate { timeout: None, ..g };
        assert_eq!(open(7, 0, &forever, 0, 1_000, evidence(0)).deadline_unix_ms, 0);
    }

    #[test]
    fn a_quorum_of_distinct_principals_with_four_eyes() {
        let g = gate(2, true);
        let mut a = open(7, 0, &g, 0, 0, evidence(0));
        let id = a.gate_id.clone();
        let refused = judge(&a, &g, "alice", "alice", "operator", &id).unwrap_err();
        assert_eq!(
            refused,
            Refused::Precondition("four-eyes: alice submitted this rollout; another operator must approve".into())
        );
        assert!(matches!(
            judge(&a, &g, "alice", "vic", "viewer", &id),
            Err(Refused::Role(_))
        ));
        let stale = judge(&a, &g, "alice", "bob", "operator", "0123456789ab").unwrap_err();
        assert!(
            matches!(&stale, Refused::Precondition(m) if m.starts_with("the gate changed since you looked: look again"))
        );
        assert_eq!(
            judge(&a, &g, "alice", "bob", "operator", &id),
            Ok(Counted::Yes { quorum: false })
        );
        record(&mut a, approval("bob"));
        assert_eq!(
            said(&a, &Counted::Yes { quorum: false }, "bob"),
            "approval 1 of 2 recorded; 1 more needed"
        );
        assert_eq!(judge(&a, &g, "alice", "bob", "operator", &id), Ok(Counted::Again));
        assert_eq!(
            judge(&a, &g, "alice", "carol", "admin", &id),
            Ok(Counted::Yes { quorum: true })
        );
        // Without four-eyes the submitter counts like anyone.
        let plain = gate(1, false);
        let b = open(7, 0, &plain, 0, 0, evidence(0));
        assert_eq!(
            judge(&b, &plain, "alice", "alice", "operator", &b.gate_id),
            Ok(Counted::Yes { quorum: true })
        );
        // An admin gate refuses an operator, naming the role.
        let admin = Gate {
            role: GateRole::Admin,
            ..plain
        };
        let Err(Refused::Role(why)) = judge(&b, &admin, "alice", "bob", "operator", &b.gate_id) else {
            panic!("an operator approved an admin gate");
        };
        assert!(why.contains("needs the role admin"), "{why}");
    }

    #[test]
    fn a_timeout_names_the_gate_its_wait_and_its_approvals() {
        let g = gate(2, false);
        let mut a = open(7, 0, &g, 0, 0, evidence(0));
        record(&mut a, approval("bob"));
        assert_eq!(
            timed_out(&a, 7_200_400),
            "the gate after 10% (wave 2) timed out after waiting 2h with 1 of 2 approvals (bob) (on_timeout: halt)"
        );
        let mut r = pb::RolloutRecord {
            gate: Some(a),
            ..Default::default()
        };
        record_request(&mut r, "req-1");
        assert!(answered(&r, "req-1").is_some());
        close(&mut r, "halted", 9);
        assert!(r.gate.is_none());
        assert_eq!(r.gates_closed[0].outcome, "halted");
        assert!(
            answered(&r, "req-1").is_some(),
            "a closed gate still answers its requests"
        );
        assert!(answered(&r, "").is_none());
    }

    fn record_request(r: &mut pb::RolloutRecord, id: &str) {
        if let Some(g) = r.gate.as_mut() {
            g.approvals[0].request_id = id.into();
        }
    }
}
