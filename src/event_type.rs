//! The notification event types, one enum: the state machine says which happened,
//! the outbox stores their names, sinks filter on those names. The names are a
//! contract (DESIGN.md, "Notifications"): never rename one.

use std::fmt;

/// Something the incident room is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Submitted,
    WaveStarted,
    WaveCompleted,
    AwaitingApproval,
    Approved,
    Paused,
    Resumed,
    Halted,
    Retried,
    RollingBack,
    Succeeded,
    CompletedWithFailures,
    Failed,
    Aborted,
    AnalysisFailed,
    RestartStarted,
    RestartCompleted,
    LeaderChanged,
    FreezeStarted,
    FreezeEnded,
}

impl EventType {
    /// Every event type, in the order the contract lists them.
    pub const ALL: [EventType; 20] = [
        EventType::Submitted,
        EventType::WaveStarted,
        EventType::WaveCompleted,
        EventType::AwaitingApproval,
        EventType::Approved,
        EventType::Paused,
        EventType::Resumed,
        EventType::Halted,
        EventType::Retried,
        EventType::RollingBack,
        EventType::Succeeded,
        EventType::CompletedWithFailures,
        EventType::Failed,
        EventType::Aborted,
        EventType::AnalysisFailed,
        EventType::RestartStarted,
        EventType::RestartCompleted,
        EventType::LeaderChanged,
        EventType::FreezeStarted,
        EventType::FreezeEnded,
    ];

    /// Every event type's name, as [`EventType::ALL`] lists them.
    pub const NAMES: [&'static str; 20] = {
        let mut out = [""; 20];
        let mut i = 0;
        while i < out.len() {
            out[i] = EventType::ALL[i].as_str();
            i += 1;
        }
        out
    };

    /// The name a notification carries as its `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::Submitted => "rollout.submitted",
            EventType::WaveStarted => "rollout.wave.started",
            EventType::WaveCompleted => "rollout.wave.completed",
            EventType::AwaitingApproval => "rollout.awaiting_approval",
            EventType::Approved => "rollout.approved",
            EventType::Paused => "rollout.paused",
            EventType::Resumed => "rollout.resumed",
            EventType::Halted => "rollout.halted",
            EventType::Retried => "rollout.retried",
            EventType::RollingBack => "rollout.rolling_back",
            EventType::Succeeded => "rollout.succeeded",
            EventType::CompletedWithFailures => "rollout.completed_with_failures",
            EventType::Failed => "rollout.failed",
            EventType::Aborted => "rollout.aborted",
            EventType::AnalysisFailed => "analysis.failed",
            EventType::RestartStarted => "restart.started",
            EventType::RestartCompleted => "restart.completed",
            EventType::LeaderChanged => "controller.leader_changed",
            EventType::FreezeStarted => "freeze.started",
            EventType::FreezeEnded => "freeze.ended",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::EventType;

    /// Each type once, each name once.
    #[test]
    fn every_type_has_its_own_name() {
        let mut names = EventType::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventType::ALL.len());
        for (t, name) in EventType::ALL.iter().zip(EventType::NAMES) {
            assert_eq!(t.as_str(), name);
        }
    }
}
