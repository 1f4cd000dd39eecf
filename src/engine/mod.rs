//! The engine: turns validated plans into rollouts and carries them out.
//!
//! - [`state`]: the state machine, a pure step function tested with a fake clock;
//! - [`order`]: which hosts go first when a wave is filled;
//! - [`rollout`]: one rollout in memory (counters, queues, snapshots), rebuilt from
//!   the store at start-up;
//! - [`driver`]: the task that runs a rollout: intents, agent calls, results, bakes;
//! - [`fleet`]: the `Fleet` trait through which agents are reached;
//! - [`health`]: what is known of each host's health and version;
//! - [`queue`]: the restart queue, ranked by business hours within a budget;
//! - [`restart`]: restart jobs and the task that runs each one.
//!
//! The [`Engine`] owns the rollouts, answers the API's questions, and on start
//! resumes every unfinished rollout where the store says it was.

pub mod audit;
mod driver;
pub mod fleet;
pub mod health;
pub mod order;
pub mod queue;
mod restart;
mod results;
pub mod retry;
mod rollout;
pub mod state;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use fleet::{CallError, Fleet, GrpcFleet, RetryPolicy, SharedFleet};
use health::HealthBook;
use restart::Job;
pub use restart::state_name as restart_state_name;
use rollout::Live;
pub use state::{Event, State};

use crate::fleet::Inventory;
use crate::plan::Plan;
use crate::proto::v1 as pb;
use crate::store::{self, Store};

/// Why the engine refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No rollout has that name or id.
    #[error("{0}")]
    NotFound(String),
    /// An active rollout already has that name, or a request id was reused for another plan.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request makes no sense in the rollout's state.
    #[error("{0}")]
    Refused(String),
    /// The plan is valid but does not fit this fleet (its selector matches nothing).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The controller is shutting down and takes no new work.
    #[error("the controller is shutting down; retry against the new one")]
    ShuttingDown,
    /// Stored data cannot be understood.
    #[error("{0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wall-clock time, injected so tests can set it.
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// Unix time in milliseconds from the system clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Business hours during a drill or a demo (`rollout serve --drill-clock TIME`): the
/// clock reads `from_ms` when the controller starts and advances in real time, so a
/// game day on a Saturday night can replay a Monday morning in Seoul. Records and the
/// audit log keep real time.
pub struct DrillClock {
    from_ms: i64,
    started_ms: i64,
    real: Arc<dyn Clock>,
}

impl DrillClock {
    pub fn new(from_ms: i64, real: Arc<dyn Clock>) -> DrillClock {
        DrillClock {
            from_ms,
            started_ms: real.now_ms(),
            real,
        }
    }
}

impl Clock for DrillClock {
    fn now_ms(&self) -> i64 {
        self.from_ms + (self.real.now_ms() - self.started_ms)
    }
}

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts listed per wave in a dry run.
    pub preview_limit: usize,
    /// Run business hours on a drill clock starting at this instant (unix ms).
    pub drill_from_ms: Option<i64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            preview_limit: 20,
            drill_from_ms: None,
        }
    }
}

/// What the drivers share.
pub(crate) struct Context {
    pub store: Store,
    pub fleet: SharedFleet,
    pub clock: Arc<dyn Clock>,
    /// The clock business hours are judged by: `clock`, or a drill clock.
    pub hours: Arc<dyn Clock>,
    /// Set when `hours` is a drill clock.
    pub drill: bool,
    pub shutdown: CancellationToken,
    /// Replaced whole when a heartbeat registers or changes a host; readers keep the
    /// snapshot they took.
    pub inventory: std::sync::RwLock<Arc<Inventory>>,
    pub health: HealthBook,
    /// Rollouts whose failure policy asks for a rollback: the engine creates it.
    pub rollbacks: tokio::sync::mpsc::UnboundedSender<u64>,
}

impl Context {
    /// The current inventory.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What an agent call task needs, owned.
    pub fn clone_parts(&self) -> (SharedFleet, Arc<Inventory>) {
        (self.fleet.clone(), self.inventory())
    }
}

/// Names a rollout in a request: by id when non-zero, else by name (the active
/// rollout of that name, else the most recent one).
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub name: &'a str,
    pub id: u64,
}

/// The result of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub rollout: pb::Rollout,
    /// The request id had been seen: nothing new was created.
    pub replayed: bool,
    /// For a dry run: the hosts each wave would take, picked now.
    pub preview: Vec<pb::WavePreview>,
    /// For a dry run: who holds some of the selected hosts.
    pub conflicts: Vec<pb::Conflict>,
}

pub use crate::store::Holder;
use audit::{Actor, Target};

/// The head of a restart job's queue, for the dashboard.
#[derive(Debug, Default)]
pub struct RestartQueueView {
    /// The first hosts picked, in order.
    pub picked: Vec<pb::RestartHost>,
    /// The first hosts waiting, in the order they would go now.
    pub waiting: Vec<pb::RestartHost>,
    /// How many wait in all.
    pub count: usize,
}

