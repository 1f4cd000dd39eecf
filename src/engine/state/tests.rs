//! Every transition of the rollout state machine, with plain values and a fake clock.

use super::*;

const POLICY: Policy = Policy {
    waves: 3,
    bakes_ms: [1_000; MAX_WAVES],
    skipped: 0,
    rollback_on_failure: false,
    gated: 0,
    emergency: false,
};

/// `wave` of 10 hosts ended with `answered` of them answered, `failed` failed.
pub(super) fn report(wave: u32, answered: u64, failed: u64) -> Event {
    Event::WaveEnded(WaveReport {
        wave,
        size: 10,
        answered,
        failed,
        allowed: 1,
        whole_rollout: None,
        examples: vec!["h1: boom".into()],
        failed_total: failed,
        stuck: None,
    })
}

/// The step function, its decisions without the notifications (`notify_tests`
/// follows those through whole rollouts).
pub(super) fn step(state: &State, event: Event, now: i64, policy: &Policy) -> Step {
    super::step(state, event, now, policy).map(|(next, decisions)| {
        let work = decisions.into_iter().filter(|d| !matches!(d, Decision::Notify(_)));
        (next, work.collect())
    })
}

fn go(state: &State, event: Event, now: i64) -> State {
    step(state, event, now, &POLICY).unwrap().0
}

#[test]
fn waves_run_then_bake_then_advance_to_success() {
    let mut s = go(&State::Pending, Event::Start, 0);
    assert_eq!(s, State::Running { wave: 0 });
    for wave in 0..3 {
        s = go(&s, report(wave, 10, 1), 100);
        assert_eq!(s, State::Baking { wave, until_ms: 1_100 });
        s = go(
            &s,
            Event::BakeElapsed(HealthReport {
                wave,
                ..Default::default()
            }),
            1_100,
        );
    }
    assert_eq!(s, State::Succeeded);
}

/// A rollout whose last wave passes its gate with failed hosts left behind is not
/// a success: it completes with failures, says so in its reason and its timeline,
/// and a retry runs it again from its last wave; a retry is refused while it runs.
#[test]
fn failures_left_behind_end_in_their_own_outcome_and_can_be_retried() {
    let last = State::Baking { wave: 2, until_ms: 10 };
    let gate = |failed_total| {
        Event::BakeElapsed(HealthReport {
            wave: 2,
            failed_total,
            ..Default::default()
        })
    };
    let (s, decisions) = step(&last, gate(3), 10, &POLICY).unwrap();
    let State::CompletedWithFailures { reason } = &s else {
        panic!("{s:?}");
    };
    assert!(reason.contains("3 hosts failed"), "{reason}");
    assert!(s.is_terminal());
    assert!(
        decisions
            .iter()
            .any(|d| matches!(d, Decision::Audit(l) if l.starts_with("completed with failures")))
    );
    assert_eq!(go(&last, gate(0), 10), State::Succeeded);

    let (retried, decisions) = step(&s, Event::Retry, 20, &POLICY).unwrap();
    assert_eq!(retried, State::Running { wave: 2 });
    assert_eq!(decisions, vec![Decision::RetryFailed { wave: 2 }]);
    let halted = State::Halted {
        wave: 1,
        reason: "x".into(),
    };
    assert_eq!(go(&halted, Event::Retry, 0), State::Running { wave: 1 });
    for busy in [State::Running { wave: 0 }, last.clone(), State::Pending] {
        let Refusal(why) = step(&busy, Event::Retry, 0, &POLICY).unwrap_err();
        assert!(why.contains("wait for it"), "{why}");
    }
    let Refusal(why) = step(&State::Succeeded, Event::Retry, 0, &POLICY).unwrap_err();
    assert!(why.contains("nothing to retry"), "{why}");
    // The outcome survives its record.
    let mut record = pb::RolloutRecord::default();
    s.write(&mut record);
    assert_eq!(State::from_record(&record), s);
}

