//! [`SshFleet`]: Apply and Probe over SSH (russh), under the same guard as the gRPC
//! driver (deadlines, the retry budget, a breaker per endpoint, the calls in flight).
//! One connection per address, reused across calls (a channel per call) and closed
//! when idle; new connections are paced: at most `max_connections` open across the
//! fleet, and at most [`HANDSHAKES`] unauthenticated at once per sshd (under its
//! MaxStartups). Each host's key is checked against the known_hosts file before
//! anything is sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::{Identity, SshConfig, Target};
use super::host::{self, Answer, Operation, Outcome};
use super::known_hosts::{KnownHosts, Presented, Refused};
use crate::proto::v1 as pb;
use crate::reach::{CallError, Failure, Fault, Guard, guarded};

/// Handshakes at once per sshd (OpenSSH's MaxStartups starts dropping at 10).
const HANDSHAKES: usize = 8;
/// A connection unused this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// Times an Apply whose connection dropped is sent again to find its result.
const REATTACH: u32 = 8;
/// How a dropped session is said (and recognised).
const LOST: &str = "the session ended before the host answered";

/// Hosts reached over SSH.
pub struct SshFleet {
    config: Arc<SshConfig>,
    guard: Arc<Guard>,
    epoch: u64,
    connections: Mutex<HashMap<Target, Arc<Slot>>>,
    open: Arc<Semaphore>,
    handshakes: Mutex<HashMap<(String, u16), Arc<Semaphore>>>,
}

/// One address's connection, made when first needed.
#[derive(Default)]
struct Slot {
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
}

struct Session {
    handle: client::Handle<Checker>,
    _open: OwnedSemaphorePermit,
    last_used: Mutex<Instant>,
    in_use: AtomicUsize,
}

/// The host certificate algorithms a client asks for where a CA is trusted.
const CERTIFICATE_ALGORITHMS: &[russh::keys::Algorithm] = &[
    russh::keys::Algorithm::Ed25519,
    russh::keys::Algorithm::Ecdsa {
        curve: russh::keys::EcdsaCurve::NistP256,
    },
    russh::keys::Algorithm::Ecdsa {
        curve: russh::keys::EcdsaCurve::NistP384,
    },
    russh::keys::Algorithm::Ecdsa {
        curve: russh::keys::EcdsaCurve::NistP521,
    },
    russh::keys::Algorithm::Rsa {
        hash: Some(russh::keys::HashAlg::Sha512),
    },
    russh::keys::Algorithm::Rsa {
        hash: Some(russh::keys::HashAlg::Sha256),
    },
];

/// Checks the host's key against known_hosts; remembers why it refused.
struct Checker {
    known: KnownHosts,
    host: String,
    port: u16,
    refused: Arc<Mutex<Option<Refused>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        let presented = match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => Presented::Key(key),
            PublicKeyOrCertificate::Certificate(c) => Presented::Certificate(c),
        };
        match self.known.check(&self.host, self.port, presented) {
            Ok(()) => Ok(true),
            Err(why) => {
                tracing::warn!(host = %self.host, port = self.port, "host key refused: {why}");
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                Ok(false)
            }
        }
    }
}

