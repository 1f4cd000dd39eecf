//! The transition function: what happens to a rollout on each event, every
//! consequence included (audit lines, notifications, hosts to requeue, gates to
//! open or close, a rollback to start), one method per event.
//!
//! Pure: no I/O, no clock (the caller passes `now_ms`). The runtime carries the
//! decisions out in order; nothing is worked out again afterwards by comparing
//! states.

use super::reports::halt_reason;
use super::{Decision, Event, HealthReport, Policy, ROLLOUT, Refusal, State, Step, WaveReport};
use crate::event_type::EventType;
use crate::plan::OnTimeout;

use Decision::{Audit, Notify};
use State::*;

/// Moves `state` on `event`. `now_ms` is wall-clock unix milliseconds.
pub fn step(state: &State, event: Event, now_ms: i64, policy: &Policy) -> Step {
    let m = Machine { state, now_ms, policy };
    match event {
        Event::Start => m.start(),
        Event::WaveEnded(report) => m.wave_ended(report),
        Event::BakeElapsed(health) => m.bake_elapsed(health),
        Event::AnalysisFailed { wave, reason } => m.analysis_failed(wave, reason),
        Event::AnalysisInconclusive { wave, reason } => m.analysis_inconclusive(wave, reason),
        Event::Pause => m.pause(),
        Event::Resume => m.resume(),
        Event::Approved { first } => m.approved(first),
        Event::GateTimedOut { action, reason } => m.gate_timed_out(action, reason),
        Event::Retry => m.retry(),
        Event::Abort { reason, rollback } => m.abort(reason, rollback),
        Event::Fatal { reason } => m.fatal(reason),
    }
}

/// One transition's inputs.
struct Machine<'a> {
    state: &'a State,
    now_ms: i64,
    policy: &'a Policy,
}

