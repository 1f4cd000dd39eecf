//! An emergency plan (`emergency: true`) in the state machine, on a fake clock: the
//! gate before its first wave, and what its approval starts.

use super::tests::{GATED, go_with, passed, step};
use super::*;

/// An emergency plan waits for an admin's approval before its first wave (the gate
/// the engine opens then needs one admin other than the submitter); approved, its
/// first wave starts, and freezes hold it no more.
#[test]
fn an_emergency_plan_waits_for_approval_before_its_first_wave() {
    let emergency = Policy {
        emergency: true,
        ..GATED
    };
    let (s, d) = step(&State::Pending, Event::Start, 0, &emergency).unwrap();
    assert_eq!(s, State::AwaitingApproval { wave: 0 });
    assert!(d.contains(&Decision::OpenEmergencyGate), "{d:?}");
    assert!(
        !d.contains(&Decision::OpenGate { wave: 0 }),
        "not the plan's gate after wave 1"
    );
    // Approved: the first wave starts (not the second, as after a plan's gate).
    let (s2, d) = step(&s, Event::Approved { first: true }, 5, &emergency).unwrap();
    assert_eq!(s2, State::Running { wave: 0 });
    assert_eq!(d, vec![Decision::CloseGate { outcome: "approved" }]);
    // Its own gates stay: after wave 1, the plan's gate holds it as any other.
    let (s3, d) = step(&State::Baking { wave: 0, until_ms: 10 }, passed(0), 10, &emergency).unwrap();
    assert_eq!(s3, State::AwaitingApproval { wave: 0 });
    assert!(d.contains(&Decision::OpenGate { wave: 0 }), "{d:?}");
    // A plan that is not an emergency starts at once.
    let (plain, _) = step(&State::Pending, Event::Start, 0, &GATED).unwrap();
    assert_eq!(plain, State::Running { wave: 0 });
    // Aborting at the emergency gate ends it.
    let abort = Event::Abort {
        reason: "not needed".into(),
        rollback: false,
    };
    assert!(matches!(go_with(&s, abort, &emergency), State::Aborted { .. }));
}
