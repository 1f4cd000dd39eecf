//! The rollout state machine: one documented enum moved by one pure function.
//!
//! `step(state, event, now, policy)` returns the next state and the decisions the
//! driver must carry out. It does no I/O and reads no clock, so every transition is
//! tested here with plain values. Operator events that make no sense in the current
//! state are refused with a sentence saying what would.

use crate::proto::v1 as pb;

mod reports;

use reports::halt_reason;
pub use reports::{FleetHealth, HealthReport, WaveReport};

/// Where a rollout is. Waves are numbered from 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Recorded, not started yet.
    Pending,
    /// Dispatching the hosts of `wave`.
    Running { wave: u32 },
    /// `wave` is done; waiting until `until_ms` (unix ms) before the next one.
    Baking { wave: u32, until_ms: i64 },
    /// An operator paused it; `bake_until_ms` is set when it was paused while baking
    /// (or its wave finished while paused), so resume goes back to baking.
    Paused { wave: u32, bake_until_ms: Option<i64> },
    /// `wave` passed its bake, health gate and analysis, and the plan's gate after it
    /// holds the rollout until enough people approve (the gate is in the record).
    AwaitingApproval { wave: u32 },
    /// Too many failures in `wave`: nothing is dispatched until an operator resumes
    /// (the wave's failed hosts are tried again) or aborts.
    Halted { wave: u32, reason: String },
    /// Every wave done and baked, and every selected host succeeded.
    Succeeded,
    /// Every wave done and baked, but some hosts failed (within the plan's
    /// threshold): never "succeeded". `rollout retry` re-runs the failed hosts.
    CompletedWithFailures { reason: String },
    /// The controller could not go on (the store failed); needs a person.
    Failed { reason: String },
    /// Stopped for good by an operator.
    Aborted { reason: String },
}

/// Something that happened to a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Start,
    /// The driver stopped working on a wave: every host answered, or it stopped early
    /// (too many failures, a pause, an abort, a shutdown).
    WaveEnded(WaveReport),
    /// The bake ended and the wave's hosts were probed: the health gate.
    BakeElapsed(HealthReport),
    /// The plan's analysis failed during the bake of `wave`: acts as
    /// `on_failure.action` says (halt, or rollback).
    AnalysisFailed {
        wave: u32,
        reason: String,
    },
    /// A measurement of the bake of `wave` was inconclusive under `inconclusive:
    /// halt`: the rollout halts (never rolls back on a guess).
    AnalysisInconclusive {
        wave: u32,
        reason: String,
    },
    Pause,
    Resume,
    /// The open gate has its quorum: the next wave starts.
    Approved,
    /// The open gate's timeout passed: `action` as its `on_timeout` says.
    GateTimedOut {
        action: crate::plan::OnTimeout,
        reason: String,
    },
    /// An operator re-runs the failed hosts of every wave so far (`rollout retry`).
    Retry,
    Abort {
        reason: String,
        /// Also return the hosts the rollout touched to their previous versions.
        rollback: bool,
    },
    /// The rollout cannot continue (a store error).
    Fatal {
        reason: String,
    },
}

/// The parts of the plan the state machine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub waves: u32,
    pub bake_ms: i64,
    /// `on_failure.action: rollback`: a wave over its threshold ends the rollout and
    /// starts a rollback of the hosts it touched, instead of halting.
    pub rollback_on_failure: bool,
    /// Bit `w` set: a gate holds the rollout after wave `w` (plans have at most 20).
    pub gated: u32,
}

impl Policy {
    fn gated_after(&self, wave: u32) -> bool {
        wave < 32 && self.gated & (1 << wave) != 0
    }
}

/// Work the driver carries out after a transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Put the failed hosts of `wave` back in its queue to be tried again.
    RequeueFailed { wave: u32 },
    /// Put the failed hosts of every wave up to `wave` back in the queue, as a new
    /// round of attempts (`rollout retry`).
    RetryFailed { wave: u32 },
    /// Write this line to the audit log.
    Record(String),
    /// Start a rollback rollout of every host this rollout touched.
    StartRollback,
    /// Open the plan's gate after `wave`: record it with its evidence.
    OpenGate { wave: u32 },
    /// The open gate closes, as `outcome` says (approved, halted, aborted...).
    CloseGate { outcome: &'static str },
}

/// An operator asked for something the rollout cannot do in its state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

