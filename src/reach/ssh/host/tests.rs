//! The host program run for real: under `/bin/sh` (dash on Debian), under bash (the
//! `sh` of RHEL-like hosts), and under busybox's `sh` with nothing but busybox's
//! applets on the PATH when busybox is installed (`.ci/run` installs it, and
//! shellcheck, which checks the program as POSIX sh).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;

/// A shell to run the program under, and the PATH it gets.
struct Shell {
    name: &'static str,
    sh: PathBuf,
    path: String,
    _bin: Option<tempfile::TempDir>,
}

fn shells() -> Vec<Shell> {
    let mut out = vec![Shell {
        name: "sh",
        sh: PathBuf::from("/bin/sh"),
        path: "/usr/bin:/bin".into(),
        _bin: None,
    }];
    if Path::new("/bin/bash").exists() {
        // bash evaluates `$(( ))` operands as expressions (commands included):
        // what the host program must never hand it from a file.
        out.push(Shell {
            name: "bash",
            sh: PathBuf::from("/bin/bash"),
            path: "/usr/bin:/bin".into(),
            _bin: None,
        });
    }
    if let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
    {
        let bin = tempfile::tempdir().unwrap();
        // Only what busybox has (Debian's has no flock: the mkdir lock is tested here).
        let list = Command::new(busybox).arg("--list").output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout).into_owned();
        for a in list.lines() {
            std::os::unix::fs::symlink(busybox, bin.path().join(a)).unwrap();
        }
        out.push(Shell {
            name: "busybox",
            sh: bin.path().join("sh"),
            path: bin.path().display().to_string(),
            _bin: Some(bin),
        });
    } else {
        crate::testing::skip(
            "ROLLOUT_SSH_TESTS",
            "the host program under busybox: install Debian's busybox",
        );
    }
    out
}

fn run(shell: &Shell, sub: &str, args: &[String]) -> Answer {
    let out = Command::new(&shell.sh)
        .arg("-c")
        .arg(command_line(sub, args))
        .env_clear()
        .env("PATH", &shell.path)
        .output()
        .unwrap();
    Answer::parse(&String::from_utf8_lossy(&out.stdout))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> String {
        self.dir.path().join("state").display().to_string()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command appending a line to `runs` (what the tests count), then `then`.
    fn counting(&self, then: &str) -> Vec<String> {
        let runs = self.file("runs");
        strings(&["sh", "-c", &format!("echo ran >> {}; {then}", runs.display())])
    }

    fn runs(&self) -> usize {
        std::fs::read_to_string(self.file("runs")).map_or(0, |s| s.lines().count())
    }

    fn apply(&self, shell: &Shell, epoch: u64, id: &str, argv: &[String], timeout: u64) -> Answer {
        let op = Operation {
            state_dir: &self.state(),
            epoch,
            operation_id: id,
            action: "deploy",
            target: "2.0",
            timeout: Duration::from_secs(timeout),
            retain_days: 7,
            argv,
        };
        run(shell, "apply", &apply_args(&op))
    }
}

/// True while process `pid` runs (neither gone nor a zombie: a container without an
/// init may never reap one).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|rest| rest.trim_start().chars().next())
            != Some('Z')
    })
}

#[test]
fn quoting_keeps_any_word_whole() {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("printf '%s|' {}", quote("it's a $HOME `x` \"y\"")))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a $HOME `x` \"y\"|");
}

#[test]
fn an_operation_runs_once_and_a_resent_one_gets_its_result() {
    for shell in shells() {
        let host = Host::new();
        let argv = host.counting("echo deployed {version}");
        let first = host.apply(&shell, 0, "op-1", &argv, 10);
        assert_eq!(first.get("status"), "ok", "{}: {first:?}", shell.name);
        assert_eq!(first.get("replayed"), "0");
        assert_eq!(first.get("version"), "2.0");
        assert!(first.tail.contains("deployed"), "{first:?}");
        let again = host.apply(&shell, 0, "op-1", &argv, 10);
        assert_eq!((again.get("status"), again.get("replayed")), ("ok", "1"), "{again:?}");
        assert_eq!(host.runs(), 1, "{}: ran once", shell.name);
        match outcome(&again) {
            Outcome::Ended {
                ok, replayed, version, ..
            } => assert!(ok && replayed && version == "2.0"),
            other => panic!("{other:?}"),
        }
        let probe = run(
            &shell,
            "probe",
            &probe_args(&host.state(), Duration::from_secs(5), None),
        );
        assert_eq!(probe.get("executed"), "1");
        assert_eq!(probe.get("apply_calls"), "2");
        assert_eq!(probe.get("last_operation"), "op-1");
        // A second deploy moves the previous version.
        let next = Operation {
            state_dir: &host.state(),
            epoch: 0,
            operation_id: "op-2",
            action: "deploy",
            target: "3.0",
            timeout: Duration::from_secs(10),
            retain_days: 7,
            argv: &strings(&["true"]),
        };
        let second = run(&shell, "apply", &apply_args(&next));
        assert_eq!(
            (second.get("version"), second.get("previous")),
            ("3.0", "2.0"),
            "{second:?}"
        );
    }
}

