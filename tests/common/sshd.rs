//! Real OpenSSH servers (Debian's `openssh-server`) on loopback ports, each with a
//! host key made here, accepting the client key made here for the user running the
//! test. Killed when dropped. Without `/usr/sbin/sshd` a test says it skipped; with
//! ROLLOUT_SSH_TESTS=required it fails instead.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REQUIRED: &str = "ROLLOUT_SSH_TESTS";
const SSHD: &str = "/usr/sbin/sshd";

/// Makes an ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "rollout-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen runs")
        .success();
    assert!(ok, "ssh-keygen made {}", path.display());
}

/// The user the test runs as (whom the servers let in).
pub fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The client side every server of a test accepts: its key pair, and the
/// known_hosts file the servers' keys are written to.
pub struct Client {
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub dir: PathBuf,
}

impl Client {
    /// None (saying so) without sshd.
    pub fn new(dir: &Path) -> Option<Client> {
        if !Path::new(SSHD).exists() {
            rollout::testing::skip(REQUIRED, &format!("no {SSHD}: install Debian's openssh-server"));
            return None;
        }
        // sshd wants its privilege separation directory (the package makes it at boot).
        let _ = std::fs::create_dir_all("/run/sshd");
        let key = dir.join("id_ed25519");
        keygen(&key);
        let known_hosts = dir.join("known_hosts");
        std::fs::write(&known_hosts, "").unwrap();
        Some(Client {
            key,
            known_hosts,
            dir: dir.to_path_buf(),
        })
    }

    /// An SSH file for `rollout serve --ssh`, its commands as given (YAML).
    pub fn ssh_file(&self, state_dir: &str, commands: &str) -> PathBuf {
        let path = self.dir.join("ssh.yaml");
        std::fs::write(
            &path,
            format!(
                "identity_file: {}\nknown_hosts: {}\nconnect_timeout: 10s\nmax_connections: 100\nstate_dir: {state_dir}\ncommands:\n{commands}",
                self.key.display(),
                self.known_hosts.display()
            ),
        )
        .unwrap();
        path
    }
}

pub struct Sshd {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    config: PathBuf,
}

impl Sshd {
    /// A server in `dir` accepting `client`'s key; its host key is added to the
    /// client's known_hosts (as `[127.0.0.1]:PORT`) when `known` is true.
    pub fn start(dir: &Path, client: &Client, known: bool) -> Sshd {
        Sshd::start_with(dir, client, known, "")
    }

    /// As [`Sshd::start`], with `extra` lines appended to its sshd_config.
    pub fn start_with(dir: &Path, client: &Client, known: bool, extra: &str) -> Sshd {
        std::fs::create_dir_all(dir).unwrap();
        let host_key = dir.join("host_ed25519");
        keygen(&host_key);
        let authorized = dir.join("authorized_keys");
        std::fs::copy(client.key.with_extension("pub"), &authorized).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\nAllowTcpForwarding yes\nLogLevel ERROR\n{extra}",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized.display()
            ),
        )
        .unwrap();
        if known {
            let public = std::fs::read_to_string(host_key.with_extension("pub")).unwrap();
            let mut words = public.split_whitespace();
            let line = format!(
                "[127.0.0.1]:{port} {} {}\n",
                words.next().unwrap(),
                words.next().unwrap()
            );
            let mut hosts = std::fs::read_to_string(&client.known_hosts).unwrap();
            hosts.push_str(&line);
            std::fs::write(&client.known_hosts, hosts).unwrap();
        }
        let mut s = Sshd {
            child: None,
            port,
            dir: dir.to_path_buf(),
            config,
        };
        s.run();
        s
    }

    fn run(&mut self) {
        let log = std::fs::File::create(self.dir.join("sshd.log")).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen within 30 s: {}",
                std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `ssh://USER@127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", user(), self.port)
    }

    /// Kills the listening server (sessions it forked live on, as with a real
    /// restart of the service) and starts it again on the same port and key.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    /// Kills the server and every session process it forked (the connections
    /// drop), leaving alone what the sessions started in sessions of their own.
    pub fn kill_with_sessions(&mut self) {
        let Some(listener) = self.child.as_ref().map(|c| c.id()) else {
            return;
        };
        let stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let mut parents = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let s = stat(pid);
            let Some((comm, rest)) = s.split_once(") ") else {
                continue;
            };
            let comm = comm.rsplit('(').next().unwrap_or_default().to_string();
            let ppid: u32 = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            parents.push((pid, ppid, comm));
        }
        let mut family = vec![listener];
        let mut i = 0;
        while i < family.len() {
            let p = family[i];
            family.extend(parents.iter().filter(|(_, ppid, _)| *ppid == p).map(|(pid, _, _)| *pid));
            i += 1;
        }
        for (pid, _, comm) in &parents {
            if family.contains(pid) && *pid != listener && comm == "sshd" {
                // SAFETY: kill sends a signal to a process of this test's sshd.
                unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
            }
        }
        self.kill();
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}
