//! The SSH driver's file (`rollout serve --ssh FILE`), strict, read at start: how
//! the controller proves who it is, how it knows the hosts, and what runs on them.
//!
//! ```yaml
//! identity_file: /etc/rollout/id_ed25519    # a private key; or `agent: true` to use SSH_AUTH_SOCK
//! certificate_file: /etc/rollout/id_ed25519-cert.pub   # optional OpenSSH user certificate
//! known_hosts: /etc/rollout/known_hosts     # required; also `[host]:port` entries and @cert-authority lines
//! jump: ssh://bastion@10.0.0.9:22           # optional, one ProxyJump host
//! connect_timeout: 10s
//! max_connections: 1000                     # open at once across the fleet; new ones paced
//! state_dir: /var/lib/rollout               # on each host
//! retain: 7d                                # finished operations kept on hosts (default 7d)
//! commands:                                 # as in the agent config
//!   deploy:   {argv: ["/opt/exo/deploy.sh", "{version}"], timeout: 5m}
//!   health:   {argv: ["/opt/exo/healthcheck"], timeout: 10s}
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::keys::{Certificate, PrivateKey};
use serde::Deserialize;

use super::known_hosts::KnownHosts;
use crate::text::parse_duration;
use crate::yamlfile::commands::{Commands, CommandsFile};
use crate::yamlfile::{self, Error};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshFile {
    #[serde(default)]
    identity_file: Option<PathBuf>,
    #[serde(default)]
    agent: bool,
    #[serde(default)]
    certificate_file: Option<PathBuf>,
    known_hosts: PathBuf,
    #[serde(default)]
    jump: Option<String>,
    #[serde(default)]
    connect_timeout: Option<String>,
    #[serde(default)]
    max_connections: Option<usize>,
    state_dir: String,
    #[serde(default)]
    retain: Option<String>,
    commands: CommandsFile,
}

/// How the controller proves who it is.
#[derive(Clone)]
pub enum Identity {
    /// A private key (and an OpenSSH user certificate for it).
    Key {
        key: Arc<PrivateKey>,
        certificate: Option<Box<Certificate>>,
    },
    /// The keys of the agent at SSH_AUTH_SOCK.
    Agent,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Key { certificate, .. } => write!(f, "Key(<redacted>, certificate: {})", certificate.is_some()),
            Identity::Agent => f.write_str("Agent"),
        }
    }
}

/// Where a host (or the jump host) is: `ssh://USER@HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub user: String,
    pub host: String,
    pub port: u16,
}

impl Target {
    /// Reads an `ssh://USER@HOST[:PORT]` address. An error never echoes the address
    /// (it may hold a password); it names the host when it can.
    pub fn parse(address: &str) -> Result<Target, String> {
        let url =
            url::Url::parse(address).map_err(|e| format!("an address is not an ssh://USER@HOST[:PORT] URL ({e})"))?;
        if url.scheme() != "ssh" {
            return Err("an address is not an ssh://USER@HOST[:PORT] URL".into());
        }
        let host = url
            .host_str()
            .ok_or("an ssh:// address names no host: ssh://USER@HOST[:PORT]")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let shown = crate::ident::escaped(&host);
        if url.password().is_some() {
            return Err(format!(
                "the ssh:// address of {shown} holds a password, which is refused and not shown: SSH here authenticates with keys (identity_file or agent in the --ssh file); remove the password and rotate it"
            ));
        }
        if url.path().len() > 1 || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "the address of {shown} has more than ssh://USER@HOST[:PORT] (no path, query or fragment)"
            ));
        }
        if url.username().is_empty() {
            return Err(format!("the address of {shown} names no user: ssh://USER@HOST[:PORT]"));
        }
        if !is_user(url.username()) {
            return Err(format!(
                "the address of {shown} names user `{}`, which is not a user name (letters, digits, _ . -, starting with a letter, digit or _; 32 at most)",
                crate::ident::escaped(url.username())
            ));
        }
        if let Some(url::Host::Domain(name)) = url.host()
            && crate::ident::host_id(name).is_err()
        {
            return Err(format!(
                "the address of {shown}: `{shown}` is not a host name or IP address"
            ));
        }
        Ok(Target {
            user: url.username().to_string(),
            host,
            port: url.port().unwrap_or(22),
        })
    }
}

/// A login name as POSIX and OpenSSH take it.
pub fn is_user(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssh://{}@{}:{}", self.user, self.host, self.port)
    }
}

/// A validated SSH file.
#[derive(Debug, Clone)]
pub struct SshConfig {
    pub identity: Identity,
    pub known_hosts: KnownHosts,
    pub jump: Option<Target>,
    pub connect_timeout: Duration,
    pub max_connections: usize,
    pub state_dir: String,
    pub retain_days: u32,
    pub commands: Commands,
}

