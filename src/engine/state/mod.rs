//! The rollout state machine: one documented enum moved by one pure function.
//!
//! `step(state, event, now, policy)` returns the next state and the decisions the
//! driver must carry out. It does no I/O and reads no clock, so every transition is
//! tested here with plain values. Operator events that make no sense in the current
//! state are refused with a sentence saying what would.

use crate::event_type::EventType;
use crate::proto::v1 as pb;

mod reports;
mod step;

pub use reports::{FleetHealth, HealthReport, WaveReport};
pub use step::step;

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
    /// The open gate has its quorum: the next wave starts (`first`: the gate was an
    /// emergency plan's, before its first wave, and that wave starts).
    Approved {
        first: bool,
    },
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

impl Event {
    /// An operator asked for it (the driver wakes to look at the new state).
    pub fn by_operator(&self) -> bool {
        matches!(
            self,
            Event::Pause | Event::Resume | Event::Retry | Event::Abort { .. } | Event::Approved { .. }
        )
    }
}

/// The parts of the plan the state machine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub waves: u32,
    /// The bake after each wave (its stage's, else the plan's); 0: none.
    pub bakes_ms: [i64; MAX_WAVES],
    /// Bit `w` set: wave `w` is of a stage no host matched: it is skipped (no bake),
    /// and says so.
    pub skipped: u32,
    /// `on_failure.action: rollback`: a wave over its threshold ends the rollout and
    /// starts a rollback of the hosts it touched, instead of halting.
    pub rollback_on_failure: bool,
    /// Bit `w` set: a gate holds the rollout after wave `w` (plans have at most 20).
    pub gated: u32,
    /// `emergency: true`: an admin other than the submitter approves before the
    /// first wave (then freezes do not hold it).
    pub emergency: bool,
}

/// Waves a plan may have, its stages' together (a gate is a bit of a `u32`).
pub const MAX_WAVES: usize = 32;

impl Policy {
    fn gated_after(&self, wave: u32) -> bool {
        wave < 32 && self.gated & (1 << wave) != 0
    }

    /// The bake after `wave`, in ms (0: none).
    pub fn bake_ms(&self, wave: u32) -> i64 {
        self.bakes_ms.get(wave as usize).copied().unwrap_or(0)
    }

    pub fn is_skipped(&self, wave: u32) -> bool {
        wave < 32 && self.skipped & (1 << wave) != 0
    }
}

/// One consequence of a transition. The runtime carries them out in three phases
/// (`engine::rollout::apply`): the host and gate work, then one write of the new
/// state with its audit lines and notifications, then what follows the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Put the failed hosts of `wave` back in its queue to be tried again.
    RequeueFailed { wave: u32 },
    /// Put the failed hosts of every wave up to `wave` back in the queue, as a new
    /// round of attempts (`rollout retry`); the audit line says how many.
    RetryFailed { wave: u32 },
    /// Write this line to the audit log, as the new state's kind.
    Audit(String),
    /// Tell the incident room: one notification, written with the change.
    Notify(EventType),
    /// Start a rollback rollout of every host this rollout touched.
    StartRollback,
    /// Open the plan's gate after `wave`: record it with its evidence.
    OpenGate { wave: u32 },
    /// Open an emergency plan's gate before its first wave.
    OpenEmergencyGate,
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

/// What a transition returns: the next state and every consequence, or a refusal.
pub type Step = Result<(State, Vec<Decision>), Refusal>;

/// Stands for the rollout's name in reasons the step function writes (it does not
/// know the name); the caller puts the name in.
pub const ROLLOUT: &str = "<rollout>";

#[cfg(test)]
mod emergency_tests;
#[cfg(test)]
mod notify_tests;
#[cfg(test)]
mod stage_tests;
#[cfg(test)]
mod tests;
