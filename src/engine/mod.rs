//! The engine: turns validated plans into rollouts and carries them out. Each concern
//! has its room:
//!
//! - [`state`]: the rollout state machine, a pure step function tested with a fake
//!   clock: every consequence of a transition (host work, gates, audit lines,
//!   notifications) is one of its typed decisions;
//! - [`rollout`]: one rollout in memory (counters, queues, snapshots), rebuilt from
//!   the store at start-up, and the three phases that carry a transition out;
//!   `rollout_task`: the task that runs it (waves, bakes, health gates);
//!   `dispatcher`: the one way hosts are sent work, a wave's or a restart job's
//!   (intents, operations in flight, results, a stuck wave), a state machine tested
//!   on paused time;
//! - `submit`: how a rollout is submitted or previewed; `rollouts`: finding rollouts and
//!   the operator's actions on them (pause, resume, abort, retry); `rollback`: the
//!   rollback of what a rollout touched;
//! - `results`: per-host results, paged, and failures grouped by reason;
//! - [`order`]: which hosts go first when a wave is filled;
//! - `bake`: the analysis of a bake; `approval`: the rules of approval gates;
//!   `notification`: what each notification says;
//! - `restarts`: the restart jobs' API; `job`: one restart job and the task that runs
//!   it; [`queue`]: its queue, ranked by business hours within a budget;
//! - `hosts`: heartbeats and the hosts' listing; [`health`]: what is known of each
//!   host's health and version;
//! - `leases`: who holds a host; [`audit`]: who asked for what, and the audit log;
//! - hosts are reached through [`crate::reach`]'s `Fleet` trait (re-exported here);
//!   time through [`crate::clock`] (re-exported here).
//!
//! The [`Engine`] (this file) owns the parts; on start it resumes every unfinished
//! rollout and restart job where the store says it was.

mod approval;
pub mod audit;
mod bake;
mod dispatcher;
mod freezes;
pub mod health;
mod hold;
mod hosts;
mod job;
mod leases;
mod notification;
pub mod order;
pub mod queue;
mod restarts;
mod results;
mod rollback;
mod rollout;
mod rollout_task;
mod rollouts;
pub mod state;
mod submit;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use crate::clock::{Clock, DrillClock, SystemClock, format_instant};
pub use crate::reach::{CallError, Fleet, GrpcFleet, RetryPolicy, SharedFleet};
use health::HealthBook;
use job::Job;
use leases::held_by;
pub use rollout::Approved;
use rollout::{At, Live};
pub use rollouts::Action;
pub use state::{Event, State};
use submit::at_refused;

use crate::inventory::Inventory;
use crate::proto::v1 as pb;
use crate::store::{self, Store};
use crate::telemetry::prometheus::Prometheus;

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
    /// The caller's role may not do this here (a gate that needs admin).
    #[error("{0}")]
    Forbidden(String),
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

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts listed per wave in a dry run.
    pub preview_limit: usize,
    /// Run business hours on a drill clock starting at this instant (unix ms).
    pub drill_from_ms: Option<i64>,
    /// The client plans' analyses ask Prometheus with (the site's CA and token);
    /// None: one without either.
    pub prometheus: Option<Arc<Prometheus>>,
    /// Host actions in flight at once across the controller (`--max-in-flight`):
    /// a rollout's max_parallel above it is limited to it, and says so.
    pub max_in_flight: usize,
    /// The freeze calendar (`--freeze-calendar FILE`), read at start and at SIGHUP.
    pub freeze_calendar: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            preview_limit: 20,
            drill_from_ms: None,
            prometheus: None,
            max_in_flight: crate::reach::RetryPolicy::default().max_in_flight,
            freeze_calendar: None,
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
    /// Asks Prometheus for the plans' analyses (None: the client could not be built,
    /// and every measurement is inconclusive, saying why).
    pub prometheus: Option<Arc<Prometheus>>,
    /// Host actions in flight at once across the controller (`--max-in-flight`).
    pub max_in_flight: usize,
    /// The freezes and the freeze calendar: what holds hosts.
    pub freezes: freezes::FreezeBook,
}