impl State {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            State::Succeeded | State::CompletedWithFailures { .. } | State::Failed { .. } | State::Aborted { .. }
        )
    }

    /// The wave the rollout is at (0 before it starts and after it ends).
    pub fn wave(&self) -> u32 {
        match self {
            State::Running { wave }
            | State::Baking { wave, .. }
            | State::Paused { wave, .. }
            | State::AwaitingApproval { wave }
            | State::Halted { wave, .. } => *wave,
            _ => 0,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running { .. } => "running",
            State::Baking { .. } => "baking",
            State::Paused { .. } => "paused",
            State::AwaitingApproval { .. } => "awaiting-approval",
            State::Halted { .. } => "halted",
            State::Succeeded => "succeeded",
            State::CompletedWithFailures { .. } => "completed-with-failures",
            State::Failed { .. } => "failed",
            State::Aborted { .. } => "aborted",
        }
    }

    /// The state with the rollout's name where the step function wrote [`ROLLOUT`].
    pub fn named(self, name: &str) -> State {
        match self {
            State::CompletedWithFailures { reason } => State::CompletedWithFailures {
                reason: reason.replace(ROLLOUT, name),
            },
            other => other,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            State::Halted { reason, .. }
            | State::CompletedWithFailures { reason }
            | State::Failed { reason }
            | State::Aborted { reason } => reason,
            _ => "",
        }
    }

    pub fn proto(&self) -> pb::RolloutState {
        match self {
            State::Pending => pb::RolloutState::Pending,
            State::Running { .. } => pb::RolloutState::Running,
            State::Baking { .. } => pb::RolloutState::Baking,
            State::Paused { .. } => pb::RolloutState::Paused,
            State::AwaitingApproval { .. } => pb::RolloutState::AwaitingApproval,
            State::Halted { .. } => pb::RolloutState::Halted,
            State::Succeeded => pb::RolloutState::Succeeded,
            State::CompletedWithFailures { .. } => pb::RolloutState::CompletedWithFailures,
            State::Failed { .. } => pb::RolloutState::Failed,
            State::Aborted { .. } => pb::RolloutState::Aborted,
        }
    }

    /// Reads the state back from its stored record.
    pub fn from_record(r: &pb::RolloutRecord) -> State {
        let wave = r.current_wave;
        let reason = r.halt_reason.clone();
        let bake = (r.bake_until_unix_ms != 0).then_some(r.bake_until_unix_ms);
        match r.state() {
            pb::RolloutState::Unspecified | pb::RolloutState::Pending => State::Pending,
            pb::RolloutState::Running | pb::RolloutState::RollingBack => State::Running { wave },
            pb::RolloutState::Baking => State::Baking {
                wave,
                until_ms: r.bake_until_unix_ms,
            },
            pb::RolloutState::Paused => State::Paused {
                wave,
                bake_until_ms: bake,
            },
            pb::RolloutState::Halted => State::Halted { wave, reason },
            pb::RolloutState::AwaitingApproval => State::AwaitingApproval { wave },
            pb::RolloutState::Succeeded => State::Succeeded,
            pb::RolloutState::CompletedWithFailures => State::CompletedWithFailures { reason },
            pb::RolloutState::Failed => State::Failed { reason },
            pb::RolloutState::Aborted => State::Aborted { reason },
        }
    }

    /// Writes the state into its stored record.
    pub fn write(&self, r: &mut pb::RolloutRecord) {
        r.set_state(self.proto());
        r.halt_reason = self.reason().to_string();
        r.bake_until_unix_ms = match self {
            State::Baking { until_ms, .. } => *until_ms,
            State::Paused {
                bake_until_ms: Some(t), ..
            } => *t,
            _ => 0,
        };
        if !self.is_terminal() {
            r.current_wave = self.wave();
        }
    }
}

type Step = Result<(State, Vec<Decision>), Refusal>;

/// Stands for the rollout's name in reasons the step function writes (it does not
/// know the name); the caller puts the name in.
pub const ROLLOUT: &str = "<rollout>";

