//! The `rollout.v1.Controller` service: requests in, engine calls, snapshots out.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::snapshots::{Snapshots, shown, shown_job, snapshots};
use crate::auth::Principal;
use crate::cluster::Controllers;
use crate::engine::audit::{Actor, Target};
use crate::engine::{self, Action, Engine, Key};
use crate::plan::{self, Plan};
use crate::proto::v1 as pb;
use crate::proto::v1::controller_server::{Controller, ControllerServer};
use crate::{Error, Result};

pub struct ControllerService {
    engine: Arc<Engine>,
    /// Ends watch streams when the controller stops.
    shutdown: CancellationToken,
    controllers: Controllers,
    /// No `--auth`: every caller is the same principal, so a gate that needs two
    /// approvers (or four eyes) could never open.
    one_principal: bool,
    /// The sinks of `--notify`; None without.
    notifier: Option<Arc<crate::notify::Notifier>>,
}

impl ControllerService {
    pub fn new(
        engine: Arc<Engine>,
        shutdown: CancellationToken,
        controllers: Controllers,
        one_principal: bool,
    ) -> ControllerService {
        ControllerService {
            engine,
            shutdown,
            controllers,
            one_principal,
            notifier: None,
        }
    }

    pub fn with_notifier(mut self, notifier: Option<Arc<crate::notify::Notifier>>) -> ControllerService {
        self.notifier = notifier;
        self
    }

    fn notifier(&self) -> Result<&crate::notify::Notifier> {
        Ok(self.notifier.as_deref().ok_or(crate::notify::Error::NoSinks)?)
    }

    pub fn into_server(self) -> ControllerServer<ControllerService> {
        ControllerServer::new(self)
            .max_decoding_message_size(super::limits::MAX_REQUEST_BYTES)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

fn key<'a>(name: &'a str, id: u64) -> Result<Key<'a>> {
    if name.is_empty() && id == 0 {
        return Err(Error::Usage("name the rollout: set `name` (or `id`)".into()));
    }
    Ok(Key { name, id })
}

/// The principal the auth layer proved (anonymous when auth is off).
fn principal_of<T>(request: &Request<T>) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .unwrap_or_else(Principal::anonymous)
}

/// Who is calling: the principal the auth layer proved (anonymous when auth is off).
fn actor<T>(request: &Request<T>, method: &str, request_id: &str) -> Actor {
    let principal = principal_of(request);
    Actor::new(&principal.name, principal.role.as_str(), method, request_id)
}

impl ControllerService {
    /// A rollout as clients see it: with the drill clock said plainly when one is in force.
    fn drilled(&self, r: pb::Rollout) -> pb::Rollout {
        shown(&self.engine, r)
    }

    /// A restart job as clients see it, likewise.
    fn drilled_job(&self, j: pb::RestartJob) -> pb::RestartJob {
        shown_job(&self.engine, j)
    }