impl SshFleet {
    /// Hosts reached as `config` says, under `guard` (the gRPC driver's: one budget,
    /// one set of breakers), every Apply carrying `epoch`.
    pub(crate) fn new(config: SshConfig, guard: Arc<Guard>, epoch: u64) -> SshFleet {
        SshFleet {
            open: Arc::new(Semaphore::new(config.max_connections)),
            config: Arc::new(config),
            guard,
            epoch,
            connections: Mutex::new(HashMap::new()),
            handshakes: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, target: &Target) -> Arc<Slot> {
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(target.clone())
            .or_default()
            .clone()
    }

    /// Closes connections idle for a minute (call it now and then).
    pub async fn close_idle(&self) {
        let slots: Vec<Arc<Slot>> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for slot in slots {
            let mut s = slot.session.lock().await;
            let idle = s.as_ref().is_some_and(|s| {
                s.in_use.load(Ordering::SeqCst) == 0
                    && s.last_used.lock().unwrap_or_else(|p| p.into_inner()).elapsed() > IDLE
            });
            if idle && let Some(session) = s.take() {
                let _ = session
                    .handle
                    .disconnect(russh::Disconnect::ByApplication, "idle", "en")
                    .await;
            }
        }
    }

    /// The reused connection to `target`, made (paced, checked) when there is none.
    async fn session(&self, target: &Target) -> Result<Arc<Session>, Fault> {
        let slot = self.slot(target);
        let mut held = slot.session.lock().await;
        if let Some(s) = held.as_ref().filter(|s| !s.handle.is_closed()) {
            return Ok(s.clone());
        }
        let open = self
            .open
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Fault::new(Failure::Unreachable, "the SSH driver is stopping"))?;
        let endpoint = (target.host.clone(), target.port);
        let gate = self
            .handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(endpoint)
            .or_insert_with(|| Arc::new(Semaphore::new(HANDSHAKES)))
            .clone();
        let _handshake = gate
            .acquire()
            .await
            .map_err(|_| Fault::new(Failure::Unreachable, "the SSH driver is stopping"))?;
        let handle = tokio::time::timeout(self.config.connect_timeout, self.connect(target))
            .await
            .map_err(|_| {
                Fault::new(
                    Failure::Unreachable,
                    format!(
                        "{target}: no SSH session within {} (connect_timeout)",
                        crate::text::format_duration(self.config.connect_timeout)
                    ),
                )
            })??;
        let session = Arc::new(Session {
            handle,
            _open: open,
            last_used: Mutex::new(Instant::now()),
            in_use: AtomicUsize::new(0),
        });
        *held = Some(session.clone());
        Ok(session)
    }