#[test]
fn hosts_unhealthy_after_the_bake_halt_the_wave() {
    let bake = State::Baking { wave: 1, until_ms: 10 };
    let health = |unhealthy| HealthReport {
        wave: 1,
        size: 10,
        failed: 1,
        unhealthy,
        allowed: 2,
        examples: vec!["h3: unhealthy".into()],
        ..Default::default()
    };
    assert_eq!(go(&bake, Event::BakeElapsed(health(1)), 10), State::Running { wave: 2 });
    let s = go(&bake, Event::BakeElapsed(health(2)), 10);
    let State::Halted { wave: 1, reason } = s else {
        panic!("{s:?}")
    };
    assert_eq!(
        reason,
        "wave 2: 2 of 10 hosts unhealthy after the bake (1 failed to apply), more than the 2 allowed by on_failure.max_failed; e.g. h3: unhealthy"
    );
}

#[test]
fn under_continue_failures_count_over_the_whole_rollout() {
    let wave = |failed| {
        Event::WaveEnded(WaveReport {
            wave: 2,
            size: 10,
            answered: 10,
            failed,
            allowed: 5,
            whole_rollout: Some(40),
            examples: vec![],
            failed_total: failed,
            stuck: None,
        })
    };
    // Every host of the wave may fail while the rollout stays within 5 of 40.
    assert_eq!(
        go(&State::Running { wave: 2 }, wave(5), 0),
        State::Baking {
            wave: 2,
            until_ms: 1_000
        }
    );
    let s = go(&State::Running { wave: 2 }, wave(6), 0);
    assert_eq!(
        s.reason(),
        "wave 3: 6 hosts failed so far, of 40 selected, more than the 5 allowed by on_failure.max_failed (action: continue)"
    );
}

#[test]
fn the_whole_selection_below_min_healthy_halts_after_the_bake() {
    let bake = State::Baking { wave: 0, until_ms: 10 };
    let fleet = |healthy| HealthReport {
        wave: 0,
        size: 10,
        allowed: 1,
        fleet: Some(FleetHealth {
            selected: 100,
            healthy,
            required: 95,
            floor: "95%".into(),
            examples: vec!["h9: unhealthy (oom)".into()],
        }),
        ..Default::default()
    };
    assert_eq!(go(&bake, Event::BakeElapsed(fleet(95)), 10), State::Running { wave: 1 });
    let s = go(&bake, Event::BakeElapsed(fleet(94)), 10);
    assert_eq!(
        s,
        State::Halted {
            wave: 0,
            reason: "wave 1: 94 of 100 selected hosts healthy after the bake (94.0%), below min_healthy 95% (95 needed); e.g. h9: unhealthy (oom)".into()
        }
    );
}

#[test]
fn a_stuck_wave_halts_naming_the_hosts_it_waited_on() {
    let stuck = Event::WaveEnded(WaveReport {
        wave: 0,
        size: 10,
        answered: 4,
        failed: 0,
        allowed: 1,
        whole_rollout: None,
        examples: vec![],
        failed_total: 0,
        stuck: Some((std::time::Duration::from_secs(600), vec!["h7".into(), "h9".into()])),
    });
    let s = go(&State::Running { wave: 0 }, stuck, 0);
    assert_eq!(
        s,
        State::Halted {
            wave: 0,
            reason: "wave 1 stuck: no progress for 10m; waiting on h7, h9".into()
        }
    );
}

#[test]
fn zero_bake_advances_at_once() {
    let policy = Policy {
        waves: 2,
        bakes_ms: [0; MAX_WAVES],
        skipped: 0,
        rollback_on_failure: false,
        gated: 0,
        emergency: false,
    };
    let (s, _) = step(&State::Running { wave: 0 }, report(0, 10, 0), 5, &policy).unwrap();
    assert_eq!(s, State::Running { wave: 1 });
    let (s, d) = step(&s, report(1, 10, 0), 5, &policy).unwrap();
    assert_eq!(s, State::Succeeded);
    assert_eq!(
        d,
        vec![
            Decision::Audit("wave 2 done: 10 hosts, 0 failed".into()),
            Decision::Audit("succeeded".into())
        ]
    );
}

#[test]
fn too_many_failures_halt_with_a_reason_even_mid_wave() {
    let s = go(&State::Running { wave: 1 }, report(1, 4, 2), 0);
    let State::Halted { wave: 1, reason } = &s else {
        panic!("{s:?}")
    };
    assert_eq!(
        reason,
        "wave 2: 2 of 10 hosts failed, more than the 1 allowed by on_failure.max_failed; e.g. h1: boom"
    );
    // Resume retries the failed hosts of that wave.
    let (s, d) = step(&s, Event::Resume, 0, &POLICY).unwrap();
    assert_eq!(s, State::Running { wave: 1 });
    assert_eq!(d[0], Decision::RequeueFailed { wave: 1 });
}

