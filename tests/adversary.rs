//! The trust boundaries, tried as an attacker would: each test holds one stolen or
//! lesser credential (an agent's token, a viewer's), or writes one hostile input (a
//! fleet file, an inventory, a host's output), and shows through real processes that
//! it gets nothing done. SECURITY.md names each test beside the "cannot" it proves.

mod common;

use std::path::Path;

use common::agents::HostDir;
use common::receiver;
use common::*;
use rollout::cli::{Credentials, connect_with};
use rollout::proto::v1 as pb;
use tonic::Code;

fn heartbeat(host: &str, address: &str, version: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        host_id: host.into(),
        address: address.into(),
        // Not the service the rollout below selects: it goes to the real host alone,
        // and the attacker's own hosts (at the decoy) are never called.
        labels: [("service".to_string(), "attacker-own".to_string())].into(),
        version: version.into(),
        healthy: true,
        interval_ms: 60_000,
        ..Default::default()
    }
}

/// `rollout serve` on `fleet`, which it must refuse: its exit and what it printed.
async fn serve_refusing(data: &Path, fleet: &Path) -> std::process::Output {
    let (data, fleet) = (data.to_str().unwrap(), fleet.to_str().unwrap());
    rollout(&["serve", "--listen", "127.0.0.1:0", "--data", data, "--fleet", fleet]).await
}

fn fleet_of(hosts: &[(&str, String)]) -> String {
    let mut text = String::from("hosts:\n");
    for (id, address) in hosts {
        text.push_str(&format!(
            "  - id: {id}\n    address: {address}\n    labels: {{service: hijack-demo}}\n    version: 15.20.8207.11\n"
        ));
    }
    text
}