    /// Probing runs the health command on every host: an operator's act (a viewer is
    /// refused), paced by the per-principal change limit, and audited either way (a
    /// refusal for the rate limit by the limit itself).
    async fn probe_allowed<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let actor = actor(request, "ListHosts", "");
        let principal = principal_of(request);
        if !principal.role.allows(crate::auth::Need::Change) {
            let status = Status::from(Error::Forbidden(format!(
                "`{}` has the {} role; probing the fleet (ListHosts with probe, `rollout hosts --probe`) runs the health command on every host and needs the operator role",
                principal.name, principal.role
            )));
            self.engine
                .record_call(&actor, Target::None, "probe every host".into(), status.message())
                .await;
            return Err(status);
        }
        if let Some(limit) = request.extensions().get::<crate::auth::ChangeLimit>() {
            limit.charge(&principal, "ListHosts", None)?;
        }
        self.engine
            .record_call(&actor, Target::None, "probe every host".into(), "ok")
            .await;
        Ok(())
    }

    /// A mutating call's answer; a refusal is written to the audit log too (an
    /// accepted change wrote its line with the change itself).
    async fn audited<T>(&self, actor: &Actor, target: Target<'_>, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.engine.record_refusal(actor, target, &e.to_string()).await;
        }
        result
    }

    async fn submit(&self, req: pb::SubmitPlanRequest, actor: &Actor) -> Result<pb::SubmitPlanResponse> {
        let (plan, text, source) = match req.plan {
            Some(pb::submit_plan_request::Plan::Yaml(text)) => {
                let source = if req.source_name.is_empty() {
                    "plan".to_string()
                } else {
                    req.source_name
                };
                (Plan::from_yaml(&text, &source)?, Some(text), source)
            }
            Some(pb::submit_plan_request::Plan::Spec(spec)) => (Plan::from_spec(&spec)?, None, "plan".to_string()),
            None => {
                return Err(Error::Usage(
                    "plan is missing: send the plan as `yaml` text or as a `spec`".into(),
                ));
            }
        };
        if self.one_principal
            && let Some(gate) = plan.gates.iter().find(|g| g.needs_several())
        {
            return Err(Error::Engine(engine::Error::Refused(format!(
                "the gate after {} needs {}, but this controller runs without --auth and knows a single principal: run the controller with --auth (a tokens file naming the approvers)",
                gate.after,
                if gate.four_eyes {
                    "someone other than the submitter to approve (four_eyes)".to_string()
                } else {
                    format!("{} distinct approvers", gate.approvals)
                }
            ))));
        }
        let submitted = self
            .engine
            .submit(
                plan,
                req.dry_run,
                (req.at_unix_ms != 0).then_some(req.at_unix_ms),
                actor,
            )
            .await
            .map_err(|e| match e {
                engine::Error::Invalid { field, message } => {
                    Error::Plan(plan::Error::at_field(&source, text.as_deref(), &field, message))
                }
                other => Error::Engine(other),
            })?;
        Ok(pb::SubmitPlanResponse {
            rollout: Some(self.drilled(submitted.rollout)),
            replayed: submitted.replayed,
            preview: submitted.preview,
            conflicts: submitted.conflicts,
            prices: submitted.prices,
        })
    }

    async fn act(
        &self,
        request: Request<pb::RolloutActionRequest>,
        action: impl FnOnce(&pb::RolloutActionRequest) -> Action,
    ) -> Result<pb::Rollout, Status> {
        let action = action(request.get_ref());
        let actor = actor(&request, action.method(), &request.get_ref().request_id);
        let req = request.into_inner();
        let target = Target::Rollout {
            id: req.id,
            name: &req.name,
        };
        let answer = async {
            let snapshot = self.engine.control(key(&req.name, req.id)?, action, &actor).await?;
            Ok((*snapshot).clone())
        }
        .await;
        Ok(self.audited(&actor, target, answer).await?)
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn submit_plan(
        &self,
        request: Request<pb::SubmitPlanRequest>,
    ) -> Result<Response<pb::SubmitPlanResponse>, Status> {
        let actor = actor(&request, "SubmitPlan", &request.get_ref().request_id);
        let req = request.into_inner();
        if req.dry_run {
            // A preview changes nothing: not a line of the audit log.
            return Ok(Response::new(self.submit(req, &actor).await?));
        }
        let name = match &req.plan {
            Some(pb::submit_plan_request::Plan::Spec(spec)) => spec.name.clone(),
            _ => String::new(),
        };
        let answer = self.submit(req, &actor).await;
        let target = Target::Rollout { id: 0, name: &name };
        Ok(Response::new(self.audited(&actor, target, answer).await?))
    }

    async fn get_rollout(&self, request: Request<pb::GetRolloutRequest>) -> Result<Response<pb::Rollout>, Status> {
        let req = request.into_inner();
        let snapshot = self.engine.get(key(&req.name, req.id)?).map_err(Error::from)?;
        Ok(Response::new(self.drilled((*snapshot).clone())))
    }

    async fn notify_status(
        &self,
        _request: Request<pb::NotifyStatusRequest>,
    ) -> Result<Response<pb::NotifyStatusResponse>, Status> {
        let notifier = self.notifier.clone();
        let status = tokio::task::spawn_blocking(move || match notifier {
            Some(n) => n.status().map_err(Error::from),
            None => Err(Error::from(crate::notify::Error::NoSinks)),
        })
        .await
        .map_err(|e| Error::Internal(format!("reading the notification outbox: {e}")))??;
        Ok(Response::new(status))
    }

    async fn notify_test(
        &self,
        request: Request<pb::NotifyTestRequest>,
    ) -> Result<Response<pb::NotifyTestResponse>, Status> {
        let actor = actor(&request, "NotifyTest", "");
        let req = request.into_inner();
        if req.sink.is_empty() {
            return Err(Error::Usage("name the sink to test: set `sink`".into()).into());
        }
        let answer = self.notifier()?.test(&req.sink).await.map_err(Error::from)?;
        let line = format!("test notification to sink {}: {}", req.sink, answer.answer);
        let result = if answer.delivered { "ok" } else { "not delivered" };
        self.engine.record_call(&actor, Target::None, line, result).await;
        Ok(Response::new(answer))
    }

    async fn list_controllers(
        &self,
        _request: Request<pb::ListControllersRequest>,
    ) -> Result<Response<pb::ListControllersResponse>, Status> {
        let list = self.controllers.clone();
        let controllers = tokio::task::spawn_blocking(move || list())
            .await
            .map_err(|e| Error::Internal(format!("listing the controllers: {e}")))??;
        Ok(Response::new(pb::ListControllersResponse { controllers }))
    }

    async fn list_rollouts(
        &self,
        request: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        let states: Vec<pb::RolloutState> = request.into_inner().states().collect();
        let rollouts = self
            .engine
            .list(&states)
            .into_iter()
            .map(|r| self.drilled((*r).clone()))
            .collect();
        Ok(Response::new(pb::ListRolloutsResponse { rollouts }))
    }

    type WatchRolloutStream = Snapshots<pb::Rollout>;

    async fn watch_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<Snapshots<pb::Rollout>>, Status> {
        let req = request.into_inner();
        let rx = self.engine.watch(key(&req.name, req.id)?).map_err(Error::from)?;
        let stream = snapshots(rx, self.shutdown.clone(), |r| r.state().is_terminal());
        let engine = self.engine.clone();
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, move |r| {
            r.map(|r| shown(&engine, r))
        }))))
    }

    async fn trigger_restart(
        &self,
        request: Request<pb::TriggerRestartRequest>,
    ) -> Result<Response<pb::TriggerRestartResponse>, Status> {
        let actor = actor(&request, "TriggerRestart", &request.get_ref().request_id);
        let req = request.into_inner();
        let dry_run = req.dry_run;
        let answer = self.engine.trigger_restart(req, &actor).await.map_err(Error::from);
        let (job, replayed) = if dry_run {
            answer?
        } else {
            self.audited(&actor, Target::None, answer).await?
        };
        Ok(Response::new(pb::TriggerRestartResponse {
            job: Some(self.drilled_job(job)),
            replayed,
        }))
    }

    async fn get_restart_job(
        &self,
        request: Request<pb::GetRestartJobRequest>,
    ) -> Result<Response<pb::RestartJob>, Status> {
        let req = request.into_inner();
        let job = self
            .engine
            .restart_job(req.id, req.include_hosts)
            .map_err(Error::from)?;
        Ok(Response::new(self.drilled_job(job)))
    }

    async fn list_restart_jobs(
        &self,
        _: Request<pb::ListRestartJobsRequest>,
    ) -> Result<Response<pb::ListRestartJobsResponse>, Status> {
        let jobs = self
            .engine
            .restart_jobs()
            .into_iter()
            .map(|j| self.drilled_job((*j).clone()))
            .collect();
        Ok(Response::new(pb::ListRestartJobsResponse { jobs }))
    }

    type WatchRestartJobStream = Snapshots<pb::RestartJob>;

    async fn watch_restart_job(
        &self,
        request: Request<pb::GetRestartJobRequest>,
    ) -> Result<Response<Snapshots<pb::RestartJob>>, Status> {
        let rx = self
            .engine
            .watch_restart_job(request.into_inner().id)
            .map_err(Error::from)?;
        let stream = snapshots(rx, self.shutdown.clone(), |j| j.state() != pb::RestartJobState::Running);
        let engine = self.engine.clone();
        Ok(Response::new(Box::pin(futures::StreamExt::map(stream, move |j| {
            j.map(|j| shown_job(&engine, j))
        }))))
    }

    async fn cancel_restart_job(
        &self,
        request: Request<pb::CancelRestartJobRequest>,
    ) -> Result<Response<pb::RestartJob>, Status> {
        let actor = actor(&request, "CancelRestartJob", "");
        let req = request.into_inner();
        let answer = self
            .engine
            .cancel_restart_job(req.id, &req.reason, &actor)
            .await
            .map_err(Error::from);
        Ok(Response::new(self.audited(&actor, Target::Job(req.id), answer).await?))
    }

    async fn approve_restart_job(
        &self,
        request: Request<pb::ApproveRestartJobRequest>,
    ) -> Result<Response<pb::RestartJob>, Status> {
        let actor = actor(&request, "ApproveRestartJob", &request.get_ref().request_id);
        let req = request.into_inner();
        let answer = self
            .engine
            .approve_restart_job(req.id, &req.comment, &actor)
            .await
            .map_err(Error::from);
        let job = self.audited(&actor, Target::Job(req.id), answer).await?;
        Ok(Response::new(self.drilled_job(job)))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let peer = request.remote_addr().map(|a| a.ip());
        let actor = actor(&request, "Heartbeat", "");
        let principal = principal_of(&request);
        let req = request.into_inner();
        // Nothing speaks for a host but that host: a heartbeat naming another is
        // refused before anything is read from it, and the refusal audited.
        if !principal.speaks_for(&req.host_id) {
            let host = crate::ident::escaped(&req.host_id);
            let message = format!(
                "`{}` may not speak for host `{host}`: its token is bound to {}; give that host a token of its own (`rollout token new --principal HOST --role agent`) or add it to this entry's `hosts:` in the tokens file",
                principal.name,
                principal.binding()
            );
            tracing::warn!(principal = %principal.name, host = %host, "heartbeat refused: the host is outside the agent's binding");
            self.engine
                .record_call(&actor, Target::None, format!("heartbeat for host `{host}`"), &message)
                .await;
            return Err(Error::Forbidden(message).into());
        }
        let registered = self.engine.heartbeat(req, peer, &actor).map_err(Error::from)?;
        Ok(Response::new(pb::HeartbeatResponse { registered }))
    }

    async fn list_hosts(
        &self,
        request: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        if request.get_ref().probe {
            self.probe_allowed(&request).await?;
        }
        let req = request.into_inner();
        Ok(Response::new(pb::ListHostsResponse {
            hosts: self.engine.hosts(req.unhealthy_only, req.probe).await,
        }))
    }

    async fn pause_rollout(&self, request: Request<pb::RolloutActionRequest>) -> Result<Response<pb::Rollout>, Status> {
        Ok(Response::new(self.act(request, |_| Action::Pause).await?))
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        Ok(Response::new(self.act(request, |_| Action::Resume).await?))
    }

    async fn abort_rollout(&self, request: Request<pb::RolloutActionRequest>) -> Result<Response<pb::Rollout>, Status> {
        Ok(Response::new(
            self.act(request, |r| Action::Abort {
                reason: r.reason.clone(),
                rollback: r.rollback,
            })
            .await?,
        ))
    }

    async fn retry_rollout(&self, request: Request<pb::RolloutActionRequest>) -> Result<Response<pb::Rollout>, Status> {
        Ok(Response::new(self.act(request, |_| Action::Retry).await?))
    }

    async fn approve_rollout(
        &self,
        request: Request<pb::ApproveRolloutRequest>,
    ) -> Result<Response<pb::ApproveRolloutResponse>, Status> {
        let actor = actor(&request, "ApproveRollout", &request.get_ref().request_id);
        let req = request.into_inner();
        let target = Target::Rollout {
            id: req.id,
            name: &req.name,
        };
        let answer = async {
            let (approved, snapshot) = self
                .engine
                .approve(key(&req.name, req.id)?, &req.gate_id, &req.comment, &actor)
                .await?;
            tracing::info!(
                rollout = %snapshot.name,
                principal = %actor.principal,
                counted = approved.counted,
                "{}", approved.message
            );
            Ok(pb::ApproveRolloutResponse {
                rollout: Some(self.drilled((*snapshot).clone())),
                counted: approved.counted,
                message: approved.message,
                replayed: approved.replayed,
            })
        }
        .await;
        Ok(Response::new(self.audited(&actor, target, answer).await?))
    }

    async fn list_rollout_hosts(
        &self,
        request: Request<pb::ListRolloutHostsRequest>,
    ) -> Result<Response<pb::ListRolloutHostsResponse>, Status> {
        let req = request.into_inner();
        let filter = req.filter();
        let key = if req.job_id != 0 {
            Key { name: "", id: 0 }
        } else {
            key(&req.name, req.id)?
        };
        let page = self
            .engine
            .host_page(key, req.job_id, filter, &req.page_token, req.page_size as usize)
            .map_err(Error::from)?;
        Ok(Response::new(pb::ListRolloutHostsResponse {
            hosts: page.hosts,
            next_page_token: page.next,
        }))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let req = request.into_inner();
        let limit = if req.limit == 0 { 1_000 } else { req.limit.min(100_000) } as usize;
        let events = self
            .engine
            .events(req.since_unix_ms, &req.rollout, limit)
            .map_err(Error::from)?;
        Ok(Response::new(pb::ListEventsResponse { events }))
    }

    async fn freeze(&self, request: Request<pb::FreezeRequest>) -> Result<Response<pb::FreezeResponse>, Status> {
        let actor = actor(&request, "Freeze", &request.get_ref().request_id);
        let answer = self
            .engine
            .freeze(request.into_inner(), &actor)
            .await
            .map_err(Error::from);
        let (freeze, replayed) = self.audited(&actor, Target::None, answer).await?;
        Ok(Response::new(pb::FreezeResponse {
            freeze: Some(freeze),
            replayed,
        }))
    }

    async fn unfreeze(&self, request: Request<pb::UnfreezeRequest>) -> Result<Response<pb::Freeze>, Status> {
        let actor = actor(&request, "Unfreeze", &request.get_ref().request_id);
        let id = request.into_inner().id;
        let answer = self.engine.unfreeze(id, &actor).await.map_err(Error::from);
        Ok(Response::new(self.audited(&actor, Target::None, answer).await?))
    }

    async fn list_freezes(
        &self,
        request: Request<pb::ListFreezesRequest>,
    ) -> Result<Response<pb::ListFreezesResponse>, Status> {
        Ok(Response::new(
            self.engine.list_freezes(request.into_inner().include_ended),
        ))
    }
}
