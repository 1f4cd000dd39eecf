//! A sweep of the error paths a person meets, through the real binary: each ends
//! with one line that starts `error: `, says something, and never shows a Rust debug
//! struct (`Os {`, `kind:`), a panic or a backtrace.

mod common;

use std::path::Path;

use common::*;

/// What no message may show.
const DEBUG: [&str; 9] = [
    "Os {",
    "kind:",
    "Custom {",
    "Error {",
    "{ code:",
    "panicked",
    "RUST_BACKTRACE",
    "Some(",
    "\"\"",
];

/// Runs `rollout args`; its error, checked to be one plain line.
async fn error_of(args: &[&str]) -> String {
    let run = tokio::process::Command::new(EXE).args(args).kill_on_drop(true).output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not end: it should have been refused"))
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line, not:\n{err}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "{args:?}: {line}");
    assert!(line.len() > "error: ".len() + 10, "{args:?}: says something: {line}");
    for shown in DEBUG {
        assert!(!line.contains(shown), "{args:?} shows `{shown}`: {line}");
    }
    line.to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_path_is_one_plain_line() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent.yaml");
    let a_file = dir.path().join("a-file");
    std::fs::write(&a_file, "not a directory\n").unwrap();
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, ": : : [\n\t\0").unwrap();
    let not_utf8 = dir.path().join("latin1.yaml");
    std::fs::write(&not_utf8, [0x6e, 0x61, 0x6d, 0x65, 0x3a, 0x20, 0xe9, 0x0a]).unwrap();
    let data = dir.path().join("data");
    let unwritable = dir.path().join("ro");
    std::fs::create_dir(&unwritable).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&unwritable, std::fs::Permissions::from_mode(0o500)).unwrap();
    let root = unsafe { libc::geteuid() } == 0;

    let serve = |extra: &[&str]| {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data"];
        args.push(p(&data));
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let mut cases: Vec<Vec<String>> = Vec::new();
    for flag in [
        "--fleet",
        "--auth",
        "--notify",
        "--ssh",
        "--freeze-calendar",
        "--prometheus-ca",
        "--prometheus-token-file",
        "--agent-ca",
        "--config",
    ] {
        cases.push(serve(&[flag, p(&absent)]));
        // A token file's first line is the token, whatever it holds.
        if flag != "--prometheus-token-file" {
            cases.push(serve(&[flag, p(&garbage)]));
        }
    }
    cases.push(serve(&["--fleet", p(&not_utf8)]));
    cases.push(serve(&["--tls-cert", p(&absent), "--tls-key", p(&absent)]));
    cases.push(serve(&["--tls-cert", p(&garbage), "--tls-key", p(&garbage)]));
    cases.push(serve(&["--http-listen", "127.0.0.1:0", "--oidc", p(&absent)]));
    cases.push(serve(&["--listen", "256.0.0.1:1"]));
    cases.push(serve(&["--listen", "not-an-address"]));
    cases.push(serve(&["--http-listen", "not-an-address"]));
    cases.push(
        ["serve", "--listen", "127.0.0.1:0", "--data", p(&a_file)]
            .map(String::from)
            .to_vec(),
    );
    if !root {
        let inside = unwritable.join("data");
        cases.push(
            ["serve", "--listen", "127.0.0.1:0", "--data", p(&inside)]
                .map(String::from)
                .to_vec(),
        );
    }
    for args in [
        vec!["agent", "--config", p(&absent)],
        vec!["agent", "--config", p(&garbage)],
        vec!["agent", "--simulate", p(&absent), "--listen", "127.0.0.1:0"],
        vec!["plan", "check", p(&absent)],
        vec!["plan", "check", p(&garbage)],
        vec!["plan", "check", p(&not_utf8)],
        vec!["notify", "check", p(&absent)],
        vec!["notify", "check", p(&garbage)],
        vec!["fleet", "import", "--ansible", p(&absent), "--customers", p(&absent)],
        vec![
            "fleet",
            "generate",
            "--hosts",
            "3",
            "--agent",
            "x",
            "-o",
            p(&unwritable.join("f.yaml")),
        ],
        vec!["token", "new", "--principal", "a b\n", "--role", "viewer"],
        vec!["token", "new", "--principal", "alice", "--role", "boss"],
        vec![
            "token",
            "new",
            "--principal",
            "alice",
            "--role",
            "viewer",
            "-o",
            p(&a_file),
        ],
        vec!["store", "copy", "--from", p(&absent), "--to", "etcd://127.0.0.1:1/x"],
        vec!["submit", p(&absent), "--server", "http://127.0.0.1:1"],
        vec!["status", "--server", "http://127.0.0.1:1"],
        vec!["status", "--server", "http://[::1"],
        vec!["status", "--server", "https://127.0.0.1:1"],
        vec!["status", "--server", "http://127.0.0.1:1", "--token-file", p(&absent)],
        vec!["status", "--server", "http://127.0.0.1:1", "--ca", p(&garbage)],
        vec!["audit", "--since", "yesterday-ish", "--server", "http://127.0.0.1:1"],
        vec!["restart", "--server", "http://127.0.0.1:1"],
        vec![
            "freeze",
            "--reason",
            "x",
            "--until",
            "soon",
            "--server",
            "http://127.0.0.1:1",
        ],
    ] {
        if root && args.iter().any(|a| a.contains("/ro/")) {
            continue;
        }
        cases.push(args.into_iter().map(String::from).collect());
    }
    for case in &cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        error_of(&args).await;
    }
    std::fs::set_permissions(&unwritable, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A client command whose reader stops early (`rollout ... | head`) ends quietly, as
/// Unix tools do: no panic about a broken pipe, exit code 141.
#[tokio::test]
async fn a_reader_that_stops_early_gets_no_panic() {
    use std::io::Read;
    let mut child = std::process::Command::new(EXE)
        .args(["fleet", "generate", "--hosts", "20000", "--agent", "127.0.0.1:1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's reader is gone (dropped above); the writer meets it closed.
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.code(),
        Some(141),
        "ended by the closed pipe (128 + SIGPIPE): {err}"
    );
}
