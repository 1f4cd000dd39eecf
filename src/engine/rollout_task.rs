//! Carries a rollout out: fills waves, hands each wave (and the calls in doubt after
//! a restart) to its [`Dispatcher`], sleeps bakes, runs the health gate, and feeds
//! what happened back to the state machine. [`LiveBook`] is the rollout and its store
//! as the dispatcher sees them.
//!
//! Only this file and the dispatcher sleep or call agents. A pause or abort stops
//! dispatching at once; operations already sent finish and are recorded. On shutdown
//! the same happens and the rollout stays where it is, to be resumed by the next
//! controller.

use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, debug, info, info_span, warn};

use super::bake::Baked;
use super::dispatcher::{Book, Dispatcher, Mode};
use super::hold::Holds;
use super::rollout::{Dispatch, Live};
use super::state::{Event, FleetHealth, HealthReport, State, WaveReport};
use super::{Context, Result};

/// A wave whose hosts wait (a freeze, a window) looks again at least this often.
const HELD_TICK: Duration = Duration::from_secs(15);
use crate::proto::v1 as pb;

/// Runs a rollout until it ends, or until the controller shuts down.
pub(crate) async fn drive(live: Arc<Live>, ctx: Arc<Context>) {
    let span = info_span!("rollout", name = %live.name(), id = live.id);
    let writes = ctx.store.writes();
    async {
        loop {
            if let Err(e) = run(&live, &ctx).await {
                warn!(error = %e, "rollout cannot continue");
                let fatal = Event::Fatal { reason: e.to_string() };
                if live.transition(&ctx.store, fatal, ctx.at(), None).is_ok() {
                    let _ = ctx.store.flush().await;
                }
                live.park(true);
                return;
            }
            // A retry may have revived the rollout while this driver was leaving.
            if live.park(ctx.shutdown.is_cancelled()) {
                // The figure the benchmark reads: store batches per host.
                let hosts = live.record().hosts_selected;
                info!(store_writes = ctx.store.writes() - writes, hosts, "driver done");
                return;
            }
        }
    }
    .instrument(span)
    .await
}

async fn run(live: &Live, ctx: &Context) -> Result<()> {
    let mut control = live.control.subscribe();
    if live.has_reconcile() {
        // Intents without results from before a crash: find out what happened first,
        // whatever the state (even a paused or aborted rollout must learn this).
        let reconcile = live.take_reconcile();
        info!(
            hosts = reconcile.len(),
            "asking agents about calls in doubt after a restart"
        );
        execute(live, ctx, Mode::Reconcile, reconcile).await?;
    }
    loop {
        if ctx.shutdown.is_cancelled() {
            return Ok(());
        }
        let state = live.state();
        match state {
            State::Pending => advance(live, ctx, Event::Start).await?,
            State::Running { wave } => {
                live.fill_wave(&ctx.store, wave, ctx.clock.now_ms(), ctx.hours.now_ms())?;
                live.commit(&ctx.store).await?;
                if live.policy.bake_ms(wave) > 0 {
                    // The health gate's baseline: who is unhealthy before the change.
                    let hosts = live.assigned_hosts(wave);
                    let unreachable = ctx
                        .health
                        .probe(&ctx.fleet, &ctx.inventory(), &hosts, ctx.clock.now_ms())
                        .await;
                    for (h, _) in unreachable {
                        if let Some(mut seen) = ctx.health.get(&h) {
                            seen.healthy = false;
                            ctx.health.record(&h, seen);
                        }
                    }
                }
                let report = execute(live, ctx, Mode::Wave(wave), Vec::new()).await?;
                debug!(wave, ?report, "wave ended");
                advance(live, ctx, Event::WaveEnded(report)).await?;
            }
            State::Baking { wave, until_ms } if live.plan.analysis.is_some() => {
                let Some(analysis) = live.plan.analysis.as_ref() else {
                    continue;
                };
                match super::bake::bake(live, ctx, analysis, wave, until_ms, &mut control).await? {
                    Baked::Passed => {
                        let health = health_gate(live, ctx, wave).await?;
                        advance(live, ctx, Event::BakeElapsed(health)).await?
                    }
                    Baked::Failed(reason) => advance(live, ctx, Event::AnalysisFailed { wave, reason }).await?,
                    Baked::Inconclusive(reason) => {
                        advance(live, ctx, Event::AnalysisInconclusive { wave, reason }).await?
                    }
                    Baked::Interrupted => {}
                }
            }
            State::Baking { until_ms, .. } => {
                let wait = Duration::from_millis((until_ms - ctx.clock.now_ms()).max(0) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        let health = health_gate(live, ctx, live.state().wave()).await?;
                        advance(live, ctx, Event::BakeElapsed(health)).await?
                    }
                    _ = control.changed() => {}
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                }
            }
            State::AwaitingApproval { wave } => await_approval(live, ctx, wave, &mut control).await?,
            State::Paused { .. } | State::Halted { .. } => {
                tokio::select! {
                    _ = control.changed() => {}
                    _ = ctx.shutdown.cancelled() => return Ok(()),
                }
            }
            State::Succeeded | State::CompletedWithFailures { .. } | State::Failed { .. } | State::Aborted { .. } => {
                info!(state = state.name(), "rollout ended");
                return Ok(());
            }
        }
    }
}

