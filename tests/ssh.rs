//! Hosts reached over SSH with nothing installed on them, through real OpenSSH
//! servers (Debian's `openssh-server`) on loopback ports, host and client keys made
//! here: exactly once through controller SIGKILLs, host keys checked strictly, a
//! mixed fleet of agents and SSH hosts. Skipped without sshd, failing instead with
//! ROLLOUT_SSH_TESTS=required.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::sshd::{Client as SshClient, Sshd};
use common::*;
use rollout::cli::connect;
use rollout::proto::v1 as pb;

/// `n` SSH hosts over `servers` sshds (round robin), the rest of the fleet file as
/// generated; written to `dir/fleet.yaml`.
fn ssh_fleet(dir: &Path, n: usize, servers: &[Sshd]) -> (rollout::inventory::FleetFile, PathBuf) {
    let mut f = fleet(n, "127.0.0.1:1");
    for (i, h) in f.hosts.iter_mut().enumerate() {
        h.address = Arc::from(servers[i % servers.len()].address());
    }
    let path = dir.join("fleet.yaml");
    std::fs::write(&path, f.to_yaml()).unwrap();
    (f, path)
}

/// The deploy command every test host runs: appends the version to
/// `runs/HOST` (what the tests count), then takes a moment.
fn commands(runs: &Path) -> String {
    std::fs::create_dir_all(runs).unwrap();
    format!(
        "  deploy: {{argv: [sh, -c, 'echo \"$1\" >> {}/$2; sleep 0.5', x, \"{{version}}\", \"{{host}}\"], timeout: 30s}}\n  health: {{argv: [\"true\"], timeout: 10s}}\n",
        runs.display()
    )
}