#[test]
fn with_rollback_on_failure_a_bad_wave_ends_the_rollout_and_starts_a_rollback() {
    let policy = Policy {
        rollback_on_failure: true,
        ..POLICY
    };
    let (s, d) = step(&State::Running { wave: 1 }, report(1, 4, 2), 0, &policy).unwrap();
    let State::Failed { reason } = &s else { panic!("{s:?}") };
    assert!(reason.ends_with("; rolling back every host it touched"), "{reason}");
    assert_eq!(d.last(), Some(&Decision::StartRollback));
    let abort = Event::Abort {
        reason: String::new(),
        rollback: true,
    };
    let (s, d) = step(
        &State::Paused {
            wave: 0,
            bake_until_ms: None,
        },
        abort,
        0,
        &POLICY,
    )
    .unwrap();
    assert!(matches!(s, State::Aborted { .. }));
    assert_eq!(d.last(), Some(&Decision::StartRollback));
}

#[test]
fn an_incomplete_wave_within_threshold_changes_nothing() {
    let s = State::Running { wave: 0 };
    assert_eq!(go(&s, report(0, 3, 0), 0), s, "stopped for a shutdown: resumes later");
}

#[test]
fn pause_and_resume_keep_the_bake() {
    let s = go(&State::Baking { wave: 0, until_ms: 500 }, Event::Pause, 100);
    assert_eq!(
        s,
        State::Paused {
            wave: 0,
            bake_until_ms: Some(500)
        }
    );
    assert_eq!(go(&s, Event::Pause, 100), s, "pausing twice is harmless");
    assert_eq!(go(&s, Event::Resume, 900), State::Baking { wave: 0, until_ms: 500 });
}

#[test]
fn a_wave_that_finishes_while_paused_bakes_after_resume() {
    let s = go(&State::Running { wave: 0 }, Event::Pause, 0);
    let s = go(&s, report(0, 10, 0), 50);
    assert_eq!(
        s,
        State::Paused {
            wave: 0,
            bake_until_ms: Some(1_050)
        }
    );
    let s = go(
        &State::Paused {
            wave: 0,
            bake_until_ms: None,
        },
        report(0, 5, 3),
        50,
    );
    assert!(
        matches!(s, State::Halted { wave: 0, .. }),
        "failures still halt while paused"
    );
}

#[test]
fn operators_get_refusals_that_say_what_would_work() {
    let err = step(&State::Running { wave: 0 }, Event::Resume, 0, &POLICY).unwrap_err();
    assert!(err.0.contains("only a paused or halted rollout can be resumed"));
    let err = step(
        &State::Succeeded,
        Event::Abort {
            reason: String::new(),
            rollback: false,
        },
        0,
        &POLICY,
    )
    .unwrap_err();
    assert!(err.0.contains("submit a new plan"));
    let halted = State::Halted {
        wave: 0,
        reason: "x".into(),
    };
    assert!(step(&halted, Event::Pause, 0, &POLICY).is_err());
    let aborted = go(
        &halted,
        Event::Abort {
            reason: String::new(),
            rollback: false,
        },
        0,
    );
    assert_eq!(
        aborted,
        State::Aborted {
            reason: "aborted by an operator".into()
        }
    );
    assert!(aborted.is_terminal());
}

#[test]
fn states_survive_their_record() {
    for s in [
        State::Pending,
        State::Running { wave: 2 },
        State::Baking { wave: 1, until_ms: 77 },
        State::Paused {
            wave: 3,
            bake_until_ms: None,
        },
        State::Paused {
            wave: 3,
            bake_until_ms: Some(9),
        },
        State::Halted {
            wave: 0,
            reason: "r".into(),
        },
        State::Succeeded,
        State::Failed { reason: "f".into() },
        State::Aborted { reason: "a".into() },
    ] {
        let mut r = pb::RolloutRecord::default();
        s.write(&mut r);
        assert_eq!(State::from_record(&r), s);
    }
}

