//! The engine's restart jobs: triggering one (or previewing it), finding, watching
//! and cancelling them. One job in memory and its driver are in [`super::job`].

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use super::audit::{Actor, Target};
use super::{Engine, Error, Job, RestartQueueView, Result, at_refused, held_by, job};
use crate::inventory::Inventory;
use crate::proto::v1 as pb;

impl Engine {
    /// Registers a restart job and starts its driver when it has work left.
    pub(super) fn adopt_job(
        &self,
        record: pb::RestartJobRecord,
        hosts: Vec<pb::RestartHostRecord>,
    ) -> Result<Arc<Job>> {
        let id = record.id;
        let mut job = Job::load(record, hosts, &self.ctx.inventory())
            .map_err(|e| Error::Corrupt(format!("restart job {id}: {e}")))?;
        job.instance = Arc::from(self.ctx.store.instance());
        let job = Arc::new(job);
        self.jobs().insert(job.id, job.clone());
        if job.is_active() || job.has_reconcile() {
            self.spawn(job::drive(job.clone(), self.ctx.clone()));
        }
        Ok(job)
    }

    pub(super) fn find_job(&self, id: u64) -> Result<Arc<Job>> {
        self.jobs().get(&id).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "no restart job has id {id}; `rollout restart --list` shows them"
            ))
        })
    }

    /// Creates (or previews) a restart job. Idempotent by `request_id`.
    pub async fn trigger_restart(
        &self,
        mut req: pb::TriggerRestartRequest,
        actor: &Actor,
    ) -> Result<(pb::RestartJob, bool)> {
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if req.at_unix_ms != 0 && !req.dry_run {
            return Err(at_refused());
        }
        let _guard = self.submit.lock().await;
        if !req.request_id.is_empty()
            && !req.dry_run
            && let Some(id) = self.ctx.store.restart_job_for_request(&req.request_id)?
        {
            return Ok(((*self.find_job(id)?.snapshot()).clone(), true));
        }
        let (order, _, _) = job::settings(&req).map_err(|(field, message)| Error::Invalid { field, message })?;
        req.order = order.as_str().to_string();
        let inventory = self.ctx.inventory();
        let candidates = candidates(&req, &inventory)?;
        let now = self.ctx.clock.now_ms();
        if !req.dry_run && !req.emergency {
            self.refuse_frozen(&candidates, "this restart names")?;
        }
        let (chosen, skipped) = self.choose(&req, candidates, now).await?;
        let id = if req.dry_run { 0 } else { self.ctx.store.next_id()? };
        let total = chosen.len();
        let (mut record, hosts) = job_records(id, &req, chosen, skipped, now);
        record.submitted_by = actor.principal.clone();
        if req.dry_run {
            let job = Job::load(record, hosts, &inventory).map_err(Error::Corrupt)?;
            let at = match req.at_unix_ms {
                0 => self.ctx.hours.now_ms(),
                at => at,
            };
            return Ok((job.preview(&inventory, at), false));
        }
        let line = format!("restart job {id}: {total} hosts, order {}", req.order);
        let audit = actor.event(now, Target::Job(id), line, "ok");
        let started = Job::load(record.clone(), hosts.clone(), &inventory)
            .map_err(Error::Corrupt)?
            .started(now);
        if let Err(held) = self
            .ctx
            .store
            .create_restart_job(&record, &hosts, &req.request_id, &[audit], &[started])
            .await?
        {
            return Err(Error::Refused(held_by(&held, total)));
        }
        let job = self.adopt_job(record, hosts)?;
        info!(job = id, hosts = total, "restart job started");
        Ok(((*job.snapshot()).clone(), false))
    }

    /// Of the candidates, those to restart (with their health, probed now:
    /// `unhealthy_only` picks by it, and healthy hosts count against their customers'
    /// budget), and those left alone with why (held by a rollout or job, unreachable).
    async fn choose(
        &self,
        req: &pb::TriggerRestartRequest,
        candidates: Vec<String>,
        now: i64,
    ) -> Result<(Vec<(String, bool)>, Vec<pb::SkippedHost>)> {
        let matched = candidates.len();
        let inventory = self.ctx.inventory();
        let unreachable: HashMap<String, String> = self
            .ctx
            .health
            .probe(&self.ctx.fleet, &inventory, &candidates, now)
            .await
            .into_iter()
            .collect();
        let mut skipped = Vec::new();
        let mut chosen = Vec::new();
        for id in candidates {
            let reason = if let Some(why) = self.ctx.store.lease(&id)? {
                format!("held by {why}")
            } else if let Some(err) = unreachable.get(&id) {
                format!("cannot probe it: {err}")
            } else {
                let healthy = self.ctx.health.get(&id).is_none_or(|s| s.healthy);
                if !req.unhealthy_only || !healthy {
                    chosen.push((id, healthy));
                }
                continue;
            };
            skipped.push(pb::SkippedHost { host_id: id, reason });
        }
        if chosen.is_empty() {
            return Err(Error::Refused(format!(
                "no host to restart: {matched} matched{}, {} skipped (held by a rollout or job, or unreachable)",
                if req.unhealthy_only {
                    ", none of the others unhealthy"
                } else {
                    ""
                },
                skipped.len()
            )));
        }
        Ok((chosen, skipped))
    }

    /// A restart job; with every host in restart order when `include_hosts`.
    pub fn restart_job(&self, id: u64, include_hosts: bool) -> Result<pb::RestartJob> {
        let job = self.find_job(id)?;
        Ok(if include_hosts {
            job.detailed()
        } else {
            (*job.snapshot()).clone()
        })
    }

    /// A restart job's first `limit` hosts picked (in order), its first `limit` hosts
    /// waiting (in the order they would go now), and how many wait in all.
    pub fn restart_queue(&self, id: u64, limit: usize) -> Result<RestartQueueView> {
        let job = self.find_job(id)?;
        let (waiting, count) = job.queue(&self.ctx.inventory(), self.ctx.hours.now_ms(), limit);
        Ok(RestartQueueView {
            picked: job.first_picked(limit),
            waiting,
            count,
        })
    }

    /// Every restart job, newest first.
    pub fn restart_jobs(&self) -> Vec<Arc<pb::RestartJob>> {
        self.jobs().values().rev().map(|j| j.snapshot()).collect()
    }

    pub fn watch_restart_job(&self, id: u64) -> Result<watch::Receiver<Arc<pb::RestartJob>>> {
        Ok(self.find_job(id)?.subscribe())
    }

    /// Approves emergency restart job `id` for `actor` (an admin, not its submitter).
    pub async fn approve_restart_job(&self, id: u64, comment: &str, actor: &Actor) -> Result<pb::RestartJob> {
        let job = self.find_job(id)?;
        job.approve_emergency(&self.ctx.store, actor, comment, self.ctx.clock.now_ms())?;
        self.ctx.store.flush().await?;
        Ok((*job.snapshot()).clone())
    }

    pub async fn cancel_restart_job(&self, id: u64, reason: &str, actor: &Actor) -> Result<pb::RestartJob> {
        let job = self.find_job(id)?;
        let now = self.ctx.clock.now_ms();
        let audit = actor.event(now, Target::Job(id), format!("cancel: {reason}"), "ok");
        job.cancel(&self.ctx.store, reason, now, audit)?;
        self.ctx.store.flush().await?;
        Ok((*job.snapshot()).clone())
    }
}