impl Context {
    /// The current inventory.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Now, by the wall clock and by the clock business hours are judged by.
    pub fn at(&self) -> At {
        At {
            wall_ms: self.clock.now_ms(),
            hours_ms: self.hours.now_ms(),
            drill: self.drill,
        }
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
    /// For a dry run: the price of each order at `max_parallel` a minute.
    pub prices: Vec<pb::OrderPrice>,
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
    /// The runtime the engine's tasks run on. The API is served on a runtime of its
    /// own, so that a busy engine never keeps a read waiting; a rollout that an API
    /// call starts (or revives) must still be driven here.
    runtime: tokio::runtime::Handle,
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
        let (rollbacks, requests) = tokio::sync::mpsc::unbounded_channel::<u64>();
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
                freezes: Default::default(),
                max_in_flight: options.max_in_flight.max(1),
                prometheus: options.prometheus.clone().or_else(|| {
                    Prometheus::new(&Default::default())
                        .inspect_err(|e| warn!(error = %e, "analysis cannot ask Prometheus"))
                        .ok()
                        .map(Arc::new)
                }),
            }),
            options,
            rollouts: Mutex::new(BTreeMap::new()),
            jobs: Mutex::new(BTreeMap::new()),
            submit: tokio::sync::Mutex::new(()),
            tracker: TaskTracker::new(),
            runtime: tokio::runtime::Handle::current(),
        });
        engine.record_drill_clock()?;
        engine.start_freezes(engine.options.freeze_calendar.clone())?;
        engine.resume_rollouts()?;
        engine.serve_rollback_requests(requests);
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

    /// A drill clock goes on the audit log when the controller starts with one.
    fn record_drill_clock(&self) -> Result<()> {
        let Some(from) = self.options.drill_from_ms else {
            return Ok(());
        };
        let now = self.ctx.clock.now_ms();
        let line = format!(
            "drill clock in force: business hours are judged as if it were {} when the controller started ({} real time), advancing in real time",
            format_instant(from),
            format_instant(now)
        );
        info!("{line}");
        let mut event = Actor::controller().event(now, Target::None, line, "ok");
        event.kind = "drill-clock".into();
        self.ctx.store.append_event(&event)?;
        Ok(())
    }

    /// Loads every stored rollout and starts the drivers of the unfinished ones, each
    /// with a line on its timeline where the controller went away and came back.
    fn resume_rollouts(&self) -> Result<()> {
        // Unfinished rollouts first: their drivers start dispatching while the
        // finished ones (often far more rows) are still being read.
        let mut records = self.ctx.store.rollouts()?;
        records.sort_by_key(|r| State::from_record(r).is_terminal());
        for record in records {
            let live = self.adopt(record)?;
            let state = live.state();
            if state.is_terminal() {
                continue;
            }
            info!(rollout = live.name(), id = live.id, state = state.name(), "resuming");
            let target = Target::Rollout {
                id: live.id,
                name: live.name(),
            };
            let line = format!(
                "controller restarted: resuming, {} wave {}",
                state.name(),
                state.wave() + 1
            );
            let mut event = Actor::controller().event(self.ctx.clock.now_ms(), target, line, "ok");
            event.kind = "resumed".into();
            self.ctx.store.append_event(&event)?;
        }
        Ok(())
    }

    /// Creates the rollbacks that drivers ask for (on_failure.action: rollback): only
    /// the engine creates rollouts.
    fn serve_rollback_requests(self: &Arc<Self>, mut requests: tokio::sync::mpsc::UnboundedReceiver<u64>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.ctx.shutdown.clone();
        self.spawn(async move {
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
    }

    /// Starts one of the engine's tasks (a driver) on the engine's runtime, whichever
    /// runtime the caller is on.
    pub(super) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tracker.spawn_on(task, &self.runtime);
    }

    pub(super) fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Now by the controller's wall clock (unix ms): the injected clock every
    /// record is stamped with.
    pub fn wall_ms(&self) -> i64 {
        self.ctx.clock.now_ms()
    }

    /// The clock business hours are judged by, now (unix ms): the controller's
    /// clock, or its drill clock.
    pub fn now_ms(&self) -> i64 {
        self.ctx.hours.now_ms()
    }

    /// What limits a plan's max_parallel on this controller, in one line; None when
    /// nothing does.
    pub fn limits(&self, plan: Option<&pb::PlanSpec>) -> Option<String> {
        let asked = plan?.max_parallel as usize;
        (asked > self.options.max_in_flight).then(|| {
            format!(
                "max_parallel {} is limited to {} by this controller's --max-in-flight",
                crate::summary::count(asked as u64),
                crate::summary::count(self.options.max_in_flight as u64)
            )
        })
    }

    /// What the drill clock reads now, said plainly; None without one.
    pub fn drill_clock(&self) -> Option<String> {
        self.ctx
            .drill
            .then(|| crate::clock::drill_text(self.ctx.hours.now_ms()))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Live>>> {
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every driver has stopped (after the shutdown token fired).
    pub async fn stopped(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    pub fn inventory(&self) -> Arc<Inventory> {
        self.ctx.inventory()
    }
}

/// An operation id: its owner (`r7` for rollout 7, `j3` for restart job 3), the
/// store's instance name, and the rest (host, attempt). A store made afresh has
/// another instance name, so its ids never meet one a host already ran; ids made
/// before instance names existed, or in a dry run, have none.
pub(crate) fn operation_id(owner: &str, instance: &str, rest: &str) -> String {
    if instance.is_empty() {
        format!("{owner}-{rest}")
    } else {
        format!("{owner}.{instance}-{rest}")
    }
}