#[test]
fn a_failed_analysis_acts_as_on_failure_says_an_inconclusive_one_halts() {
    let baking = State::Baking { wave: 0, until_ms: 10 };
    let failed = |wave| Event::AnalysisFailed {
        wave,
        reason: "analysis of wave 1: check `retry-ratio` failed: 0.21 > max 0.05".into(),
    };
    let s = go(&baking, failed(0), 5);
    assert_eq!(
        s,
        State::Halted {
            wave: 0,
            reason: "analysis of wave 1: check `retry-ratio` failed: 0.21 > max 0.05".into()
        }
    );
    // Under on_failure.action: rollback, the touched hosts go back.
    let policy = Policy {
        rollback_on_failure: true,
        ..POLICY
    };
    let (s, d) = step(&baking, failed(0), 5, &policy).unwrap();
    assert!(matches!(s, State::Failed { .. }), "{s:?}");
    assert_eq!(d.last(), Some(&Decision::StartRollback));
    // An inconclusive measurement halts, even under rollback: no rollback on a guess.
    let unsure = Event::AnalysisInconclusive {
        wave: 0,
        reason: "Prometheus unreachable".into(),
    };
    let (s, d) = step(&baking, unsure, 5, &policy).unwrap();
    assert!(matches!(s, State::Halted { wave: 0, .. }), "{s:?}");
    assert!(!d.contains(&Decision::StartRollback));
    // A verdict about another wave, or once paused, changes nothing.
    assert_eq!(go(&baking, failed(1), 5), baking);
    let paused = State::Paused {
        wave: 0,
        bake_until_ms: Some(10),
    };
    assert_eq!(go(&paused, failed(0), 5), paused);
}

pub(super) const GATED: Policy = Policy { gated: 0b01, ..POLICY };

/// The bake of `wave` ended with every host healthy.
pub(super) fn passed(wave: u32) -> Event {
    Event::BakeElapsed(HealthReport {
        wave,
        ..Default::default()
    })
}

/// A gate after wave 1 holds the rollout once the wave's bake and health gate
/// passed, before the next wave takes a host; the quorum starts wave 2 at once.
#[test]
fn a_gate_holds_after_its_wave_until_approved() {
    let baking = State::Baking { wave: 0, until_ms: 10 };
    let (s, d) = step(&baking, passed(0), 10, &GATED).unwrap();
    assert_eq!(s, State::AwaitingApproval { wave: 0 });
    assert!(d.contains(&Decision::OpenGate { wave: 0 }), "{d:?}");
    assert_eq!(s.name(), "awaiting-approval");
    assert_eq!(s.proto(), pb::RolloutState::AwaitingApproval);
    // Stored and read back, it waits still.
    let mut record = pb::RolloutRecord::default();
    s.write(&mut record);
    assert_eq!(State::from_record(&record), s);
    // Events of the wave's driver change nothing; operators are told what would.
    assert_eq!(go_with(&s, passed(0), &GATED), s);
    let pause = step(&s, Event::Pause, 0, &GATED).unwrap_err();
    assert!(pause.0.contains("awaiting approval"), "{pause}");
    assert!(step(&s, Event::Resume, 0, &GATED).unwrap_err().0.contains("approve"));
    let (s2, d) = step(&s, Event::Approved { first: false }, 20, &GATED).unwrap();
    assert_eq!(s2, State::Running { wave: 1 });
    assert_eq!(d, vec![Decision::CloseGate { outcome: "approved" }]);
    // No gate after wave 2: it bakes and goes on by itself.
    let (s3, _) = step(&State::Baking { wave: 1, until_ms: 0 }, passed(1), 0, &GATED).unwrap();
    assert_eq!(s3, State::Running { wave: 2 });
    // Approving a rollout that does not wait is refused.
    assert!(step(&s3, Event::Approved { first: false }, 0, &GATED).is_err());
}

/// Without a bake the gate opens as soon as the wave ends.
#[test]
fn a_gate_opens_after_a_wave_without_bake() {
    let policy = Policy {
        bakes_ms: [0; MAX_WAVES],
        skipped: 0,
        ..GATED
    };
    let (s, d) = step(&State::Running { wave: 0 }, report(0, 10, 0), 5, &policy).unwrap();
    assert_eq!(s, State::AwaitingApproval { wave: 0 });
    assert!(d.contains(&Decision::OpenGate { wave: 0 }), "{d:?}");
}

