//! The operator's command line, run as the real binary.

mod common;

use std::process::Output;

use common::*;
use rollout::agent::SimulatorOptions;

/// An error is one line on stderr, prefixed `error:`, with exit code 1: no panic, no backtrace.
fn assert_one_line_error(out: &Output, contains: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(contains), "`{stderr}` lacks `{contains}`");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Without a controller, client commands say so in one line, with the fix, and exit
/// non-zero; the slips of the first hour (an agent's port, no scheme, https without
/// its CA) each get their own fix, word for word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_errors_say_what_to_do() {
    let refused = "error: nothing listens at http://127.0.0.1:1 (connection refused): start the controller (`rollout serve`), or point --server (or ROLLOUT_SERVER) at its --listen address\n";
    for args in [
        vec!["status", "--server", "http://127.0.0.1:1"],
        vec!["watch", "x", "--server", "http://127.0.0.1:1"],
        vec!["pause", "x", "--server", "http://127.0.0.1:1"],
        // HOST:PORT alone is taken as http://.
        vec!["status", "--server", "127.0.0.1:1"],
    ] {
        let out = rollout(&args).await;
        assert_one_line_error(&out, "");
        assert_eq!(text(&out.stderr), refused);
    }
    let out = rollout(&["status", "--server", "not a url"]).await;
    assert_one_line_error(&out, "is not a URL");
    let out = rollout(&["status", "--server", "https://127.0.0.1:1"]).await;
    assert_eq!(
        text(&out.stderr),
        "error: https://127.0.0.1:1 speaks TLS: give the CA that signed the controller's certificate with --ca FILE (or ROLLOUT_CA)\n"
    );
    // An agent's port, the easy slip.
    let sim = Sim::start(3, SimulatorOptions::default()).await;
    let agent = sim.addr.to_string();
    for server in [format!("http://{agent}"), agent.clone()] {
        let out = rollout(&["status", "--server", &server]).await;
        assert_one_line_error(&out, "");
        assert_eq!(
            text(&out.stderr),
            "error: the server answered, but it is not a rollout controller (a rollout agent's port?): the controller's address is its --listen, 127.0.0.1:50051 by default\n"
        );
    }
    sim.stop().await;
}

/// A controller's `--advertise` URL is named in other controllers' answers: one that
/// is not `http(s)://host:port` is refused at start in one line, before etcd is asked.
#[tokio::test]
async fn a_hostile_advertise_url_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, "hosts: []\n").unwrap();
    for bad in ["http://a b:1", "http://a:1/x\nforged", "ftp://a:1"] {
        let out = rollout(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--store",
            "etcd://127.0.0.1:1/x",
            "--advertise",
            bad,
            "--fleet",
            fleet.to_str().unwrap(),
        ])
        .await;
        assert_one_line_error(&out, "--advertise: ");
        assert!(
            text(&out.stderr).contains("is not a valid controller URL"),
            "{}",
            text(&out.stderr)
        );
    }
}

/// A bad `--oidc` file is refused at start in one line naming the file, the line
/// and the fix, and never shows the client secret; `--oidc` needs `--auth`.
#[tokio::test]
async fn a_bad_oidc_file_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, "hosts: []\n").unwrap();
    std::fs::write(dir.path().join("oidc.secret"), "very-secret-value\n").unwrap();
    let tokens = tokens_file(dir.path(), &[("alice", "operator")]);
    let oidc = dir.path().join("oidc.yaml");
    let good = "issuer: https://login.example.com/\nclient_id: rollout\nclient_secret_file: oidc.secret\nredirect_url: https://rollout.example.com/oidc/callback\nroles:\n  claim: groups\n  map: {sre: operator}\n";
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let serve = |auth: bool| -> Vec<String> {
        let mut args: Vec<String> = ["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec();
        args.extend(["--data".into(), path(&dir.path().join("data"))]);
        args.extend(["--fleet".into(), path(&fleet), "--oidc".into(), path(&oidc)]);
        if auth {
            args.extend(["--auth".into(), path(&tokens)]);
        }
        args
    };
    let run = |args: Vec<String>| async move { rollout(&args.iter().map(String::as_str).collect::<Vec<_>>()).await };
    for (change, says) in [
        (
            ("https://login.example.com/", "http://login.example.com/"),
            ":1:1: issuer: `http://login.example.com/` is plain http: use https",
        ),
        (
            ("{sre: operator}", "{sre: controller}"),
            "roles.map.sre: `controller` is not a role for a person",
        ),
        (
            ("client_id: rollout\n", "client_id: rollout\ntenant: x\n"),
            ":3:1: unknown field `tenant`",
        ),
        (("oidc.secret", "missing.secret"), "client_secret_file: cannot be read"),
    ] {
        std::fs::write(&oidc, good.replace(change.0, change.1)).unwrap();
        let out = run(serve(true)).await;
        assert_one_line_error(&out, "oidc.yaml");
        let said = text(&out.stderr);
        assert!(said.contains(says), "{change:?}: {said}");
        assert!(!said.contains("very-secret-value"), "{said}");
    }
    std::fs::write(&oidc, good).unwrap();
    let out = run(serve(false)).await;
    assert_one_line_error(&out, "--oidc needs --auth");
}

