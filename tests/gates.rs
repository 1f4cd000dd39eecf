//! Approval gates through real controller processes with `--auth`: a two-approval
//! four-eyes gate holds the rollout after its wave; a viewer, the submitter and a
//! stale gate id are refused with their codes; one approval is not enough and
//! survives a SIGKILL; the second starts the next wave; every approval and refusal
//! is in `rollout audit`. Each `on_timeout` acts, also when the deadline passed while
//! no controller was up.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use rollout::cli::process::Spawned;
use rollout::cli::{Client, Credentials, connect_with};
use rollout::proto::v1 as pb;
use tonic::Code;

/// alice submits; bob and carol approve; vic only looks; ada administers.
const PEOPLE: [(&str, &str); 5] = [
    ("alice", "operator"),
    ("bob", "operator"),
    ("carol", "operator"),
    ("vic", "viewer"),
    ("ada", "admin"),
];

/// A controller with `--auth` over the fleet file `fleet`, its store in `dir/data`.
struct Gated {
    dir: PathBuf,
    fleet: PathBuf,
    url: String,
    controller: Spawned,
}

impl Gated {
    /// A simulator of `hosts` (Apply latency `latency_ms`) and a controller over it.
    async fn with_fleet(dir: &Path, hosts: usize, latency_ms: &str) -> (Spawned, Gated) {
        let (agent, _fleet, ctl_fleet) = spawn_simulator(dir, hosts, latency_ms, &dir.join("log")).await;
        (agent, Gated::start(dir, &ctl_fleet).await)
    }

    async fn start(dir: &Path, fleet: &Path) -> Gated {
        for (principal, _) in PEOPLE {
            std::fs::write(dir.join(format!("{principal}.token")), token(principal)).unwrap();
        }
        tokens_file(dir, &PEOPLE);
        let controller = serve(dir, fleet).await;
        Gated {
            dir: dir.to_path_buf(),
            fleet: fleet.to_path_buf(),
            url: format!("http://{}", controller.addr),
            controller,
        }
    }

    /// SIGKILL, then a new controller on the same store (a new port).
    async fn crash_and_restart(&mut self, between: Duration) {
        self.controller.kill9().await.unwrap();
        tokio::time::sleep(between).await;
        self.controller = serve(&self.dir, &self.fleet).await;
        self.url = format!("http://{}", self.controller.addr);
    }

    async fn as_(&self, principal: &str) -> Client {
        let credentials = Credentials {
            token: Some(token(principal)),
            ..Default::default()
        };
        connect_with(&self.url, &credentials).await.unwrap()
    }

    /// The real CLI as `principal`.
    async fn cli(&self, principal: &str, args: &[&str]) -> std::process::Output {
        let token = self.dir.join(format!("{principal}.token"));
        let mut all = vec!["--server", &self.url, "--token-file", token.to_str().unwrap()];
        all.extend_from_slice(args);
        rollout(&all).await
    }

    async fn stop(mut self) {
        assert_eq!(
            self.controller.terminate(Duration::from_secs(30)).await.unwrap(),
            Some(0),
            "the controller exits cleanly"
        );
    }
}

async fn serve(dir: &Path, fleet: &Path) -> Spawned {
    let tokens = dir.join("tokens.yaml");
    let extra = [
        "--auth".as_ref(),
        tokens.as_os_str(),
        "--http-listen".as_ref(),
        "127.0.0.1:0".as_ref(),
    ];
    spawn_controller(&dir.join("data"), fleet, &extra, &dir.join("log")).await
}

/// A fix over every host in two waves (10%, 100%) with `gate` after the first.
fn gated_plan(dir: &Path, name: &str, gate: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: 15.20.8207.12\n\
             waves: [10%, 100%]\nmax_parallel: 50\nbake: 1s\ngates:\n  - after: 10%\n{gate}"
        ),
    )
    .unwrap();
    path
}

async fn approve(
    client: &mut Client,
    name: &str,
    gate_id: &str,
    request_id: &str,
) -> Result<pb::ApproveRolloutResponse, tonic::Status> {
    client
        .approve_rollout(pb::ApproveRolloutRequest {
            name: name.into(),
            gate_id: gate_id.into(),
            comment: String::new(),
            request_id: request_id.into(),
            id: 0,
        })
        .await
        .map(|r| r.into_inner())
}

fn refused(answer: Result<pb::ApproveRolloutResponse, tonic::Status>, code: Code, says: &str) {
    let status = answer.expect_err("the approval must be refused");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(status.message().contains(says), "{}", status.message());
    assert!(!status.message().contains('\n'), "one line: {}", status.message());
}

async fn waiting(client: &mut Client, name: &str) -> pb::Rollout {
    until(client, name, 120, "the gate to open", |r| {
        r.state() == pb::RolloutState::AwaitingApproval || r.state().is_terminal()
    })
    .await
}