/// The health gate at the end of a bake: probes the wave's hosts that applied fine
/// and were healthy when the wave started (every wave's so far under `continue`), and
/// counts those now unhealthy or unreachable: the hosts the change may have broken.
/// With `min_healthy`, the whole selection is probed too, against that floor.
async fn health_gate(live: &Live, ctx: &Context, wave: u32) -> Result<HealthReport> {
    let report = live.report(wave);
    let whole = live.judges_whole_rollout();
    let floor = live.plan.min_healthy;
    let round = live.record().retries;
    let mut gate = Vec::new();
    let mut records = std::collections::HashMap::new();
    let mut selection = Vec::new();
    for row in ctx.store.rollout_hosts(live.id) {
        let (host, r) = row?;
        // Stored waves count from 1; 0 is a host not assigned to a wave yet. Hosts a
        // retry round re-ran are judged with the wave that ends it.
        let judged = if whole {
            (1..=wave + 1).contains(&r.wave)
        } else {
            r.wave == wave + 1
        } || (round > 0 && r.retry_round == round);
        if judged && r.state() == pb::HostState::Succeeded && !r.unhealthy_before {
            gate.push(host.clone());
            records.insert(host.clone(), r);
        }
        if floor.is_some() {
            selection.push(host);
        }
    }
    let probed = if floor.is_some() { &selection } else { &gate };
    let unreachable: std::collections::HashMap<String, String> = ctx
        .health
        .probe(&ctx.fleet, &ctx.inventory(), probed, ctx.clock.now_ms())
        .await
        .into_iter()
        .collect();
    // Why a host is down now (unreachable, or unhealthy), if it is.
    let why_down = |h: &String| match unreachable.get(h) {
        Some(e) => Some(e.clone()),
        None => ctx
            .health
            .get(h)
            .filter(|s| !s.healthy)
            .map(|s| format!("unhealthy ({})", s.detail)),
    };
    let sick = |h: &String| why_down(h).map(|why| format!("{h}: {why}"));
    let mut verdicts = Vec::new();
    let mut broken = Vec::new();
    for h in &gate {
        match why_down(h) {
            Some(why) => {
                broken.push(format!("{h}: {why}"));
                if let Some(rec) = records.remove(h) {
                    verdicts.push((h.clone(), rec, format!("wave {}: {why}", wave + 1)));
                }
            }
            // Judged again (under `continue`, or retried) and healthy now.
            None => {
                if let Some(rec) = records.remove(h).filter(|r| !r.unhealthy_after.is_empty()) {
                    verdicts.push((h.clone(), rec, String::new()));
                }
            }
        }
    }
    live.mark_unhealthy(&ctx.store, verdicts)?;
    if !broken.is_empty() {
        warn!(
            wave,
            unhealthy = broken.len(),
            probed = gate.len(),
            "hosts unhealthy after the bake"
        );
    }
    let fleet = floor.map(|floor| {
        let down: Vec<String> = selection.iter().filter_map(sick).collect();
        let selected = selection.len() as u64;
        FleetHealth {
            selected,
            healthy: selected - down.len() as u64,
            required: floor.of(selected),
            floor: floor.to_string(),
            examples: down.into_iter().take(3).collect(),
        }
    });
    Ok(HealthReport {
        wave,
        size: report.size,
        failed: report.failed,
        unhealthy: broken.len() as u64,
        allowed: report.allowed,
        whole_rollout: report.whole_rollout,
        examples: broken.into_iter().take(3).collect(),
        failed_total: report.failed_total,
        fleet,
    })
}

