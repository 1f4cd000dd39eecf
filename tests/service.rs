//! The controller as a service, through the real binary: systemd's notify protocol
//! read from a `NOTIFY_SOCKET` the test binds (READY=1 once it serves, WATCHDOG=1 at
//! half `WATCHDOG_USEC`, STOPPING=1 at SIGTERM), `serve --config FILE` with flags that
//! override it, `--print-config` that reads back as a configuration, and the unit and
//! example configuration the repository ships.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use rollout::cli::process::Spawned;
use rollout::proto::v1 as pb;

/// The next datagram on `socket`, as text (at most `secs` seconds).
fn next(socket: &UnixDatagram, secs: u64) -> String {
    socket.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within the bound");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_the_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("log");
    let mut controller = Spawned::start_with(
        Path::new(EXE),
        ["serve", "--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()],
        Some(&log),
        &[
            ("NOTIFY_SOCKET", path.as_os_str()),
            ("WATCHDOG_USEC", "400000".as_ref()),
        ],
    )
    .await
    .unwrap();

    // READY=1 (with a status line) once it serves: a call answers at once.
    let ready = tokio::task::block_in_place(|| next(&socket, 30));
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.lines().any(|l| l == "STATUS=serving, leading"), "{ready:?}");
    let mut client = rollout::cli::connect(&format!("http://{}", controller.addr))
        .await
        .unwrap();
    client.list_rollouts(pb::ListRolloutsRequest::default()).await.unwrap();

    // The watchdog, at half its 400 ms: several pings within two seconds.
    let pings = tokio::task::block_in_place(|| {
        let mut pings = 0;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if next(&socket, 5) == "WATCHDOG=1\n" {
                pings += 1;
            }
        }
        pings
    });
    assert!(pings >= 3, "{pings} watchdog pings in 2 s (every 200 ms asked)");

    // SIGTERM: STOPPING=1 before it exits, and it exits cleanly.
    controller.signal_term();
    let stopping = tokio::task::block_in_place(|| {
        loop {
            let said = next(&socket, 30);
            if said != "WATCHDOG=1\n" {
                return said;
            }
        }
    });
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(controller.wait(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// `rollout serve ARGS` to its end (a bad configuration, --print-config).
async fn serve(args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    let out = rollout(&all).await;
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_file_sets_every_flag_and_the_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write(
        dir.path(),
        "controller.yaml",
        &format!(
            "listen: 127.0.0.1:0\ndata: {}\nmax-in-flight: 8192\nsite: emea-1\ngrace-period: 45s\nhttp-insecure: false\n",
            data.display()
        ),
    );
    let config = config.to_str().unwrap();

    // The effective configuration: the file's, the flags' over it, the defaults.
    let (ok, printed, err) = serve(&["--config", config, "--site", "apac-2", "--print-config"]).await;
    assert!(ok, "{err}");
    for line in [
        "listen: 127.0.0.1:0",
        "max-in-flight: 8192",
        "site: apac-2",
        "grace-period: 45s",
        "agent-timeout: 10m",
        "# fleet:",
    ] {
        assert!(printed.lines().any(|l| l == line), "no `{line}` in:\n{printed}");
    }
    // It reads back as a configuration, to the same effect.
    let again = write(dir.path(), "printed.yaml", &printed);
    let (ok, reprinted, err) = serve(&["--config", again.to_str().unwrap(), "--print-config"]).await;
    assert!(ok, "{err}");
    let body = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("# rollout serve's"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&reprinted), body(&printed));

    // A controller runs from it.
    let log = dir.path().join("log");
    let mut controller = Spawned::start(Path::new(EXE), ["serve", "--config", config], Some(&log))
        .await
        .unwrap();
    let mut client = rollout::cli::connect(&format!("http://{}", controller.addr))
        .await
        .unwrap();
    client.list_rollouts(pb::ListRolloutsRequest::default()).await.unwrap();
    assert!(data.join("db").exists(), "its data dir is the file's");
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));

    // Mistakes are one line naming the file, the key and the fix.
    let bad = write(dir.path(), "bad.yaml", "data: /tmp/x\nmax_in_flight: 10\n");
    let (ok, _, err) = serve(&["--config", bad.to_str().unwrap()]).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        format!(
            "error: --config {}: `max_in_flight` is not a flag of `rollout serve`: did you mean `max-in-flight`? (each key is a flag without its dashes)",
            bad.display()
        )
    );
    let bad = write(dir.path(), "bad.yaml", "data: /tmp/x\ngrace-period: 5\n");
    let (ok, _, err) = serve(&["--config", bad.to_str().unwrap()]).await;
    assert!(!ok);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "error: --config {}: `grace-period`: invalid value '5'",
            bad.display()
        )),
        "{err}"
    );
    let (ok, _, err) = serve(&["--config", dir.path().join("absent.yaml").to_str().unwrap()]).await;
    assert!(!ok);
    assert!(err.contains("absent.yaml: cannot read it"), "{err}");
    assert!(!dir.path().join("x").exists());
}

#[tokio::test]
async fn the_shipped_unit_runs_the_shipped_configuration() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("packaging/systemd/rollout-controller.service")).unwrap();
    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the unit has no {key}="))
            .to_string()
    };
    assert_eq!(setting("Type"), "notify");
    assert_eq!(setting("ExecReload"), "/bin/kill -HUP $MAINPID");
    let watchdog = humantime::parse_duration(&setting("WatchdogSec")).unwrap();
    let stop = humantime::parse_duration(&setting("TimeoutStopSec")).unwrap();
    let exec = setting("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(&words[1..3], ["serve", "--config"], "{exec}");
    assert!(words[3].ends_with("/controller.yaml"), "{exec}");

    // The configuration it names, as shipped, is one the controller takes.
    let example = root.join("packaging/controller.yaml");
    let (ok, printed, err) = serve(&["--config", example.to_str().unwrap(), "--print-config"]).await;
    assert!(ok, "{err}");
    let grace = printed
        .lines()
        .find_map(|l| l.strip_prefix("grace-period: "))
        .map(|g| humantime::parse_duration(g).unwrap())
        .unwrap();
    assert!(
        stop > grace,
        "systemd waits ({stop:?}) longer than calls in flight may take ({grace:?})"
    );
    assert!(
        watchdog >= Duration::from_secs(10),
        "room for a loaded machine: {watchdog:?}"
    );
}
