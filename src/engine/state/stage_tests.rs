//! The state machine with a plan in stages, on a fake clock: each stage's own bake,
//! an empty stage skipped, gates at a stage's end and within one, a halt or a pause
//! inside a stage. (Stages are waves to the state machine; these are the policies a
//! staged plan gives it.)

use super::tests::{report, step};
use super::*;

/// A plan in stages, as the state machine sees it: canary (wave 0, its own 30m bake),
/// an empty stage (wave 1, skipped), apac (waves 2 and 3, the plan's 5m bake), with a
/// gate at the canary's end and one inside apac (after wave 2).
const STAGED: Policy = Policy {
    waves: 4,
    bakes_ms: {
        let mut b = [300_000; MAX_WAVES];
        b[0] = 1_800_000;
        b[1] = 0;
        b
    },
    skipped: 0b10,
    rollback_on_failure: false,
    gated: 0b101,
    emergency: false,
};

fn baked(s: &State, wave: u32, at: i64) -> State {
    let event = Event::BakeElapsed(HealthReport {
        wave,
        ..Default::default()
    });
    step(s, event, at, &STAGED).unwrap().0
}

#[test]
fn stages_bake_their_own_time_skip_when_empty_and_hold_at_their_gates() {
    let s = step(&State::Pending, Event::Start, 0, &STAGED).unwrap().0;
    // The canary bakes its own 30 minutes, then its gate holds before the next stage.
    let s = step(&s, report(0, 10, 0), 1_000, &STAGED).unwrap().0;
    assert_eq!(
        s,
        State::Baking {
            wave: 0,
            until_ms: 1_801_000
        }
    );
    let s = baked(&s, 0, 1_801_000);
    assert_eq!(s, State::AwaitingApproval { wave: 0 });
    let s = step(&s, Event::Approved { first: false }, 1_900_000, &STAGED)
        .unwrap()
        .0;
    assert_eq!(s, State::Running { wave: 1 });
    // The empty stage: no bake, and it says it was skipped.
    let empty = Event::WaveEnded(WaveReport {
        wave: 1,
        size: 0,
        answered: 0,
        failed: 0,
        allowed: 0,
        whole_rollout: None,
        examples: Vec::new(),
        failed_total: 0,
        stuck: None,
    });
    let (s, d) = step(&s, empty, 1_900_001, &STAGED).unwrap();
    assert_eq!(s, State::Running { wave: 2 });
    assert!(
        d.contains(&Decision::Audit("wave 2 skipped: its stage has no hosts".into())),
        "{d:?}"
    );
    // Inside apac: the plan's 5 minutes, then the gate inside the stage.
    let s = step(&s, report(2, 10, 0), 2_000_000, &STAGED).unwrap().0;
    assert_eq!(
        s,
        State::Baking {
            wave: 2,
            until_ms: 2_300_000
        }
    );
    let s = baked(&s, 2, 2_300_000);
    assert_eq!(s, State::AwaitingApproval { wave: 2 });
}

/// Halt inside a stage, resume there; a paused wave keeps its stage's bake.
#[test]
fn a_halt_or_pause_inside_a_stage_resumes_inside_it() {
    let halted = step(&State::Running { wave: 3 }, report(3, 4, 2), 0, &STAGED)
        .unwrap()
        .0;
    assert!(matches!(halted, State::Halted { wave: 3, .. }), "{halted:?}");
    let resumed = step(&halted, Event::Resume, 10, &STAGED).unwrap().0;
    assert_eq!(resumed, State::Running { wave: 3 });
    let paused = step(&State::Running { wave: 0 }, Event::Pause, 20, &STAGED).unwrap().0;
    let finished = step(&paused, report(0, 10, 0), 30, &STAGED).unwrap().0;
    assert_eq!(
        finished,
        State::Paused {
            wave: 0,
            bake_until_ms: Some(30 + 1_800_000)
        }
    );
}

/// Too many failures inside a stage under `on_failure.action: rollback`: the rollout
/// ends there and rolls back what it touched; a halt inside a stage is retried there.
#[test]
fn a_rollback_or_a_retry_acts_inside_the_stage() {
    let rolling = Policy {
        rollback_on_failure: true,
        ..STAGED
    };
    let (s, d) = step(&State::Running { wave: 2 }, report(2, 4, 2), 0, &rolling).unwrap();
    assert!(matches!(s, State::Failed { .. }), "{s:?}");
    assert_eq!(d.last(), Some(&Decision::StartRollback));
    let halted = step(&State::Running { wave: 2 }, report(2, 4, 2), 0, &STAGED)
        .unwrap()
        .0;
    let (s, d) = step(&halted, Event::Retry, 10, &STAGED).unwrap();
    assert_eq!(s, State::Running { wave: 2 });
    assert!(d.contains(&Decision::RetryFailed { wave: 2 }), "{d:?}");
}