/// Which hosts a restart asks for: explicit ids, a selector, or (alone) the whole
/// inventory for `unhealthy_only`; sorted, each once.
fn candidates(req: &pb::TriggerRestartRequest, inventory: &Inventory) -> Result<Vec<String>> {
    let mut candidates: Vec<String> = Vec::new();
    for (i, id) in req.host_ids.iter().enumerate() {
        crate::ident::host_id(id).map_err(|e| Error::Invalid {
            field: format!("TriggerRestart host_ids[{i}]"),
            message: e.to_string(),
        })?;
        if inventory.host(id).is_none() {
            return Err(Error::Invalid {
                field: format!("host_ids[{i}]"),
                message: format!("`{id}` is not in the inventory; `rollout hosts` lists them"),
            });
        }
        candidates.push(id.clone());
    }
    for key in req.selector.keys() {
        crate::ident::label_key(key).map_err(|e| Error::Invalid {
            field: format!("TriggerRestart selector.{}", e.shown),
            message: e.to_string(),
        })?;
    }
    if !req.selector.is_empty() {
        let selector: crate::plan::Selector = req
            .selector
            .iter()
            .map(|(k, v)| (k.clone(), v.values.clone()))
            .collect();
        candidates.extend(inventory.select(&selector).map(|h| h.id.clone()));
    }
    if req.host_ids.is_empty() && req.selector.is_empty() {
        if !req.unhealthy_only {
            return Err(Error::Invalid {
                field: "hosts".into(),
                message: "say which hosts: a selector, host ids, or unhealthy_only".into(),
            });
        }
        candidates.extend(inventory.hosts().iter().map(|h| h.id.clone()));
    }
    candidates.sort();
    candidates.dedup();
    Ok(candidates)
}

/// A new restart job's record and its hosts' records, every host pending.
fn job_records(
    id: u64,
    req: &pb::TriggerRestartRequest,
    chosen: Vec<(String, bool)>,
    skipped: Vec<pb::SkippedHost>,
    now: i64,
) -> (pb::RestartJobRecord, Vec<pb::RestartHostRecord>) {
    let record = pb::RestartJobRecord {
        id,
        request: Some(req.clone()),
        state: pb::RestartJobState::Running as i32,
        skipped,
        batches: 0,
        reason: String::new(),
        created_at_unix_ms: now,
        updated_at_unix_ms: now,
        finished_at_unix_ms: 0,
        hosts_total: chosen.len() as u64,
        ..Default::default()
    };
    let hosts = chosen
        .into_iter()
        .map(|(host_id, was_healthy)| pb::RestartHostRecord {
            host: Some(pb::RestartHost {
                host_id,
                state: pb::RestartHostState::Pending as i32,
                was_healthy,
                ..Default::default()
            }),
            operation_id: String::new(),
            updated_at_unix_ms: now,
        })
        .collect();
    (record, hosts)
}
