//! The `rollout.v1.Controller` service: requests in, engine calls, snapshots out.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::engine::{self, Engine, Event, Key};
use crate::plan::{self, Plan};
use crate::proto::v1 as pb;
use crate::proto::v1::controller_server::{Controller, ControllerServer};
use crate::{Error, Result};

/// Largest request accepted: a plan is at most 1 MiB of YAML.
const MAX_MESSAGE: usize = 2 * 1024 * 1024;

pub struct ControllerService {
    engine: Arc<Engine>,
    /// Ends watch streams when the controller stops.
    shutdown: CancellationToken,
}

impl ControllerService {
    pub fn new(engine: Arc<Engine>, shutdown: CancellationToken) -> ControllerService {
        ControllerService { engine, shutdown }
    }

    pub fn into_server(self) -> ControllerServer<ControllerService> {
        ControllerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

fn key<'a>(name: &'a str, id: u64) -> Result<Key<'a>> {
    if name.is_empty() && id == 0 {
        return Err(Error::Usage(
            "name the rollout: set `name` (or `id`)".into(),
        ));
    }
    Ok(Key { name, id })
}

fn is_terminal(state: pb::RolloutState) -> bool {
    matches!(
        state,
        pb::RolloutState::Succeeded | pb::RolloutState::Failed | pb::RolloutState::Aborted
    )
}

type RolloutStream = Pin<Box<dyn Stream<Item = Result<pb::Rollout, Status>> + Send>>;

impl ControllerService {
    async fn submit(&self, req: pb::SubmitPlanRequest) -> Result<pb::SubmitPlanResponse> {
        let (plan, text, source) = match req.plan {
            Some(pb::submit_plan_request::Plan::Yaml(text)) => {
                let source = if req.source_name.is_empty() {
                    "plan".to_string()
                } else {
                    req.source_name
                };
                (Plan::from_yaml(&text, &source)?, Some(text), source)
            }
            Some(pb::submit_plan_request::Plan::Spec(spec)) => {
                (Plan::from_spec(&spec)?, None, "plan".to_string())
            }
            None => {
                return Err(Error::Usage(
                    "plan is missing: send the plan as `yaml` text or as a `spec`".into(),
                ));
            }
        };
        let submitted =
            self.engine
                .submit(plan, &req.request_id, req.dry_run)
                .await
                .map_err(|e| match e {
                    engine::Error::Invalid { field, message } => Error::Plan(
                        plan::Error::at_field(&source, text.as_deref(), &field, message),
                    ),
                    other => Error::Engine(other),
                })?;
        Ok(pb::SubmitPlanResponse {
            rollout: Some(submitted.rollout),
            replayed: submitted.replayed,
            preview: submitted.preview,
        })
    }

    async fn act(&self, req: pb::RolloutActionRequest, event: Event) -> Result<pb::Rollout> {
        let snapshot = self.engine.control(key(&req.name, req.id)?, event).await?;
        Ok((*snapshot).clone())
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn submit_plan(
        &self,
        request: Request<pb::SubmitPlanRequest>,
    ) -> Result<Response<pb::SubmitPlanResponse>, Status> {
        Ok(Response::new(self.submit(request.into_inner()).await?))
    }

    async fn get_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let req = request.into_inner();
        let snapshot = self
            .engine
            .get(key(&req.name, req.id)?)
            .map_err(Error::from)?;
        Ok(Response::new((*snapshot).clone()))
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
            .map(|r| (*r).clone())
            .collect();
        Ok(Response::new(pb::ListRolloutsResponse { rollouts }))
    }

    type WatchRolloutStream = RolloutStream;

    async fn watch_rollout(
        &self,
        request: Request<pb::GetRolloutRequest>,
    ) -> Result<Response<RolloutStream>, Status> {
        let req = request.into_inner();
        let rx = self
            .engine
            .watch(key(&req.name, req.id)?)
            .map_err(Error::from)?;
        let shutdown = self.shutdown.clone();
        enum Phase {
            First,
            Next,
            Done,
        }
        let stream = futures::stream::unfold(
            (rx, Phase::First, shutdown),
            |(mut rx, phase, shutdown)| async move {
                let snapshot = match phase {
                    Phase::Done => return None,
                    Phase::First => rx.borrow_and_update().clone(),
                    Phase::Next => {
                        tokio::select! {
                            changed = rx.changed() => {
                                changed.ok()?;
                                rx.borrow_and_update().clone()
                            }
                            _ = shutdown.cancelled() => return None,
                        }
                    }
                };
                let next = if is_terminal(snapshot.state()) {
                    Phase::Done
                } else {
                    Phase::Next
                };
                Some((Ok((*snapshot).clone()), (rx, next, shutdown)))
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn pause_rollout(
        &self,
        request: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        Ok(Response::new(
            self.act(request.into_inner(), Event::Pause).await?,
        ))
    }

    async fn resume_rollout(
        &self,
        request: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        Ok(Response::new(
            self.act(request.into_inner(), Event::Resume).await?,
        ))
    }

    async fn abort_rollout(
        &self,
        request: Request<pb::RolloutActionRequest>,
    ) -> Result<Response<pb::Rollout>, Status> {
        let req = request.into_inner();
        let reason = req.reason.clone();
        Ok(Response::new(self.act(req, Event::Abort { reason }).await?))
    }
}
