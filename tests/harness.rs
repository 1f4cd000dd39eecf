//! The crash-safety harness: a 20,000-host rollout through the real binaries, the
//! controller killed with SIGKILL 12 times: at 10 seeded random moments, once during a
//! bake and once during a pause. After every restart and at the end the invariants
//! hold: no host applied twice, counters equal to a re-count of the store, progress
//! never going down for a watcher, and 100% at the end.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use rand::{Rng, SeedableRng};
use rollout::cli::connect;
use rollout::proto::v1 as pb;
use rollout::store::Store;

const HOSTS: usize = 20_000;
const SEED: u64 = 2026;

/// Succeeded hosts of the rollout, counted in the store of a dead controller.
fn recount(data: &Path) -> u64 {
    let store = Store::open(data).expect("the dead controller's store opens");
    let id = store.rollouts().unwrap()[0].id;
    store
        .rollout_hosts(id)
        .filter(|r| r.as_ref().is_ok_and(|(_, h)| h.state() == pb::HostState::Succeeded))
        .count() as u64
}

/// A controller SIGKILLed at ten seeded random moments of a rollout (and in a bake
/// and a pause) resumes each time: its counters never fall below the store's, no
/// finished host is forgotten, a paused rollout stays paused, progress never goes
/// down for a watcher, and the rollout succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_random_kills_and_more_leave_every_invariant_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let (mut agent, fleet, ctl_fleet) = spawn_simulator(dir.path(), HOSTS, "1..6", &log).await;

    let mut controller = spawn_controller_on("127.0.0.1:0", &data, &ctl_fleet, &[], &log).await;
    let listen = controller.addr.to_string();
    let server = format!("http://{listen}");
    let mut client = connect(&server).await.unwrap();
    let mut spec = plan("harness", &["1%", "10%", "30%", "60%", "90%", "100%"], "0");
    spec.max_parallel = 100;
    spec.bake = "1s".into();
    submit(&mut client, spec).await;

    // A watcher for the whole run, across restarts: progress must never go down.
    let watcher = tokio::spawn({
        let server = server.clone();
        async move {
            let mut seen: Vec<f64> = Vec::new();
            loop {
                let Ok(mut c) = connect(&server).await else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let Ok(stream) = c
                    .watch_rollout(pb::GetRolloutRequest {
                        name: "harness".into(),
                        id: 0,
                    })
                    .await
                else {
                    continue;
                };
                let mut stream = stream.into_inner();
                while let Ok(Some(r)) = stream.message().await {
                    seen.push(r.percent_complete);
                    if r.state() == pb::RolloutState::Succeeded {
                        return seen;
                    }
                }
            }
        }
    });

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(SEED);
    // Twelve moments: ten at seeded random progress, and the first two kills go to
    // a bake and a pause.
    let mut moments: Vec<f64> = (0..12).map(|_| rng.random_range(2.0..97.0)).collect();
    moments.sort_by(|a, b| a.total_cmp(b));
    let mut kills = Vec::new();
    let mut special = vec!["bake", "pause"];
    for at in moments {
        let r = within(300, "the rollout to reach the next kill point", async {
            loop {
                if let Ok(r) = client
                    .get_rollout(pb::GetRolloutRequest {
                        name: "harness".into(),
                        id: 0,
                    })
                    .await
                {
                    let r = r.into_inner();
                    let bake_now = special.first() == Some(&"bake") && r.state() == pb::RolloutState::Baking;
                    if r.percent_complete >= at || bake_now || r.state() == pb::RolloutState::Succeeded {
                        return r;
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
        .await;
        if r.state() == pb::RolloutState::Succeeded {
            break;
        }
        let mut what = format!(
            "{:.1}% {}",
            r.percent_complete,
            rollout::cli::render::state_name(r.state())
        );
        if r.state() == pb::RolloutState::Baking && special.first() == Some(&"bake") {
            special.remove(0);
            what.push_str(" (during a bake)");
        } else if special.first() == Some(&"pause") {
            special.remove(0);
            client.pause_rollout(action("harness")).await.unwrap();
            what.push_str(" (during a pause)");
        }
        controller.kill9().await.unwrap();
        let counted = recount(&data);
        controller = spawn_controller_on(&listen, &data, &ctl_fleet, &[], &log).await;
        client = connect(&server).await.unwrap();
        let after = get(&mut client, "harness").await;
        assert!(
            after.hosts_succeeded >= counted,
            "counters below the store after restart: {} < {counted}",
            after.hosts_succeeded
        );
        assert!(
            after.hosts_succeeded >= r.hosts_succeeded,
            "a finished host was forgotten"
        );
        if what.ends_with("(during a pause)") {
            assert_eq!(
                after.state(),
                pb::RolloutState::Paused,
                "a paused rollout stays paused across a crash"
            );
            client.resume_rollout(action("harness")).await.unwrap();
        }
        kills.push(what);
    }
    let seen = within(300, "the watcher to see the end", watcher).await.unwrap();
    for pair in seen.windows(2) {
        assert!(
            pair[1] >= pair[0],
            "percent went down for a watcher: {} then {}",
            pair[0],
            pair[1]
        );
    }
    let done = get(&mut client, "harness").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded);
    assert_eq!(done.percent_complete, 100.0);
    eprintln!("survived {} kills: {}", kills.len(), kills.join("; "));
    // Restarts past the first wave start from the counters checkpoint of the settled
    // waves (and read only the others' hosts).
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let from = |how: &str| logged.matches(&format!("from=\"{how}\"")).count();
    eprintln!(
        "loads: {} from a checkpoint, {} from every host",
        from("checkpoint"),
        from("hosts")
    );
    assert!(from("checkpoint") > 0, "no restart loaded from a checkpoint");
    assert!(kills.len() >= 12, "only {} kills happened", kills.len());
    assert!(
        kills.iter().any(|k| k.ends_with("(during a bake)")) && kills.iter().any(|k| k.ends_with("(during a pause)"))
    );

    // Counters equal a re-count of the store.
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(recount(&data), done.hosts_succeeded);
    // No host applied twice.
    let mut twice = Vec::new();
    for (host, p) in probe_all(&agent.addr.to_string(), &fleet).await {
        if p.operations_executed != 1 || p.version != "15.20.8207.12" {
            twice.push((host.clone(), p.operations_executed, p.version));
        }
    }
    assert!(
        twice.is_empty(),
        "{} hosts not applied exactly once: {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
