//! The controller can never become a retry storm: when half the agents are down,
//! retries stay within 10% of first attempts and the rollout halts with a reason.

mod common;

use common::*;
use rollout::agent::SimulatorOptions;
use rollout::proto::v1 as pb;

/// 2,000 simulated hosts, half of whose agents answer Unavailable: the rollout halts
/// in its first wave naming the failures, and the agents received at most 1.1 Apply
/// calls per host the controller tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_agents_down_halts_without_hammering_them() {
    let h = Harness::start(
        2_000,
        SimulatorOptions {
            unavailable_rate: 0.5,
            seed: 5,
            ..Default::default()
        },
    )
    .await;
    let mut client = h.client.clone();
    let mut spec = plan("storm", &["5%", "100%"], "10%");
    spec.max_parallel = 50;
    submit(&mut client, spec).await;
    let seen = within(
        120,
        "the rollout to halt",
        watch_until(&mut client, "storm", |r| {
            matches!(r.state(), pb::RolloutState::Halted | pb::RolloutState::Succeeded)
        }),
    )
    .await;
    let halted = seen.last().unwrap();
    assert_eq!(halted.state(), pb::RolloutState::Halted);
    assert!(halted.halt_reason.starts_with("wave 1: "), "{}", halted.halt_reason);
    assert!(
        halted.halt_reason.contains("Unavailable") && halted.halt_reason.contains("agent is down"),
        "a clear reason: {}",
        halted.halt_reason
    );
    let tried = halted.hosts_succeeded + halted.hosts_failed;
    let calls = h.sim.sim.apply_calls();
    assert!(tried > 0 && tried <= 100, "only the first wave was tried: {tried}");
    assert!(
        calls as f64 <= 1.1 * tried as f64,
        "{calls} Apply calls for {tried} hosts tried: more than 10% retries"
    );
    assert_eq!(
        halted.waves[1].succeeded + halted.waves[1].failed,
        0,
        "wave 2 untouched"
    );
    h.stop().await;
}
