//! Security through the real interfaces: TLS and mutual TLS with throwaway
//! certificates, bearer tokens, and the role table over every RPC of the Controller
//! service, with the codes a client gets.

mod common;

use std::sync::Arc;

use common::certs::Ca;
use common::*;
use prost::Message;
use rollout::agent::SimulatorOptions;
use rollout::auth::{Credentials as TokensFile, hash_token};
use rollout::cli::{Credentials, connect_with};
use rollout::proto::v1 as pb;
use rollout::server::Security;
use rollout::tls::{ClientFiles, ServerFiles};
use tonic::Code;

const TOKENS: [(&str, &str); 4] = [
    ("vera", "viewer"),
    ("otto", "operator"),
    ("ada", "admin"),
    ("agent-7", "agent"),
];

fn tokens_file() -> Arc<TokensFile> {
    let mut text = String::from("tokens:\n");
    for (principal, role) in TOKENS {
        text.push_str(&format!(
            "  - principal: {principal}\n    role: {role}\n    sha256: {}\n",
            hash_token(&token(principal))
        ));
        // An agent speaks only for the hosts it is bound to: the role table's probe
        // host and the TLS test's agent.
        if role == "agent" {
            text.push_str("    hosts: [probe-host, \"tls-host-*\"]\n");
        }
    }
    text.push_str("certificates:\n  - subject: ops-cli\n    role: admin\n");
    Arc::new(TokensFile::parse(&text, "tokens.yaml").unwrap())
}

fn with_token(principal: Option<&str>) -> Credentials {
    Credentials {
        tls: ClientFiles::default(),
        token: principal.map(token),
    }
}

/// Every method of `rollout.v1.Controller`, read from the descriptor the server
/// publishes, so a new RPC cannot be missed by the table below.
fn controller_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(rollout::proto::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .flat_map(|f| &f.service)
        .filter(|s| s.name() == "Controller")
        .flat_map(|s| s.method.iter().map(|m| m.name().to_string()))
        .collect()
}

