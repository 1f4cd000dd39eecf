//! Freezes and the people in the room, through the real controller with `--auth`:
//! only an admin stops the line; an emergency plan submitted under a freeze waits at
//! a gate before its first wave until an admin other than its submitter approves,
//! then runs under the freeze while any other plan is still refused; an emergency
//! restart job likewise. And in
//! Chromium: the dashboard's pages, opened before the freeze, show its banner when it
//! starts and drop it when it ends, without a reload.

mod common;

use std::time::Duration;

use common::*;
use rollout::proto::v1 as pb;

/// alice and bob operate; dana and erin administer.
const PEOPLE: [(&str, &str); 4] = [
    ("alice", "operator"),
    ("bob", "operator"),
    ("dana", "admin"),
    ("erin", "admin"),
];

/// Submits a plan that is not an emergency.
async fn plain_plan(client: &mut Client) -> Result<tonic::Response<pb::SubmitPlanResponse>, tonic::Status> {
    client
        .submit_plan(pb::SubmitPlanRequest {
            plan: Some(pb::submit_plan_request::Plan::Spec(plan("plain-fix", &["100%"], "0"))),
            ..Default::default()
        })
        .await
}

async fn approve(client: &mut Client, name: &str, gate_id: &str) -> Result<pb::ApproveRolloutResponse, tonic::Status> {
    client
        .approve_rollout(pb::ApproveRolloutRequest {
            name: name.into(),
            gate_id: gate_id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emergency_plan_passes_a_freeze_once_another_admin_approves() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut agent, fleet, ctl_fleet) = spawn_simulator(dir.path(), 120, "1..5", &log).await;
    let tokens = tokens_file(dir.path(), &PEOPLE);
    let extra = ["--auth".as_ref(), tokens.as_os_str()];
    let mut controller = spawn_controller(&dir.path().join("data"), &ctl_fleet, &extra, &log).await;
    let server = format!("http://{}", controller.addr);

    // An operator may not stop the line; an admin may.
    let (ok, _, err) = as_person("bob", dir.path(), &server, &["freeze", "--reason", "INC-77"]).await;
    assert!(!ok);
    assert!(err.contains("admin"), "{err}");
    let (ok, out, err) = as_person(
        "dana",
        dir.path(),
        &server,
        &["freeze", "--reason", "INC-77 retry storm"],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("set by dana"), "{out}");

    // Any plan but an emergency is refused.
    let mut alice = as_who(&server, "alice").await;
    let refused = plain_plan(&mut alice).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("set by dana"), "{}", refused.message());
    assert!(refused.message().contains("emergency: true"), "{}", refused.message());

    let mut spec = plan("storm-fix", &["10%", "100%"], "0");
    spec.emergency = true;
    let r = submit(&mut alice, spec).await;
    assert!(r.emergency);
    let waiting = within(30, "the emergency gate", async {
        loop {
            let r = get(&mut alice, "storm-fix").await;
            if r.state() == pb::RolloutState::AwaitingApproval {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(
        waiting.hosts_succeeded + waiting.hosts_in_flight,
        0,
        "nothing before approval"
    );
    let gate = waiting.gate.clone().expect("the open gate");
    assert_eq!((gate.wave, gate.role.as_str(), gate.four_eyes), (0, "admin", true));
    assert!(
        waiting.summary.contains("before its first wave, as an emergency plan"),
        "{}",
        waiting.summary
    );

    // Not its submitter, not an operator: another admin.
    let own = approve(&mut alice, "storm-fix", &gate.gate_id).await.unwrap_err();
    assert_eq!(own.code(), tonic::Code::PermissionDenied, "{}", own.message());
    let mut bob = as_who(&server, "bob").await;
    let operator = approve(&mut bob, "storm-fix", &gate.gate_id).await.unwrap_err();
    assert_eq!(operator.code(), tonic::Code::PermissionDenied);
    let mut erin = as_who(&server, "erin").await;
    let approved = approve(&mut erin, "storm-fix", &gate.gate_id).await.unwrap();
    assert!(approved.counted, "{}", approved.message);

    // It runs under the freeze, which still holds everything else.
    let done = ended(&mut alice, "storm-fix").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{done:?}");
    assert_eq!(done.hosts_succeeded, 120);
    let (ok, listed, _) = as_person("alice", dir.path(), &server, &["freezes"]).await;
    assert!(ok && listed.contains("in force"), "{listed}");
    let still = plain_plan(&mut alice).await.unwrap_err();
    assert_eq!(still.code(), tonic::Code::FailedPrecondition);

    // A restart job likewise: refused under the freeze, unless an emergency, which
    // restarts nothing until an admin other than its submitter approves.
    let five: Vec<String> = fleet.hosts.iter().take(5).map(|h| h.id.clone()).collect();
    let restart = |emergency: bool| pb::TriggerRestartRequest {
        host_ids: five.clone(),
        emergency,
        ..Default::default()
    };
    let refused = bob.trigger_restart(restart(false)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("frozen by freeze"), "{}", refused.message());
    let job = bob
        .trigger_restart(restart(true))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert!(job.emergency && job.submitted_by == "bob", "{job:?}");
    assert!(
        job.waiting
            .contains("restarts nothing until an admin other than bob approves"),
        "{}",
        job.waiting
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = bob
        .get_restart_job(pb::GetRestartJobRequest {
            id: job.id,
            include_hosts: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        still.hosts_restarted + still.hosts_in_flight,
        0,
        "nothing before approval"
    );
    let approve_job = |id: u64| pb::ApproveRestartJobRequest {
        id,
        ..Default::default()
    };
    let operator = bob.approve_restart_job(approve_job(job.id)).await.unwrap_err();
    assert_eq!(operator.code(), tonic::Code::PermissionDenied, "{}", operator.message());
    let mut dana = as_who(&server, "dana").await;
    let approved = dana
        .approve_restart_job(approve_job(job.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        approved.emergency_approval.map(|a| a.principal).as_deref(),
        Some("dana")
    );
    let done = restart_job_until(&mut bob, job.id, |j| j.state() != pb::RestartJobState::Running).await;
    assert_eq!(done.state(), pb::RestartJobState::Succeeded, "{done:?}");
    assert_eq!(done.hosts_restarted, 5);

    let audit = audit_until(&mut alice, "erin's approval", |events| {
        events
            .iter()
            .any(|e| e.principal == "erin" && e.detail.contains("approve gate"))
    })
    .await;
    assert!(
        audit
            .iter()
            .any(|e| e.principal == "dana" && e.detail.starts_with("freeze "))
    );
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

#[ignore = "needs chromium and chromium-driver (Debian); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_freeze_banner_live() {
    use fantoccini::Locator;
    let Some(session) = common::browser::start().await else {
        return;
    };
    let browser = session.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut agent, _fleet, ctl_fleet) = spawn_simulator(dir.path(), 300, "100..200", &log).await;
    let extra = ["--http-listen".as_ref(), "127.0.0.1:0".as_ref()];
    let mut controller = spawn_controller(&dir.path().join("data"), &ctl_fleet, &extra, &log).await;
    let base = controller.line_after("dashboard on ").await.unwrap();
    let server = format!("http://{}", controller.addr);
    let mut client = rollout::cli::connect(&server).await.unwrap();
    let mut spec = plan("banner-fix", &["10%", "100%"], "0");
    spec.max_parallel = 2;
    submit(&mut client, spec).await;

    // Both pages open before the freeze, and never reloaded.
    browser.goto(&base).await.unwrap();
    let list = browser.window().await.unwrap();
    let rollout_tab = browser.new_window(true).await.unwrap().handle;
    browser.switch_to_window(rollout_tab.clone()).await.unwrap();
    browser.goto(&format!("{base}rollouts/banner-fix")).await.unwrap();
    assert!(
        browser.find(Locator::Id("freeze-banner")).await.is_err(),
        "no banner before"
    );

    let out = rollout(&[
        "freeze",
        "--reason",
        "INC-4242: Outlook down in APAC",
        "--selector",
        "region=apac",
        "--until",
        "1h",
        "--server",
        &server,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let id = said.split_whitespace().nth(1).expect("the freeze's id").to_string();
    let shown = |wanted: String| {
        let browser = browser.clone();
        async move {
            within(30, "the banner to change", async {
                loop {
                    let banner = common::browser::text_of(&browser, "#freeze-banner").await;
                    if banner.contains(&wanted) {
                        return banner;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await
        }
    };
    let banner = shown(format!(
        "Freeze {id} by anonymous: INC-4242: Outlook down in APAC (hosts with region=apac, until "
    ))
    .await;
    assert!(banner.starts_with("The line is stopped."), "{banner}");
    browser.switch_to_window(list.clone()).await.unwrap();
    shown("INC-4242".to_string()).await;

    let out = rollout(&["unfreeze", &id, "--server", &server]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    within(30, "the banner to go", async {
        while browser.find(Locator::Id("freeze-banner")).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let _ = browser.close().await;
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}