/// Each on_timeout acts: halt (resume runs the wave's failed hosts and the gate
/// opens again), abort, rollback.
#[test]
fn a_gate_timing_out_halts_aborts_or_rolls_back() {
    use crate::plan::OnTimeout;
    let waiting = State::AwaitingApproval { wave: 0 };
    let timed_out = |action| Event::GateTimedOut {
        action,
        reason: "gate after 10% timed out".into(),
    };
    let (s, d) = step(&waiting, timed_out(OnTimeout::Halt), 0, &GATED).unwrap();
    assert_eq!(
        s,
        State::Halted {
            wave: 0,
            reason: "gate after 10% timed out".into()
        }
    );
    assert!(d.contains(&Decision::CloseGate { outcome: "halted" }));
    let (resumed, d) = step(&s, Event::Resume, 0, &GATED).unwrap();
    assert_eq!(resumed, State::Running { wave: 0 });
    assert!(d.contains(&Decision::RequeueFailed { wave: 0 }));
    let (s, _) = step(&waiting, timed_out(OnTimeout::Abort), 0, &GATED).unwrap();
    assert!(matches!(s, State::Aborted { .. }), "{s:?}");
    let (s, d) = step(&waiting, timed_out(OnTimeout::Rollback), 0, &GATED).unwrap();
    assert!(
        matches!(&s, State::Aborted { reason } if reason.contains("rolling back")),
        "{s:?}"
    );
    assert!(d.contains(&Decision::StartRollback));
    // A timeout that arrives after the gate closed changes nothing.
    let running = State::Running { wave: 1 };
    assert_eq!(go_with(&running, timed_out(OnTimeout::Abort), &GATED), running);
}

/// A retry at the gate re-runs the wave's failed hosts: the gate closes as
/// superseded and opens again, new, after the bake.
#[test]
fn a_retry_at_the_gate_supersedes_it() {
    let (s, d) = step(&State::AwaitingApproval { wave: 0 }, Event::Retry, 0, &GATED).unwrap();
    assert_eq!(s, State::Running { wave: 0 });
    assert_eq!(
        d,
        vec![
            Decision::CloseGate { outcome: "superseded" },
            Decision::RetryFailed { wave: 0 }
        ]
    );
    let (s, d) = step(
        &State::AwaitingApproval { wave: 0 },
        Event::Abort {
            reason: String::new(),
            rollback: false,
        },
        0,
        &GATED,
    )
    .unwrap();
    assert!(matches!(s, State::Aborted { .. }));
    assert!(d.contains(&Decision::CloseGate { outcome: "aborted" }));
}

pub(super) fn go_with(state: &State, event: Event, policy: &Policy) -> State {
    step(state, event, 0, policy).unwrap().0
}

/// The analysis goes on while a gate waits: a failure closes the gate as it would
/// have failed the bake (halt, or under on_failure rollback, roll back); an
/// inconclusive round under `inconclusive: halt` halts.
#[test]
fn an_analysis_failing_at_the_gate_closes_it() {
    let waiting = State::AwaitingApproval { wave: 0 };
    let failed = Event::AnalysisFailed {
        wave: 0,
        reason: "retry-ratio 0.3 > max 0.05".into(),
    };
    let (s, d) = step(&waiting, failed.clone(), 0, &GATED).unwrap();
    assert!(matches!(s, State::Halted { wave: 0, .. }), "{s:?}");
    assert!(d.contains(&Decision::CloseGate { outcome: "halted" }), "{d:?}");
    let rolling = Policy {
        rollback_on_failure: true,
        ..GATED
    };
    let (s, d) = step(&waiting, failed, 0, &rolling).unwrap();
    assert!(matches!(s, State::Failed { .. }), "{s:?}");
    assert!(d.contains(&Decision::StartRollback) && d.contains(&Decision::CloseGate { outcome: "rolled-back" }));
    let unsure = Event::AnalysisInconclusive {
        wave: 0,
        reason: "no data".into(),
    };
    let (s, d) = step(&waiting, unsure, 0, &GATED).unwrap();
    assert!(matches!(s, State::Halted { .. }));
    assert!(d.contains(&Decision::CloseGate { outcome: "halted" }));
}