/// Waits while a gate is open: until an operator acts (an approval's quorum, an
/// abort), the gate's deadline passes (then it acts as its `on_timeout` says; a
/// deadline that passed while no controller was up acts at once), or the plan's
/// analysis is due again: it goes on measuring while people look, and a failure
/// closes the gate as it would have failed the bake.
async fn await_approval(
    live: &Live,
    ctx: &Context,
    wave: u32,
    control: &mut tokio::sync::watch::Receiver<u64>,
) -> Result<()> {
    let now = ctx.clock.now_ms();
    let deadline = live.gate_deadline();
    let measure = live
        .plan
        .analysis
        .as_ref()
        .filter(|_| !live.emergency_gate_open())
        .map(|a| (a, super::bake::next_at_gate(live, a, wave, now)));
    let wake = [deadline.as_ref().map(|(_, d)| *d), measure.map(|(_, due)| due)]
        .into_iter()
        .flatten()
        .min();
    let sleep = async {
        match wake {
            Some(at) => tokio::time::sleep(Duration::from_millis((at - now).max(0) as u64)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sleep => {}
        _ = control.changed() => return Ok(()),
        _ = ctx.shutdown.cancelled() => return Ok(()),
    }
    let now = ctx.clock.now_ms();
    if let Some((gate_id, at)) = deadline
        && now >= at
    {
        if let Some(event) = live.gate_timeout(&gate_id, now) {
            info!(gate = gate_id, "the gate timed out");
            advance(live, ctx, event).await?;
        }
        return Ok(());
    }
    if let Some((analysis, due)) = measure
        && now >= due
        && live.state() == (State::AwaitingApproval { wave })
    {
        match super::bake::at_gate(live, ctx, analysis, wave).await? {
            Some(Baked::Failed(reason)) => advance(live, ctx, Event::AnalysisFailed { wave, reason }).await?,
            Some(Baked::Inconclusive(reason)) => {
                advance(live, ctx, Event::AnalysisInconclusive { wave, reason }).await?
            }
            _ => {}
        }
    }
    Ok(())
}

async fn advance(live: &Live, ctx: &Context, event: Event) -> Result<()> {
    let rollback = live.transition(&ctx.store, event, ctx.at(), None)?;
    live.commit(&ctx.store).await?;
    if rollback {
        // Only the engine creates rollouts; it starts this one's rollback.
        let _ = ctx.rollbacks.send(live.id);
    }
    Ok(())
}

/// Sends the hosts of `mode` with at most `max_parallel` in flight (no more than
/// `--max-in-flight`), and returns how the wave stands when it stops.
async fn execute(live: &Live, ctx: &Context, mode: Mode, first: Vec<Dispatch>) -> Result<WaveReport> {
    // Within the controller's --max-in-flight (status says when it limits the plan).
    let max_parallel = (live.plan.max_parallel.max(1) as usize).min(ctx.max_in_flight);
    Dispatcher::new(mode, max_parallel, live.plan.progress_deadline, first)
        .run(
            &LiveBook { live, ctx },
            &ctx.fleet,
            live.control.subscribe(),
            &ctx.shutdown,
        )
        .await
}

/// The rollout and its store, as its dispatcher sees them.
struct LiveBook<'a> {
    live: &'a Live,
    ctx: &'a Context,
}

impl Book for LiveBook<'_> {
    type Item = Dispatch;
    type Report = WaveReport;

    fn now_ms(&self) -> i64 {
        self.ctx.clock.now_ms()
    }

    fn must_stop(&self, wave: u32) -> bool {
        self.live.must_stop(wave)
    }

    fn start(&self, fleet: &crate::reach::SharedFleet, d: &Dispatch, reply: crate::reach::Reply) {
        super::dispatcher::send(fleet, self.live.plan.kind, d, self.live.apply_request(d), reply);
    }

    async fn intents(&self, wave: u32, n: usize) -> Result<Vec<Dispatch>> {
        let (live, ctx) = (self.live, self.ctx);
        let (now, hours) = (ctx.clock.now_ms(), ctx.hours.now_ms());
        let board = ctx.freezes.board();
        // An approved emergency passes freezes; its windows (if any) still hold.
        let board = (!live.passes_freezes()).then_some(&*board);
        let holds = Holds::new(board, live.plan.windows, live.inventory(), now, hours);
        let intents = live.take_batch(wave, n, now, &holds, |h| ctx.health.get(h).is_none_or(|s| s.healthy));
        if !intents.is_empty() {
            // Group commit: the intents of the whole batch, one flush, then the
            // calls. A crash after the flush re-asks these hosts.
            ctx.store
                .put_hosts(live.id, intents.iter().map(|d| (d.host.as_str(), &d.record)))?;
            live.commit(&ctx.store).await?;
        }
        Ok(intents)
    }

    async fn record(&self, results: &[Dispatch]) -> Result<()> {
        let (live, ctx) = (self.live, self.ctx);
        if !results.is_empty() {
            for d in results {
                if d.record.state() == pb::HostState::Succeeded && !d.record.version.is_empty() {
                    ctx.health.record_version(&d.host, &d.record.version);
                }
            }
            live.record_results(&ctx.store, results)?;
        }
        live.commit(&ctx.store).await?;
        Ok(())
    }

    fn unsend(&self, items: Vec<Dispatch>) -> Result<()> {
        self.live.unsend(&self.ctx.store, items)
    }

    fn report(&self, wave: u32) -> WaveReport {
        self.live.report(wave)
    }

    fn held(&self, wave: u32) -> Option<Duration> {
        // Looked at again within HELD_TICK at most: a freeze may end early, the
        // inventory may change, and a drill clock may be read differently.
        self.live
            .held_for(wave)
            .map(|ms| Duration::from_millis(ms.clamp(1, HELD_TICK.as_millis() as i64) as u64))
    }

    fn stuck(&self, wave: u32, after: Duration, hosts: Vec<String>) -> WaveReport {
        WaveReport {
            stuck: Some((after, hosts)),
            ..self.live.report(wave)
        }
    }
}