/// The heartbeat hijack: an attacker holding one agent's token sends a heartbeat
/// naming another host, with the attacker's own address. Refused with
/// PermissionDenied, audited as refused, and nothing changes: a rollout afterwards
/// deploys to the real host's agent (its deploy script ran), not to the attacker's.
/// An agent token bound by a glob speaks for its hosts and no others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agents_token_cannot_speak_for_another_host() {
    let dir = tempfile::tempdir().unwrap();
    let real = HostDir::new(dir.path(), "apac-exo-0001", "", "30s");
    let agent = real.start("127.0.0.1:0").await;
    // The attacker's "agent": anything that would answer at its address. It is never
    // called: the hijack is refused before the address is taken.
    let decoy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let decoy_addr = decoy.local_addr().unwrap().to_string();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, fleet_of(&[("apac-exo-0001", agent.addr.to_string())])).unwrap();
    let tokens = bound_tokens_file(
        dir.path(),
        &[
            ("ada", "admin", &[]),
            ("apac-exo-0666", "agent", &[]),
            ("emea-group", "agent", &["emea-exo-*"]),
        ],
    );
    let log = dir.path().join("controller.log");
    let controller = spawn_controller(
        &dir.path().join("data"),
        &fleet,
        &["--auth".as_ref(), tokens.as_os_str()],
        &log,
    )
    .await;
    let url = format!("http://{}", controller.addr);
    let mut attacker = connect_with(&url, &as_token("apac-exo-0666")).await.unwrap();

    // Its own host: accepted (a new host registers by heartbeat).
    attacker
        .heartbeat(heartbeat("apac-exo-0666", &decoy_addr, "15.20.8207.11"))
        .await
        .expect("an agent speaks for the host named like it");
    // Another host: refused, saying which host and what the token is bound to.
    let refused = attacker
        .heartbeat(heartbeat("apac-exo-0001", &decoy_addr, "15.20.8207.12"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("may not speak for host `apac-exo-0001`")
            && refused.message().contains("host `apac-exo-0666` only"),
        "{}",
        refused.message()
    );

    // A glob binding: its hosts, and no others.
    let mut group = connect_with(&url, &as_token("emea-group")).await.unwrap();
    group
        .heartbeat(heartbeat("emea-exo-0007", &decoy_addr, "15.20.8207.11"))
        .await
        .expect("a glob binding speaks for its hosts");
    let refused = group
        .heartbeat(heartbeat("apac-exo-0001", &decoy_addr, "15.20.8207.11"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Nothing changed: the real host keeps its address and version.
    let mut admin = connect_with(&url, &as_token("ada")).await.unwrap();
    let hosts = admin
        .list_hosts(pb::ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    let victim = hosts.iter().find(|h| h.id == "apac-exo-0001").unwrap();
    assert_eq!(victim.address, agent.addr.to_string(), "the hijack moved the host");
    assert_ne!(victim.version, "15.20.8207.12", "the hijack faked the version");

    // The refusals are in the audit log, under the attacker's name.
    let events = admin
        .list_events(pb::ListEventsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .events;
    let refusals: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "Heartbeat" && e.result.contains("may not speak for"))
        .collect();
    assert_eq!(refusals.len(), 2, "{events:#?}");
    assert!(refusals.iter().any(|e| e.principal == "apac-exo-0666"));

    // A rollout deploys to the real host: its own deploy script ran.
    let spec = plan_for_service("after-hijack", &["100%"], "0", "hijack-demo");
    submit(&mut admin, spec).await;
    let seen = within(
        60,
        "the rollout to finish",
        watch_until(&mut admin, "after-hijack", |r| {
            matches!(
                r.state(),
                pb::RolloutState::Succeeded | pb::RolloutState::Halted | pb::RolloutState::Failed
            )
        }),
    )
    .await;
    let last = seen.last().unwrap();
    let on_real = all_hosts(&mut admin, "after-hijack", pb::HostFilter::All, 100).await;
    let real_result = on_real.iter().find(|h| h.host_id == "apac-exo-0001").unwrap();
    assert_eq!(real_result.state, "succeeded", "{last:?}");
    assert_eq!(
        real.runs(&real_result.operation_id),
        1,
        "the real host's deploy ran once"
    );
    // Nothing ever called the attacker's address.
    let called = tokio::time::timeout(std::time::Duration::from_millis(100), decoy.accept()).await;
    assert!(called.is_err(), "the decoy was called: {called:?}");
    drop(decoy);
    drop(controller);
    drop(agent);
}

/// `rollout token new --role agent --hosts GLOB` prints an entry the controller
/// reads with the binding; a glob that is not one of host ids is refused before any
/// token is printed.
#[tokio::test]
async fn token_new_binds_an_agent_to_its_hosts() {
    let out = rollout(&[
        "token",
        "new",
        "--principal",
        "apac-group",
        "--role",
        "agent",
        "--hosts",
        "apac-exo-*",
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let entry = text(&out.stderr);
    assert!(entry.contains("hosts: [\"apac-exo-*\"]"), "{entry}");
    let body: String = entry
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    rollout::auth::Credentials::parse(&format!("tokens:\n{body}"), "t.yaml").expect("the printed entry parses");

    let bad = rollout(&["token", "new", "--principal", "x", "--role", "agent", "--hosts", "../*"]).await;
    assert!(!bad.status.success());
    assert!(bad.stdout.is_empty(), "a token was printed for a refused entry");
    assert!(text(&bad.stderr).contains("hosts[0]"), "{}", text(&bad.stderr));
}

/// Host ids are one grammar wherever they enter: a fleet file naming `..` is refused
/// at its line and column by `rollout serve` (which starts nothing), and so is a
/// heartbeat whose version looks like an option (`-rf`), which a rollback would
/// otherwise pass to the operator's script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_are_refused_where_they_enter() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        "hosts:\n  - id: apac-1\n    address: 127.0.0.1:1\n  - id: \"..\"\n    address: 127.0.0.1:1\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = serve_refusing(&data, &fleet).await;
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("{}:4:", fleet.display())) && err.contains("hosts[1].id: `..` is not a valid host id"),
        "{err}"
    );

    // A version from a heartbeat.
    std::fs::write(&fleet, "hosts: []\n").unwrap();
    let log = dir.path().join("controller.log");
    let controller = spawn_controller(&data, &fleet, &[], &log).await;
    let mut client = connect_with(&format!("http://{}", controller.addr), &Credentials::default())
        .await
        .unwrap();
    for (host, version, field) in [
        ("apac-1", "-rf", "Heartbeat version"),
        ("../etc", "1.0", "Heartbeat host_id"),
        ("apac/1", "1.0", "Heartbeat host_id"),
    ] {
        let e = client
            .heartbeat(heartbeat(host, "127.0.0.1:1", version))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(field), "{}", e.message());
    }
    let hosts = client
        .list_hosts(pb::ListHostsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .hosts;
    assert!(hosts.is_empty(), "a refused heartbeat registered {hosts:?}");
    drop(controller);
}

/// `rollout fleet import --ansible` refuses an inventory host named `../x`, and an
/// `ansible_user` that would smuggle another host and port into the address
/// (`deploy@evil.example:2222#`), naming the host; nothing is written.
#[tokio::test]
async fn ansible_import_refuses_paths_and_smuggled_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let customers = dir.path().join("customers.yaml");
    std::fs::write(
        &customers,
        "customers:\n  - {id: contoso, timezone: Asia/Seoul, hours: \"09:00-18:00\", workdays: [mon, tue, wed, thu, fri]}\n",
    )
    .unwrap();
    let output = dir.path().join("fleet.yaml");
    for (inventory, want) in [
        (
            r#"{"_meta": {"hostvars": {"../x": {"ansible_user": "deploy"}}}, "all": {"hosts": ["../x"]}}"#,
            "`../x` is not a valid host id",
        ),
        (
            r#"{"_meta": {"hostvars": {"exo-1": {"ansible_user": "deploy@evil.example:2222#", "ansible_host": "10.0.0.1"}}}, "all": {"hosts": ["exo-1"]}}"#,
            "ansible_user `deploy@evil.example:2222#` is not a user name",
        ),
    ] {
        let file = dir.path().join("inventory.json");
        std::fs::write(&file, inventory).unwrap();
        let out = rollout(&[
            "fleet",
            "import",
            "--ansible",
            file.to_str().unwrap(),
            "--customers",
            customers.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ])
        .await;
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!output.exists(), "a fleet was written");
    }
}

