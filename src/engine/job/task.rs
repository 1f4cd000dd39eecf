//! The task that runs a restart job: batches picked at each instant by business
//! hours within the budget, intents written before the calls, results recorded; calls
//! in doubt after a restart asked again first.

use std::sync::Arc;

use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

use super::{HostState, IDLE_TICK, Job};
use crate::engine::health::Seen;
use crate::engine::{Context, Result};
use crate::inventory::Inventory;
use crate::proto::v1 as pb;

/// Runs a restart job until it ends or the controller shuts down.
pub(crate) async fn drive(job: Arc<Job>, ctx: Arc<Context>) {
    let span = info_span!("restart_job", id = job.id);
    async {
        if let Err(e) = run(&job, &ctx).await {
            warn!(error = %e, "restart job cannot continue");
        }
    }
    .instrument(span)
    .await
}

async fn run(job: &Job, ctx: &Context) -> Result<()> {
    let mut control = job.control.subscribe();
    let mut inflight: JoinSet<pb::RestartHostRecord> = JoinSet::new();
    for rec in job.take_reconcile() {
        inflight.spawn(call(ctx.clone_parts(), rec, true));
    }
    loop {
        let stop = ctx.shutdown.is_cancelled() || !job.is_active();
        // Batches: refill when half the slots are free, re-ranking at this instant.
        if !stop && inflight.len() <= job.max_parallel / 2 {
            let now = ctx.clock.now_ms();
            let picked = job.pick(
                job.max_parallel - inflight.len(),
                &ctx.inventory(),
                now,
                ctx.hours.now_ms(),
            );
            if !picked.is_empty() {
                ctx.store.put_restart_hosts(job.id, &picked)?;
                ctx.store.put_restart_job(&job.lock().record)?;
                ctx.store.flush().await?;
                for rec in picked {
                    inflight.spawn(call(ctx.clone_parts(), rec, false));
                }
            }
        }
        if inflight.is_empty() {
            if stop {
                break;
            }
            if job.nothing_waiting() {
                job.complete(&ctx.store, ctx.clock.now_ms())?;
                ctx.store.flush().await?;
                info!("restart job ended");
                break;
            }
        }
        tokio::select! {
            joined = inflight.join_next(), if !inflight.is_empty() => {
                let mut done = Vec::new();
                if let Some(Ok(r)) = joined {
                    done.push(r);
                }
                while let Some(joined) = inflight.try_join_next() {
                    if let Ok(r) = joined {
                        done.push(r);
                    }
                }
                let now = ctx.clock.now_ms();
                for r in &mut done {
                    r.updated_at_unix_ms = now;
                    if let Some(h) = &r.host
                        && h.state() == HostState::Restarted
                    {
                        let version = ctx.health.get(&h.host_id).map(|s| s.version).unwrap_or_default();
                        ctx.health.record(&h.host_id, Seen { healthy: true, version, at_ms: now, detail: "restarted".into(), ..Default::default() });
                    }
                }
                job.record_results(&ctx.store, &done)?;
            }
            _ = control.changed() => {}
            _ = tokio::time::sleep(IDLE_TICK), if inflight.is_empty() => {}
            _ = ctx.shutdown.cancelled(), if !ctx.shutdown.is_cancelled() => {}
        }
    }
    if !job.is_active() {
        // Ended (cancelled), and nothing in flight any more: its hosts are free again.
        let holder = crate::store::Holder::Job { id: job.id };
        ctx.store.release_leases(&holder)?;
    }
    ctx.store.flush().await?;
    Ok(())
}

/// One host: (probe, when in doubt after a restart: healthy means done), restart.
async fn call(
    parts: (crate::engine::SharedFleet, Arc<Inventory>),
    mut rec: pb::RestartHostRecord,
    probe_first: bool,
) -> pb::RestartHostRecord {
    let (fleet, inventory) = parts;
    let host_id = rec.host.as_ref().map(|h| h.host_id.clone()).unwrap_or_default();
    let address = inventory.host(&host_id).map(|h| h.address.clone()).unwrap_or_default();
    let outcome = async {
        if probe_first
            && let Ok(p) = fleet.probe(&address, &host_id).await
            && p.healthy
        {
            return Ok("healthy (confirmed by probe after a controller restart)".to_string());
        }
        let request = pb::ApplyRequest {
            host_id: host_id.clone(),
            operation_id: rec.operation_id.clone(),
            action: pb::Action::Restart as i32,
            version: String::new(),
            // Both set by the fleet that sends it.
            epoch: 0,
            detach: false,
        };
        match fleet.apply(&address, request).await {
            Ok(resp) if resp.ok => Ok(resp.detail),
            Ok(resp) => Err(format!("agent reported failure: {}", resp.detail)),
            Err(e) => Err(e.to_string()),
        }
    }
    .instrument(info_span!("host", host = %host_id, op = %rec.operation_id))
    .await;
    let host = rec.host.get_or_insert_with(Default::default);
    match outcome {
        Ok(detail) => {
            host.set_state(HostState::Restarted);
            host.detail = detail;
        }
        Err(detail) => {
            host.set_state(HostState::Failed);
            host.detail = detail;
        }
    }
    rec
}