/// `--help` of a client command lists the command's own options first, and the
/// connection flags every command shares apart, under a heading of their own.
#[tokio::test]
async fn help_puts_the_connection_flags_under_their_own_heading() {
    for command in ["restart", "status", "submit"] {
        let out = rollout(&[command, "--help"]).await;
        assert_eq!(out.status.code(), Some(0), "{command} --help");
        let help = text(&out.stdout);
        let heading = help
            .find("Connection options:")
            .unwrap_or_else(|| panic!("{command} --help has no connection heading:\n{help}"));
        let (own, shared) = help.split_at(heading);
        assert!(!help.contains("--log-format"), "{command}: only servers log:\n{help}");
        for flag in ["--server", "--ca", "--cert", "--key", "--token-file"] {
            assert!(shared.contains(flag), "{command}: {flag} under the heading:\n{help}");
            assert!(
                !own.contains(&format!("{flag} ")),
                "{command}: {flag} among its own options:\n{help}"
            );
        }
        assert!(own.contains("--help"), "{command}: its own options come first:\n{help}");
    }
}

/// Bad plan files are reported with file, line, column and field, offline and before
/// any connection is tried.
#[tokio::test]
async fn bad_plans_are_reported_offline() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "name: x\nkind: fix\nselector: {service: a}\nversion: \"1\"\nwaves: [10%, 5%, 100%]\n",
    )
    .unwrap();
    let shown = bad.display().to_string();
    let out = rollout(&["plan", "check", &shown]).await;
    assert_one_line_error(
        &out,
        &format!("{shown}:5:14: waves[1]: waves are cumulative and must strictly increase"),
    );
    let out = rollout(&["submit", &shown, "--server", "http://127.0.0.1:1"]).await;
    assert_one_line_error(&out, "waves[1]");
    // A misspelt field names the one it was meant to be, not every field.
    std::fs::write(
        &bad,
        "name: x\nkind: fix\nselector: {service: a}\nversion: \"1\"\nwaves: [100%]\nmax_paralel: 5\n",
    )
    .unwrap();
    let out = rollout(&["plan", "check", &shown]).await;
    assert_eq!(
        text(&out.stderr),
        format!("error: {shown}:6:1: unknown field `max_paralel`: did you mean `max_parallel`?\n")
    );
    let out = rollout(&["plan", "check", "/nonexistent/plan.yaml"]).await;
    assert_one_line_error(&out, "cannot read plan /nonexistent/plan.yaml");
    let plans = concat!(env!("CARGO_MANIFEST_DIR"), "/plans/exo-retry-fix.yaml");
    let out = rollout(&["plan", "check", plans]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: "), "{}", text(&out.stdout));
    let out = rollout(&["agent", "--listen", "127.0.0.1:0"]).await;
    assert_one_line_error(&out, "--config agent.yaml");
}