    /// Connects (through the jump host when there is one), checks the host key and
    /// authenticates.
    async fn connect(&self, target: &Target) -> Result<client::Handle<Checker>, Fault> {
        // Host certificates are asked for only where a @cert-authority line names the
        // host (as OpenSSH orders its host key algorithms): elsewhere a server with a
        // certificate shows its plain key, which known_hosts lists.
        let known = &self.config.known_hosts;
        let config_for = |t: &Target| {
            let mut preferred = russh::Preferred::default();
            if known.has_authority_for(&t.host, t.port) {
                preferred.host_key_certificates = std::borrow::Cow::Borrowed(CERTIFICATE_ALGORITHMS);
            }
            Arc::new(client::Config {
                inactivity_timeout: None,
                keepalive_interval: Some(Duration::from_secs(15)),
                nodelay: true,
                preferred,
                ..Default::default()
            })
        };
        let config = config_for(target);
        let refused = Arc::new(Mutex::new(None));
        let checker = |t: &Target| Checker {
            known: self.config.known_hosts.clone(),
            host: t.host.clone(),
            port: t.port,
            refused: refused.clone(),
        };
        let handshake = |e: russh::Error, t: &Target| -> Fault {
            match refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                // Refused before anything was sent: not worth a retry.
                Some(why) => Fault::new(Failure::Refused, why.to_string()),
                None => Fault::new(Failure::Unreachable, format!("{t}: {e}")),
            }
        };
        let mut handle = match &self.config.jump {
            None => client::connect(config.clone(), (target.host.as_str(), target.port), checker(target))
                .await
                .map_err(|e| handshake(e, target))?,
            Some(jump) => {
                let mut bastion = client::connect(config_for(jump), (jump.host.as_str(), jump.port), checker(jump))
                    .await
                    .map_err(|e| handshake(e, jump))?;
                self.authenticate(&mut bastion, jump).await?;
                let channel = bastion
                    .channel_open_direct_tcpip(target.host.clone(), u32::from(target.port), "127.0.0.1", 0)
                    .await
                    .map_err(|e| Fault::new(Failure::Unreachable, format!("{target} through {jump}: {e}")))?;
                client::connect_stream(config.clone(), channel.into_stream(), checker(target))
                    .await
                    .map_err(|e| handshake(e, target))?
            }
        };
        self.authenticate(&mut handle, target).await?;
        Ok(handle)
    }

    async fn authenticate(&self, handle: &mut client::Handle<Checker>, target: &Target) -> Result<(), Fault> {
        let denied = || {
            Fault::new(
                Failure::Forbidden,
                format!(
                    "{target}: the host refused the controller's key for user {}; add it to that user's authorized_keys",
                    target.user
                ),
            )
        };
        let unavailable = |e: russh::Error| Fault::new(Failure::Unreachable, format!("{target}: authenticating: {e}"));
        match &self.config.identity {
            Identity::Key { key, certificate } => {
                let result = match certificate {
                    Some(cert) => handle
                        .authenticate_openssh_cert(target.user.clone(), key.clone(), (**cert).clone())
                        .await
                        .map_err(unavailable)?,
                    None => {
                        let hash = handle.best_supported_rsa_hash().await.map_err(unavailable)?.flatten();
                        handle
                            .authenticate_publickey(target.user.clone(), PrivateKeyWithHashAlg::new(key.clone(), hash))
                            .await
                            .map_err(unavailable)?
                    }
                };
                if result.success() { Ok(()) } else { Err(denied()) }
            }
            Identity::Agent => {
                let mut agent = russh::keys::agent::client::AgentClient::connect_env()
                    .await
                    .map_err(|e| Fault::new(Failure::Unreachable, format!("the ssh-agent at SSH_AUTH_SOCK: {e}")))?;
                let identities = agent
                    .request_identities()
                    .await
                    .map_err(|e| Fault::new(Failure::Unreachable, format!("the ssh-agent at SSH_AUTH_SOCK: {e}")))?;
                for identity in identities {
                    if let russh::keys::agent::AgentIdentity::PublicKey { key, .. } = identity {
                        let hash = handle.best_supported_rsa_hash().await.map_err(unavailable)?.flatten();
                        let result = handle
                            .authenticate_publickey_with(target.user.clone(), key, hash, &mut agent)
                            .await
                            .map_err(|e| Fault::new(Failure::Unreachable, format!("{target}: the ssh-agent: {e}")))?;
                        if result.success() {
                            return Ok(());
                        }
                    }
                }
                Err(denied())
            }
        }
    }

    /// Runs the host program's `subcommand` on `target` and reads its answer, within
    /// `deadline`.
    async fn run(
        &self,
        target: &Target,
        subcommand: &str,
        args: &[String],
        deadline: Duration,
    ) -> Result<Answer, Fault> {
        let exchange = async {
            let began = Instant::now();
            let session = self.session(target).await?;
            let connected = began.elapsed();
            session.in_use.fetch_add(1, Ordering::SeqCst);
            let answer = exec(&session, target, &host::command_line(subcommand, args)).await;
            tracing::debug!(
                %target,
                subcommand,
                session_ms = connected.as_millis() as u64,
                exec_ms = (began.elapsed() - connected).as_millis() as u64,
                "ran the host program"
            );
            session.in_use.fetch_sub(1, Ordering::SeqCst);
            *session.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            if answer.is_err() {
                // A session that failed is not reused: the next call connects anew.
                let slot = self.slot(target);
                let mut held = slot.session.lock().await;
                if held.as_ref().is_some_and(|s| Arc::ptr_eq(s, &session)) {
                    *held = None;
                }
            }
            answer
        };
        tokio::time::timeout(deadline, exchange).await.map_err(|_| {
            Fault::new(
                Failure::TimedOut,
                format!("{target}: no answer within {}", crate::text::format_duration(deadline)),
            )
        })?
    }

    /// `apply` with `args`; when the connection drops after the session was up (the
    /// operation may be running on the host), the same operation is sent again on a
    /// new connection (and again while the host cannot be reached), which waits for
    /// its result: [`REATTACH`] times at most within
    /// `deadline`. Idempotent by the operation id, so outside the retry budget: it
    /// is one call finding its answer, not another attempt.
    async fn reattached(&self, target: &Target, args: &[String], deadline: Duration) -> Result<Answer, Fault> {
        let until = Instant::now() + deadline;
        let mut backoff = crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut left = REATTACH;
        // Once sent, the operation may be running: any failure to reach the host
        // after that is worth another send, until the deadline.
        let mut sent = false;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            match self.run(target, "apply", args, remaining).await {
                Err(lost)
                    if left > 0 && lost.failure == Failure::Unreachable && (sent || lost.message.contains(LOST)) =>
                {
                    if !sent {
                        tracing::info!(%target, "the connection dropped while the operation was sent: sending it again to find its result");
                    }
                    sent = true;
                    left -= 1;
                    tokio::time::sleep(backoff.next().unwrap_or_default().max(Duration::from_millis(200))).await;
                }
                other => return other,
            }
        }
    }

    /// The deadline of a call running a command that may take `timeout`.
    fn deadline(&self, timeout: Duration) -> Duration {
        timeout + self.config.connect_timeout + Duration::from_secs(15)
    }

    async fn apply_once(&self, target: &Target, req: &pb::ApplyRequest) -> Result<pb::ApplyResponse, Fault> {
        let commands = &self.config.commands;
        let action = pb::Action::try_from(req.action).unwrap_or(pb::Action::Unspecified);
        let (name, spec, mut version) = match action {
            pb::Action::Deploy if req.version.is_empty() => {
                return Err(Fault::new(Failure::Invalid, "DEPLOY needs a version"));
            }
            pb::Action::Deploy => ("deploy", Some(&commands.deploy), req.version.clone()),
            pb::Action::Rollback => (
                "rollback",
                Some(commands.rollback.as_ref().unwrap_or(&commands.deploy)),
                req.version.clone(),
            ),
            pb::Action::Restart => ("restart", commands.restart.as_ref(), String::new()),
            pb::Action::Unspecified => {
                return Err(Fault::new(
                    Failure::Invalid,
                    "action is required: DEPLOY, ROLLBACK or RESTART",
                ));
            }
        };
        let Some(spec) = spec else {
            return Ok(pb::ApplyResponse {
                ok: false,
                detail: format!("no {name} command is configured for SSH hosts (--ssh)"),
                ..Default::default()
            });
        };
        if action == pb::Action::Rollback && version.is_empty() {
            version = self.probe_once(target, &req.host_id, false).await?.previous_version;
            if version.is_empty() {
                return Ok(pb::ApplyResponse {
                    ok: false,
                    detail: "no previous version is recorded on this host; give the version to roll back to".into(),
                    ..Default::default()
                });
            }
        }
        let argv = argv_of(spec, &version, &req.host_id);
        let state_dir = self.state_dir(&req.host_id);
        let op = Operation {
            state_dir: &state_dir,
            epoch: req.epoch.max(self.epoch),
            operation_id: &req.operation_id,
            action: name,
            target: &version,
            timeout: spec.timeout,
            retain_days: self.config.retain_days,
            argv: &argv,
        };
        let answer = self
            .reattached(target, &host::apply_args(&op), self.deadline(spec.timeout))
            .await?;
        match host::outcome(&answer) {
            Outcome::Ended {
                ok,
                replayed,
                detail,
                version,
                previous,
            } => Ok(pb::ApplyResponse {
                ok,
                version,
                previous_version: previous,
                detail,
                replayed,
                healthy: ok,
                running: false,
            }),
            // Still running under another send: its outcome is unknown yet; the
            // same operation id asks again.
            Outcome::Running => Err(Fault::new(
                Failure::TimedOut,
                format!("{target}: operation {} is still running on the host", req.operation_id),
            )),
            Outcome::Refused(why) => Err(Fault::new(Failure::Refused, why)),
            Outcome::Error(why) => Err(Fault::new(Failure::Refused, format!("{target}: {why}"))),
        }
    }

    /// The host's state directory (`{host}` in the file's state_dir is the host id).
    fn state_dir(&self, host_id: &str) -> String {
        self.config.state_dir.replace("{host}", host_id)
    }

    async fn probe_once(&self, target: &Target, host_id: &str, health: bool) -> Result<pb::ProbeResponse, Fault> {
        let check = self.config.commands.health.as_ref().filter(|_| health);
        let timeout = check.map_or(Duration::from_secs(10), |h| h.timeout);
        let argv = check.map(|h| argv_of(h, "", host_id));
        let args = host::probe_args(&self.state_dir(host_id), timeout, argv.as_deref());
        let answer = self.run(target, "probe", &args, self.deadline(timeout)).await?;
        if answer.get("status") != "ok" {
            return Err(Fault::new(
                Failure::Refused,
                format!(
                    "{target}: {}",
                    match host::outcome(&answer) {
                        Outcome::Error(why) => why,
                        other => format!("{other:?}"),
                    }
                ),
            ));
        }
        let healthy = check.is_none() || answer.get("health") == "0";
        Ok(pb::ProbeResponse {
            version: answer.get("version").to_string(),
            previous_version: answer.get("previous").to_string(),
            healthy,
            detail: if healthy {
                String::new()
            } else {
                format!(
                    "health check exit {}: {}",
                    answer.get("health"),
                    crate::text::one_line(&answer.tail)
                )
            },
            operations_executed: answer.number("executed"),
            last_operation_id: answer.get("last_operation").to_string(),
            apply_calls: answer.number("apply_calls"),
            stale_applies_refused: answer.number("stale_refused"),
        })
    }
}