/// The transition function. `now_ms` is wall-clock unix milliseconds.
pub fn step(state: &State, event: Event, now_ms: i64, policy: &Policy) -> Step {
    use State::*;
    let unchanged = || Ok((state.clone(), Vec::new()));
    // The last wave ends the rollout: a success only if no host failed.
    let after_wave = |wave: u32, failed_total: u64| -> State {
        if policy.gated_after(wave) && wave + 1 < policy.waves {
            AwaitingApproval { wave }
        } else if wave + 1 < policy.waves {
            Running { wave: wave + 1 }
        } else if failed_total == 0 {
            Succeeded
        } else {
            CompletedWithFailures {
                reason: format!(
                    "every wave ran, but {failed_total} hosts failed (within on_failure.max_failed); `rollout hosts --rollout {ROLLOUT} --failed` lists them, `rollout retry {ROLLOUT}` re-runs them"
                ),
            }
        }
    };
    let ended = |next: &State| -> Option<Decision> {
        match next {
            AwaitingApproval { wave } => Some(Decision::OpenGate { wave: *wave }),
            Succeeded => Some(Decision::Record("succeeded".into())),
            CompletedWithFailures { reason } => Some(Decision::Record(format!("completed with failures: {reason}"))),
            _ => None,
        }
    };
    let record = |line: String| vec![Decision::Record(line)];
    // Too many failures: halt for a person, or (on_failure.action: rollback) end the
    // rollout and roll back what it touched.
    let fail = |wave: u32, reason: String| -> Step {
        if policy.rollback_on_failure {
            let line = format!("failed, rolling back: {reason}");
            let reason = format!("{reason}; rolling back every host it touched");
            Ok((Failed { reason }, vec![Decision::Record(line), Decision::StartRollback]))
        } else {
            let line = format!("halted: {reason}");
            Ok((Halted { wave, reason }, vec![Decision::Record(line)]))
        }
    };
    match event {
        Event::Start => match state {
            Pending => Ok((Running { wave: 0 }, record("started".into()))),
            _ => unchanged(),
        },
        Event::WaveEnded(report) => {
            let halt = |wave: u32| fail(wave, halt_reason(&report));
            if let Some((after, hosts)) = &report.stuck
                && matches!(state, Running { wave } | Paused { wave, .. } if *wave == report.wave)
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
                    if more > 0 { format!(" (+{more} more)") } else { String::new() }
                );
                let line = format!("halted: {reason}");
                return Ok((Halted { wave: report.wave, reason }, vec![Decision::Record(line)]));
            }
            match state {
                Running { wave } | Paused { wave, .. } if *wave == report.wave && report.over_threshold() => {
                    halt(*wave)
                }
                Running { wave } if *wave == report.wave && report.complete() => {
                    let done = format!(
                        "wave {} done: {} hosts, {} failed",
                        wave + 1,
                        report.size,
                        report.failed
                    );
                    if policy.bake_ms > 0 {
                        let until_ms = now_ms + policy.bake_ms;
                        let bake = crate::text::format_duration(std::time::Duration::from_millis(policy.bake_ms as u64));
                        Ok((Baking { wave: *wave, until_ms }, record(format!("{done}; baking {bake}"))))
                    } else {
                        let next = after_wave(*wave, report.failed_total);
                        let mut lines = record(done);
                        lines.extend(ended(&next));
                        Ok((next, lines))
                    }
                }
                Paused { wave, bake_until_ms: None } if *wave == report.wave && report.complete() => Ok((
                    Paused {
                        wave: *wave,
                        bake_until_ms: Some(now_ms + policy.bake_ms),
                    },
                    Vec::new(),
                )),
                _ => unchanged(),
            }
        }
        Event::BakeElapsed(health) => match state {
            Baking { wave, .. } if health.wave == *wave => match health.breach() {
                Some(reason) => fail(*wave, reason),
                None => {
                    let next = after_wave(*wave, health.failed_total);
                    let mut lines = record(format!(
                        "wave {} passed its health gate: {} hosts unhealthy after the bake",
                        wave + 1,
                        health.unhealthy
                    ));
                    lines.extend(ended(&next));
                    Ok((next, lines))
                }
            },
            _ => unchanged(),
        },
        // The analysis goes on measuring while a gate waits: a failure then closes
        // the gate as it would have failed the bake.
        Event::AnalysisFailed { wave, reason } => match state {
            Baking { wave: baking, .. } if *baking == wave => fail(wave, reason),
            AwaitingApproval { wave: at } if *at == wave => closing(fail(wave, reason)),
            _ => unchanged(),
        },
        Event::AnalysisInconclusive { wave, reason } => match state {
            Baking { wave: baking, .. } | AwaitingApproval { wave: baking } if *baking == wave => {
                let line = format!("halted: {reason}");
                closing(Ok((Halted { wave, reason }, vec![Decision::Record(line)])))
            }
            _ => unchanged(),
        },
        Event::Pause => match state {
            Pending => Ok((Paused { wave: 0, bake_until_ms: None }, record("paused".into()))),
            Running { wave } => Ok((Paused { wave: *wave, bake_until_ms: None }, record("paused".into()))),
            Baking { wave, until_ms } => Ok((
                Paused {
                    wave: *wave,
                    bake_until_ms: Some(*until_ms),
                },
                record("paused during bake".into()),
            )),
            Paused { .. } => unchanged(),
            Halted { .. } => Err(Refusal(
                "the rollout is halted and dispatches nothing already: resume it to retry the failed hosts, or abort it".into(),
            )),
            AwaitingApproval { .. } => Err(Refusal(
                "the rollout is awaiting approval and dispatches nothing until its gate is approved: abort it to stop it, or let the gate time out".into(),
            )),
            done => Err(finished(done)),
        },
        Event::Resume => match state {
            Paused { wave, bake_until_ms: None } => Ok((Running { wave: *wave }, record("resumed".into()))),
            Paused {
                wave,
                bake_until_ms: Some(until_ms),
            } => Ok((
                Baking {
                    wave: *wave,
                    until_ms: *until_ms,
                },
                record("resumed (baking)".into()),
            )),
            Halted { wave, .. } => Ok((
                Running { wave: *wave },
                vec![
                    Decision::RequeueFailed { wave: *wave },
                    Decision::Record(format!("resumed after halt: retrying the failed hosts of wave {}", wave + 1)),
                ],
            )),
            Pending | Running { .. } | Baking { .. } => Err(Refusal(format!(
                "the rollout is {}: only a paused or halted rollout can be resumed",
                state.name()
            ))),
            AwaitingApproval { .. } => Err(Refusal(
                "the rollout is awaiting approval, not paused: `rollout approve` it (or abort it)".into(),
            )),
            done => Err(finished(done)),
        },
        Event::Approved => match state {
            AwaitingApproval { wave } => Ok((
                Running { wave: *wave + 1 },
                vec![Decision::CloseGate { outcome: "approved" }],
            )),
            _ => Err(Refusal(format!(
                "the rollout is {}, not awaiting approval: there is no gate to approve",
                state.name()
            ))),
        },
        Event::GateTimedOut { action, reason } => match state {
            AwaitingApproval { wave } => {
                use crate::plan::OnTimeout;
                let (next, outcome, mut decisions) = match action {
                    OnTimeout::Halt => (Halted { wave: *wave, reason: reason.clone() }, "halted", vec![]),
                    OnTimeout::Abort => (Aborted { reason: reason.clone() }, "aborted", vec![]),
                    OnTimeout::Rollback => (
                        Aborted {
                            reason: format!("{reason}; rolling back every host it touched"),
                        },
                        "rolled-back",
                        vec![Decision::StartRollback],
                    ),
                };
                decisions.insert(0, Decision::CloseGate { outcome });
                decisions.insert(0, Decision::Record(format!("{}: {reason}", next.name())));
                Ok((next, decisions))
            }
            _ => unchanged(),
        },
        Event::Retry => match state {
            Halted { wave, .. } => Ok((Running { wave: *wave }, vec![Decision::RetryFailed { wave: *wave }])),
            // The evidence the gate showed changes: it opens again, new, once the
            // wave's hosts have run again and baked.
            AwaitingApproval { wave } => Ok((
                Running { wave: *wave },
                vec![
                    Decision::CloseGate { outcome: "superseded" },
                    Decision::RetryFailed { wave: *wave },
                ],
            )),
            CompletedWithFailures { .. } => {
                let wave = policy.waves.saturating_sub(1);
                Ok((Running { wave }, vec![Decision::RetryFailed { wave }]))
            }
            Pending | Running { .. } | Baking { .. } | Paused { .. } => Err(Refusal(format!(
                "the rollout is {}: retry re-runs the failed hosts of a halted rollout or of one that completed with failures; wait for it (or pause it and let it halt), then retry",
                state.name()
            ))),
            Succeeded => Err(Refusal("nothing to retry: every host succeeded".into())),
            done => Err(finished(done)),
        },
        Event::Abort { reason, rollback } => match state {
            done if done.is_terminal() => Err(finished(done)),
            _ => {
                let reason = if reason.is_empty() { "aborted by an operator".to_string() } else { reason };
                let line = format!("aborted: {reason}");
                let mut decisions = vec![Decision::Record(line)];
                if matches!(state, AwaitingApproval { .. }) {
                    decisions.push(Decision::CloseGate { outcome: "aborted" });
                }
                if rollback {
                    decisions.push(Decision::StartRollback);
                }
                Ok((Aborted { reason }, decisions))
            }
        },
        Event::Fatal { reason } => match state {
            done if done.is_terminal() => unchanged(),
            _ => {
                let line = format!("failed: {reason}");
                let mut decisions = vec![Decision::Record(line)];
                if matches!(state, AwaitingApproval { .. }) {
                    decisions.push(Decision::CloseGate { outcome: "failed" });
                }
                Ok((Failed { reason }, decisions))
            }
        },
    }
}

/// A step out of an open gate: the gate closes as the new state says (a step that
/// left no gate open closes nothing).
fn closing(step: Step) -> Step {
    step.map(|(next, mut decisions)| {
        let outcome = match &next {
            State::Halted { .. } => "halted",
            State::Failed { .. } => "rolled-back",
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
            State::Succeeded => "succeeded",
            State::CompletedWithFailures { .. } => "completed with failures (`rollout retry` re-runs its failed hosts)",
            State::Failed { .. } => "failed",
            _ => "been aborted",
        }
    ))
}

#[cfg(test)]
mod tests;
