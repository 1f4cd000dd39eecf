//! Which notifications each transition makes: one per thing that happened, in the
//! order it happened, and none while a rollout only waits.

use super::tests::{GATED as POLICY, passed as baked, report};
use super::*;

fn ended(wave: u32) -> Event {
    report(wave, 10, 0)
}

/// Steps and says which events the transition makes.
fn says(state: &State, event: Event) -> (State, Vec<&'static str>) {
    let (next, decisions) = step(state, event, 0, &POLICY).unwrap();
    (next, told(&decisions))
}

/// The names of the notifications among `decisions`, in order.
fn told(decisions: &[Decision]) -> Vec<&'static str> {
    decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Notify(t) => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

/// A whole rollout through a gate: every event once, in order, and nothing while
/// it only waits.
#[test]
fn a_rollout_through_a_gate_says_each_thing_once() {
    let mut all = Vec::new();
    let mut s = State::Pending;
    for event in [
        Event::Start,
        ended(0),
        baked(0),
        baked(0), // a repeat changes nothing, says nothing
        Event::Approved { first: false },
        ended(1),
        Event::Pause,
        Event::Resume,
        baked(1),
        ended(2),
        baked(2),
    ] {
        let (next, kinds) = says(&s, event);
        all.extend(kinds);
        s = next;
    }
    assert_eq!(s, State::Succeeded);
    assert_eq!(
        all,
        [
            "rollout.wave.started",
            "rollout.wave.completed",
            "rollout.awaiting_approval",
            "rollout.approved",
            "rollout.wave.started",
            "rollout.paused",
            "rollout.resumed",
            "rollout.wave.completed",
            "rollout.wave.started",
            "rollout.wave.completed",
            "rollout.succeeded",
        ]
    );
}

/// Halts, failures with a rollback and aborts each say so, in the order they happen.
#[test]
fn halts_failures_and_rollbacks_say_so() {
    let baking = State::Baking { wave: 1, until_ms: 0 };
    let failed = Event::AnalysisFailed {
        wave: 1,
        reason: "retry-ratio".into(),
    };
    assert_eq!(says(&baking, failed.clone()).1, ["analysis.failed", "rollout.halted"]);
    let rolling = Policy {
        rollback_on_failure: true,
        ..POLICY
    };
    let (_, decisions) = step(&baking, failed.clone(), 0, &rolling).unwrap();
    assert_eq!(
        told(&decisions),
        ["analysis.failed", "rollout.failed", "rollout.rolling_back"]
    );
    let (halted, _) = says(&baking, failed);
    assert_eq!(says(&halted, Event::Retry).1, ["rollout.retried"]);
    let abort = Event::Abort {
        reason: String::new(),
        rollback: true,
    };
    assert_eq!(says(&halted, abort).1, ["rollout.aborted", "rollout.rolling_back"]);
}

/// A gate that times out says what it did; a rollout that ends with failures and
/// is retried starts its last wave again; waiting, repeats and refusals say nothing.
#[test]
fn timeouts_retries_and_quiet_steps() {
    let waiting = State::AwaitingApproval { wave: 0 };
    let timed_out = |action| Event::GateTimedOut {
        action,
        reason: "nobody approved".into(),
    };
    assert_eq!(
        says(&waiting, timed_out(crate::plan::OnTimeout::Halt)).1,
        ["rollout.halted"]
    );
    assert_eq!(
        says(&waiting, timed_out(crate::plan::OnTimeout::Rollback)).1,
        ["rollout.aborted", "rollout.rolling_back"]
    );
    let completed = State::CompletedWithFailures {
        reason: "2 failed".into(),
    };
    assert_eq!(
        says(&completed, Event::Retry).1,
        ["rollout.retried", "rollout.wave.started"]
    );
    let paused = State::Paused {
        wave: 1,
        bake_until_ms: None,
    };
    assert!(says(&paused, Event::Pause).1.is_empty(), "pausing twice says nothing");
    assert!(says(&paused, ended(1)).1.is_empty(), "a wave ending while paused waits");
    let baking = State::Baking { wave: 1, until_ms: 0 };
    assert!(
        says(&baking, ended(1)).1.is_empty(),
        "a repeated report changes nothing"
    );
    assert_eq!(
        says(&baking, Event::Fatal { reason: "store".into() }).1,
        ["rollout.failed"]
    );
    assert!(
        says(&State::Succeeded, Event::Fatal { reason: "late".into() })
            .1
            .is_empty()
    );
}