/// A command's argv for `host_id`: `{version}` and `{host}` filled in.
fn argv_of(spec: &crate::yamlfile::commands::CommandSpec, version: &str, host_id: &str) -> Vec<String> {
    spec.with_version(version)
        .into_iter()
        .map(|a| a.replace("{host}", host_id))
        .collect()
}

/// Runs `command` on a new channel of `session`; its standard output, read as the
/// host program's answer.
async fn exec(session: &Session, target: &Target, command: &str) -> Result<Answer, Fault> {
    let lost = |e: russh::Error| Fault::new(Failure::Unreachable, format!("{target}: {LOST} ({e})"));
    let mut channel = session.handle.channel_open_session().await.map_err(lost)?;
    channel.exec(true, command.as_bytes()).await.map_err(lost)?;
    let mut out = Vec::new();
    let mut exit = None;
    while let Some(msg) = channel.wait().await {
        match msg {
            russh::ChannelMsg::Data { data } => out.extend_from_slice(&data),
            russh::ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&out);
    if exit.is_none() && text.trim().is_empty() {
        return Err(Fault::new(Failure::Unreachable, format!("{target}: {LOST}")));
    }
    Ok(Answer::parse(&text))
}

fn target_of(address: &str) -> Result<Target, CallError> {
    Target::parse(address).map_err(|message| CallError {
        address: address.to_string(),
        failure: Failure::Invalid,
        message,
    })
}

impl SshFleet {
    /// Closes idle connections every half minute until `stop`.
    pub async fn reap(self: Arc<SshFleet>, stop: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(IDLE / 2) => self.close_idle().await,
            }
        }
    }

    pub(crate) fn apply_call(
        self: &Arc<SshFleet>,
        address: &str,
        request: pb::ApplyRequest,
    ) -> BoxFuture<'static, Result<pb::ApplyResponse, CallError>> {
        let (me, address) = (self.clone(), address.to_string());
        Box::pin(async move {
            let target = target_of(&address)?;
            let guard = me.guard.clone();
            guarded(guard, address, || me.apply_once(&target, &request)).await
        })
    }

    pub(crate) fn probe_call(
        self: &Arc<SshFleet>,
        address: &str,
        host_id: &str,
    ) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>> {
        let (me, address, host_id) = (self.clone(), address.to_string(), host_id.to_string());
        Box::pin(async move {
            let target = target_of(&address)?;
            let guard = me.guard.clone();
            guarded(guard, address, || me.probe_once(&target, &host_id, true)).await
        })
    }
}