#[test]
fn concurrent_sends_of_one_operation_run_it_once() {
    for shell in shells() {
        let host = Host::new();
        let argv = host.counting("sleep 1");
        std::thread::scope(|s| {
            let answers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| host.apply(&shell, 0, "op-x", &argv, 10)))
                .collect();
            for a in answers {
                let a = a.join().unwrap();
                assert_eq!(a.get("status"), "ok", "{}: {a:?}", shell.name);
            }
        });
        assert_eq!(host.runs(), 1, "{}", shell.name);
    }
}

/// A claim whose claimer is still writing it (the directory made, nothing in it yet)
/// is an operation starting, not a runner that vanished: a second send waits for it;
/// a claim left unwritten for over a minute is a claimer that died: interrupted.
#[test]
fn a_claim_being_written_is_waited_for_and_an_abandoned_one_is_interrupted() {
    for shell in shells() {
        let host = Host::new();
        let argv = host.counting("true");
        let claim = host.dir.path().join("state/ops/op-y");
        std::fs::create_dir_all(&claim).unwrap();
        let a = host.apply(&shell, 0, "op-y", &argv, 1);
        assert_eq!(a.get("status"), "running", "{}: {a:?}", shell.name);
        let touched = Command::new("touch")
            .args(["-d", "2 minutes ago"])
            .arg(&claim)
            .status()
            .unwrap();
        assert!(touched.success());
        let a = host.apply(&shell, 0, "op-y", &argv, 1);
        assert_eq!(a.get("status"), "interrupted", "{}: {a:?}", shell.name);
        assert_eq!(host.runs(), 0, "{}: never run by a second send", shell.name);
    }
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    for shell in shells() {
        let host = Host::new();
        let child = host.file("child");
        let argv = strings(&["sh", "-c", &format!("sleep 60 & echo $! > {}; wait", child.display())]);
        let started = Instant::now();
        let a = host.apply(&shell, 0, "op-slow", &argv, 1);
        assert!(started.elapsed() < Duration::from_secs(20), "{}", shell.name);
        assert_eq!(a.get("status"), "timeout", "{}: {a:?}", shell.name);
        assert!(a.tail.contains("timed out after 1s"), "{a:?}");
        let pid = std::fs::read_to_string(&child).unwrap().trim().to_string();
        assert!(
            !alive(&pid),
            "{}: the command's own child {pid} was killed with its group",
            shell.name
        );
        assert!(matches!(outcome(&a), Outcome::Ended { ok: false, .. }));
    }
}

#[test]
fn a_dropped_connection_does_not_stop_the_command_and_a_resend_finds_its_result() {
    for shell in shells() {
        let host = Host::new();
        let argv = host.counting("sleep 2; echo finished");
        let op = Operation {
            state_dir: &host.state(),
            epoch: 0,
            operation_id: "op-drop",
            action: "restart",
            target: "",
            timeout: Duration::from_secs(30),
            retain_days: 7,
            argv: &argv,
        };
        let mut sent = Command::new(&shell.sh)
            .arg("-c")
            .arg(command_line("apply", &apply_args(&op)))
            .env_clear()
            .env("PATH", &shell.path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        // The session's shell dies, as it does when the connection drops.
        sent.kill().unwrap();
        sent.wait().unwrap();
        let a = run(&shell, "apply", &apply_args(&op));
        assert_eq!(
            (a.get("status"), a.get("replayed")),
            ("ok", "1"),
            "{}: {a:?}",
            shell.name
        );
        assert!(a.tail.contains("finished"), "{a:?}");
        assert_eq!(host.runs(), 1, "{}", shell.name);
    }
}

#[test]
fn a_vanished_runner_is_interrupted_and_never_run_again() {
    for shell in shells() {
        let host = Host::new();
        // As a reboot leaves it: claimed under another boot, no outcome.
        let dir = PathBuf::from(host.state()).join("ops/op-lost");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("boot"), "a-boot-before\n").unwrap();
        std::fs::write(dir.join("pid"), "1\n").unwrap();
        let argv = host.counting("true");
        let a = host.apply(&shell, 0, "op-lost", &argv, 10);
        assert_eq!(a.get("status"), "interrupted", "{}: {a:?}", shell.name);
        assert_eq!(host.runs(), 0, "{}: not run", shell.name);
        let again = host.apply(&shell, 0, "op-lost", &argv, 10);
        assert_eq!(again.get("status"), "interrupted");
        assert!(again.tail.starts_with("interrupted: "), "{again:?}");
        assert_eq!(host.runs(), 0);
    }
}

