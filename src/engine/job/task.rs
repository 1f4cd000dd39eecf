//! The task that runs a restart job, through the same dispatcher as a rollout's
//! waves: batches picked at each instant by business hours within the budget, once
//! half the places are free; intents written before the calls, results recorded in
//! groups; calls in doubt after a restart asked again first (a probe that finds the
//! host healthy counts it restarted).

use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, info, info_span, warn};

use super::{HostState, IDLE_TICK, Job};
use crate::engine::dispatcher::{Book, Dispatcher, Mode, Work};
use crate::engine::health::Seen;
use crate::engine::{Context, Result};
use crate::proto::v1 as pb;
use crate::reach::{Reply, SharedFleet};

/// What a host in doubt after a restart is recorded with when a probe finds it healthy.
const CONFIRMED: &str = "healthy (confirmed by probe after a controller restart)";

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
    let reconcile: Vec<Restart> = Restart::all(job.take_reconcile(), ctx);
    if !reconcile.is_empty() {
        let book = JobBook {
            job,
            ctx,
            probe_first: true,
        };
        dispatch(&book, Mode::Reconcile, reconcile).await?;
    }
    let book = JobBook {
        job,
        ctx,
        probe_first: false,
    };
    loop {
        // Sends what can go now, until nothing is in flight and nothing more is
        // picked (the budget, the pace or the hours hold the rest back).
        dispatch(&book, Mode::Job, Vec::new()).await?;
        if ctx.shutdown.is_cancelled() || !job.is_active() {
            break;
        }
        if job.nothing_waiting() {
            job.complete(&ctx.store, ctx.clock.now_ms())?;
            ctx.store.flush().await?;
            info!("restart job ended");
            break;
        }
        tokio::select! {
            _ = control.changed() => {}
            _ = tokio::time::sleep(IDLE_TICK) => {}
            _ = ctx.shutdown.cancelled() => {}
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

async fn dispatch(book: &JobBook<'_>, mode: Mode, first: Vec<Restart>) -> Result<()> {
    let ctx = book.ctx;
    // A restart job is never stuck: its deadline is the agents' own.
    Dispatcher::new(mode, book.job.max_parallel, Duration::MAX, first)
        .run(book, &ctx.fleet, book.job.control.subscribe(), &ctx.shutdown)
        .await
}

/// A host to restart, with its agent's address (from the inventory, as of the pick).
struct Restart {
    rec: pb::RestartHostRecord,
    address: Arc<str>,
}

impl Restart {
    fn all(recs: Vec<pb::RestartHostRecord>, ctx: &Context) -> Vec<Restart> {
        let inventory = ctx.inventory();
        recs.into_iter()
            .map(|rec| {
                let host = rec.host.as_ref().map_or("", |h| h.host_id.as_str());
                let address = inventory.host(host).map_or_else(|| "".into(), |h| h.address.clone());
                Restart { rec, address }
            })
            .collect()
    }
}

/// The restart job and its store, as the dispatcher sees them.
struct JobBook<'a> {
    job: &'a Job,
    ctx: &'a Context,
    /// The hosts are in doubt after a restart: probe them first.
    probe_first: bool,
}

impl Book for JobBook<'_> {
    type Item = Restart;
    type Report = ();

    fn now_ms(&self) -> i64 {
        self.ctx.clock.now_ms()
    }

    fn must_stop(&self, _wave: u32) -> bool {
        !self.job.is_active()
    }

    fn start(&self, fleet: &SharedFleet, r: &Restart, reply: Reply) {
        let request = pb::ApplyRequest {
            host_id: r.host().to_string(),
            operation_id: r.rec.operation_id.clone(),
            action: pb::Action::Restart as i32,
            version: String::new(),
            // Both set by the fleet that sends it.
            epoch: 0,
            detach: false,
        };
        if !self.probe_first {
            return fleet.start(r.address(), request, reply);
        }
        let probe = fleet.probe(r.address(), r.host());
        let (fleet, address) = (fleet.clone(), r.address().to_string());
        tokio::spawn(reply.answer_with(async move {
            match probe.await {
                Ok(p) if p.healthy => Ok(pb::ApplyResponse {
                    ok: true,
                    detail: CONFIRMED.into(),
                    ..Default::default()
                }),
                _ => fleet.apply(&address, request).await,
            }
        }));
    }

    async fn intents(&self, _wave: u32, n: usize) -> Result<Vec<Restart>> {
        let (job, ctx) = (self.job, self.ctx);
        let (now, hours) = (ctx.clock.now_ms(), ctx.hours.now_ms());
        let inventory = ctx.inventory();
        let board = ctx.freezes.board();
        let board = (!job.passes_freezes()).then_some(&*board);
        let holds = crate::engine::hold::Holds::new(board, None, &inventory, now, hours);
        let picked = job.pick(n, &inventory, now, hours, &holds);
        if !picked.is_empty() {
            ctx.store.put_restart_hosts(job.id, &picked)?;
            ctx.store.put_restart_job(&job.lock().record)?;
            ctx.store.flush().await?;
        }
        Ok(Restart::all(picked, ctx))
    }

    async fn record(&self, results: &[Restart]) -> Result<()> {
        let ctx = self.ctx;
        // Picks flush their own intents: with no result there is nothing new to make
        // durable (the dispatcher ends each round with an empty record, and a job
        // waiting on its pace runs a round every IDLE_TICK).
        if results.is_empty() {
            return Ok(());
        }
        let now = ctx.clock.now_ms();
        let results: Vec<pb::RestartHostRecord> = results.iter().map(|r| r.rec.clone()).collect();
        for r in &results {
            if let Some(h) = &r.host
                && h.state() == HostState::Restarted
            {
                let version = ctx.health.get(&h.host_id).map(|s| s.version).unwrap_or_default();
                let seen = Seen {
                    healthy: true,
                    version,
                    at_ms: now,
                    detail: "restarted".into(),
                    ..Default::default()
                };
                ctx.health.record(&h.host_id, seen);
            }
        }
        self.job.record_results(&ctx.store, &results)?;
        ctx.store.flush().await?;
        Ok(())
    }

    fn unsend(&self, _items: Vec<Restart>) -> Result<()> {
        // A job picks no more than it sends at once: nothing is ever left unsent.
        Ok(())
    }

    fn report(&self, _wave: u32) {}

    fn stuck(&self, _wave: u32, _after: Duration, _hosts: Vec<String>) {}
}

impl Work for Restart {
    fn host(&self) -> &str {
        self.rec.host.as_ref().map_or("", |h| h.host_id.as_str())
    }

    fn address(&self) -> &str {
        &self.address
    }

    fn succeed(&mut self, resp: pb::ApplyResponse, now_ms: i64) {
        settle(&mut self.rec, HostState::Restarted, resp.detail, now_ms);
    }

    fn fail(&mut self, detail: String, _unknown: bool, now_ms: i64) {
        settle(&mut self.rec, HostState::Failed, detail, now_ms);
    }

    fn failed(&self) -> bool {
        self.rec.host.as_ref().is_some_and(|h| h.state() == HostState::Failed)
    }
}

fn settle(rec: &mut pb::RestartHostRecord, state: HostState, detail: String, now_ms: i64) {
    rec.updated_at_unix_ms = now_ms;
    let host = rec.host.get_or_insert_with(Default::default);
    host.set_state(state);
    host.detail = detail;
}