/// An `ssh://USER:PASSWORD@HOST` address is refused when the fleet file is read,
/// and the password appears nowhere: not in the error, not in the log.
#[tokio::test]
async fn an_ssh_password_is_refused_without_being_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(
        &fleet,
        "hosts:\n  - id: apac-1\n    address: ssh://deploy:Hunter2Secret@10.0.0.7:22\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = serve_refusing(&data, &fleet).await;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("holds a password"), "{all}");
    assert!(!all.contains("Hunter2Secret"), "the password was echoed: {all}");
    // `fleet check`-style paths read the same way: the simulator refuses it too.
    let sim = rollout(&[
        "agent",
        "--simulate",
        fleet.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    let all = format!("{}{}", text(&sim.stdout), text(&sim.stderr));
    assert!(!sim.status.success() && !all.contains("Hunter2Secret"), "{all}");
}

/// Probing runs the health command on every host: a viewer's probe is refused
/// (PermissionDenied) and audited; an operator's is audited and paced by the
/// per-principal change limit (ResourceExhausted past it), while listing without a
/// probe stays a viewer's right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probing_the_fleet_is_an_operators_audited_paced_act() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, fleet_of(&[("apac-exo-0001", "127.0.0.1:1".to_string())])).unwrap();
    let tokens = bound_tokens_file(dir.path(), &[("vera", "viewer", &[]), ("otto", "operator", &[])]);
    let log = dir.path().join("controller.log");
    let controller = spawn_controller(
        &dir.path().join("data"),
        &fleet,
        &[
            "--auth".as_ref(),
            tokens.as_os_str(),
            "--max-changes-per-second".as_ref(),
            "1".as_ref(),
        ],
        &log,
    )
    .await;
    let url = format!("http://{}", controller.addr);
    let probe = pb::ListHostsRequest {
        probe: true,
        ..Default::default()
    };
    let mut viewer = connect_with(&url, &as_token("vera")).await.unwrap();
    let listed = viewer.list_hosts(pb::ListHostsRequest::default()).await.unwrap();
    assert_eq!(listed.into_inner().hosts.len(), 1, "a viewer lists hosts");
    let refused = viewer.list_hosts(probe).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("needs the operator role"),
        "{}",
        refused.message()
    );

    let mut operator = connect_with(&url, &as_token("otto")).await.unwrap();
    let mut paced = None;
    for _ in 0..20 {
        if let Err(e) = operator.list_hosts(probe).await {
            paced = Some(e);
            break;
        }
    }
    let paced = paced.expect("twenty probes in a row are paced at 1 a second (bursts of 5)");
    assert_eq!(paced.code(), Code::ResourceExhausted, "{paced:?}");

    // The refusal for the rate limit is written by the limit's own sampler, a moment
    // after the answer.
    let events = within(30, "the paced probe in the audit log", async {
        loop {
            let events = operator
                .list_events(pb::ListEventsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .events;
            if events.iter().any(|e| {
                e.principal == "otto"
                    && e.kind == "ListHosts"
                    && e.detail.starts_with("refused (rate limit)")
                    && e.result.contains("rate limit")
            }) {
                return events;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    let probes: Vec<_> = events.iter().filter(|e| e.detail == "probe every host").collect();
    assert!(
        probes
            .iter()
            .any(|e| e.principal == "vera" && e.result.contains("operator role")),
        "{probes:#?}"
    );
    assert!(
        probes.iter().any(|e| e.principal == "otto" && e.result == "ok"),
        "{probes:#?}"
    );
    drop(controller);
}

/// Rotation without a restart: after a token's entry is removed from the tokens
/// file and the controller gets SIGHUP, that token is refused (Unauthenticated)
/// while the others still work, and the re-read is in the audit log naming who was
/// removed; a file that no longer parses keeps the one in force and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_revokes_a_removed_token_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, "hosts: []\n").unwrap();
    let tokens = bound_tokens_file(dir.path(), &[("otto", "operator", &[]), ("mallory", "operator", &[])]);
    // A webhook sink whose URL and secret rotate with the sinks file.
    let (old_receiver, new_receiver) = (
        receiver::Receiver::start(receiver::Mode::Ok).await,
        receiver::Receiver::start(receiver::Mode::Ok).await,
    );
    let sinks = old_receiver.sinks_file(dir.path(), "bridge", "");
    let rotated_dir = dir.path().join("rotated");
    std::fs::create_dir_all(&rotated_dir).unwrap();
    let rotated = new_receiver.sinks_file(&rotated_dir, "bridge", "");
    let log = dir.path().join("controller.log");
    let controller = spawn_controller(
        &dir.path().join("data"),
        &fleet,
        &[
            "--auth".as_ref(),
            tokens.as_os_str(),
            "--notify".as_ref(),
            sinks.as_os_str(),
        ],
        &log,
    )
    .await;
    let url = format!("http://{}", controller.addr);
    let mut mallory = connect_with(&url, &as_token("mallory")).await.unwrap();
    let mut otto = connect_with(&url, &as_token("otto")).await.unwrap();
    mallory
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .expect("before the rotation");
    let pid = controller.pid().unwrap() as i32;

    bound_tokens_file(dir.path(), &[("otto", "operator", &[])]);
    std::fs::copy(&rotated, &sinks).unwrap();
    // SAFETY: kill sends a signal to a child process this test started.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let refused = within(30, "the removed token to be refused", async {
        loop {
            match mallory.list_rollouts(pb::ListRolloutsRequest::default()).await {
                Err(e) => return e,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    otto.list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .expect("the kept token still works");
    // The rotated sink: a test event goes to its new URL, signed with its new secret.
    let test = within(30, "the rotated sink to answer", async {
        loop {
            let answer = otto
                .notify_test(pb::NotifyTestRequest { sink: "bridge".into() })
                .await
                .unwrap()
                .into_inner();
            if !new_receiver.requests().is_empty() {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(test.delivered, "{test:?}");
    assert!(
        new_receiver.requests().iter().all(|r| r.verified),
        "signed with the new secret"
    );
    assert!(
        old_receiver
            .requests()
            .iter()
            .all(|r| r.event["type"] != "notification.test"),
        "the old URL got nothing after the rotation"
    );
    // Each re-read is audited just after it is in force (not in one transaction
    // with it: the tables are in memory), so the lines are waited for.
    let audited = |events: &[pb::EventRecord]| {
        ["removed mallory (operator)", "sinks file re-read: 1 sinks (bridge)"]
            .iter()
            .all(|line| {
                events
                    .iter()
                    .any(|e| e.principal == "controller" && e.detail.contains(line))
            })
    };
    let events = audit_until(&mut otto, "the re-reads to be audited", audited).await;
    assert!(
        events
            .iter()
            .any(|e| e.principal == "controller" && e.detail.contains("removed mallory (operator)")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.principal == "controller" && e.detail.contains("sinks file re-read: 1 sinks (bridge)")),
        "{events:#?}"
    );

    // A broken file: the one in force stays, and the log and audit say why.
    std::fs::write(&tokens, "tokens: [oops\n").unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    audit_until(&mut otto, "the refusal to re-read to be audited", |events| {
        events.iter().any(|e| e.detail.contains("tokens file not re-read"))
    })
    .await;
    otto.list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .expect("the file in force stays");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("the one read before stays in force")
    );
    drop(controller);
}