/// Makes the call `method` with a harmless request (dry runs, unknown names).
async fn call(client: &mut Client, method: &str) -> Result<(), tonic::Status> {
    let missing = || pb::GetRolloutRequest {
        name: "no-such-rollout".into(),
        id: 0,
    };
    let no_job = || pb::GetRestartJobRequest {
        id: 999,
        include_hosts: false,
    };
    match method {
        "SubmitPlan" => client
            .submit_plan(pb::SubmitPlanRequest {
                plan: Some(pb::submit_plan_request::Plan::Spec(plan("probe-plan", &["100%"], "0"))),
                dry_run: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "GetRollout" => client.get_rollout(missing()).await.map(drop),
        "ListRollouts" => client.list_rollouts(pb::ListRolloutsRequest::default()).await.map(drop),
        "WatchRollout" => client.watch_rollout(missing()).await.map(drop),
        "PauseRollout" => client.pause_rollout(action("no-such-rollout")).await.map(drop),
        "ResumeRollout" => client.resume_rollout(action("no-such-rollout")).await.map(drop),
        "AbortRollout" => client.abort_rollout(action("no-such-rollout")).await.map(drop),
        "RetryRollout" => client.retry_rollout(action("no-such-rollout")).await.map(drop),
        "ApproveRollout" => client
            .approve_rollout(pb::ApproveRolloutRequest {
                name: "no-such-rollout".into(),
                gate_id: "000000000000".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "ListRolloutHosts" => client
            .list_rollout_hosts(pb::ListRolloutHostsRequest {
                name: "no-such-rollout".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "TriggerRestart" => client
            .trigger_restart(pb::TriggerRestartRequest {
                unhealthy_only: true,
                dry_run: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "GetRestartJob" => client.get_restart_job(no_job()).await.map(drop),
        "ListRestartJobs" => client
            .list_restart_jobs(pb::ListRestartJobsRequest::default())
            .await
            .map(drop),
        "WatchRestartJob" => client.watch_restart_job(no_job()).await.map(drop),
        "CancelRestartJob" => client
            .cancel_restart_job(pb::CancelRestartJobRequest {
                id: 999,
                ..Default::default()
            })
            .await
            .map(drop),
        "ListHosts" => client.list_hosts(pb::ListHostsRequest::default()).await.map(drop),
        "Heartbeat" => client
            .heartbeat(pb::HeartbeatRequest {
                host_id: "probe-host".into(),
                address: "127.0.0.1:1".into(),
                interval_ms: 60_000,
                healthy: true,
                ..Default::default()
            })
            .await
            .map(drop),
        "ListEvents" => client.list_events(pb::ListEventsRequest::default()).await.map(drop),
        "ListControllers" => client.list_controllers(pb::ListControllersRequest {}).await.map(drop),
        "NotifyStatus" => client.notify_status(pb::NotifyStatusRequest {}).await.map(drop),
        "NotifyTest" => client
            .notify_test(pb::NotifyTestRequest {
                sink: "no-such-sink".into(),
            })
            .await
            .map(drop),
        // An empty reason: refused after the role check, so nothing is frozen.
        "Freeze" => client.freeze(pb::FreezeRequest::default()).await.map(drop),
        "Unfreeze" => client
            .unfreeze(pb::UnfreezeRequest {
                id: 999,
                ..Default::default()
            })
            .await
            .map(drop),
        "ListFreezes" => client.list_freezes(pb::ListFreezesRequest::default()).await.map(drop),
        "ApproveRestartJob" => client
            .approve_restart_job(pb::ApproveRestartJobRequest {
                id: 999,
                ..Default::default()
            })
            .await
            .map(drop),
        other => panic!("the role table has no call for {other}: add it to tests/security.rs"),
    }
}

/// The role each method needs, as the README's security section states it.
fn allowed(role: &str, method: &str) -> bool {
    let view = [
        "GetRollout",
        "ListRollouts",
        "WatchRollout",
        "GetRestartJob",
        "ListRestartJobs",
        "WatchRestartJob",
        "ListHosts",
        "ListEvents",
        "ListRolloutHosts",
        "ListControllers",
        "NotifyStatus",
        "ListFreezes",
    ];
    let change = [
        "SubmitPlan",
        "PauseRollout",
        "ResumeRollout",
        "AbortRollout",
        "RetryRollout",
        "ApproveRollout",
        "TriggerRestart",
        "CancelRestartJob",
        "NotifyTest",
        "ApproveRestartJob",
    ];
    match role {
        "viewer" => view.contains(&method),
        "operator" => view.contains(&method) || change.contains(&method),
        "admin" => true,
        "agent" => method == "Heartbeat",
        _ => false,
    }
}

/// Each role is allowed exactly its calls, and refused the rest with
/// PermissionDenied naming the role needed; no token or a wrong one is
/// Unauthenticated; health checks need no credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_is_allowed_exactly_its_calls() {
    let sim = Sim::start(50, SimulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let security = Security {
        credentials: Some(tokens_file()),
        ..Default::default()
    };
    let controller = Controller::start_secured(&dir.path().join("data"), &sim.fleet, security).await;
    let methods = controller_methods();
    assert!(methods.len() >= 15, "{methods:?}");

    let mut checked = 0;
    for (principal, role) in TOKENS {
        let mut client = connect_with(&controller.url, &with_token(Some(principal)))
            .await
            .unwrap();
        for method in &methods {
            let answer = call(&mut client, method).await;
            let code = answer.as_ref().err().map_or(Code::Ok, |s| s.code());
            if allowed(role, method) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{role} may call {method}, got {answer:?}"
                );
            } else {
                let status = answer.expect_err(&format!("{role} must not call {method}"));
                assert_eq!(status.code(), Code::PermissionDenied, "{role} {method}: {status:?}");
                assert!(
                    status.message().contains(&format!("`{principal}` has the {role} role")),
                    "{}",
                    status.message()
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 4 * methods.len());

    // The agent's token cannot submit plans, and is told what it would need.
    let mut agent = connect_with(&controller.url, &with_token(Some("agent-7")))
        .await
        .unwrap();
    let refused = call(&mut agent, "SubmitPlan").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().ends_with("SubmitPlan needs the operator role"),
        "{}",
        refused.message()
    );

    // No credentials, or a wrong token: Unauthenticated, whatever the call.
    let mut anonymous = connect_with(&controller.url, &with_token(None)).await.unwrap();
    let wrong = Credentials {
        token: Some("not-a-known-token".into()),
        ..Default::default()
    };
    let mut stranger = connect_with(&controller.url, &wrong).await.unwrap();
    for method in &methods {
        let status = call(&mut anonymous, method).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{method}: {status:?}");
        assert!(status.message().starts_with("no credentials"), "{}", status.message());
        let status = call(&mut stranger, method).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{method}: {status:?}");
        assert!(status.message().contains("token is not known"), "{}", status.message());
    }

    // Health checks are open (load balancers and probes carry no token).
    let channel = tonic::transport::Endpoint::from_shared(controller.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    controller.stop().await;
    sim.stop().await;
}

/// TLS with throwaway certificates: a client that trusts the CA gets in; with a
/// client CA (mutual TLS) a client without a certificate is refused at the handshake,
/// one whose certificate another CA signed too, and the certificate's subject is the
/// principal (`ops-cli`, admin in the tokens file). A token still works over mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let sim = Sim::start(20, SimulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "rollout-test");
    let server = ca.issue("controller");

    // TLS only.
    let tls = ServerFiles {
        cert: Some(server.cert.clone()),
        key: Some(server.key.clone()),
        client_ca: None,
    };
    let security = Security {
        tls: tls.config().unwrap(),
        ..Default::default()
    };
    let controller = Controller::start_secured(&dir.path().join("tls"), &sim.fleet, security).await;
    assert!(controller.url.starts_with("https://"));
    let trusting = Credentials {
        tls: ClientFiles {
            ca: Some(ca.cert.clone()),
            ..Default::default()
        },
        token: None,
    };
    let mut client = connect_with(&controller.url, &trusting).await.unwrap();
    call(&mut client, "ListRollouts").await.unwrap();
    let plaintext = controller.url.replace("https://", "http://");
    let refused = match connect_with(&plaintext, &Credentials::default()).await {
        Err(e) => e.to_string(),
        Ok(mut c) => call(&mut c, "ListRollouts").await.unwrap_err().to_string(),
    };
    assert!(!refused.is_empty(), "plaintext to a TLS controller fails");
    // The CLI says what it reached and what to do, every time (the connection breaks
    // in several ways: each is asked again).
    let address = plaintext.trim_start_matches("http://").to_string();
    for server in [plaintext.as_str(), address.as_str(), plaintext.as_str()] {
        let out = std::process::Command::new(EXE)
            .args(["status", "--server", server])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: {address} speaks TLS, not plain HTTP: use --server https://{address} and give the CA that signed the controller's certificate with --ca FILE (or ROLLOUT_CA)\n"
            )
        );
    }
    controller.stop().await;

    // Mutual TLS: the client CA is required.
    let tls = ServerFiles {
        client_ca: Some(ca.cert.clone()),
        ..tls
    };
    let security = Security {
        tls: tls.config().unwrap(),
        credentials: Some(tokens_file()),
        ..Default::default()
    };
    let controller = Controller::start_secured(&dir.path().join("mtls"), &sim.fleet, security).await;
    let no_cert = match connect_with(&controller.url, &trusting).await {
        Err(e) => Err(e.to_string()),
        Ok(mut c) => call(&mut c, "ListRollouts").await.map_err(|s| format!("{s:?}")),
    };
    assert!(no_cert.is_err(), "mTLS without a client certificate is refused");

    let other_ca = Ca::new(dir.path(), "somebody-else");
    let forged = other_ca.issue("ops-cli");
    let with_forged = Credentials {
        tls: ClientFiles {
            ca: Some(ca.cert.clone()),
            cert: Some(forged.cert),
            key: Some(forged.key),
        },
        token: None,
    };
    let forged_answer = match connect_with(&controller.url, &with_forged).await {
        Err(e) => Err(e.to_string()),
        Ok(mut c) => call(&mut c, "ListRollouts").await.map_err(|s| format!("{s:?}")),
    };
    assert!(forged_answer.is_err(), "a certificate from another CA is refused");

    let ops = ca.issue("ops-cli");
    let operator_cert = Credentials {
        tls: ClientFiles {
            ca: Some(ca.cert.clone()),
            cert: Some(ops.cert.clone()),
            key: Some(ops.key.clone()),
        },
        token: None,
    };
    let mut admin = connect_with(&controller.url, &operator_cert).await.unwrap();
    call(&mut admin, "SubmitPlan").await.unwrap();
    call(&mut admin, "Heartbeat").await.unwrap();

    // A certificate the tokens file does not name proves who, not what: no role.
    let unknown = ca.issue("intern-laptop");
    let unlisted = Credentials {
        tls: ClientFiles {
            ca: Some(ca.cert.clone()),
            cert: Some(unknown.cert),
            key: Some(unknown.key),
        },
        token: None,
    };
    let mut intern = connect_with(&controller.url, &unlisted).await.unwrap();
    let status = call(&mut intern, "ListRollouts").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("`intern-laptop` has no role"),
        "{}",
        status.message()
    );

    // Over mTLS a token still decides the principal: the viewer cannot submit.
    let viewer = Credentials {
        token: Some(token("vera")),
        ..operator_cert
    };
    let mut vera = connect_with(&controller.url, &viewer).await.unwrap();
    call(&mut vera, "ListRollouts").await.unwrap();
    assert_eq!(
        call(&mut vera, "SubmitPlan").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    controller.stop().await;
    sim.stop().await;
}

/// The audit log after submit, pause, abort and restart: each is there with its
/// principal and role, request id and result, a refused call too, and the log is the
/// same after a controller restart, read through `rollout audit` as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_who_changed_what() {
    let sim = Sim::start(
        100,
        SimulatorOptions {
            latency_ms: (20, 40).into(),
            unhealthy_rate: 0.2,
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let security = Security {
        credentials: Some(tokens_file()),
        ..Default::default()
    };
    let controller = Controller::start_secured(&data, &sim.fleet, security.clone()).await;
    let mut otto = connect_with(&controller.url, &with_token(Some("otto"))).await.unwrap();
    let mut ada = connect_with(&controller.url, &with_token(Some("ada"))).await.unwrap();

    let mut spec = plan("audited-fix", &["10%", "100%"], "0");
    spec.bake = "1h".into();
    otto.submit_plan(pb::SubmitPlanRequest {
        plan: Some(pb::submit_plan_request::Plan::Spec(spec)),
        request_id: "req-submit-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    within(
        30,
        "the first wave to bake",
        watch_until(&mut otto, "audited-fix", |r| r.state() == pb::RolloutState::Baking),
    )
    .await;
    otto.pause_rollout(action("audited-fix")).await.unwrap();
    let refused = otto.resume_rollout(action("no-such-rollout")).await.unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    ada.abort_rollout(pb::RolloutActionRequest {
        name: "audited-fix".into(),
        reason: "wrong build".into(),
        request_id: "req-abort-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let job = ada
        .trigger_restart(pb::TriggerRestartRequest {
            unhealthy_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();

    let check = |events: &[pb::EventRecord]| {
        let find = |kind: &str| {
            events
                .iter()
                .find(|e| e.kind == kind)
                .unwrap_or_else(|| panic!("no {kind} in {events:#?}"))
                .clone()
        };
        let submit = find("SubmitPlan");
        assert_eq!((submit.principal.as_str(), submit.role.as_str()), ("otto", "operator"));
        assert_eq!(submit.rollout_name, "audited-fix");
        assert_eq!(submit.request_id, "req-submit-1");
        assert_eq!(submit.result, "ok");
        let pause = find("PauseRollout");
        assert_eq!((pause.principal.as_str(), pause.result.as_str()), ("otto", "ok"));
        let abort = find("AbortRollout");
        assert_eq!((abort.principal.as_str(), abort.role.as_str()), ("ada", "admin"));
        assert_eq!(abort.detail, "abort: wrong build");
        assert_eq!(abort.request_id, "req-abort-1");
        let restart = find("TriggerRestart");
        assert_eq!((restart.principal.as_str(), restart.job_id), ("ada", job.id));
        let resume = find("ResumeRollout");
        assert_eq!(resume.principal, "otto");
        assert!(
            resume.result.contains("no-such-rollout"),
            "the refusal is recorded: {}",
            resume.result
        );
        // The controller's own steps are there too, in order after the submission.
        let started = events
            .iter()
            .position(|e| e.kind == "running" && e.principal == "controller");
        assert!(started.is_some_and(|i| i > events.iter().position(|e| e.kind == "SubmitPlan").unwrap()));
    };
    let events = ada
        .list_events(pb::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    check(&events);
    let only = timeline(&mut ada, "audited-fix").await;
    assert!(only.iter().all(|e| e.rollout_name == "audited-fix"));
    controller.stop().await;

    // Kept across a restart, and readable with `rollout audit` and a token file.
    let controller = Controller::start_secured(&data, &sim.fleet, security).await;
    let mut vera = connect_with(&controller.url, &with_token(Some("vera"))).await.unwrap();
    let again = vera
        .list_events(pb::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    check(&again);
    assert_eq!(
        again[..events.len()],
        events[..],
        "nothing lost or changed by the restart"
    );
    let token_file = dir.path().join("vera.token");
    std::fs::write(&token_file, token("vera")).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["--server", &controller.url, "--token-file"])
        .arg(&token_file)
        .args(["audit", "--rollout", "audited-fix", "--since", "1h"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let submit_line = text
        .lines()
        .find(|l| l.contains("SubmitPlan"))
        .expect("a SubmitPlan line");
    assert!(
        submit_line.contains("otto")
            && submit_line.contains("operator")
            && submit_line.contains("[request req-submit-1]"),
        "{submit_line}"
    );
    assert!(
        text.lines().any(|l| l.contains("AbortRollout") && l.contains("ada")),
        "{text}"
    );
    controller.stop().await;
    sim.stop().await;
}

/// `rollout serve` refuses a non-loopback address without `--auth`, before it binds
/// or creates anything, and says what to do.
#[test]
fn a_non_loopback_controller_without_auth_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(EXE)
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("is not a loopback address: give --auth tokens.yaml"),
        "{err}"
    );
    assert!(!data.exists(), "nothing was created");
}

/// Changes are rate-limited per principal: past the burst, ResourceExhausted naming
/// the limit; another principal is not affected, and reads never are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_are_rate_limited_per_principal() {
    let sim = Sim::start(20, SimulatorOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let security = Security {
        credentials: Some(tokens_file()),
        rate: rollout::auth::RateLimit {
            per_second: 1,
            burst: 3,
        },
        ..Default::default()
    };
    let controller = Controller::start_secured(&dir.path().join("data"), &sim.fleet, security).await;
    let mut otto = connect_with(&controller.url, &with_token(Some("otto"))).await.unwrap();
    let mut ada = connect_with(&controller.url, &with_token(Some("ada"))).await.unwrap();
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(call(&mut otto, "PauseRollout").await.unwrap_err().code());
    }
    assert_eq!(&codes[..3], &[Code::NotFound; 3], "within the burst: the call runs");
    assert!(codes[3..].iter().all(|c| *c == Code::ResourceExhausted), "{codes:?}");
    let status = call(&mut otto, "AbortRollout").await.unwrap_err();
    assert!(
        status
            .message()
            .contains("`otto` is over its rate limit of 1 changes per second"),
        "{}",
        status.message()
    );
    assert_eq!(call(&mut ada, "PauseRollout").await.unwrap_err().code(), Code::NotFound);
    call(&mut otto, "ListRollouts").await.unwrap();
    controller.stop().await;
    sim.stop().await;
}

/// End to end over TLS: a real host agent serves mutual TLS and heartbeats with its
/// `agent` token to a controller that requires TLS and tokens; the controller deploys
/// to it over mutual TLS with its own certificate. A caller without a certificate
/// cannot reach the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_controller_speak_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "fleet-ca");
    let (server, agent_cert) = (ca.issue("controller"), ca.issue("agent-host"));
    let d = dir.path().display();
    std::fs::write(dir.path().join("deploy.sh"), format!("echo \"$1\" > {d}/version\n")).unwrap();
    let security = Security {
        tls: ServerFiles {
            cert: Some(server.cert.clone()),
            key: Some(server.key.clone()),
            client_ca: None,
        }
        .config()
        .unwrap(),
        credentials: Some(tokens_file()),
        agents: ClientFiles {
            ca: Some(ca.cert.clone()),
            cert: Some(server.cert.clone()),
            key: Some(server.key.clone()),
        }
        .config()
        .unwrap(),
        ..Default::default()
    };
    let controller = Controller::start_secured(
        &dir.path().join("data"),
        &rollout::inventory::FleetFile::default(),
        security,
    )
    .await;
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        format!(
            "host_id: tls-host-1\nlisten: 127.0.0.1:0\nstate_file: {d}/state.json\ncontroller: {}\nheartbeat: 200ms\nlabels: {{region: emea, service: tls-demo}}\ncommands:\n  deploy: {{argv: [sh, {d}/deploy.sh, \"{{version}}\"], timeout: 30s}}\n",
            controller.url
        ),
    )
    .unwrap();
    let token_file = dir.path().join("agent.token");
    std::fs::write(&token_file, token("agent-7")).unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "agent".into(),
        "--config".into(),
        config.into(),
        "--tls-cert".into(),
        agent_cert.cert.clone().into(),
        "--tls-key".into(),
        agent_cert.key.clone().into(),
        "--client-ca".into(),
        ca.cert.clone().into(),
        "--ca".into(),
        ca.cert.clone().into(),
        "--token-file".into(),
        token_file.into(),
    ];
    let exe = std::path::Path::new(EXE);
    let mut agent = within(
        60,
        "the agent to start",
        rollout::cli::process::Spawned::start(exe, args, Some(&dir.path().join("agent.log"))),
    )
    .await
    .unwrap();

    let operator = Credentials {
        tls: ClientFiles {
            ca: Some(ca.cert.clone()),
            ..Default::default()
        },
        token: Some(token("otto")),
    };
    let mut client = connect_with(&controller.url, &operator).await.unwrap();
    within(30, "the agent to register by heartbeat", async {
        loop {
            let hosts = client
                .list_hosts(pb::ListHostsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .hosts;
            if hosts
                .iter()
                .any(|h| h.id == "tls-host-1" && h.last_heartbeat_unix_ms > 0)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let events = client
        .list_events(pb::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let registered = events
        .iter()
        .find(|e| e.kind == "Heartbeat")
        .expect("the registration is audited");
    assert_eq!(
        (registered.principal.as_str(), registered.role.as_str()),
        ("agent-7", "agent")
    );
    assert!(
        registered
            .detail
            .starts_with("host `tls-host-1` registered at 127.0.0.1:"),
        "{}",
        registered.detail
    );
    let spec = plan_for_service("tls-fix", &["100%"], "0", "tls-demo");
    submit(&mut client, spec).await;
    let seen = within(
        60,
        "the deploy over mTLS",
        watch_until(&mut client, "tls-fix", |r| {
            matches!(r.state(), pb::RolloutState::Succeeded | pb::RolloutState::Halted)
        }),
    )
    .await;
    let done = seen.last().unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    let written = std::fs::read_to_string(dir.path().join("version")).unwrap();
    assert_eq!(written.trim(), "15.20.8207.12");

    // Without a client certificate, the agent does not answer.
    let plain = format!("https://{}", agent.addr);
    let refused = async {
        let channel = tonic::transport::Endpoint::from_shared(plain)
            .unwrap()
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
                tonic::transport::Certificate::from_pem(std::fs::read(&ca.cert).unwrap()),
            ))
            .unwrap()
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        rollout::proto::v1::agent_client::AgentClient::new(channel)
            .probe(pb::ProbeRequest {
                host_id: "tls-host-1".into(),
            })
            .await
            .map(drop)
            .map_err(|s| s.to_string())
    }
    .await;
    assert!(refused.is_err(), "the agent refused a caller without a certificate");
    assert_eq!(
        agent.terminate(std::time::Duration::from_secs(30)).await.unwrap(),
        Some(0)
    );
    controller.stop().await;
}