#[test]
fn a_lower_epoch_is_refused_and_counted() {
    for shell in shells() {
        let host = Host::new();
        let argv = host.counting("true");
        assert_eq!(host.apply(&shell, 9, "op-a", &argv, 10).get("status"), "ok");
        let stale = host.apply(&shell, 7, "op-b", &argv, 10);
        assert_eq!(
            outcome(&stale),
            Outcome::Refused("stale controller epoch 7 < 9: a newer leader has taken over".into()),
            "{}",
            shell.name
        );
        assert_eq!(host.runs(), 1);
        let probe = run(
            &shell,
            "probe",
            &probe_args(&host.state(), Duration::from_secs(5), None),
        );
        assert_eq!(probe.get("stale_refused"), "1");
        assert_eq!(host.apply(&shell, 10, "op-c", &argv, 10).get("status"), "ok");
    }
}

#[test]
fn probe_runs_the_health_check_and_old_operations_are_pruned() {
    for shell in shells() {
        let host = Host::new();
        let probe = |argv: &[&str]| {
            let argv = strings(argv);
            run(
                &shell,
                "probe",
                &probe_args(&host.state(), Duration::from_secs(5), Some(&argv)),
            )
        };
        assert_eq!(probe(&["true"]).get("health"), "0", "{}", shell.name);
        assert_eq!(probe(&["sh", "-c", "echo sick; exit 3"]).get("health"), "3");
        assert_eq!(probe(&["sh", "-c", "echo sick; exit 3"]).tail, "sick");
        let argv = strings(&["true"]);
        assert_eq!(host.apply(&shell, 0, "op-old", &argv, 10).get("status"), "ok");
        let status = PathBuf::from(host.state()).join("ops/op-old/status");
        Command::new("touch")
            .args(["-d", "2020-01-01"])
            .arg(&status)
            .status()
            .unwrap();
        std::fs::remove_file(PathBuf::from(host.state()).join("pruned")).unwrap();
        assert_eq!(host.apply(&shell, 0, "op-new", &argv, 10).get("status"), "ok");
        let gone = Instant::now() + Duration::from_secs(10);
        while status.exists() && Instant::now() < gone {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!status.exists(), "{}: older than 7 days, pruned", shell.name);
    }
}

#[test]
fn answers_read_as_outcomes() {
    let a = Answer::parse("status=failed\nreplayed=0\ncode=2\nversion=1\nprevious=\n--\nno space left\non /var\n");
    assert_eq!(
        outcome(&a),
        Outcome::Ended {
            ok: false,
            replayed: false,
            detail: "exit status 2: no space left; on /var".into(),
            version: "1".into(),
            previous: String::new(),
        }
    );
    assert!(matches!(outcome(&Answer::parse("fish: unknown\n")), Outcome::Error(e) if e.contains("POSIX")));
}

