//! A rollout's approval gate: opened with what the approvers will look at (how the
//! wave went, its analysis, what the next wave will take), and approved, each
//! approval written with the gate, and the next wave's start, in one transaction.

use super::{At, HostState, Inner, Live, State};
use crate::engine::approval::{self, Counted, Refused};
use crate::engine::audit::{Actor, Target};
use crate::engine::{Error, Event, Result, order};
use crate::plan::EMERGENCY_GATE;
use crate::proto::v1 as pb;
use crate::store::Store;

/// Hosts and customers of the next wave a gate lists (as many as a dry run shows).
const SHOWN: usize = 20;

/// What an approval did.
#[derive(Debug, Clone)]
pub struct Approved {
    /// False when this principal had approved this gate already.
    pub counted: bool,
    /// True when the request id had been answered already: nothing was done again.
    pub replayed: bool,
    pub message: String,
}

impl Live {
    /// An emergency plan whose gate before its first wave was approved: freezes do
    /// not hold it.
    pub fn passes_freezes(&self) -> bool {
        self.plan.emergency
            && self
                .lock()
                .record
                .gates_closed
                .iter()
                .any(|g| g.index == EMERGENCY_GATE && g.outcome == "approved")
    }

    /// The open gate is an emergency plan's, before its first wave (nothing ran yet:
    /// there is nothing to measure).
    pub fn emergency_gate_open(&self) -> bool {
        self.lock()
            .record
            .gate
            .as_ref()
            .is_some_and(|g| g.index == EMERGENCY_GATE)
    }

    /// Opens an emergency plan's gate before its first wave into the record, and
    /// returns the audit line saying so. Its evidence is the first wave as it would
    /// be filled now, and what freezes hold.
    pub(super) fn open_emergency_gate(&self, inner: &mut Inner, at: At) -> String {
        let gate = emergency_gate();
        let evidence = pb::GateEvidence {
            next_wave: Some(self.wave_preview(inner, 0, at.hours_ms)),
            hosts_selected: inner.record.hosts_selected,
            ..Default::default()
        };
        let mut open = approval::open(self.id, 0, &gate, inner.record.gates_opened, at.wall_ms, evidence);
        open.index = EMERGENCY_GATE;
        open.wave = 0;
        open.gate_id = approval::gate_id(self.id, inner.record.gates_opened, &open);
        inner.record.gates_opened += 1;
        let line = format!("awaiting approval: {} (gate {})", gate.describe(), open.gate_id);
        inner.record.gate = Some(open);
        line
    }

    /// Opens the plan's gate after `wave` (its `unhealthy` hosts found by the health
    /// gate) into the record, and returns the audit line saying so.
    pub(super) fn open_gate(&self, inner: &mut Inner, wave: u32, unhealthy: u64, at: At) -> String {
        let Some((index, gate)) = self.plan.gate_after(wave) else {
            return format!("wave {} has no gate in its plan; nothing to open", wave + 1);
        };
        let evidence = self.evidence(inner, wave, unhealthy, at.hours_ms);
        let open = approval::open(self.id, index, gate, inner.record.gates_opened, at.wall_ms, evidence);
        inner.record.gates_opened += 1;
        let line = format!("awaiting approval: {} (gate {})", gate.describe(), open.gate_id);
        inner.record.gate = Some(open);
        line
    }

    /// How wave `wave` went, and the next wave as it would be filled at `hours_ms`.
    fn evidence(&self, inner: &Inner, wave: u32, unhealthy: u64, hours_ms: i64) -> pb::GateEvidence {
        let selected = inner.record.hosts_selected;
        let counts = inner.tally.wave(wave);
        let succeeded = inner.tally.total(HostState::Succeeded);
        pb::GateEvidence {
            wave_size: self.wave_size(wave),
            hosts_succeeded: counts[HostState::Succeeded as usize],
            hosts_failed: counts[HostState::Failed as usize],
            hosts_unhealthy: unhealthy,
            measurements: inner
                .measurements
                .iter()
                .filter(|m| m.wave == wave + 1)
                .cloned()
                .collect(),
            next_wave: Some(self.next_wave(inner, wave, hours_ms)),
            percent_complete: if selected == 0 {
                0.0
            } else {
                succeeded as f64 * 100.0 / selected as f64
            },
            hosts_selected: selected,
        }
    }

    /// The wave after `wave` as it would be filled at `hours_ms`: its hosts, and their
    /// customers with their local time and tier.
    fn next_wave(&self, inner: &Inner, wave: u32, hours_ms: i64) -> pb::WavePreview {
        self.wave_preview(inner, wave + 1, hours_ms)
    }

    /// Wave `next` (0-based) as it would be filled at `hours_ms`.
    fn wave_preview(&self, inner: &Inner, next: u32, hours_ms: i64) -> pb::WavePreview {
        let size = self.wave_size(next) as usize;
        let mut waiting: Vec<String> = inner.pending.iter().cloned().collect();
        if self.plan.order.is_timed() {
            order::arrange_in_stages(
                &mut waiting,
                &self.plan,
                &self.inventory,
                hours_ms,
                self.plan.max_parallel as usize,
            );
        }
        waiting.truncate(size);
        pb::WavePreview {
            index: next,
            percent: self.plan.wave_label(next as usize),
            cumulative_hosts: self.wave_target(next as usize),
            new_hosts: waiting.len() as u64,
            host_ids: waiting.iter().take(SHOWN).cloned().collect(),
            customers: order::explain(&waiting, self.plan.order, &self.inventory, hours_ms, SHOWN),
            ..Default::default()
        }
    }

