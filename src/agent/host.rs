//! The agent for one real host: runs the operator's commands for Apply, its health
//! command for Probe, one Apply at a time, and never the same operation twice.
//!
//! Before a command runs, the operation is written to the state file as started;
//! after, as finished with its result. An agent restarted in between finds the
//! unfinished record and answers "interrupted" instead of running it again: a
//! half-run deploy needs a person (or a new operation), not a blind repeat.

use std::sync::{Arc, Mutex, MutexGuard};

use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::command;
use super::config::{AgentConfig, CommandSpec};
use super::state::{AgentState, Operation};
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::proto::v1::agent_server::{Agent, AgentServer};

/// One host's agent.
pub struct HostAgent {
    config: AgentConfig,
    state: Mutex<AgentState>,
    /// Held for a whole Apply: one action at a time on a machine.
    applying: tokio::sync::Mutex<()>,
    /// Apply calls received since start, and those refused as stale.
    applies: super::ApplyCounts,
}

fn internal(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("{what}: {e}"))
}

impl HostAgent {
    pub fn new(config: AgentConfig) -> std::io::Result<HostAgent> {
        let state = AgentState::load(&config.state_file)?;
        Ok(HostAgent {
            config,
            state: Mutex::new(state),
            applying: tokio::sync::Mutex::new(()),
            applies: super::ApplyCounts::default(),
        })
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, AgentState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an operation and writes the state file before returning.
    fn remember(&self, op: Operation, update: impl FnOnce(&mut AgentState)) -> Result<(), Error> {
        let mut state = self.state();
        update(&mut state);
        state.remember(op);
        state.save(&self.config.state_file).map_err(|e| {
            internal(
                &format!("cannot write the state file {}", self.config.state_file.display()),
                e,
            )
        })
    }

    /// Refuses a deposed controller's call; a newer epoch is written to the state
    /// file before anything runs, so a restart of the agent keeps the fence.
    fn check_epoch(&self, epoch: u64) -> Result<(), Error> {
        let mut state = self.state();
        let seen = state.epoch;
        self.applies.check_epoch(&mut state.epoch, epoch)?;
        if state.epoch != seen {
            state.save(&self.config.state_file).map_err(|e| {
                internal(
                    &format!("cannot write the state file {}", self.config.state_file.display()),
                    e,
                )
            })?;
        }
        Ok(())
    }

    fn check_host(&self, host_id: &str) -> Result<(), Error> {
        if host_id != self.config.host_id {
            return Err(Error::Refused(format!(
                "this agent runs on `{}`; the call was for `{host_id}`: check the fleet's addresses",
                self.config.host_id
            )));
        }
        Ok(())
    }

    /// The version and health the agent reports now (running the health command).
    pub async fn health(&self) -> (bool, String) {
        match &self.config.health {
            None => (true, "no health command configured".into()),
            Some(spec) => {
                // The version the agent runs, so the command can check it is really there.
                let version = self.version();
                let env = [
                    ("ROLLOUT_HOST", self.config.host_id.as_str()),
                    ("ROLLOUT_VERSION", version.as_str()),
                ];
                match command::run(&spec.argv, &env, spec.timeout).await {
                    Ok(out) => (out.success(), out.describe(spec.timeout)),
                    Err(e) => (false, format!("health command cannot start: {e}")),
                }
            }
        }
    }

    pub fn version(&self) -> String {
        self.state().version.clone()
    }

    /// What is checked before an operation starts (a detached one too): the host,
    /// the operation id, the controller's epoch (fencing).
    fn admit(&self, req: &pb::ApplyRequest) -> Result<(), Error> {
        self.applies.received();
        self.check_host(&req.host_id)?;
        if req.operation_id.is_empty() {
            return Err(Error::Usage(
                "operation_id is required: it makes Apply idempotent".into(),
            ));
        }
        self.check_epoch(req.epoch)
    }

    /// Runs an admitted operation (one at a time), or answers its recorded result.
    async fn run(&self, req: pb::ApplyRequest) -> Result<pb::ApplyResponse, Status> {
        let action = pb::Action::try_from(req.action).unwrap_or(pb::Action::Unspecified);
        let _one_at_a_time = self.applying.lock().await;
        self.check_epoch(req.epoch)?;
        let (version, previous) = {
            let state = self.state();
            if let Some(op) = state.find(&req.operation_id)
                && op.finished
            {
                return Ok(response(op, true));
            }
            (state.version.clone(), state.previous_version.clone())
        };
        // Bound first: the state lock must not be held while `remember` takes it.
        let interrupted = self.state().find(&req.operation_id).cloned();
        if let Some(op) = interrupted {
            // Started before the agent stopped; its outcome is unknown. Never run twice.
            warn!(operation = %op.id, "operation was interrupted by an agent restart; not running it again");
            let done = Operation {
                finished: true,
                ok: false,
                detail: "interrupted: the agent stopped while this operation ran, so it is not run again; check the host and retry with a new operation".into(),
                ..op
            };
            self.remember(done.clone(), |_| {})?;
            return Ok(response(&done, false));
        }
        let (spec, target): (Option<&CommandSpec>, String) = match action {
            pb::Action::Deploy => {
                if req.version.is_empty() {
                    return Err(Error::Usage("DEPLOY needs a version".into()).into());
                }
                (Some(&self.config.deploy), req.version.clone())
            }
            pb::Action::Rollback => {
                let target = if req.version.is_empty() {
                    previous.clone()
                } else {
                    req.version.clone()
                };
                (
                    Some(self.config.rollback.as_ref().unwrap_or(&self.config.deploy)),
                    target,
                )
            }
            pb::Action::Restart => (self.config.restart.as_ref(), version.clone()),
            pb::Action::Unspecified => {
                return Err(Error::Usage("action is required: DEPLOY, ROLLBACK or RESTART".into()).into());
            }
        };
        let name = action.as_str_name().trim_start_matches("ACTION_").to_lowercase();
        let mut op = Operation {
            id: req.operation_id.clone(),
            action: name.clone(),
            finished: false,
            ok: false,
            detail: String::new(),
            version: version.clone(),
            previous_version: previous.clone(),
            healthy: false,
        };
        let Some(spec) = spec else {
            op.finished = true;
            op.detail = format!("no {name} command is configured on this agent");
            self.remember(op.clone(), |_| {})?;
            return Ok(response(&op, false));
        };
        if target.is_empty() {
            op.finished = true;
            op.detail = "no previous version is recorded on this host; give the version to roll back to".into();
            self.remember(op.clone(), |_| {})?;
            return Ok(response(&op, false));
        }
        // Written before the command runs: the line that makes "never twice" hold.
        self.remember(op.clone(), |_| {})?;
        let argv: Vec<String> = spec.argv.iter().map(|a| a.replace("{version}", &target)).collect();
        let env = [
            ("ROLLOUT_VERSION", target.as_str()),
            ("ROLLOUT_OPERATION_ID", req.operation_id.as_str()),
            ("ROLLOUT_HOST", self.config.host_id.as_str()),
        ];
        info!(operation = %req.operation_id, action = %name, version = %target, "running");
        let outcome = command::run(&argv, &env, spec.timeout).await;
        op.finished = true;
        match outcome {
            Ok(out) if out.success() => {
                op.ok = true;
                op.healthy = true;
                op.detail = out.describe(spec.timeout);
                if action != pb::Action::Restart && target != version {
                    op.previous_version = version.clone();
                    op.version = target.clone();
                }
            }
            Ok(out) => op.detail = out.describe(spec.timeout),
            Err(e) => op.detail = format!("cannot start {}: {e}", argv[0]),
        }
        let changed = op.ok && action != pb::Action::Restart && target != version;
        let (new_version, new_previous) = (op.version.clone(), op.previous_version.clone());
        self.remember(op.clone(), |s| {
            s.executed += 1;
            if changed {
                s.version = new_version;
                s.previous_version = new_previous;
            }
        })?;
        Ok(response(&op, false))
    }

    async fn probe(&self, req: pb::ProbeRequest) -> Result<pb::ProbeResponse, Status> {
        self.check_host(&req.host_id)?;
        let (healthy, detail) = self.health().await;
        let state = self.state();
        Ok(pb::ProbeResponse {
            version: state.version.clone(),
            previous_version: state.previous_version.clone(),
            healthy,
            detail,
            operations_executed: state.executed,
            last_operation_id: state.operations.back().map(|o| o.id.clone()).unwrap_or_default(),
            apply_calls: self.applies.calls(),
            stale_applies_refused: self.applies.stale(),
        })
    }
}

fn response(op: &Operation, replayed: bool) -> pb::ApplyResponse {
    pb::ApplyResponse {
        ok: op.ok,
        version: op.version.clone(),
        previous_version: op.previous_version.clone(),
        detail: op.detail.clone(),
        replayed,
        healthy: op.healthy,
        running: false,
    }
}

/// The tonic service of a [`HostAgent`].
/// The Agent service of one host, or of several hosts served by one process (each
/// with its own config, commands and state file), dispatched by `host_id`.
pub struct HostAgentService {
    agents: std::collections::HashMap<String, Arc<HostAgent>>,
    /// Operations started by a detached Apply, and their results for Results.
    detached: Arc<super::detached::Detached>,
}

impl HostAgentService {
    pub fn new(agents: Vec<Arc<HostAgent>>) -> HostAgentService {
        HostAgentService {
            agents: agents.into_iter().map(|a| (a.config.host_id.clone(), a)).collect(),
            detached: Arc::new(super::detached::Detached::default()),
        }
    }