/// A counter planted in the state directory is parsed, never evaluated: under bash,
/// `$(( ${n} + 1 ))` with `n='a[$(touch FILE)]'` would run `touch`. Every shell
/// refuses the operation as corrupt state, runs nothing, and the command in the
/// file never runs. The same for the epoch file and a version.
#[test]
fn a_planted_counter_is_refused_never_evaluated() {
    for shell in shells() {
        for (file, planted) in [
            ("apply_calls", "a[$(touch PWNED)]"),
            ("epoch", "x[$(touch PWNED)]"),
            ("stale_refused", "1+1"),
            ("version", "1.0\nstatus=ok"),
        ] {
            let host = Host::new();
            let argv = host.counting("true");
            assert_eq!(host.apply(&shell, 1, "op-first", &argv, 10).get("status"), "ok");
            let pwned = host.file("PWNED");
            let state = PathBuf::from(host.state());
            std::fs::write(state.join(file), planted.replace("PWNED", &pwned.display().to_string())).unwrap();
            let answer = host.apply(&shell, 1, "op-second", &argv, 10);
            assert_eq!(answer.get("status"), "error", "{} {file}: {answer:?}", shell.name);
            assert!(
                answer.get("message").contains("corrupt state") && answer.get("message").contains(file),
                "{} {file}: {answer:?}",
                shell.name
            );
            assert!(!pwned.exists(), "{} {file}: the planted command ran", shell.name);
            assert_eq!(host.runs(), 1, "{} {file}: the operation ran", shell.name);
            let probe = run(
                &shell,
                "probe",
                &probe_args(&host.state(), Duration::from_secs(5), None),
            );
            assert_eq!(probe.get("status"), "error", "{} {file}: probe {probe:?}", shell.name);
            assert!(!pwned.exists());
        }
    }
}

/// No write or lock follows a symbolic link: a `lock` or `version` link planted in
/// the state directory to a file elsewhere leaves that file untouched, and the
/// operation is refused naming the link.
#[test]
fn symbolic_links_in_the_state_directory_are_never_followed() {
    for shell in shells() {
        for name in ["lock", "version", "apply_calls", "ops"] {
            let host = Host::new();
            let argv = host.counting("true");
            assert_eq!(host.apply(&shell, 1, "op-first", &argv, 10).get("status"), "ok");
            let victim = host.file("victim");
            std::fs::write(&victim, "precious\n").unwrap();
            let link = PathBuf::from(host.state()).join(name);
            if link.is_dir() {
                std::fs::remove_dir_all(&link).unwrap();
            } else {
                let _ = std::fs::remove_file(&link);
            }
            std::os::unix::fs::symlink(&victim, &link).unwrap();
            let answer = host.apply(&shell, 1, "op-second", &argv, 10);
            assert_eq!(answer.get("status"), "error", "{} {name}: {answer:?}", shell.name);
            assert!(
                answer.get("message").contains("symbolic link"),
                "{} {name}: {answer:?}",
                shell.name
            );
            assert_eq!(
                std::fs::read_to_string(&victim).unwrap(),
                "precious\n",
                "{} {name}",
                shell.name
            );
            assert_eq!(host.runs(), 1, "{} {name}", shell.name);
        }
    }
}

/// A state directory others may write to (group or world writable), or a link to
/// one, refuses every operation naming the directory; one the user made is 0700.
#[test]
fn a_state_directory_others_may_write_refuses_every_operation() {
    use std::os::unix::fs::PermissionsExt;
    for shell in shells() {
        let host = Host::new();
        let argv = host.counting("true");
        assert_eq!(host.apply(&shell, 1, "op-first", &argv, 10).get("status"), "ok");
        let state = PathBuf::from(host.state());
        let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}: made by the program", shell.name);
        for loose in [0o770, 0o707, 0o777] {
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(loose)).unwrap();
            for answer in [
                host.apply(&shell, 1, "op-second", &argv, 10),
                run(
                    &shell,
                    "probe",
                    &probe_args(&host.state(), Duration::from_secs(5), None),
                ),
            ] {
                assert_eq!(answer.get("status"), "error", "{} {loose:o}", shell.name);
                let message = answer.get("message");
                assert!(
                    message.contains("group or world writable") && message.contains(&host.state()),
                    "{}: {message}",
                    shell.name
                );
            }
        }
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        let elsewhere = host.file("elsewhere");
        std::fs::rename(&state, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &state).unwrap();
        let answer = host.apply(&shell, 1, "op-third", &argv, 10);
        assert!(
            answer.get("message").contains("symbolic link"),
            "{}: {answer:?}",
            shell.name
        );
        assert_eq!(host.runs(), 1);
    }
}

/// The program is POSIX sh as shellcheck reads it (`shellcheck -s sh`), when
/// shellcheck is installed (`.ci/run` installs it and requires this).
#[ignore = "needs shellcheck (Debian's); cargo test -- --include-ignored runs it"]
#[test]
fn the_host_program_is_clean_under_shellcheck() {
    let Ok(out) = Command::new("shellcheck")
        .args(["-s", "sh", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        crate::testing::skip("ROLLOUT_SSH_TESTS", "no shellcheck: install Debian's shellcheck");
        return;
    };
    let mut child = out;
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(PROGRAM.as_bytes()).unwrap();
    }
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stdout));
}
