//! The status text for each kind of rollout and state, word for word.

use super::*;

/// 2026-12-02 17:45:00 UTC.
const AT_1745: i64 = 1_796_233_500_000;

fn waves(percents: &[&str]) -> Vec<pb::Wave> {
    percents
        .iter()
        .enumerate()
        .map(|(i, p)| pb::Wave {
            index: i as u32,
            percent: p.to_string(),
            ..Default::default()
        })
        .collect()
}

fn group(reason: &str, hosts: u64, kind: &str) -> pb::FailureGroup {
    pb::FailureGroup {
        reason: reason.into(),
        kind: kind.into(),
        hosts,
        host_ids: vec![],
    }
}

fn fix() -> pb::Rollout {
    pb::Rollout {
        name: "exo-retry-fix".into(),
        kind: "fix".into(),
        version: "15.20.8207.12".into(),
        state: pb::RolloutState::Baking as i32,
        current_wave: 3,
        waves: waves(&["1%", "10%", "30%", "60%", "90%", "100%"]),
        hosts_selected: 10_020,
        hosts_succeeded: 6_012,
        hosts_failed: 3,
        customers_affected: 700,
        customers_mitigated: 412,
        bake_until_unix_ms: AT_1745,
        plan: Some(pb::PlanSpec {
            bake: "5m".into(),
            ..Default::default()
        }),
        failures: vec![
            group("disk full on /var", 2, "failed"),
            group("timed out after 3s", 1, "failed"),
        ],
        ..Default::default()
    }
}

#[test]
fn a_fix_baking_says_how_far_what_next_and_what_failed() {
    assert_eq!(
        rollout(&fix()),
        "The fix (build 15.20.8207.12) has been deployed to 60% of the affected environment (6,012 of 10,020 hosts; 412 of 700 customers fully mitigated). The next wave (90%) starts after the 5m bake, at about 17:45 UTC. 3 hosts failed: disk full on /var (2), timed out after 3s (1)."
    );
}

#[test]
fn percentages_are_whole_and_never_rounded_up() {
    let mut r = fix();
    r.hosts_succeeded = 6_011; // 59.99%
    assert!(
        rollout(&r).contains("deployed to 59% of the affected environment"),
        "{}",
        rollout(&r)
    );
}

#[test]
fn a_rollback_a_halt_and_unhealthy_hosts() {
    let r = pb::Rollout {
        name: "apac-network-rollback".into(),
        kind: "rollback".into(),
        state: pb::RolloutState::Halted as i32,
        current_wave: 0,
        waves: waves(&["50%", "100%"]),
        hosts_selected: 1_000,
        hosts_succeeded: 480,
        hosts_failed: 1,
        hosts_unhealthy: 15,
        customers_affected: 40,
        customers_mitigated: 12,
        halt_reason: "wave 1: 16 of 500 hosts unhealthy after the bake (1 failed to apply), more than the 5 allowed by on_failure.max_failed".into(),
        failures: vec![
            group("connection refused", 1, "failed"),
            group("unhealthy after the bake", 15, "unhealthy"),
        ],
        ..Default::default()
    };
    assert_eq!(
        rollout(&r),
        "The rollback to each host's previous version has reached 48% of the affected environment (480 of 1,000 hosts; 12 of 40 customers fully mitigated). It halted: wave 1: 16 of 500 hosts unhealthy after the bake (1 failed to apply), more than the 5 allowed by on_failure.max_failed. 1 host failed: connection refused (1). 15 hosts applied it but were unhealthy after a bake: unhealthy after the bake (15)."
    );
}