/// A gate asking for two approvals holds the rollout after its wave, before the next
/// takes any host, until two operators other than its submitter approve; `plan
/// check` and the dry run say what it will ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_four_eyes_gate_holds_until_two_other_operators_approve() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, mut site) = Gated::with_fleet(dir.path(), 200, "1..5").await;
    let plan = gated_plan(
        dir.path(),
        "gated-fix",
        "    approvals: 2\n    four_eyes: true\n    timeout: 1h\n",
    );

    // plan check and the dry run say what the gate will ask.
    let check = rollout(&["plan", "check", plan.to_str().unwrap()]).await;
    assert!(
        text(&check.stdout).contains("gate after 10%: 2 approvals (operator or above), four-eyes"),
        "{}",
        text(&check.stdout)
    );
    let dry = site
        .cli("alice", &["submit", "--dry-run", plan.to_str().unwrap()])
        .await;
    assert!(
        text(&dry.stdout).contains("then hold for approval: gate after 10%"),
        "{}",
        text(&dry.stdout)
    );

    let out = site.cli("alice", &["submit", plan.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut alice = site.as_("alice").await;
    let r = waiting(&mut alice, "gated-fix").await;
    assert_eq!(r.state(), pb::RolloutState::AwaitingApproval, "{}", r.halt_reason);
    assert_eq!(r.submitted_by, "alice");
    // It holds after the first wave, before the next takes any host.
    assert_eq!((r.hosts_succeeded, r.hosts_in_flight), (20, 0));
    assert_eq!(
        r.waves[1].succeeded + r.waves[1].failed + r.waves[1].in_flight + r.waves[1].pending,
        0
    );
    let gate = r.gate.clone().expect("the open gate");
    assert_eq!((gate.wave, gate.after.as_str(), gate.approvals_needed), (1, "10%", 2));
    assert!(gate.deadline_unix_ms > gate.opened_at_unix_ms);
    let evidence = gate.evidence.clone().unwrap();
    assert_eq!(
        (evidence.wave_size, evidence.hosts_succeeded, evidence.hosts_failed),
        (20, 20, 0)
    );
    let next = evidence.next_wave.clone().unwrap();
    assert_eq!(next.new_hosts, 180, "the next wave's impact");
    assert!(!next.customers.is_empty() && !next.customers[0].local_time.is_empty());

    // `rollout status` and `--output json` show the gate and who is still needed.
    let status = site.cli("vic", &["status", "gated-fix"]).await;
    let shown = text(&status.stdout);
    assert!(
        shown.contains("awaiting-approval") && shown.contains(&gate.gate_id),
        "{shown}"
    );
    assert!(shown.contains("0 of 2 approvals, 2 more needed"), "{shown}");
    // The status text says the same, in a sentence, as GetRollout's summary does.
    let said = site.cli("vic", &["status", "gated-fix", "--summary"]).await;
    let said = text(&said.stdout);
    assert!(
        said.starts_with("The fix (build 15.20.8207.12) has been deployed to 10% of the affected environment (20 of 200 hosts;")
            && said.contains("It waits for approval before the next wave (100%, 180 more hosts): 2 more approvals needed, 0 of 2 so far (operator or above, not the submitter alice)."),
        "{said}"
    );
    assert_eq!(said.trim_end(), r.summary);
    let json = site.cli("vic", &["status", "gated-fix", "--output", "json"]).await;
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["state"], "awaiting-approval");
    assert_eq!(json["gate"]["gate_id"], gate.gate_id.as_str());
    assert_eq!(json["gate"]["approvals_needed"], 2);
    assert_eq!(json["gate"]["next_wave"]["hosts"], 180);
    // The dashboard's page carries a banner with the same facts; metrics say it waits.
    let dashboard = site.controller.line_after("dashboard on ").await.unwrap();
    let http = reqwest::Client::new();
    let fetch = |path: String| http.get(format!("{dashboard}{path}")).bearer_auth(token("vic")).send();
    let page = fetch("rollouts/gated-fix".into()).await.unwrap().text().await.unwrap();
    assert!(
        page.contains("Awaiting approval") && page.contains(&gate.gate_id) && page.contains("needs 2 more of 2"),
        "{page}"
    );
    let metrics = fetch("metrics".into()).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("rollout_state{rollout=\"gated-fix\",state=\"awaiting-approval\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rollout_gate_waiting_seconds{rollout=\"gated-fix\"}"),
        "{metrics}"
    );
    // `watch --exit-on-gate` exits 5 at the gate.
    let watched = site.cli("vic", &["watch", "gated-fix", "--exit-on-gate"]).await;
    assert_eq!(watched.status.code(), Some(5), "{}", text(&watched.stderr));
    assert!(
        text(&watched.stdout).contains("awaiting approval"),
        "{}",
        text(&watched.stdout)
    );

    // Refused, each with its code: a viewer, the submitter, a stale view.
    let mut vic = site.as_("vic").await;
    refused(
        approve(&mut vic, "gated-fix", &gate.gate_id, "").await,
        Code::PermissionDenied,
        "needs the operator role",
    );
    refused(
        approve(&mut alice, "gated-fix", &gate.gate_id, "").await,
        Code::FailedPrecondition,
        "four-eyes: alice submitted this rollout; another operator must approve",
    );
    let mut bob = site.as_("bob").await;
    refused(
        approve(&mut bob, "gated-fix", "0123456789ab", "").await,
        Code::FailedPrecondition,
        "the gate changed since you looked: look again",
    );
    // Without a terminal and without --yes, nobody confirmed: nothing is sent.
    let unconfirmed = site.cli("bob", &["approve", "gated-fix"]).await;
    assert!(!unconfirmed.status.success());
    assert!(
        text(&unconfirmed.stderr).contains("--yes"),
        "{}",
        text(&unconfirmed.stderr)
    );

    // One approval (through the CLI) is not enough; the same one again counts once.
    let first = site
        .cli(
            "bob",
            &["approve", "gated-fix", "--yes", "--comment", "wave 1 looks clean"],
        )
        .await;
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stdout).contains("approval 1 of 2 recorded; 1 more needed"),
        "{}",
        text(&first.stdout)
    );
    let again = approve(&mut bob, "gated-fix", &gate.gate_id, "").await.unwrap();
    assert!(
        !again.counted && again.message.contains("counts once"),
        "{}",
        again.message
    );
    let r = get(&mut alice, "gated-fix").await;
    assert_eq!(r.state(), pb::RolloutState::AwaitingApproval);
    assert_eq!(r.gate.as_ref().unwrap().approvals_needed, 1);

    // SIGKILL while the gate waits: the new controller waits with that approval.
    site.crash_and_restart(Duration::ZERO).await;
    let mut alice = site.as_("alice").await;
    let r = get(&mut alice, "gated-fix").await;
    assert_eq!(r.state(), pb::RolloutState::AwaitingApproval);
    let kept = r.gate.clone().unwrap();
    assert_eq!(kept.gate_id, gate.gate_id, "the same gate");
    let who: Vec<(&str, &str)> = kept
        .approvals
        .iter()
        .map(|a| (a.principal.as_str(), a.comment.as_str()))
        .collect();
    assert_eq!(who, [("bob", "wave 1 looks clean")]);

    // The second approval starts the next wave; sent again with its request id (its
    // answer lost), it counts once.
    let mut carol = site.as_("carol").await;
    let second = approve(&mut carol, "gated-fix", &gate.gate_id, "req-carol-1")
        .await
        .unwrap();
    assert!(second.counted, "{}", second.message);
    assert!(
        second.message.contains("is approved and wave 2 starts now"),
        "{}",
        second.message
    );
    let replay = approve(&mut carol, "gated-fix", &gate.gate_id, "req-carol-1")
        .await
        .unwrap();
    assert!(replay.replayed, "{}", replay.message);
    let done = until(&mut alice, "gated-fix", 120, "the rollout to finish", |r| {
        r.state().is_terminal()
    })
    .await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!(done.hosts_succeeded, 200);
    let closed = &done.gates_closed;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].outcome, "approved");
    assert_eq!(closed[0].approvals.len(), 2, "{:?}", closed[0].approvals);
    // Approving a rollout that no longer waits is refused.
    let mut bob = site.as_("bob").await;
    refused(
        approve(&mut bob, "gated-fix", &gate.gate_id, "").await,
        Code::FailedPrecondition,
        "not awaiting approval",
    );

    // Every approval and every refusal is in `rollout audit`.
    let audit = site.cli("vic", &["audit", "--rollout", "gated-fix"]).await;
    let log = text(&audit.stdout);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("ApproveRollout")).collect();
    let has = |who: &str, what: &str| lines.iter().any(|l| l.contains(who) && l.contains(what));
    assert!(has("vic", "needs the operator role"), "{log}");
    assert!(has("alice", "four-eyes"), "{log}");
    assert!(has("bob", "the gate changed since you looked"), "{log}");
    assert!(has("bob", "approval 1 of 2 recorded"), "{log}");
    assert!(has("bob", "counts once"), "{log}");
    assert!(has("carol", "approval 2 of 2 recorded"), "{log}");
    assert!(has("bob", "not awaiting approval"), "{log}");

    site.stop().await;
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// halt: the reason names the gate, its wait and its approvals; abort: the deadline
/// passed while no controller was up, and the next one acts at start; rollback: the
/// hosts the rollout touched return to their previous version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_on_timeout_acts_even_after_a_deadline_passed_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let (mut agent, mut site) = Gated::with_fleet(dir.path(), 100, "1..3").await;

    // halt, with one approval of two.
    let plan = gated_plan(
        dir.path(),
        "gate-halt",
        "    approvals: 2\n    timeout: 3s\n    on_timeout: halt\n",
    );
    assert!(
        site.cli("alice", &["submit", plan.to_str().unwrap()])
            .await
            .status
            .success()
    );
    let mut alice = site.as_("alice").await;
    let r = waiting(&mut alice, "gate-halt").await;
    let gate_id = r.gate.unwrap().gate_id;
    let mut bob = site.as_("bob").await;
    assert!(approve(&mut bob, "gate-halt", &gate_id, "").await.unwrap().counted);
    let halted = until(&mut alice, "gate-halt", 60, "the gate to time out", |r| {
        r.state() == pb::RolloutState::Halted
    })
    .await;
    assert!(
        halted
            .halt_reason
            .contains("the gate after 10% (wave 1) timed out after waiting")
            && halted.halt_reason.contains("with 1 of 2 approvals (bob)"),
        "{}",
        halted.halt_reason
    );
    assert_eq!(halted.gates_closed[0].outcome, "halted");
    let out = site
        .cli(
            "ada",
            &["abort", "gate-halt", "--reason", "the gate timed out", "--yes"],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    // abort: killed as the gate opens; the deadline passes while nothing runs.
    let plan = gated_plan(dir.path(), "gate-abort", "    timeout: 2s\n    on_timeout: abort\n");
    assert!(
        site.cli("alice", &["submit", plan.to_str().unwrap()])
            .await
            .status
            .success()
    );
    let mut alice = site.as_("alice").await;
    waiting(&mut alice, "gate-abort").await;
    site.crash_and_restart(Duration::from_secs(3)).await;
    let mut alice = site.as_("alice").await;
    let aborted = until(&mut alice, "gate-abort", 60, "the late gate to act", |r| {
        r.state().is_terminal()
    })
    .await;
    assert_eq!(aborted.state(), pb::RolloutState::Aborted, "{}", aborted.halt_reason);
    assert!(aborted.halt_reason.contains("timed out"), "{}", aborted.halt_reason);
    assert_eq!(aborted.hosts_succeeded, 10, "the next wave never ran");

    // rollback: the 10% it deployed go back.
    let plan = gated_plan(
        dir.path(),
        "gate-rollback",
        "    timeout: 2s\n    on_timeout: rollback\n",
    );
    let out = site.cli("alice", &["submit", plan.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ended = until(&mut alice, "gate-rollback", 60, "the gate to roll back", |r| {
        r.state().is_terminal()
    })
    .await;
    assert!(ended.halt_reason.contains("rolling back"), "{}", ended.halt_reason);
    let back = within(120, "the rollback to finish", async {
        loop {
            if let Ok(r) = alice
                .get_rollout(pb::GetRolloutRequest {
                    name: "gate-rollback-rollback".into(),
                    id: 0,
                })
                .await
                && r.get_ref().state().is_terminal()
            {
                return r.into_inner();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(back.state(), pb::RolloutState::Succeeded, "{}", back.halt_reason);
    assert_eq!(back.hosts_selected, 10, "exactly the hosts the gated rollout touched");

    site.stop().await;
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// Without `--auth` a controller knows one principal: a gate that needs two, or
/// four eyes, could never open, and is refused at submit saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_without_auth_refuses_a_gate_it_could_never_open() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(20, rollout::agent::SimulatorOptions::default()).await;
    let controller = Controller::start(&dir.path().join("data"), &sim.fleet).await;
    let mut client = controller.client().await;
    let mut spec = plan("lonely-gate", &["10%", "100%"], "0");
    spec.gates = vec![pb::GateSpec {
        after: "10%".into(),
        four_eyes: true,
        ..Default::default()
    }];
    let status = client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(spec.clone())),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("run the controller with --auth"),
        "{}",
        status.message()
    );
    // One approval is something a single principal can give: accepted, and approved.
    spec.gates[0].four_eyes = false;
    submit(&mut client, spec).await;
    let r = until(&mut client, "lonely-gate", 60, "the gate", |r| {
        r.state() == pb::RolloutState::AwaitingApproval
    })
    .await;
    let answer = approve(&mut client, "lonely-gate", &r.gate.unwrap().gate_id, "")
        .await
        .unwrap();
    assert!(answer.counted);
    let done = until(&mut client, "lonely-gate", 60, "the rollout", |r| {
        r.state().is_terminal()
    })
    .await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded);
    assert_eq!(done.gates_closed[0].approvals[0].principal, "anonymous");
    controller.stop().await;
    sim.stop().await;
}