    /// Approves the open gate for `actor`, who looked at `gate_id`. The approval is
    /// written with the gate (and, when it completes the quorum, with the next
    /// wave's start) in one transaction; the caller flushes.
    pub fn approve(&self, store: &Store, actor: &Actor, gate_id: &str, comment: &str, at: At) -> Result<Approved> {
        let mut inner = self.lock();
        let named = |why: String| format!("rollout `{}` (id {}): {why}", self.plan.name, self.id);
        if let Some(earlier) = approval::answered(&inner.record, &actor.request_id) {
            return Ok(Approved {
                counted: true,
                replayed: true,
                message: format!(
                    "request `{}` was answered already: the approval by {} counted once",
                    actor.request_id, earlier.principal
                ),
            });
        }
        let (State::AwaitingApproval { .. }, Some(open)) = (&inner.state, inner.record.gate.as_ref()) else {
            return Err(Error::Refused(named(format!(
                "it is {}, not awaiting approval: there is no gate to approve",
                inner.state.name()
            ))));
        };
        let first = open.index == EMERGENCY_GATE;
        let emergency = emergency_gate();
        let gate = if first {
            &emergency
        } else if let Some(gate) = self.plan.gates.get(open.index as usize) {
            gate
        } else {
            return Err(Error::Corrupt(named(format!(
                "its open gate {} is not in its plan",
                open.index
            ))));
        };
        let counted = approval::judge(
            open,
            gate,
            &inner.record.submitted_by,
            &actor.principal,
            &actor.role,
            gate_id,
        )
        .map_err(|refused| match refused {
            Refused::Role(why) => Error::Forbidden(named(why)),
            Refused::Precondition(why) => Error::Refused(named(why)),
        })?;
        let target = Target::Rollout {
            id: self.id,
            name: &self.plan.name,
        };
        let mut open = open.clone();
        if counted != Counted::Again {
            approval::record(
                &mut open,
                pb::Approval {
                    principal: actor.principal.clone(),
                    role: actor.role.clone(),
                    at_unix_ms: at.wall_ms,
                    comment: comment.to_string(),
                    request_id: actor.request_id.clone(),
                },
            );
        }
        let message = approval::said(&open, &counted, &actor.principal);
        let mut detail = format!("approve gate {} after {}: {message}", open.gate_id, open.after);
        if !comment.is_empty() {
            detail.push_str(&format!(" (comment: {})", crate::text::one_line(comment)));
        }
        let event = actor.event(at.wall_ms, target, detail, "ok");
        inner.record.gate = Some(open);
        match counted {
            Counted::Yes { quorum: true } => {
                self.apply(store, inner, Event::Approved { first }, at, vec![event])?;
            }
            Counted::Yes { quorum: false } => {
                store.put_rollout_with_events(&inner.record, &[event])?;
                self.publish(&inner);
            }
            Counted::Again => {
                store.append_event(&event)?;
            }
        }
        Ok(Approved {
            counted: counted != Counted::Again,
            replayed: false,
            message,
        })
    }

    /// Puts the analysis' verdicts of the open gate's wave so far into its evidence
    /// (a round measured while it waits), and the next wave as it would be filled at
    /// `hours_ms`: the gate id changes with them. The caller flushes.
    pub fn remeasure_gate(&self, store: &Store, hours_ms: i64) -> Result<()> {
        let mut inner = self.lock();
        let Some(wave) = inner
            .record
            .gate
            .as_ref()
            .filter(|g| g.index != EMERGENCY_GATE)
            .map(|g| g.wave)
        else {
            return Ok(());
        };
        let measured: Vec<pb::Measurement> = inner.measurements.iter().filter(|m| m.wave == wave).cloned().collect();
        let next = self.next_wave(&inner, wave - 1, hours_ms);
        let opened = inner.record.gates_opened;
        if let Some(open) = inner.record.gate.as_mut() {
            if let Some(evidence) = open.evidence.as_mut() {
                evidence.next_wave = Some(next);
            }
            approval::remeasured(open, self.id, opened, measured);
        }
        store.put_rollout_with_events(&inner.record, &[])?;
        self.publish(&inner);
        Ok(())
    }

    /// The open gate's deadline and why it timed out, when it has one.
    pub fn gate_deadline(&self) -> Option<(String, i64)> {
        let inner = self.lock();
        let open = inner.record.gate.as_ref()?;
        (open.deadline_unix_ms > 0).then(|| (open.gate_id.clone(), open.deadline_unix_ms))
    }

    /// The event a gate whose deadline passed sends: None when `gate_id` is no longer
    /// the open gate (it was approved or closed meanwhile).
    pub fn gate_timeout(&self, gate_id: &str, now_ms: i64) -> Option<Event> {
        let inner = self.lock();
        let open = inner.record.gate.as_ref().filter(|g| g.gate_id == gate_id)?;
        let gate = self.plan.gates.get(open.index as usize)?;
        Some(Event::GateTimedOut {
            action: gate.on_timeout,
            reason: approval::timed_out(open, now_ms),
        })
    }
}

/// An emergency plan's gate: one admin other than the submitter, no timeout.
fn emergency_gate() -> crate::plan::Gate {
    crate::plan::Gate {
        wave: 0,
        after: "submission (emergency: passes freezes once approved)".into(),
        approvals: 1,
        role: crate::plan::GateRole::Admin,
        four_eyes: true,
        timeout: None,
        on_timeout: crate::plan::OnTimeout::Halt,
    }
}