fn runs_of(runs: &Path, host: &str) -> Vec<String> {
    std::fs::read_to_string(runs.join(host))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A fix in three waves over 20 SSH hosts on four sshds, the controller SIGKILLed
/// twice mid-wave: every host's command ran exactly once.
#[ignore = "needs sshd (Debian's openssh-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fix_over_ssh_runs_each_host_once_through_two_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let Some(client) = SshClient::new(dir.path()) else {
        return;
    };
    let servers: Vec<Sshd> = (0..4)
        .map(|i| Sshd::start(&dir.path().join(format!("sshd-{i}")), &client, true))
        .collect();
    let (fleet, fleet_file) = ssh_fleet(dir.path(), 20, &servers);
    let runs = dir.path().join("runs");
    let state = format!("{}/hosts/{{host}}", dir.path().display());
    let ssh = client.ssh_file(&state, &commands(&runs));
    let (data, log) = (dir.path().join("data"), dir.path().join("log"));
    let flags: Vec<&std::ffi::OsStr> = vec!["--ssh".as_ref(), ssh.as_os_str()];
    let mut controller = spawn_controller(&data, &fleet_file, &flags, &log).await;
    let mut grpc = connect(&format!("http://{}", controller.addr)).await.unwrap();
    let mut spec = plan("ssh-fix", &["10%", "50%", "100%"], "0");
    spec.max_parallel = 4;
    submit(&mut grpc, spec).await;
    for kill_at in [20.0, 55.0] {
        within(120, "the rollout to be mid-wave", async {
            loop {
                let r = get(&mut grpc, "ssh-fix").await;
                if r.percent_complete >= kill_at && r.hosts_in_flight > 0 {
                    return;
                }
                assert!(
                    !r.state().is_terminal(),
                    "ended before the kill at {kill_at}%: {}",
                    r.halt_reason
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        controller.kill9().await.unwrap();
        controller = spawn_controller(&data, &fleet_file, &flags, &log).await;
        grpc = connect(&format!("http://{}", controller.addr)).await.unwrap();
    }
    let done = within(
        180,
        "the rollout to end",
        watch_until(&mut grpc, "ssh-fix", |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(
        done.state(),
        pb::RolloutState::Succeeded,
        "{} ({})",
        done.halt_reason,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(done.hosts_succeeded, 20);
    for h in &fleet.hosts {
        assert_eq!(runs_of(&runs, &h.id), ["15.20.8207.12"], "{} ran exactly once", h.id);
    }
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// One rollout `name` in one wave over SSH hosts on `servers` (one each), through a
/// controller of its own, which must end with failures: the fleet, the runs
/// directory, the controller and a client of it.
async fn ended_with_failures(
    dir: &Path,
    client: &SshClient,
    servers: &[Sshd],
    name: &str,
    max_failed: &str,
) -> (
    rollout::inventory::FleetFile,
    PathBuf,
    rollout::cli::process::Spawned,
    rollout::cli::Client,
) {
    let (fleet, fleet_file) = ssh_fleet(dir, servers.len(), servers);
    let runs = dir.join("runs");
    let state = format!("{}/hosts/{{host}}", dir.display());
    let ssh = client.ssh_file(&state, &commands(&runs));
    let flags: Vec<&std::ffi::OsStr> = vec!["--ssh".as_ref(), ssh.as_os_str()];
    let controller = spawn_controller(&dir.join("data"), &fleet_file, &flags, &dir.join("log")).await;
    let mut grpc = connect(&format!("http://{}", controller.addr)).await.unwrap();
    submit(&mut grpc, plan(name, &["100%"], max_failed)).await;
    let done = within(
        120,
        "the rollout to end",
        watch_until(&mut grpc, name, |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(
        done.state(),
        pb::RolloutState::CompletedWithFailures,
        "{}",
        done.halt_reason
    );
    (fleet, runs, controller, grpc)
}

/// A host whose key changed, and a host known_hosts does not list, are refused
/// with the key's fingerprint before anything is sent: nothing runs on them.
#[ignore = "needs sshd (Debian's openssh-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_and_unknown_host_keys_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let Some(client) = SshClient::new(dir.path()) else {
        return;
    };
    let good = Sshd::start(&dir.path().join("good"), &client, true);
    let unknown = Sshd::start(&dir.path().join("unknown"), &client, false);
    let changed = Sshd::start(&dir.path().join("changed"), &client, true);
    // The changed server's key is not the one listed any more.
    let listed = std::fs::read_to_string(&client.known_hosts).unwrap();
    let old_key = std::fs::read_to_string(changed.dir.join("host_ed25519.pub")).unwrap();
    std::fs::remove_file(changed.dir.join("host_ed25519")).unwrap();
    std::fs::remove_file(changed.dir.join("host_ed25519.pub")).unwrap();
    common::sshd::keygen(&changed.dir.join("host_ed25519"));
    let mut changed = changed;
    changed.restart();
    assert!(listed.contains(old_key.split_whitespace().nth(1).unwrap()));
    let servers = [good, unknown, changed];
    let (fleet, runs, mut controller, mut grpc) =
        ended_with_failures(dir.path(), &client, &servers, "ssh-keys", "2").await;
    let hosts = all_hosts(&mut grpc, "ssh-keys", pb::HostFilter::Failed, 100).await;
    let reason = |i: usize| {
        hosts
            .iter()
            .find(|h| h.host_id == fleet.hosts[i].id)
            .map(|h| h.reason.clone())
            .unwrap_or_else(|| panic!("host {i} failed: {hosts:?}"))
    };
    let (unknown_why, changed_why) = (reason(1), reason(2));
    assert!(
        unknown_why.contains("is not in") && unknown_why.contains("SHA256:"),
        "{unknown_why}"
    );
    assert!(unknown_why.contains("nothing trusts on first use"), "{unknown_why}");
    assert!(
        changed_why.contains("does not match") && changed_why.contains("SHA256:"),
        "{changed_why}"
    );
    assert!(
        changed_why.contains(&client.known_hosts.display().to_string()),
        "{changed_why}"
    );
    assert_eq!(runs_of(&runs, &fleet.hosts[0].id).len(), 1, "the good host ran");
    for i in [1, 2] {
        assert!(runs_of(&runs, &fleet.hosts[i].id).is_empty(), "nothing ran on host {i}");
        let state_dir = dir.path().join("hosts").join(&fleet.hosts[i].id);
        assert!(!state_dir.exists(), "nothing was sent to host {i}");
    }
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// Makes a CA key pair at `dir/NAME` and signs `sshd`'s host key with it (a host
/// certificate naming 127.0.0.1), then restarts the server to present it. Returns
/// the CA's public key line.
fn host_certificate(dir: &Path, name: &str, sshd: &mut Sshd) -> String {
    let ca = dir.join(name);
    common::sshd::keygen(&ca);
    let host_pub = sshd.dir.join("host_ed25519.pub");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args(["-I", name, "-h", "-n", "127.0.0.1", "-V", "-5m:+1h"])
        .arg(&host_pub)
        .status()
        .expect("ssh-keygen signs")
        .success();
    assert!(ok, "ssh-keygen signed the host key");
    let mut config = std::fs::read_to_string(sshd.dir.join("sshd_config")).unwrap();
    config.push_str(&format!(
        "HostCertificate {}\n",
        sshd.dir.join("host_ed25519-cert.pub").display()
    ));
    std::fs::write(sshd.dir.join("sshd_config"), config).unwrap();
    sshd.restart();
    let public = std::fs::read_to_string(ca.with_extension("pub")).unwrap();
    public.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// known_hosts as OpenSSH reads it: a host certificate signed by a trusted CA is
/// accepted (the client asks for certificates where a @cert-authority line names
/// the host), and one signed by a CA key that is also listed `@revoked` is refused
/// before anything is sent, naming the revoked CA's line; nothing runs there.
#[ignore = "needs sshd (Debian's openssh-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_signed_by_a_revoked_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(client) = SshClient::new(dir.path()) else {
        return;
    };
    let mut trusted = Sshd::start(&dir.path().join("trusted"), &client, false);
    let mut revoked = Sshd::start(&dir.path().join("revoked"), &client, false);
    let good_ca = host_certificate(dir.path(), "good-ca", &mut trusted);
    let bad_ca = host_certificate(dir.path(), "bad-ca", &mut revoked);
    std::fs::write(
        &client.known_hosts,
        format!(
            "@cert-authority [127.0.0.1]:* {good_ca}\n@cert-authority [127.0.0.1]:* {bad_ca}\n@revoked * {bad_ca}\n"
        ),
    )
    .unwrap();
    let servers = [trusted, revoked];
    let (fleet, runs, mut controller, mut grpc) =
        ended_with_failures(dir.path(), &client, &servers, "ssh-ca", "50").await;
    let failed = all_hosts(&mut grpc, "ssh-ca", pb::HostFilter::Failed, 100).await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].host_id, fleet.hosts[1].id);
    assert!(
        failed[0].reason.contains("signed by CA key")
            && failed[0].reason.contains("revoked")
            && failed[0].reason.contains("line 3"),
        "{}",
        failed[0].reason
    );
    assert_eq!(runs_of(&runs, &fleet.hosts[0].id).len(), 1, "the trusted CA's host ran");
    assert!(
        runs_of(&runs, &fleet.hosts[1].id).is_empty(),
        "nothing ran under the revoked CA"
    );
    assert!(
        !dir.path().join("hosts").join(&fleet.hosts[1].id).exists(),
        "nothing was sent"
    );
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// One rollout over agents (a simulated fleet) and SSH hosts together.
#[ignore = "needs sshd (Debian's openssh-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_rollout_over_agents_and_ssh_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let Some(client) = SshClient::new(dir.path()) else {
        return;
    };
    let servers = [Sshd::start(&dir.path().join("sshd"), &client, true)];
    let log = dir.path().join("log");
    let (mut agent, mut f, _) = spawn_simulator(dir.path(), 10, "1..5", &log).await;
    for h in f.hosts.iter_mut().take(4) {
        h.address = Arc::from(servers[0].address());
    }
    let fleet_file = dir.path().join("mixed.yaml");
    std::fs::write(&fleet_file, f.to_yaml()).unwrap();
    let runs = dir.path().join("runs");
    let state = format!("{}/hosts/{{host}}", dir.path().display());
    let ssh = client.ssh_file(&state, &commands(&runs));
    let flags: Vec<&std::ffi::OsStr> = vec!["--ssh".as_ref(), ssh.as_os_str()];
    let mut controller = spawn_controller(&dir.path().join("data"), &fleet_file, &flags, &log).await;
    let mut grpc = connect(&format!("http://{}", controller.addr)).await.unwrap();
    submit(&mut grpc, plan("mixed-fix", &["50%", "100%"], "0")).await;
    let done = within(
        120,
        "the rollout to end",
        watch_until(&mut grpc, "mixed-fix", |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!(done.hosts_succeeded, 10);
    for h in f.hosts.iter().take(4) {
        assert_eq!(runs_of(&runs, &h.id).len(), 1, "{} ran over SSH once", h.id);
    }
    for (host, p) in probe_all(&agent.addr.to_string(), &f).await.into_iter().skip(4) {
        assert_eq!(p.version, "15.20.8207.12", "{host} deployed by its agent");
    }
    assert_eq!(controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    assert_eq!(agent.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// A single host over SSH with `deploy` as its deploy command (YAML flow), and a
/// running controller on it.
struct OneHost {
    dir: tempfile::TempDir,
    sshd: Sshd,
    controller: rollout::cli::process::Spawned,
    grpc: Client,
}

impl OneHost {
    async fn start(deploy: &str) -> Option<OneHost> {
        let dir = tempfile::tempdir().unwrap();
        let client = SshClient::new(dir.path())?;
        let sshd = Sshd::start(&dir.path().join("sshd"), &client, true);
        let (_, fleet_file) = ssh_fleet(dir.path(), 1, std::slice::from_ref(&sshd));
        let state = format!("{}/hosts/{{host}}", dir.path().display());
        let ssh = client.ssh_file(&state, &format!("  deploy: {deploy}\n"));
        let log = dir.path().join("log");
        let flags: Vec<&std::ffi::OsStr> = vec!["--ssh".as_ref(), ssh.as_os_str()];
        let controller = spawn_controller(&dir.path().join("data"), &fleet_file, &flags, &log).await;
        let grpc = connect(&format!("http://{}", controller.addr)).await.unwrap();
        Some(OneHost {
            dir,
            sshd,
            controller,
            grpc,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn finish(mut self, name: &str) -> (pb::Rollout, Vec<pb::HostResult>, OneHost) {
        let ended = tokio::time::timeout(
            Duration::from_secs(120),
            watch_until(&mut self.grpc, name, |r| r.state().is_terminal()),
        )
        .await;
        let Ok(mut seen) = ended else {
            panic!(
                "the rollout did not end within 120 s; the controller said:\n{}",
                std::fs::read_to_string(self.path("log")).unwrap_or_default()
            );
        };
        let done = seen.pop().unwrap();
        let hosts = all_hosts(&mut self.grpc, name, pb::HostFilter::All, 10).await;
        (done, hosts, self)
    }
}

/// A command past its timeout is killed with its whole process group, and the host
/// is reported as timed out.
#[ignore = "needs sshd (Debian's openssh-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_past_its_timeout_is_killed_with_its_group() {
    let probe_dir = tempfile::tempdir().unwrap();
    let child = probe_dir.path().join("child");
    let deploy = format!(
        "{{argv: [sh, -c, 'sleep 60 & echo $! > {}; wait'], timeout: 2s}}",
        child.display()
    );
    let Some(mut h) = OneHost::start(&deploy).await else {
        return;
    };
    submit(&mut h.grpc, plan("ssh-slow", &["100%"], "1")).await;
    let (done, hosts, mut h) = h.finish("ssh-slow").await;
    assert_eq!(
        done.state(),
        pb::RolloutState::CompletedWithFailures,
        "{}",
        done.halt_reason
    );
    assert!(hosts[0].reason.contains("timed out after 2s"), "{:?}", hosts[0]);
    let pid: u32 = std::fs::read_to_string(&child).unwrap().trim().parse().unwrap();
    assert!(
        !running(pid),
        "the command's child {pid} was killed with its process group"
    );
    assert_eq!(h.controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// The host's sshd killed mid-command (its sessions too: the connection drops) and
/// started again: the command ran once, and its result is found.
#[ignore = "needs sshd (Debian's openssh-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_mid_command_runs_it_once_and_finds_its_result() {
    let probe_dir = tempfile::tempdir().unwrap();
    let runs = probe_dir.path().join("runs");
    let deploy = format!(
        "{{argv: [sh, -c, 'echo started >> {}; sleep 3; echo done'], timeout: 30s}}",
        runs.display()
    );
    let Some(mut h) = OneHost::start(&deploy).await else {
        return;
    };
    submit(&mut h.grpc, plan("ssh-drop", &["100%"], "0")).await;
    within(60, "the command to start", async {
        while !runs.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    h.sshd.kill_with_sessions();
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.sshd.restart();
    let (done, hosts, mut h) = h.finish("ssh-drop").await;
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);
    assert_eq!(std::fs::read_to_string(&runs).unwrap().lines().count(), 1, "ran once");
    assert_eq!(hosts[0].version, "15.20.8207.12", "{:?}", hosts[0]);
    assert_eq!(h.controller.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
}

/// Fencing on the host: once a newer leader (epoch 9) has acted on a host, an Apply
/// of the deposed one (epoch 7) over SSH is refused by the host's epoch file, as an
/// agent refuses it, and counted; nothing runs.
#[ignore = "needs sshd (Debian's openssh-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_apply_over_ssh_is_refused_by_the_host() {
    use rollout::engine::Fleet;
    let dir = tempfile::tempdir().unwrap();
    let Some(client) = SshClient::new(dir.path()) else {
        return;
    };
    let sshd = Sshd::start(&dir.path().join("sshd"), &client, true);
    let runs = dir.path().join("runs");
    let state = format!("{}/hosts/{{host}}", dir.path().display());
    let ssh = client.ssh_file(&state, &commands(&runs));
    let leader = |epoch: u64| {
        let config = rollout::reach::ssh::config::SshConfig::load(&ssh).unwrap();
        let grpc = Arc::new(rollout::engine::GrpcFleet::new(Duration::from_secs(30)));
        rollout::reach::Fleets::new(grpc, Some(config), epoch)
    };
    let (new, old) = (leader(9), leader(7));
    let apply = |op: &str| pb::ApplyRequest {
        host_id: "exo-1".into(),
        operation_id: op.into(),
        action: pb::Action::Deploy as i32,
        version: "2.0".into(),
        epoch: 0,
        detach: false,
    };
    let done = new.apply(&sshd.address(), apply("op-new")).await.unwrap();
    assert!(done.ok, "{done:?}");
    let refused = old.apply(&sshd.address(), apply("op-old")).await.unwrap_err();
    assert_eq!(refused.failure, rollout::reach::Failure::Refused, "{refused:?}");
    assert!(
        refused
            .message
            .starts_with("stale controller epoch 7 < 9: a newer leader has taken over"),
        "{refused:?}"
    );
    assert_eq!(runs_of(&runs, "exo-1"), ["2.0"], "only the new leader's ran");
    let probe = new.probe(&sshd.address(), "exo-1").await.unwrap();
    assert_eq!(
        (probe.stale_applies_refused, probe.operations_executed),
        (1, 1),
        "{probe:?}"
    );
}

/// A ForceCommand for the test's sshds: an Apply of the host program that starts
/// while `hold` exists writes a marker in `held` and waits for `release` before it
/// runs; everything else runs at once.
fn holding_wrapper(dir: &Path) -> (PathBuf, PathBuf, PathBuf, String) {
    let (hold, release, held) = (dir.join("hold"), dir.join("release"), dir.join("held"));
    std::fs::create_dir_all(&held).unwrap();
    let script = dir.join("hold.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$SSH_ORIGINAL_COMMAND\" in\n*'\"$ROLLOUT_HOST_SH\" rollout-host apply '*)\n  if [ -e {hold} ]; then\n    : > {held}/$$\n    while [ ! -e {release} ]; do sleep 0.1; done\n  fi ;;\nesac\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            hold = hold.display(),
            held = held.display(),
            release = release.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (hold, release, held, format!("ForceCommand {}\n", script.display()))
}

/// The host program's counters summed over `hosts`: Applies refused for a stale
/// epoch, and operations run.
async fn host_counters(fleets: &rollout::reach::Fleets, fleet: &rollout::inventory::FleetFile) -> (u64, u64) {
    use rollout::engine::Fleet;
    let mut sum = (0, 0);
    for h in &fleet.hosts {
        if let Ok(p) = fleets.probe(&h.address, &h.id).await {
            sum.0 += p.stale_applies_refused;
            sum.1 += p.operations_executed;
        }
    }
    sum
}

/// On etcd, end to end: the leader's Applies are held on their way to the hosts
/// (sent, not yet run) and the leader is paused (SIGSTOP) past its lease; the other
/// controller takes over, sends those operations again with its higher epoch and
/// finishes the rollout; then the held Applies of the deposed leader reach the
/// hosts and are refused by the hosts' epoch files. Every host's command ran
/// exactly once; the deposed leader, woken, stands by.
#[ignore = "needs sshd and etcd (Debian's openssh-server, etcd-server); cargo test -- --include-ignored runs it"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_etcd_a_paused_leaders_held_applies_are_refused_by_the_hosts() {
    use common::controllers::{controller, signal, until_role, url};
    let dir = tempfile::tempdir().unwrap();
    let Some(client) = SshClient::new(dir.path()) else {
        return;
    };
    let Some(etcd) = rollout::store::etcd_backend::local::LocalEtcd::start_for_test(1).await else {
        return;
    };
    let (hold, release, held, force) = holding_wrapper(dir.path());
    let servers: Vec<Sshd> = (0..2)
        .map(|i| Sshd::start_with(&dir.path().join(format!("sshd-{i}")), &client, true, &force))
        .collect();
    let (fleet, fleet_file) = ssh_fleet(dir.path(), 8, &servers);
    let runs = dir.path().join("runs");
    let state = format!("{}/hosts/{{host}}", dir.path().display());
    let ssh = client.ssh_file(&state, &commands(&runs));
    let ssh = ssh.display().to_string();
    let logs = ["a.log", "b.log"].map(|l| dir.path().join(l));
    let mut a = controller(&etcd, &fleet_file, &logs[0], &["--ssh", &ssh]).await;
    until_role(&url(&a), "leader", "the first controller to lead").await;
    let mut b = controller(&etcd, &fleet_file, &logs[1], &["--ssh", &ssh]).await;

    // The leader's first Applies are held on the hosts, unrun.
    std::fs::write(&hold, "").unwrap();
    let mut grpc = connect(&url(&a)).await.unwrap();
    let mut spec = plan("fenced-fix", &["25%", "100%"], "0");
    spec.max_parallel = 4;
    submit(&mut grpc, spec).await;
    let count = || std::fs::read_dir(&held).unwrap().count();
    within(60, "the leader's Applies to reach the hosts", async {
        while count() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Paused past its lease: the other leads, sends the operations again, finishes.
    signal(&a, libc::SIGSTOP);
    let held_applies = count() as u64;
    std::fs::remove_file(&hold).unwrap();
    until_role(&url(&b), "leader", "the standby to take over").await;
    let mut grpc = connect(&url(&b)).await.unwrap();
    let done = within(
        120,
        "the new leader to finish the rollout",
        watch_until(&mut grpc, "fenced-fix", |r| r.state().is_terminal()),
    )
    .await
    .pop()
    .unwrap();
    assert_eq!(done.state(), pb::RolloutState::Succeeded, "{}", done.halt_reason);

    // The deposed leader's held Applies now run the host program: refused, counted.
    std::fs::write(&release, "").unwrap();
    let config = rollout::reach::ssh::config::SshConfig::load(Path::new(&ssh)).unwrap();
    let grpc_fleet = Arc::new(rollout::engine::GrpcFleet::new(Duration::from_secs(30)));
    let prober = rollout::reach::Fleets::new(grpc_fleet, Some(config), 0);
    let (refused, executed) = within(60, "the held Applies to be refused", async {
        loop {
            let counters = host_counters(&prober, &fleet).await;
            if counters.0 >= held_applies {
                return counters;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(
        refused, held_applies,
        "each held Apply of the deposed leader was refused"
    );
    assert_eq!(executed, 8, "each host ran one operation");
    for h in &fleet.hosts {
        assert_eq!(runs_of(&runs, &h.id), ["15.20.8207.12"], "{} ran exactly once", h.id);
    }

    // Woken, the deposed leader stands by.
    signal(&a, libc::SIGCONT);
    until_role(&url(&a), "standby", "the deposed leader to stand by").await;
    let a_said = std::fs::read_to_string(&logs[0]).unwrap_or_default();
    assert!(a_said.contains("lost the leadership"), "{a_said}");
    for c in [&mut a, &mut b] {
        assert_eq!(c.terminate(Duration::from_secs(30)).await.unwrap(), Some(0));
    }
}