impl SshConfig {
    pub fn load(path: &Path) -> Result<SshConfig, Error> {
        let text = yamlfile::read(path, "SSH file")?;
        SshConfig::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, shown: &str) -> Result<SshConfig, Error> {
        let file: SshFile = yamlfile::parse(text, shown)?;
        let at = |field: &str, message: String| Error::at(shown, text, field, message);
        let identity = match (&file.identity_file, file.agent) {
            (Some(_), true) => {
                return Err(at(
                    "agent",
                    "and identity_file are both set: use one (a key file, or the agent at SSH_AUTH_SOCK)".into(),
                ));
            }
            (None, false) => {
                return Err(at(
                    "identity_file",
                    "is missing: give a private key file, or `agent: true` to use SSH_AUTH_SOCK".into(),
                ));
            }
            (None, true) => {
                if file.certificate_file.is_some() {
                    return Err(at(
                        "certificate_file",
                        "goes with identity_file; the agent holds its own certificates".into(),
                    ));
                }
                if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                    return Err(at(
                        "agent",
                        "is true but SSH_AUTH_SOCK is not set: start the controller where an ssh-agent runs, or give identity_file".into(),
                    ));
                }
                Identity::Agent
            }
            (Some(path), false) => {
                let key = russh::keys::load_secret_key(path, None).map_err(|e| {
                    at(
                        "identity_file",
                        format!(
                            "{} cannot be read as an unencrypted OpenSSH private key ({e}); an encrypted key needs `agent: true`",
                            path.display()
                        ),
                    )
                })?;
                let certificate = file
                    .certificate_file
                    .as_ref()
                    .map(|c| {
                        russh::keys::load_openssh_certificate(c).map_err(|e| {
                            at(
                                "certificate_file",
                                format!("{} is not an OpenSSH certificate ({e})", c.display()),
                            )
                        })
                    })
                    .transpose()?;
                Identity::Key {
                    key: Arc::new(key),
                    certificate: certificate.map(Box::new),
                }
            }
        };
        let known_hosts = KnownHosts::load(&file.known_hosts).map_err(|e| at("known_hosts", e))?;
        let jump = file
            .jump
            .as_deref()
            .map(|j| Target::parse(j).map_err(|e| at("jump", e)))
            .transpose()?;
        let duration = |field: &str, text: &Option<String>, default: Duration| -> Result<Duration, Error> {
            match text {
                None => Ok(default),
                Some(t) => parse_duration(t).map_err(|m| at(field, m)),
            }
        };
        let connect_timeout = duration("connect_timeout", &file.connect_timeout, Duration::from_secs(10))?;
        if connect_timeout < Duration::from_millis(100) || connect_timeout > Duration::from_secs(300) {
            return Err(at("connect_timeout", "must be between 100ms and 5m".into()));
        }
        let max_connections = file.max_connections.unwrap_or(1_000);
        if max_connections == 0 || max_connections > 100_000 {
            return Err(at("max_connections", "must be between 1 and 100000".into()));
        }
        if !file.state_dir.starts_with('/') || file.state_dir.contains(['\n', '\0']) {
            return Err(at(
                "state_dir",
                format!(
                    "`{}` is not an absolute path on the hosts",
                    crate::text::one_line(&file.state_dir)
                ),
            ));
        }
        let retain = duration("retain", &file.retain, Duration::from_secs(7 * 86_400))?;
        let retain_days = (retain.as_secs() / 86_400) as u32;
        if retain_days == 0 {
            return Err(at(
                "retain",
                "must be at least 1d: a resent operation must find its result".into(),
            ));
        }
        Ok(SshConfig {
            identity,
            known_hosts,
            jump,
            connect_timeout,
            max_connections,
            state_dir: file.state_dir,
            retain_days,
            commands: Commands::check(file.commands, shown)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ssh_urls_with_a_user() {
        assert_eq!(
            Target::parse("ssh://exo@10.0.0.7:2222").unwrap(),
            Target {
                user: "exo".into(),
                host: "10.0.0.7".into(),
                port: 2222
            }
        );
        assert_eq!(Target::parse("ssh://exo@[::1]").unwrap().host, "::1");
        assert_eq!(Target::parse("ssh://exo@h").unwrap().port, 22);
        assert!(Target::parse("ssh://h:22").unwrap_err().contains("names no user"));
        assert!(Target::parse("http://exo@h").is_err());
        let e = Target::parse("ssh://exo:s3cret@h").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn a_file_is_read_strictly_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("known_hosts");
        std::fs::write(
            &kh,
            "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n",
        )
        .unwrap();
        let key = dir.path().join("id");
        let made = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status();
        if !made.is_ok_and(|s| s.success()) {
            crate::testing::skip("ROLLOUT_SSH_TESTS", "no ssh-keygen: install Debian's openssh-client");
            return;
        }
        let text = format!(
            "identity_file: {}\nknown_hosts: {}\nstate_dir: /var/lib/rollout\ncommands:\n  deploy: {{argv: [/opt/deploy, \"{{version}}\"], timeout: 5m}}\n",
            key.display(),
            kh.display()
        );
        let c = SshConfig::parse(&text, "ssh.yaml").unwrap();
        assert_eq!((c.max_connections, c.retain_days), (1_000, 7));
        assert!(format!("{:?}", c.identity).contains("redacted"));
        let bad = text.replace("state_dir: /var/lib/rollout", "state_dir: var/lib");
        let e = SshConfig::parse(&bad, "ssh.yaml").unwrap_err().to_string();
        assert!(e.starts_with("ssh.yaml:3:") && e.contains("state_dir"), "{e}");
        let e = SshConfig::parse(&format!("{text}colour: red\n"), "ssh.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour"), "{e}");
        let e = SshConfig::parse(&text.replace(&key.display().to_string(), "/nonexistent/id"), "ssh.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("identity_file") && e.contains("/nonexistent/id"), "{e}");
    }
}