impl Machine<'_> {
    fn unchanged(&self) -> Step {
        Ok((self.state.clone(), Vec::new()))
    }

    fn start(&self) -> Step {
        match self.state {
            Pending if self.policy.emergency => Ok((
                AwaitingApproval { wave: 0 },
                vec![
                    Audit(
                        "awaiting an admin's approval before the first wave: an emergency plan passes freezes once an admin other than its submitter approves".into(),
                    ),
                    Decision::OpenEmergencyGate,
                    Notify(EventType::AwaitingApproval),
                ],
            )),
            Pending => Ok((
                Running { wave: 0 },
                vec![Audit("started".into()), Notify(EventType::WaveStarted)],
            )),
            _ => self.unchanged(),
        }
    }

    /// The driver stopped working on a wave: stuck, over its threshold (halt or
    /// roll back), or complete (bake, or straight on to what follows the wave).
    fn wave_ended(&self, report: WaveReport) -> Step {
        let at_wave = matches!(self.state, Running { wave } | Paused { wave, .. } if *wave == report.wave);
        if let Some((after, hosts)) = &report.stuck
            && at_wave
        {
            // Stuck is never rolled back automatically: nobody knows what the hung
            // calls did. A person decides.
            let shown: Vec<&str> = hosts.iter().take(5).map(String::as_str).collect();
            let more = hosts.len().saturating_sub(shown.len());
            let reason = format!(
                "wave {} stuck: no progress for {}; waiting on {}{}",
                report.wave + 1,
                crate::text::format_duration(*after),
                shown.join(", "),
                if more > 0 {
                    format!(" (+{more} more)")
                } else {
                    String::new()
                }
            );
            return Ok(halted(report.wave, reason));
        }
        if at_wave && report.over_threshold() {
            return self.fail(report.wave, halt_reason(&report));
        }
        match self.state {
            Running { wave } if *wave == report.wave && report.complete() => {
                let done = if self.policy.is_skipped(*wave) {
                    format!("wave {} skipped: its stage has no hosts", wave + 1)
                } else {
                    format!(
                        "wave {} done: {} hosts, {} failed",
                        wave + 1,
                        report.size,
                        report.failed
                    )
                };
                let bake_ms = self.policy.bake_ms(*wave);
                if bake_ms > 0 {
                    let until_ms = self.now_ms + bake_ms;
                    let bake = std::time::Duration::from_millis(bake_ms as u64);
                    let line = format!("{done}; baking {}", crate::text::format_duration(bake));
                    Ok((Baking { wave: *wave, until_ms }, vec![Audit(line)]))
                } else {
                    let (next, mut decisions) = self.passed(*wave, report.failed_total);
                    decisions.insert(0, Audit(done));
                    Ok((next, decisions))
                }
            }
            // Finished while paused: the bake starts from here when it resumes.
            Paused {
                wave,
                bake_until_ms: None,
            } if *wave == report.wave && report.complete() => Ok((
                Paused {
                    wave: *wave,
                    bake_until_ms: Some(self.now_ms + self.policy.bake_ms(*wave)),
                },
                Vec::new(),
            )),
            _ => self.unchanged(),
        }
    }

    /// The bake ended: the health gate passes the wave, or fails the rollout.
    fn bake_elapsed(&self, health: HealthReport) -> Step {
        match self.state {
            Baking { wave, .. } if health.wave == *wave => match health.breach() {
                Some(reason) => self.fail(*wave, reason),
                None => {
                    let (next, mut decisions) = self.passed(*wave, health.failed_total);
                    let line = format!(
                        "wave {} passed its health gate: {} hosts unhealthy after the bake",
                        wave + 1,
                        health.unhealthy
                    );
                    decisions.insert(0, Audit(line));
                    Ok((next, decisions))
                }
            },
            _ => self.unchanged(),
        }
    }

    /// `wave` passed every gate after it (its hosts answered, its bake, health gate
    /// and analysis passed): a plan's gate holds it, the next wave starts, or the
    /// rollout ends, a success only if no host failed.
    fn passed(&self, wave: u32, failed_total: u64) -> (State, Vec<Decision>) {
        let mut decisions = vec![Notify(EventType::WaveCompleted)];
        let last = wave + 1 >= self.policy.waves;
        let next = if self.policy.gated_after(wave) && !last {
            decisions.extend([Decision::OpenGate { wave }, Notify(EventType::AwaitingApproval)]);
            AwaitingApproval { wave }
        } else if !last {
            decisions.push(Notify(EventType::WaveStarted));
            Running { wave: wave + 1 }
        } else if failed_total == 0 {
            decisions.extend([Audit("succeeded".into()), Notify(EventType::Succeeded)]);
            Succeeded
        } else {
            let reason = format!(
                "every wave ran, but {failed_total} hosts failed (within on_failure.max_failed); `rollout hosts --rollout {ROLLOUT} --failed` lists them, `rollout retry {ROLLOUT}` re-runs them"
            );
            decisions.extend([
                Audit(format!("completed with failures: {reason}")),
                Notify(EventType::CompletedWithFailures),
            ]);
            CompletedWithFailures { reason }
        };
        (next, decisions)
    }

    /// Too many failures: halt for a person, or (on_failure.action: rollback) end the
    /// rollout and roll back what it touched.
    fn fail(&self, wave: u32, reason: String) -> Step {
        if self.policy.rollback_on_failure {
            let line = format!("failed, rolling back: {reason}");
            let reason = format!("{reason}; rolling back every host it touched");
            let decisions = vec![
                Audit(line),
                Decision::StartRollback,
                Notify(EventType::Failed),
                Notify(EventType::RollingBack),
            ];
            Ok((Failed { reason }, decisions))
        } else {
            Ok(halted(wave, reason))
        }
    }

    /// The analysis goes on measuring while a gate waits: a failure then closes the
    /// gate as it would have failed the bake.
    fn analysis_failed(&self, wave: u32, reason: String) -> Step {
        let step = match self.state {
            Baking { wave: baking, .. } if *baking == wave => self.fail(wave, reason),
            AwaitingApproval { wave: at } if *at == wave => closing(self.fail(wave, reason)),
            _ => return self.unchanged(),
        };
        step.map(|(next, mut decisions)| {
            decisions.insert(0, Notify(EventType::AnalysisFailed));
            (next, decisions)
        })
    }

    /// Inconclusive under `inconclusive: halt`: halts (never rolls back on a guess).
    fn analysis_inconclusive(&self, wave: u32, reason: String) -> Step {
        match self.state {
            Baking { wave: at, .. } | AwaitingApproval { wave: at } if *at == wave => closing(Ok(halted(wave, reason))),
            _ => self.unchanged(),
        }
    }

    fn pause(&self) -> Step {
        let paused = |wave: u32, bake_until_ms: Option<i64>, line: &str| {
            Ok((
                Paused { wave, bake_until_ms },
                vec![Audit(line.into()), Notify(EventType::Paused)],
            ))
        };
        match self.state {
            Pending => paused(0, None, "paused"),
            Running { wave } => paused(*wave, None, "paused"),
            Baking { wave, until_ms } => paused(*wave, Some(*until_ms), "paused during bake"),
            Paused { .. } => self.unchanged(),
            Halted { .. } => Err(Refusal(
                "the rollout is halted and dispatches nothing already: resume it to retry the failed hosts, or abort it".into(),
            )),
            AwaitingApproval { .. } => Err(Refusal(
                "the rollout is awaiting approval and dispatches nothing until its gate is approved: abort it to stop it, or let the gate time out".into(),
            )),
            done => Err(finished(done)),
        }
    }

    fn resume(&self) -> Step {
        let resumed = Notify(EventType::Resumed);
        match self.state {
            Paused {
                wave,
                bake_until_ms: None,
            } => Ok((Running { wave: *wave }, vec![Audit("resumed".into()), resumed])),
            Paused {
                wave,
                bake_until_ms: Some(until_ms),
            } => Ok((
                Baking {
                    wave: *wave,
                    until_ms: *until_ms,
                },
                vec![Audit("resumed (baking)".into()), resumed],
            )),
            Halted { wave, .. } => Ok((
                Running { wave: *wave },
                vec![
                    Decision::RequeueFailed { wave: *wave },
                    Audit(format!(
                        "resumed after halt: retrying the failed hosts of wave {}",
                        wave + 1
                    )),
                    resumed,
                ],
            )),
            Pending | Running { .. } | Baking { .. } => Err(Refusal(format!(
                "the rollout is {}: only a paused or halted rollout can be resumed",
                self.state.name()
            ))),
            AwaitingApproval { .. } => Err(Refusal(
                "the rollout is awaiting approval, not paused: `rollout approve` it (or abort it)".into(),
            )),
            done => Err(finished(done)),
        }
    }

    /// The open gate has its quorum: the next wave starts (the first, after an
    /// emergency plan's gate).
    fn approved(&self, first: bool) -> Step {
        match self.state {
            AwaitingApproval { wave } => Ok((
                Running {
                    wave: if first { *wave } else { *wave + 1 },
                },
                vec![
                    Decision::CloseGate { outcome: "approved" },
                    Notify(EventType::Approved),
                    Notify(EventType::WaveStarted),
                ],
            )),
            _ => Err(Refusal(format!(
                "the rollout is {}, not awaiting approval: there is no gate to approve",
                self.state.name()
            ))),
        }
    }

    /// Nobody approved in time: the gate's `on_timeout` says what happens.
    fn gate_timed_out(&self, action: OnTimeout, reason: String) -> Step {
        let AwaitingApproval { wave } = self.state else {
            return self.unchanged();
        };
        let (next, outcome, event) = match action {
            OnTimeout::Halt => (
                Halted {
                    wave: *wave,
                    reason: reason.clone(),
                },
                "halted",
                EventType::Halted,
            ),
            OnTimeout::Abort => (Aborted { reason: reason.clone() }, "aborted", EventType::Aborted),
            OnTimeout::Rollback => (
                Aborted {
                    reason: format!("{reason}; rolling back every host it touched"),
                },
                "rolled-back",
                EventType::Aborted,
            ),
        };
        let mut decisions = vec![
            Audit(format!("{}: {reason}", next.name())),
            Decision::CloseGate { outcome },
            Notify(event),
        ];
        if action == OnTimeout::Rollback {
            decisions.extend([Decision::StartRollback, Notify(EventType::RollingBack)]);
        }
        Ok((next, decisions))
    }

    /// An operator re-runs the failed hosts of every wave so far (`rollout retry`).
    fn retry(&self) -> Step {
        let retried = Notify(EventType::Retried);
        match self.state {
            Halted { wave, .. } => Ok((
                Running { wave: *wave },
                vec![Decision::RetryFailed { wave: *wave }, retried],
            )),
            // The evidence the gate showed changes: it opens again, new, once the
            // wave's hosts have run again and baked.
            AwaitingApproval { wave } => Ok((
                Running { wave: *wave },
                vec![
                    Decision::CloseGate { outcome: "superseded" },
                    Decision::RetryFailed { wave: *wave },
                    retried,
                ],
            )),
            // An ended rollout runs again: its last wave starts over.
            CompletedWithFailures { .. } => {
                let wave = self.policy.waves.saturating_sub(1);
                let decisions = vec![Decision::RetryFailed { wave }, retried, Notify(EventType::WaveStarted)];
                Ok((Running { wave }, decisions))
            }
            Pending | Running { .. } | Baking { .. } | Paused { .. } => Err(Refusal(format!(
                "the rollout is {}: retry re-runs the failed hosts of a halted rollout or of one that completed with failures; wait for it (or pause it and let it halt), then retry",
                self.state.name()
            ))),
            Succeeded => Err(Refusal("nothing to retry: every host succeeded".into())),
            done => Err(finished(done)),
        }
    }

    fn abort(&self, reason: String, rollback: bool) -> Step {
        if self.state.is_terminal() {
            return Err(finished(self.state));
        }
        let reason = if reason.is_empty() {
            "aborted by an operator".to_string()
        } else {
            reason
        };
        let mut decisions = vec![Audit(format!("aborted: {reason}"))];
        if matches!(self.state, AwaitingApproval { .. }) {
            decisions.push(Decision::CloseGate { outcome: "aborted" });
        }
        decisions.push(Notify(EventType::Aborted));
        if rollback {
            decisions.extend([Decision::StartRollback, Notify(EventType::RollingBack)]);
        }
        Ok((Aborted { reason }, decisions))
    }

    /// The rollout cannot go on (a store error): it fails, for a person to look at.
    fn fatal(&self, reason: String) -> Step {
        if self.state.is_terminal() {
            return self.unchanged();
        }
        let mut decisions = vec![Audit(format!("failed: {reason}"))];
        if matches!(self.state, AwaitingApproval { .. }) {
            decisions.push(Decision::CloseGate { outcome: "failed" });
        }
        decisions.push(Notify(EventType::Failed));
        Ok((Failed { reason }, decisions))
    }
}

/// Halted at `wave` for `reason`, with its audit line and notification.
fn halted(wave: u32, reason: String) -> (State, Vec<Decision>) {
    let decisions = vec![Audit(format!("halted: {reason}")), Notify(EventType::Halted)];
    (Halted { wave, reason }, decisions)
}

/// A step out of an open gate: the gate closes as the new state says (a step that
/// left no gate open closes nothing).
fn closing(step: Step) -> Step {
    step.map(|(next, mut decisions)| {
        let outcome = match &next {
            Halted { .. } => "halted",
            Failed { .. } => "rolled-back",
            _ => "closed",
        };
        decisions.push(Decision::CloseGate { outcome });
        (next, decisions)
    })
}

fn finished(state: &State) -> Refusal {
    Refusal(format!(
        "the rollout has {}; submit a new plan to change the fleet again",
        match state {
            Succeeded => "succeeded",
            CompletedWithFailures { .. } => "completed with failures (`rollout retry` re-runs its failed hosts)",
            Failed { .. } => "failed",
            _ => "been aborted",
        }
    ))
}