/// `fleet generate` writes a valid fleet file.
#[tokio::test]
async fn fleet_generate_writes_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.yaml");
    let shown = path.display().to_string();
    let out = rollout(&[
        "fleet",
        "generate",
        "--hosts",
        "500",
        "--agent",
        "127.0.0.1:7070",
        "--seed",
        "3",
        "-o",
        &shown,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fleet = rollout::inventory::FleetFile::load(&path).unwrap();
    assert_eq!(fleet.hosts.len(), 500);
    assert!(fleet.hosts.iter().all(|h| &*h.address == "127.0.0.1:7070"));
}

/// submit --dry-run, submit, watch, status and status --output json against a real controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_and_status_through_the_cli() {
    let sim = Sim::start(
        400,
        SimulatorOptions {
            latency_ms: (1, 5).into(),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let controller = Controller::start(&dir.path().join("data"), &sim.fleet).await;
    let _ = controller.client().await;
    let server = controller.url.clone();
    let plan_path = dir.path().join("plan.yaml");
    std::fs::write(
        &plan_path,
        "name: cli-fix\nkind: fix\nselector:\n  region: [apac, emea, amer]\nversion: \"2.0\"\nwaves: [10%, 100%]\nbake: 0s\nmax_parallel: 50\n",
    )
    .unwrap();
    let plan = plan_path.display().to_string();

    let out = rollout(&["submit", &plan, "--dry-run", "--server", &server]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("dry run: `cli-fix` would deploy 2.0 to 400 hosts in 2 waves"),
        "{stdout}"
    );
    assert!(stdout.contains("wave 1 ( 10%): +40 hosts, 40 in total: "), "{stdout}");
    assert!(stdout.contains("(+20 more)"), "{stdout}");

    let out = rollout(&["submit", &plan, "--server", &server]).await;
    assert!(
        text(&out.stdout).contains("submitted rollout `cli-fix`"),
        "{}",
        text(&out.stdout)
    );

    let out = rollout(&["watch", "cli-fix", "--server", &server]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("succeeded"), "{}", text(&out.stdout));

    let out = rollout(&["status", "cli-fix", "--output", "json", "--server", &server]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --output json is JSON");
    assert_eq!(json["state"], "succeeded");
    assert_eq!(json["percent_complete"], 100.0);
    assert_eq!(json["waves"][0]["size"], 40);

    let out = rollout(&["status", "--server", &server]).await;
    assert!(text(&out.stdout).contains("cli-fix"), "{}", text(&out.stdout));
    let out = rollout(&["status", "cli-fix", "--server", &server]).await;
    assert!(
        text(&out.stdout).contains("deployed   100.0% of the selection"),
        "{}",
        text(&out.stdout)
    );

    // Hosts and restarts through the CLI.
    let out = rollout(&["hosts", "--probe", "--server", &server]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("400 hosts"), "{}", text(&out.stdout));
    let out = rollout(&[
        "restart",
        "--selector",
        "region=apac",
        "--dry-run",
        "--limit",
        "3",
        "--server",
        &server,
    ])
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("hosts would be restarted, order business-hours-first"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("1  apac-")), "{stdout}");
    let out = rollout(&["restart", "--selector", "region=apac", "--watch", "--server", &server]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("succeeded"), "{stdout}");
    assert!(stdout.contains("restart order (first"), "{stdout}");
    let out = rollout(&["restart", "--selector", "region", "--server", &server]).await;
    assert_one_line_error(&out, "write it as key=value");
    let out = rollout(&["restart", "--server", &server]).await;
    assert_one_line_error(&out, "say which hosts");

    let out = rollout(&["resume", "cli-fix", "--server", &server]).await;
    assert_one_line_error(&out, "has succeeded");
    // abort shows the rollout and asks; nobody can answer without a terminal, and a
    // reason is required.
    let out = rollout(&["abort", "cli-fix", "--server", &server]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--reason <REASON>"), "{}", text(&out.stderr));
    let out = rollout(&["abort", "cli-fix", "--reason", "wrong build", "--server", &server]).await;
    assert_one_line_error(
        &out,
        "not a terminal, so nobody can confirm: look at the rollout above and pass --yes to abort it",
    );
    assert!(text(&out.stdout).contains("cli-fix"), "the rollout is shown first");
    let out = rollout(&["abort", "cli-fix", "--reason", " ", "--yes", "--server", &server]).await;
    assert_one_line_error(&out, "--reason is empty: say why");
    let out = rollout(&["status", "nope", "--server", &server]).await;
    assert_one_line_error(&out, "no rollout is named `nope`");
    controller.stop().await;
    sim.stop().await;
}

/// `rollout demo` runs end to end (smaller fleet here to stay quick in a debug build):
/// it kills and restarts its controller mid-rollout, checks that every host ran the
/// deploy exactly once, restarts the hosts left unhealthy, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_end_to_end() {
    let out = rollout(&["demo", "--hosts", "3000", "--bake", "100ms"]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("** kill -9 controller"), "{stdout}");
    // The kill is said before the watcher notices the controller is gone.
    let (kill, lost) = (stdout.find("** kill -9 controller"), stdout.find("lost the controller"));
    assert!(lost.is_none_or(|lost| kill.is_some_and(|kill| kill < lost)), "{stdout}");
    assert!(stdout.contains("succeeded: 100.0% of"), "{stdout}");
    assert!(stdout.contains("more than once, 0 never"), "{stdout}");
    assert!(stdout.contains(" 0 more than once"), "{stdout}");
    // Act two: the hosts left unhealthy are restarted, and the order is explained.
    assert!(stdout.contains("who was restarted first, and why"), "{stdout}");
    // By default the demo replays the incident's moment on a drill clock, so all
    // three tiers show whatever day the test runs.
    assert!(stdout.contains("drill clock replays the incident's moment"), "{stdout}");
    for tier in ["in-hours", "starting-soon", "off-hours"] {
        assert!(stdout.contains(&format!("  {tier}  ")), "{tier} missing: {stdout}");
    }
    assert!(stdout.contains("unhealthy hosts left on the simulator: 0"), "{stdout}");
}

/// `rollout notify secret` makes a webhook key; `rollout notify check` reads a sinks
/// file offline, showing each sink without its secrets, and refuses a bad one in a line.
#[tokio::test]
async fn notify_check_validates_a_sinks_file_offline() {
    let dir = tempfile::tempdir().unwrap();
    let secret = rollout(&["notify", "secret"]).await;
    assert!(secret.status.success());
    let key = text(&secret.stdout);
    assert!(key.starts_with("whsec_"), "{key}");
    let secret_file = dir.path().join("bridge.secret");
    std::fs::write(&secret_file, &key).unwrap();
    let sinks = dir.path().join("sinks.yaml");
    let body = format!(
        "sinks:\n  - name: incident-bridge\n    kind: webhook\n    url: https://user:pw@hooks.internal/rollout?token=abc\n    secret_file: {}\n",
        secret_file.display()
    );
    std::fs::write(&sinks, &body).unwrap();
    let shown = sinks.display().to_string();
    let out = rollout(&["notify", "check", &shown]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.starts_with(&format!("ok: {shown}: 1 sinks")), "{said}");
    assert!(
        said.contains("incident-bridge: webhook to https://hooks.internal:443 ("),
        "{said}"
    );
    for secret in ["token=abc", "pw@", "/rollout", key.trim()] {
        assert!(!said.contains(secret), "{said}");
    }
    std::fs::write(&sinks, body.replace("kind: webhook", "kind: pager")).unwrap();
    let out = rollout(&["notify", "check", &shown]).await;
    assert_one_line_error(
        &out,
        &format!("{shown}:3:5: sinks[0].kind: `pager` is not a kind of sink"),
    );
}

/// `listening on` means ready: a second controller on the same data dir and one
/// whose fleet file is missing say why in one line, without a Rust debug struct,
/// and never print it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_that_cannot_start_never_says_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let fleet_file = dir.path().join("fleet.yaml");
    std::fs::write(&fleet_file, fleet(3, "127.0.0.1:1").to_yaml()).unwrap();
    let mut first = spawn_controller(&data, &fleet_file, &[], &log).await;
    let data_arg = data.to_str().unwrap();
    let second = rollout(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data_arg,
        "--fleet",
        fleet_file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(text(&second.stdout), "", "no `listening on` before the error");
    assert_eq!(
        text(&second.stderr).lines().last().unwrap_or_default(),
        format!(
            "error: store: {data_arg} is in use by another controller (its lock is held): stop that `rollout serve`, or give this one another --data"
        )
    );
    let missing = rollout(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().join("other").to_str().unwrap(),
        "--fleet",
        "no-such-fleet.yaml",
    ])
    .await;
    assert_eq!(text(&missing.stdout), "");
    let err = text(&missing.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: no-such-fleet.yaml: cannot read the fleet file"),
        "{err}"
    );
    for said in [&err, &text(&second.stderr)] {
        assert!(!said.contains("Os {") && !said.contains("kind:"), "{said}");
    }
    assert_eq!(
        first.terminate(std::time::Duration::from_secs(30)).await.unwrap(),
        Some(0)
    );
}

/// `rollout token new -o FILE` writes the token where only its owner reads it, and
/// never over a file; `rollout restart` without a target names its flags.
#[tokio::test]
async fn a_token_file_is_private_and_restart_names_its_flags() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alice.token");
    let path = file.to_str().unwrap();
    let out = rollout(&["token", "new", "--principal", "alice", "--role", "operator", "-o", path]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "the token is not printed");
    assert!(
        text(&out.stderr).contains("principal: \"alice\""),
        "{}",
        text(&out.stderr)
    );
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&file).unwrap();
    assert_eq!(token.trim().len(), 64, "{token}");
    let again = rollout(&["token", "new", "--principal", "alice", "--role", "operator", "-o", path]).await;
    assert_one_line_error(&again, "the file exists; remove it or name another");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), token, "never overwritten");

    let out = rollout(&["restart", "--server", "http://127.0.0.1:1"]).await;
    assert_eq!(
        text(&out.stderr),
        "error: say which hosts to restart: --selector KEY=VALUE, --host ID (repeat either), or --unhealthy (alone: every unhealthy host)\n"
    );
}