/// The engine: every rollout, active or finished, and the tasks driving them.
pub struct Engine {
    ctx: Arc<Context>,
    options: Options,
    rollouts: Mutex<BTreeMap<u64, Arc<Live>>>,
    jobs: Mutex<BTreeMap<u64, Arc<Job>>>,
    /// Serialises submissions, so name checks and request ids are race-free.
    submit: tokio::sync::Mutex<()>,
    tracker: TaskTracker,
}

impl Engine {
    /// Loads every rollout from the store and resumes the unfinished ones.
    pub async fn start(
        store: Store,
        inventory: Arc<Inventory>,
        fleet: SharedFleet,
        clock: Arc<dyn Clock>,
        options: Options,
        shutdown: CancellationToken,
    ) -> Result<Arc<Engine>> {
        let (rollbacks, mut requests) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let hours: Arc<dyn Clock> = match options.drill_from_ms {
            Some(from) => Arc::new(DrillClock::new(from, clock.clone())),
            None => clock.clone(),
        };
        let engine = Arc::new(Engine {
            ctx: Arc::new(Context {
                store,
                fleet,
                hours,
                drill: options.drill_from_ms.is_some(),
                clock,
                shutdown,
                health: HealthBook::new(&inventory),
                inventory: std::sync::RwLock::new(inventory),
                rollbacks,
            }),
            options,
            rollouts: Mutex::new(BTreeMap::new()),
            jobs: Mutex::new(BTreeMap::new()),
            submit: tokio::sync::Mutex::new(()),
            tracker: TaskTracker::new(),
        });
        if let Some(from) = engine.options.drill_from_ms {
            let line = format!(
                "drill clock in force: business hours are judged as if it were {} when the controller started ({} real time), advancing in real time",
                format_instant(from),
                format_instant(engine.ctx.clock.now_ms())
            );
            info!("{line}");
            let mut event = Actor::controller().event(engine.ctx.clock.now_ms(), Target::None, line, "ok");
            event.kind = "drill-clock".into();
            engine.ctx.store.append_event(&event)?;
        }
        // Unfinished rollouts first: their drivers start dispatching while the
        // finished ones (often far more rows) are still being read.
        let mut records = engine.ctx.store.rollouts()?;
        records.sort_by_key(|r| State::from_record(r).is_terminal());
        for record in records {
            let live = engine.adopt(record)?;
            let state = live.state();
            if !state.is_terminal() {
                info!(rollout = live.name(), id = live.id, state = state.name(), "resuming");
                // On the timeline: the controller went away and came back here.
                let target = Target::Rollout {
                    id: live.id,
                    name: live.name(),
                };
                let line = format!(
                    "controller restarted: resuming, {} wave {}",
                    state.name(),
                    state.wave() + 1
                );
                let mut event = Actor::controller().event(engine.ctx.clock.now_ms(), target, line, "ok");
                event.kind = "resumed".into();
                engine.ctx.store.append_event(&event)?;
            }
        }
        // Rollbacks that drivers ask for (on_failure.action: rollback).
        let weak = Arc::downgrade(&engine);
        let shutdown = engine.ctx.shutdown.clone();
        engine.tracker.spawn(async move {
            loop {
                let id = tokio::select! {
                    id = requests.recv() => match id { Some(id) => id, None => return },
                    _ = shutdown.cancelled() => return,
                };
                let Some(engine) = weak.upgrade() else { return };
                if let Err(e) = engine.start_rollback(id).await {
                    tracing::warn!(rollout = id, error = %e, "cannot start the rollback");
                }
            }
        });
        for record in engine.ctx.store.restart_jobs()? {
            let hosts = engine.ctx.store.restart_hosts(record.id)?;
            let job = engine.adopt_job(record, hosts)?;
            if job.is_active() {
                info!(job = job.id, "resuming restart job");
            }
        }
        engine.release_stale_leases()?;
        // Rollbacks decided before a crash but not created yet.
        let pending: Vec<u64> = engine
            .lock()
            .values()
            .filter(|l| l.rollback_pending())
            .map(|l| l.id)
            .collect();
        for id in pending {
            info!(rollout = id, "starting the rollback it asked for before the restart");
            let _ = engine.ctx.rollbacks.send(id);
        }
        Ok(engine)
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a restart job and starts its driver when it has work left.
    fn adopt_job(&self, record: pb::RestartJobRecord, hosts: Vec<pb::RestartHostRecord>) -> Result<Arc<Job>> {
        let id = record.id;
        let job = Arc::new(
            Job::load(record, hosts, &self.ctx.inventory())
                .map_err(|e| Error::Corrupt(format!("restart job {id}: {e}")))?,
        );
        self.jobs().insert(job.id, job.clone());
        if job.is_active() || job.has_reconcile() {
            self.tracker.spawn(restart::drive(job.clone(), self.ctx.clone()));
        }
        Ok(job)
    }

    fn find_job(&self, id: u64) -> Result<Arc<Job>> {
        self.jobs().get(&id).cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "no restart job has id {id}; `rollout restart --list` shows them"
            ))
        })
    }

    /// Who holds some of `hosts` (other than `except`), and how many of them, as the
    /// `leases` tree says.
    fn conflicts(&self, hosts: &[String], except: Option<&Holder>) -> Result<BTreeMap<Holder, u64>> {
        let mut shared: BTreeMap<Holder, u64> = BTreeMap::new();
        for h in hosts {
            if let Some(holder) = self.ctx.store.lease(h)?
                && Some(&holder) != except
            {
                *shared.entry(holder).or_default() += 1;
            }
        }
        Ok(shared)
    }

    /// Leases left behind by a crash: their holder ended (and wants no rollback) but
    /// died before giving them up. Released at start-up.
    fn release_stale_leases(&self) -> Result<()> {
        let mut stale: BTreeMap<Holder, Vec<String>> = BTreeMap::new();
        for lease in self.ctx.store.leases() {
            let (host, holder) = lease?;
            let alive = match &holder {
                Holder::Rollout { id, .. } => self
                    .lock()
                    .get(id)
                    .is_some_and(|l| !l.state().is_terminal() || l.rollback_pending()),
                Holder::Job { id } => self.jobs().get(id).is_some_and(|j| j.is_active()),
            };
            if !alive {
                stale.entry(holder).or_default().push(host);
            }
        }
        for (holder, hosts) in stale {
            info!(%holder, hosts = hosts.len(), "releasing leases of an ended holder");
            self.ctx
                .store
                .release_leases(&holder, hosts.iter().map(String::as_str))?;
        }
        Ok(())
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
        let inventory = self.ctx.inventory();
        if !req.request_id.is_empty()
            && !req.dry_run
            && let Some(id) = self.ctx.store.restart_job_for_request(&req.request_id)?
        {
            return Ok(((*self.find_job(id)?.snapshot()).clone(), true));
        }
        let (order, _, _) = restart::settings(&req).map_err(|(field, message)| Error::Invalid { field, message })?;
        req.order = order.as_str().to_string();
        // Which hosts: explicit ids, a selector, or (alone) the whole inventory for unhealthy_only.
        let mut candidates: Vec<String> = Vec::new();
        for (i, id) in req.host_ids.iter().enumerate() {
            if inventory.host(id).is_none() {
                return Err(Error::Invalid {
                    field: format!("host_ids[{i}]"),
                    message: format!("`{id}` is not in the inventory; `rollout hosts` lists them"),
                });
            }
            candidates.push(id.clone());
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
        let matched = candidates.len();
        let now = self.ctx.clock.now_ms();
        // Learn health now: unhealthy_only picks by it, and healthy hosts count
        // against their customers' budget.
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
            if let Some(why) = self.ctx.store.lease(&id)? {
                skipped.push(pb::SkippedHost {
                    host_id: id,
                    reason: format!("held by {why}"),
                });
            } else if let Some(err) = unreachable.get(&id) {
                skipped.push(pb::SkippedHost {
                    host_id: id,
                    reason: format!("cannot probe it: {err}"),
                });
            } else {
                let healthy = self.ctx.health.get(&id).is_none_or(|s| s.healthy);
                if !req.unhealthy_only || !healthy {
                    chosen.push((id, healthy));
                }
            }
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
        let id = if req.dry_run { 0 } else { self.ctx.store.next_id()? };
        let host_records: Vec<pb::RestartHostRecord> = chosen
            .iter()
            .map(|(h, healthy)| pb::RestartHostRecord {
                host: Some(pb::RestartHost {
                    host_id: h.clone(),
                    state: pb::RestartHostState::Pending as i32,
                    was_healthy: *healthy,
                    ..Default::default()
                }),
                operation_id: String::new(),
                updated_at_unix_ms: now,
            })
            .collect();
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
        };
        if req.dry_run {
            let job = Job::load(record, host_records, &inventory).map_err(Error::Corrupt)?;
            let at = match req.at_unix_ms {
                0 => self.ctx.hours.now_ms(),
                at => at,
            };
            return Ok((job.preview(&inventory, at), false));
        }
        let audit = actor.event(
            now,
            Target::Job(id),
            format!("restart job {id}: {} hosts, order {}", chosen.len(), req.order),
            "ok",
        );
        if let Err(held) = self
            .ctx
            .store
            .create_restart_job(&record, &host_records, &req.request_id, &[audit])
            .await?
        {
            return Err(Error::Refused(held_by(&held, chosen.len())));
        }
        let job = self.adopt_job(record, host_records)?;
        info!(job = id, hosts = chosen.len(), "restart job started");
        Ok(((*job.snapshot()).clone(), false))
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

    /// Per customer: its hosts in the inventory, how many of them are known to be down
    /// (unhealthy or unreachable) and how many nobody measured (unknown). The sizes
    /// are the restart budget's; only the hosts down or unknown are looked up again.
    pub fn customer_health(&self) -> HashMap<String, health::Counts> {
        let inventory = self.ctx.inventory();
        let mut out: HashMap<String, health::Counts> = restart::customer_sizes(&inventory)
            .into_iter()
            .map(|(c, hosts)| {
                (
                    c,
                    health::Counts {
                        hosts,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let (down, unknown) = self.ctx.health.down_and_unknown(self.ctx.clock.now_ms());
        for (hosts, is_down) in [(down, true), (unknown, false)] {
            for host in hosts {
                for c in inventory
                    .host(&host)
                    .map(|h| h.customers.as_slice())
                    .unwrap_or_default()
                {
                    if let Some(counts) = out.get_mut(c) {
                        if is_down {
                            counts.down += 1;
                        } else {
                            counts.unknown += 1;
                        }
                    }
                }
            }
        }
        out
    }

    /// The clock business hours are judged by, now (unix ms): the controller's
    /// clock, or its drill clock.
    pub fn now_ms(&self) -> i64 {
        self.ctx.hours.now_ms()
    }

    /// What the drill clock reads now, said plainly; None without one.
    pub fn drill_clock(&self) -> Option<String> {
        self.ctx.drill.then(|| {
            format!(
                "drill clock in force: business hours as of {} (not the real time)",
                format_instant(self.ctx.hours.now_ms())
            )
        })
    }

    /// Every restart job, newest first.
    pub fn restart_jobs(&self) -> Vec<Arc<pb::RestartJob>> {
        self.jobs().values().rev().map(|j| j.snapshot()).collect()
    }

    pub fn watch_restart_job(&self, id: u64) -> Result<watch::Receiver<Arc<pb::RestartJob>>> {
        Ok(self.find_job(id)?.subscribe())
    }

    pub async fn cancel_restart_job(&self, id: u64, reason: &str, actor: &Actor) -> Result<pb::RestartJob> {
        let job = self.find_job(id)?;
        let now = self.ctx.clock.now_ms();
        let audit = actor.event(now, Target::Job(id), format!("cancel: {reason}"), "ok");
        job.cancel(&self.ctx.store, reason, now, audit)?;
        self.ctx.store.flush().await?;
        Ok((*job.snapshot()).clone())
    }

    /// An agent's heartbeat: registers its host (new, or changed address, labels or
    /// customers) in the inventory and the store, and records its health.
    pub fn heartbeat(
        &self,
        mut req: pb::HeartbeatRequest,
        peer: Option<std::net::IpAddr>,
        actor: &Actor,
    ) -> Result<bool> {
        if req.host_id.trim().is_empty() {
            return Err(Error::Invalid {
                field: "host_id".into(),
                message: "is empty".into(),
            });
        }
        // A wildcard listen address means "wherever I am": use where the call came from.
        if let (Some(ip), Some((host, port))) = (peer, req.address.rsplit_once(':'))
            && matches!(host, "0.0.0.0" | "[::]" | "" | "::")
        {
            req.address = std::net::SocketAddr::new(ip, port.parse().unwrap_or(0)).to_string();
        }
        if req.address.is_empty() {
            return Err(Error::Invalid {
                field: "address".into(),
                message: "is empty: the controller needs the agent's host:port".into(),
            });
        }
        let now = self.ctx.clock.now_ms();
        let host = crate::fleet::Host {
            id: req.host_id.clone(),
            address: req.address.clone(),
            labels: req.labels.clone().into_iter().collect(),
            customers: req.customers.clone(),
            version: (!req.version.is_empty()).then(|| req.version.clone()),
            healthy: req.healthy,
        };
        let registered = {
            let mut inventory = self.ctx.inventory.write().unwrap_or_else(|p| p.into_inner());
            let same = inventory
                .host(&host.id)
                .is_some_and(|h| h.address == host.address && h.labels == host.labels && h.customers == host.customers);
            if !same {
                let (records, _) = crate::fleet::FleetFile {
                    customers: Vec::new(),
                    hosts: vec![host.clone()],
                }
                .into_records();
                // Checked against the inventory first; stored only if accepted.
                let updated = inventory.with_host(host).map_err(|e| Error::Invalid {
                    field: "customers".into(),
                    message: e.to_string(),
                })?;
                let audit = actor.event(
                    now,
                    Target::None,
                    format!("host `{}` registered at {}", req.host_id, req.address),
                    "ok",
                );
                for r in &records {
                    self.ctx.store.put_host_with_events(r, std::slice::from_ref(&audit))?;
                }
                *inventory = Arc::new(updated);
                info!(host = %req.host_id, address = %req.address, "host registered by heartbeat");
            }
            !same
        };
        self.ctx.health.record(
            &req.host_id,
            health::Seen {
                healthy: req.healthy,
                version: req.version,
                at_ms: now,
                detail: req.detail,
                heartbeat_ms: now,
                heartbeat_interval_ms: req.interval_ms as i64,
            },
        );
        Ok(registered)
    }

    /// The inventory with the last known health and version (probed now if asked).
    pub async fn hosts(&self, unhealthy_only: bool, probe: bool) -> Vec<pb::HostStatus> {
        let now = self.ctx.clock.now_ms();
        let inventory = self.ctx.inventory();
        if probe {
            let ids: Vec<String> = inventory.hosts().iter().map(|h| h.id.clone()).collect();
            for (host, err) in self
                .ctx
                .health
                .probe(&self.ctx.fleet, &inventory, &ids, self.ctx.clock.now_ms())
                .await
            {
                if let Some(mut seen) = self.ctx.health.get(&host) {
                    seen.detail = format!("probe failed: {err}");
                    self.ctx.health.record(&host, seen);
                }
            }
        }
        self.inventory()
            .hosts()
            .iter()
            .filter_map(|h| {
                let seen = self.ctx.health.get(&h.id).unwrap_or_default();
                let reachable = seen.reachable(now);
                let known = seen.known(now);
                (!unhealthy_only || known.is_down()).then(|| pb::HostStatus {
                    health: known.as_str().to_string(),
                    id: h.id.clone(),
                    address: h.address.clone(),
                    labels: h.labels.clone().into_iter().collect(),
                    customers: h.customers.clone(),
                    version: seen.version,
                    healthy: seen.healthy,
                    checked_at_unix_ms: seen.at_ms,
                    reachable,
                    last_heartbeat_unix_ms: seen.heartbeat_ms,
                    detail: seen.detail,
                })
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Live>>> {
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads a stored rollout, registers it, and starts its driver when it has work
    /// left (an unfinished state, or calls in doubt to ask about).
    fn adopt(&self, record: pb::RolloutRecord) -> Result<Arc<Live>> {
        let live = Arc::new(Live::load(
            &self.ctx.store,
            self.ctx.inventory(),
            record,
            self.ctx.hours.now_ms(),
        )?);
        self.lock().insert(live.id, live.clone());
        if live.revive() {
            self.tracker.spawn(driver::drive(live.clone(), self.ctx.clone()));
        }
        Ok(live)
    }

    /// Starts a rollback of rollout `id`: a new rollout, `NAME-rollback`, that returns
    /// every host it touched (succeeded, or with an outcome in doubt) to the version
    /// recorded before its change, in the plan's rollback waves (default: one wave) at
    /// its rollback parallelism (default: max_parallel x 4). It is persisted, resumable
    /// and watchable like any rollout.
    pub async fn start_rollback(&self, id: u64) -> Result<Arc<pb::Rollout>> {
        let _guard = self.submit.lock().await;
        let original = self.find(Key { name: "", id })?;
        let mut targets: Vec<(String, String)> = Vec::new();
        for row in self.ctx.store.rollout_hosts(id) {
            let (host, rec) = row?;
            let touched = rec.state() == pb::HostState::Succeeded
                || (rec.outcome_unknown && rec.state() == pb::HostState::Failed)
                || rec.state() == pb::HostState::Dispatched;
            if touched && !rec.previous_version.is_empty() {
                targets.push((host, rec.previous_version));
            }
        }
        let mut name = format!("{}-rollback", original.name());
        name.truncate(63);
        let mut settled = original.record();
        if !settled.rollback_pending {
            return Err(Error::Refused(format!(
                "rollout `{}` (id {id}) has no rollback waiting to start{}",
                original.name(),
                match settled.rollback_id {
                    0 => String::new(),
                    r => format!("; its rollback is rollout {r}"),
                }
            )));
        }
        settled.rollback_pending = false;
        if targets.is_empty() {
            info!(rollout = original.name(), "nothing to roll back: no host was changed");
            self.ctx.store.put_rollout(&settled)?;
            original.set_rolled_back(settled);
            original.release_leases(&self.ctx.store)?;
            self.ctx.store.flush().await?;
            return Ok(original.snapshot());
        }
        let p = &original.plan;
        let plan = Plan {
            name: name.clone(),
            kind: crate::plan::Kind::Rollback,
            description: format!(
                "rollback of `{}` (id {id}): every host it touched, to its previous version",
                p.name
            ),
            selector: p.selector.clone(),
            version: None,
            waves: p.rollback_waves.clone(),
            order: crate::plan::Order::Stable,
            max_parallel: p.rollback_max_parallel,
            bake: std::time::Duration::ZERO,
            max_failed: p.max_failed,
            on_failure: crate::plan::FailureAction::Halt,
            preempt: None,
            rollback_waves: p.rollback_waves.clone(),
            rollback_max_parallel: p.rollback_max_parallel,
            progress_deadline: p.progress_deadline,
            min_healthy: None,
        };
        if let Some(active) = self
            .lock()
            .values()
            .find(|l| l.name() == name && !l.state().is_terminal())
        {
            return Err(Error::AlreadyExists(format!(
                "rollback `{name}` is already running (id {})",
                active.id
            )));
        }
        let now = self.ctx.clock.now_ms();
        let mut record = pb::RolloutRecord {
            id: self.ctx.store.next_id()?,
            name,
            plan: Some(plan.to_spec()),
            hosts_selected: targets.len() as u64,
            created_at_unix_ms: now,
            updated_at_unix_ms: now,
            ..Default::default()
        };
        State::Pending.write(&mut record);
        settled.rollback_id = record.id;
        let started = Actor::controller().event(
            now,
            Target::Rollout {
                id: record.id,
                name: &record.name,
            },
            format!(
                "rollback started: {} hosts of rollout `{}` (id {id})",
                targets.len(),
                original.name()
            ),
            "ok",
        );
        let hosts: Vec<(&str, &str)> = targets.iter().map(|(h, v)| (h.as_str(), v.as_str())).collect();
        // The rollback takes the leases from the rollout it undoes, and that rollout's
        // record says so, in one transaction.
        let from = original.holder();
        if let Err(held) = self
            .ctx
            .store
            .create_rollout(&record, &hosts, &|h| *h == from, Some(&settled), &[started])
            .await?
        {
            return Err(Error::Refused(held_by(&held, hosts.len())));
        }
        original.set_rolled_back(settled);
        // Hosts it held but never changed are free now.
        original.release_leases(&self.ctx.store)?;
        let live = self.adopt(record)?;
        info!(rollback = live.name(), hosts = targets.len(), "rollback started");
        Ok(live.snapshot())
    }

    /// Waits until every driver has stopped (after the shutdown token fired).
    pub async fn stopped(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        self.ctx.inventory()
    }

    /// Starts a rollout of `plan` (or previews it). Idempotent by `request_id`.
    /// `at` (dry runs only): order and explain the waves as at that instant (unix ms).
    pub async fn submit(&self, plan: Plan, dry_run: bool, at: Option<i64>, actor: &Actor) -> Result<Submitted> {
        let request_id = actor.request_id.as_str();
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        if at.is_some() && !dry_run {
            return Err(at_refused());
        }
        let _guard = self.submit.lock().await;
        let inventory = self.ctx.inventory();
        let spec = plan.to_spec();
        if !request_id.is_empty()
            && !dry_run
            && let Some(id) = self.ctx.store.rollout_for_request(request_id)?
        {
            let live = self.find(Key { name: "", id })?;
            if live.plan != plan {
                return Err(Error::AlreadyExists(format!(
                    "request_id `{request_id}` was already used for rollout `{}` (id {id}) with a different plan; use a new request_id",
                    live.name()
                )));
            }
            return Ok(Submitted {
                rollout: (*live.snapshot()).clone(),
                replayed: true,
                preview: Vec::new(),
                conflicts: Vec::new(),
            });
        }
        let mut hosts: Vec<String> = self
            .ctx
            .inventory()
            .select(&plan.selector)
            .map(|h| h.id.clone())
            .collect();
        if hosts.is_empty() {
            let wanted: Vec<String> = plan
                .selector
                .iter()
                .map(|(k, v)| format!("{k} in [{}]", v.join(", ")))
                .collect();
            return Err(Error::Invalid {
                field: "selector".into(),
                message: format!(
                    "matches no host of the inventory ({} hosts): no host has {}; check the labels with the fleet file",
                    inventory.len(),
                    wanted.join(" and ")
                ),
            });
        }
        if let Some(active) = self
            .lock()
            .values()
            .find(|l| l.name() == plan.name && !l.state().is_terminal())
        {
            return Err(Error::AlreadyExists(format!(
                "rollout `{}` is already active (id {}, {}); wait for it, abort it, or pick another name",
                plan.name,
                active.id,
                active.state().name()
            )));
        }
        // Leases: a host belongs to one active rollout or restart job at a time.
        let shared = self.conflicts(&hosts, None)?;
        let conflicts: Vec<pb::Conflict> = shared
            .iter()
            .map(|(holder, n)| pb::Conflict {
                holder: holder.to_string(),
                shared_hosts: *n,
            })
            .collect();
        let mut preempted = None;
        if !dry_run && !shared.is_empty() {
            let blocking: Vec<String> = shared
                .iter()
                .filter(|(holder, _)| !matches!(holder, Holder::Rollout { name, .. } if plan.preempt.as_deref() == Some(name.as_str())))
                .map(|(holder, n)| format!("{n} of its {} hosts are held by {holder}", hosts.len()))
                .collect();
            if !blocking.is_empty() {
                return Err(Error::Refused(format!(
                    "{}; wait for it, abort it, or set `preempt: NAME` in the plan to pause that rollout",
                    blocking.join("; ")
                )));
            }
            preempted = shared.keys().find_map(|h| match h {
                Holder::Rollout { id, .. } => Some(*id),
                Holder::Job { .. } => None,
            });
        }
        if let Some(id) = preempted {
            let other = self.find(Key { name: "", id })?;
            if matches!(
                other.state(),
                State::Running { .. } | State::Baking { .. } | State::Pending
            ) {
                let now = self.ctx.clock.now_ms();
                let why = actor.event(
                    now,
                    Target::Rollout {
                        id: other.id,
                        name: other.name(),
                    },
                    format!("paused: preempted by `{}`", plan.name),
                    "ok",
                );
                other.transition(&self.ctx.store, Event::Pause, now, Some(why))?;
                info!(paused = other.name(), by = plan.name, "preempted");
            }
        }
        let now = self.ctx.clock.now_ms();
        let mut record = pb::RolloutRecord {
            id: 0,
            name: plan.name.clone(),
            plan: Some(spec),
            hosts_selected: hosts.len() as u64,
            created_at_unix_ms: now,
            updated_at_unix_ms: now,
            request_id: if dry_run { String::new() } else { request_id.to_string() },
            ..Default::default()
        };
        State::Pending.write(&mut record);
        if dry_run {
            let at = at.unwrap_or_else(|| self.ctx.hours.now_ms());
            order::arrange(&mut hosts, plan.order, &inventory, at);
            let preview = self.preview(&plan, &hosts, at);
            let live = Live::preview(inventory, record, &hosts, at)?;
            return Ok(Submitted {
                rollout: (*live.snapshot()).clone(),
                replayed: false,
                preview,
                conflicts,
            });
        }
        record.id = self.ctx.store.next_id()?;
        let rows: Vec<(&str, &str)> = hosts.iter().map(|h| (h.as_str(), "")).collect();
        let preempting = plan.preempt.as_deref();
        let may_take = |h: &Holder| matches!(h, Holder::Rollout { name, .. } if Some(name.as_str()) == preempting);
        let audit = actor.event(
            now,
            Target::Rollout {
                id: record.id,
                name: &record.name,
            },
            format!("{} hosts selected", hosts.len()),
            "ok",
        );
        if let Err(held) = self
            .ctx
            .store
            .create_rollout(&record, &rows, &may_take, None, &[audit])
            .await?
        {
            return Err(Error::Refused(held_by(&held, hosts.len())));
        }
        let live = self.adopt(record)?;
        info!(rollout = live.name(), id = live.id, hosts = hosts.len(), "submitted");
        let rollout = (*live.snapshot()).clone();
        Ok(Submitted {
            rollout,
            replayed: false,
            preview: Vec::new(),
            conflicts: Vec::new(),
        })
    }

    /// The hosts each wave would take if the rollout started now, and whose hosts
    /// they are: each customer's local time and tier now.
    fn preview(&self, plan: &Plan, ordered: &[String], now_ms: i64) -> Vec<pb::WavePreview> {
        let n = ordered.len() as u64;
        let inventory = self.ctx.inventory();
        let snapshot = inventory.calendar().snapshot(now_ms);
        let mut before = 0u64;
        let mut waves = Vec::with_capacity(plan.waves.len());
        for (k, pct) in plan.waves.iter().enumerate() {
            let target = plan.wave_target(k, n);
            let hosts = &ordered[before as usize..target as usize];
            let mut customers: Vec<pb::CustomerSlot> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            for h in hosts {
                let host_customers = inventory.host(h).map(|x| x.customers.as_slice()).unwrap_or_default();
                let place = crate::hours::Calendar::place(&snapshot, h, host_customers);
                match index.get(&place.customer) {
                    Some(&i) => customers[i].hosts += 1,
                    None => {
                        index.insert(place.customer.clone(), customers.len());
                        customers.push(pb::CustomerSlot {
                            customer: place.customer,
                            local_time: place.local_time,
                            tier: place.key.0.as_str().to_string(),
                            why: place.why,
                            hosts: 1,
                        });
                    }
                }
            }
            customers.truncate(self.options.preview_limit);
            waves.push(pb::WavePreview {
                index: k as u32,
                percent: pct.to_string(),
                cumulative_hosts: target,
                new_hosts: target - before,
                host_ids: hosts.iter().take(self.options.preview_limit).cloned().collect(),
                customers,
            });
            before = target;
        }
        waves
    }

    fn find(&self, key: Key<'_>) -> Result<Arc<Live>> {
        let rollouts = self.lock();
        let found = if key.id != 0 {
            rollouts.get(&key.id).cloned()
        } else {
            let named = || rollouts.values().rev().filter(|l| l.name() == key.name);
            named()
                .find(|l| !l.state().is_terminal())
                .or_else(|| named().next())
                .cloned()
        };
        found.ok_or_else(|| {
            Error::NotFound(if key.id != 0 {
                format!("no rollout has id {}", key.id)
            } else {
                format!("no rollout is named `{}`; `rollout status` lists them", key.name)
            })
        })
    }

    /// The rollout's current snapshot.
    pub fn get(&self, key: Key<'_>) -> Result<Arc<pb::Rollout>> {
        Ok(self.find(key)?.snapshot())
    }

    /// Every rollout, newest first, optionally only in some states.
    pub fn list(&self, states: &[pb::RolloutState]) -> Vec<Arc<pb::Rollout>> {
        self.lock()
            .values()
            .rev()
            .map(|l| l.snapshot())
            .filter(|r| states.is_empty() || states.contains(&r.state()))
            .collect()
    }

    /// A receiver of the rollout's snapshots: the current one, then each change.
    pub fn watch(&self, key: Key<'_>) -> Result<watch::Receiver<Arc<pb::Rollout>>> {
        Ok(self.find(key)?.subscribe())
    }

    /// Applies an operator's event (pause, resume, abort) and returns the new snapshot.
    /// Writes a refused change to the audit log (nothing else changed) and flushes.
    pub async fn record_refusal(&self, actor: &Actor, target: Target<'_>, message: &str) {
        let event = actor.event(self.ctx.clock.now_ms(), target, String::new(), message);
        let written = match self.ctx.store.append_event(&event) {
            Ok(()) => self.ctx.store.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }

    /// The audit log: the newest `limit` events at or after `since_ms`, of rollout
    /// `rollout` (by name; empty: all), oldest first.
    pub fn events(&self, since_ms: i64, rollout: &str, limit: usize) -> Result<Vec<pb::EventRecord>> {
        Ok(self
            .ctx
            .store
            .recent_events(since_ms, limit, |e| rollout.is_empty() || e.rollout_name == rollout)?)
    }

    /// A repeated `request_id` returns the first answer and does nothing again.
    pub async fn control(&self, key: Key<'_>, event: Event, actor: &Actor) -> Result<Arc<pb::Rollout>> {
        let request_id = actor.request_id.as_str();
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let _guard = self.submit.lock().await;
        if !request_id.is_empty()
            && let Some(answer) = self.ctx.store.action_answer(request_id)?
        {
            return Ok(Arc::new(answer));
        }
        let live = self.find(key)?;
        if event == Event::Resume && matches!(live.state(), State::Paused { .. } | State::Halted { .. }) {
            // A preempted rollout takes its hosts back, all or none.
            let hosts = self.ctx.store.rollout_host_ids(live.id)?;
            if let Err(held) = self.ctx.store.lease_hosts(&live.holder(), &hosts)? {
                let (holder, n) = held.first();
                return Err(Error::Refused(format!(
                    "{n} of its hosts are held by {holder} (which preempted it, or started since); wait for it to end or abort it, then resume"
                )));
            }
        }
        if event == Event::Retry && live.state().is_terminal() {
            // A finished rollout gave its hosts up: the failed ones are taken again,
            // all or none, before anything is requeued (and any a crash left requeued
            // by an earlier retry whose record did not follow: they go too).
            let failed: Vec<String> = self
                .ctx
                .store
                .rollout_hosts(live.id)
                .filter_map(|row| match row {
                    Ok((h, r)) if matches!(r.state(), pb::HostState::Failed | pb::HostState::Assigned) => Some(Ok(h)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<std::result::Result<_, _>>()?;
            if let Err(held) = self.ctx.store.lease_hosts(&live.holder(), &failed)? {
                let (holder, n) = held.first();
                return Err(Error::Refused(format!(
                    "{n} of its {} failed hosts are held by {holder} now; wait for it to end or abort it, then retry",
                    failed.len()
                )));
            }
        }
        let now = self.ctx.clock.now_ms();
        let detail = match &event {
            Event::Abort { reason, rollback } => format!(
                "abort{}{}",
                if *rollback { " and roll back" } else { "" },
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(": {reason}")
                }
            ),
            other => format!("{other:?}").to_lowercase(),
        };
        let audit = actor.event(
            now,
            Target::Rollout {
                id: live.id,
                name: live.name(),
            },
            detail,
            "ok",
        );
        let rollback = live.transition(&self.ctx.store, event, now, Some(audit))?;
        if live.revive() {
            // A retried rollout that had ended runs again.
            self.tracker.spawn(driver::drive(live.clone(), self.ctx.clone()));
        }
        drop(_guard);
        if rollback {
            self.start_rollback(live.id).await?;
        }
        self.ctx.store.flush().await?;
        live.mark_durable();
        let answer = live.snapshot();
        if !request_id.is_empty() {
            self.ctx.store.put_action_answer(request_id, &answer)?;
            self.ctx.store.flush().await?;
        }
        Ok(answer)
    }
}

/// A what-if instant on a real change: it would run now, not then.
fn at_refused() -> Error {
    Error::Invalid {
        field: "at".into(),
        message: "a what-if instant is for dry runs only (--dry-run --at TIME); a real change runs now".into(),
    }
}

/// An instant as people read it in the audit log and status: RFC 3339 in UTC.
pub fn format_instant(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| ms.to_string(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// "12 of its 40 hosts are held by active rollout `x` (id 3); ..." for a lease refusal.
fn held_by(held: &crate::store::Held, total: usize) -> String {
    let parts: Vec<String> = held
        .0
        .iter()
        .map(|(holder, n)| format!("{n} of its {total} hosts are held by {holder}"))
        .collect();
    format!(
        "{}; wait for it, abort it, or set `preempt: NAME` in the plan to pause that rollout",
        parts.join("; ")
    )
}