    fn agent(&self, host_id: &str) -> Result<&Arc<HostAgent>, Error> {
        match self.agents.get(host_id) {
            Some(agent) => Ok(agent),
            // One host: its own check says which host it is.
            None if self.agents.len() == 1 => self
                .agents
                .values()
                .next()
                .ok_or_else(|| Error::Internal("no agent".into())),
            None => Err(Error::Refused(format!(
                "this agent process serves {} hosts, not `{host_id}`: check the fleet's addresses",
                self.agents.len()
            ))),
        }
    }
}

#[tonic::async_trait]
impl Agent for HostAgentService {
    async fn apply(&self, request: Request<pb::ApplyRequest>) -> Result<Response<pb::ApplyResponse>, Status> {
        let req = request.into_inner();
        let agent = self.agent(&req.host_id)?;
        agent.admit(&req)?;
        if !req.detach {
            return agent.run(req).await.map(Response::new);
        }
        let (host, op, agent) = (req.host_id.clone(), req.operation_id.clone(), agent.clone());
        self.detached
            .start(host, op, async move { agent.run(req).await })
            .await
            .map(Response::new)
    }

    async fn results(&self, request: Request<pb::ResultsRequest>) -> Result<Response<pb::ResultsResponse>, Status> {
        Ok(Response::new(self.detached.results(request.into_inner()).await))
    }

    async fn probe(&self, request: Request<pb::ProbeRequest>) -> Result<Response<pb::ProbeResponse>, Status> {
        let req = request.into_inner();
        self.agent(&req.host_id)?.probe(req).await.map(Response::new)
    }
}

/// Serves host agents on `listener` until `shutdown` fires: health turns NOT_SERVING
/// first, then the server stops taking calls and lets those in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    agents: Vec<Arc<HostAgent>>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: tokio_util::sync::CancellationToken,
) -> crate::Result<()> {
    let standard = crate::standard::services::<AgentServer<HostAgentService>>(&shutdown).await?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).map_err(|source| crate::Error::Transport {
            context: "TLS configuration (check --tls-cert, --tls-key and --client-ca)".into(),
            source,
        })?;
    }
    builder
        .add_service(standard.health)
        .add_service(standard.reflection_v1)
        .add_service(standard.reflection_v1alpha)
        .add_service(AgentServer::new(HostAgentService::new(agents)))
        .serve_with_incoming_shutdown(crate::standard::incoming(listener), shutdown.cancelled_owned())
        .await
        .map_err(|source| crate::Error::Transport {
            context: "host agent server".into(),
            source,
        })
}