#[test]
fn an_open_gate_says_who_must_approve_and_until_when() {
    let mut r = fix();
    r.state = pb::RolloutState::AwaitingApproval as i32;
    r.failures.clear();
    r.hosts_failed = 0;
    r.submitted_by = "alice".into();
    r.gate = Some(pb::Gate {
        approvals_required: 2,
        approvals_needed: 1,
        role: "operator".into(),
        four_eyes: true,
        on_timeout: "halt".into(),
        deadline_unix_ms: AT_1745,
        approvals: vec![pb::Approval {
            principal: "bob".into(),
            ..Default::default()
        }],
        evidence: Some(pb::GateEvidence {
            next_wave: Some(pb::WavePreview {
                percent: "90%".into(),
                new_hosts: 3_006,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        next(&r).unwrap(),
        "It waits for approval before the next wave (90%, 3,006 more hosts): 1 more approval needed, 1 of 2 so far (operator or above, not the submitter alice). Approved so far by bob. The gate times out at 17:45 UTC (then halt)."
    );
}

#[test]
fn every_end_says_so_and_a_drill_clock_is_said_plainly() {
    let mut r = fix();
    r.failures.clear();
    r.hosts_failed = 0;
    r.hosts_succeeded = r.hosts_selected;
    r.customers_mitigated = r.customers_affected;
    r.state = pb::RolloutState::Succeeded as i32;
    r.drill_clock = "drill clock in force: business hours as of 2026-11-30T09:00:00Z (not the real time)".into();
    assert_eq!(
        rollout(&r),
        "The fix (build 15.20.8207.12) has been deployed to 100% of the affected environment (10,020 of 10,020 hosts; 700 of 700 customers fully mitigated). Every selected host has it. Drill clock in force: business hours as of 2026-11-30T09:00:00Z (not the real time)."
    );
    r.state = pb::RolloutState::Aborted as i32;
    r.halt_reason = "aborted by an operator".into();
    assert!(rollout(&r).contains("It was aborted: aborted by an operator."));
    r.state = pb::RolloutState::Pending as i32;
    assert!(
        rollout(&r).starts_with(
            "The fix (build 15.20.8207.12) has not started yet: 10,020 hosts of 700 customers are selected."
        )
    );
}

#[test]
fn a_restart_job_in_progress_by_business_hours() {
    let j = pb::RestartJob {
        id: 4,
        state: pb::RestartJobState::Running as i32,
        hosts_total: 410,
        hosts_restarted: 120,
        hosts_failed: 2,
        hosts_in_flight: 16,
        hosts_pending: 272,
        tiers: vec![
            pb::TierCount {
                tier: "in-hours".into(),
                total: 79,
                restarted: 79,
            },
            pb::TierCount {
                tier: "starting-soon".into(),
                total: 8,
                restarted: 8,
            },
            pb::TierCount {
                tier: "off-hours".into(),
                total: 323,
                restarted: 33,
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        restart_job(&j),
        "Targeted restarts (job 4) are in progress: 120 of 410 hosts restarted (29%), 16 in flight, 272 waiting, customers in their working day first. By business hours: in-hours 79 of 79, starting-soon 8 of 8, off-hours 33 of 323. 2 of the 122 done failed to restart."
    );
    let done = pb::RestartJob {
        state: pb::RestartJobState::Succeeded as i32,
        hosts_restarted: 410,
        hosts_failed: 0,
        hosts_in_flight: 0,
        hosts_pending: 0,
        tiers: vec![],
        ..j
    };
    assert_eq!(
        restart_job(&done),
        "Targeted restarts (job 4) are done: 410 of 410 hosts restarted (100%)."
    );
}

#[test]
fn counts_have_thousands_separators() {
    assert_eq!(count(0), "0");
    assert_eq!(count(999), "999");
    assert_eq!(count(1_000), "1,000");
    assert_eq!(count(1_234_567), "1,234,567");
}

/// A rollback says what it returns hosts to, word for word: a build, or (an automatic
/// one) the build it takes away, or each host's previous version.
#[test]
fn rollbacks_read_right() {
    let base = pb::Rollout {
        name: "apac-network-rollback".into(),
        kind: "rollback".into(),
        state: pb::RolloutState::Running as i32,
        waves: waves(&["5%", "100%"]),
        hosts_selected: 2_147,
        hosts_succeeded: 108,
        hosts_in_flight: 12,
        customers_affected: 30,
        customers_mitigated: 2,
        ..Default::default()
    };
    let automatic = pb::Rollout {
        rolls_back: "15.20.8207.12".into(),
        ..base.clone()
    };
    assert_eq!(
        rollout(&automatic),
        "The rollback of build 15.20.8207.12 to the previous version has reached 5% of the affected environment (108 of 2,147 hosts; 2 of 30 customers fully mitigated). Wave 1 of 2 (5%) is running: 12 hosts in flight, 0 waiting."
    );
    let to_build = pb::Rollout {
        version: "15.20.8100.3".into(),
        ..base.clone()
    };
    assert!(
        rollout(&to_build).starts_with("The rollback to build 15.20.8100.3 has reached 5% of the affected environment"),
        "{}",
        rollout(&to_build)
    );
    assert_eq!(change(&base), "rollback to each host's previous version");
    assert_eq!(
        change(&automatic),
        "rollback of build 15.20.8207.12 to the previous version"
    );
    let pending = pb::Rollout {
        state: pb::RolloutState::Pending as i32,
        ..automatic
    };
    assert_eq!(
        rollout(&pending),
        "The rollback of build 15.20.8207.12 to the previous version has not started yet: 2,147 hosts of 30 customers are selected."
    );
}
