//! The engine: turns validated plans into rollouts and carries them out.
//!
//! - [`state`]: the state machine, a pure step function tested with a fake clock;
//! - [`order`]: which hosts go first when a wave is filled;
//! - [`rollout`]: one rollout in memory (counters, queues, snapshots), rebuilt from
//!   the store at start-up;
//! - [`driver`]: the task that runs a rollout: intents, agent calls, results, bakes;
//! - [`fleet`]: the `Fleet` trait through which agents are reached.
//!
//! The [`Engine`] owns the rollouts, answers the API's questions, and on start
//! resumes every unfinished rollout where the store says it was.

mod driver;
pub mod fleet;
pub mod order;
mod rollout;
pub mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

pub use fleet::{CallError, Fleet, GrpcFleet, SharedFleet};
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

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts listed per wave in a dry run.
    pub preview_limit: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options { preview_limit: 20 }
    }
}

/// What the drivers share.
pub(crate) struct Context {
    pub store: Store,
    pub fleet: SharedFleet,
    pub clock: Arc<dyn Clock>,
    pub shutdown: CancellationToken,
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
}

/// The engine: every rollout, active or finished, and the tasks driving them.
pub struct Engine {
    ctx: Arc<Context>,
    inventory: Arc<Inventory>,
    options: Options,
    rollouts: Mutex<BTreeMap<u64, Arc<Live>>>,
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
        let engine = Arc::new(Engine {
            ctx: Arc::new(Context {
                store,
                fleet,
                clock,
                shutdown,
            }),
            inventory,
            options,
            rollouts: Mutex::new(BTreeMap::new()),
            submit: tokio::sync::Mutex::new(()),
            tracker: TaskTracker::new(),
        });
        for record in engine.ctx.store.rollouts()? {
            let live = engine.adopt(record)?;
            let state = live.state();
            if !state.is_terminal() {
                info!(
                    rollout = live.name(),
                    id = live.id,
                    state = state.name(),
                    "resuming"
                );
            }
        }
        Ok(engine)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Live>>> {
        self.rollouts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads a stored rollout, registers it, and starts its driver when it has work
    /// left (an unfinished state, or calls in doubt to ask about).
    fn adopt(&self, record: pb::RolloutRecord) -> Result<Arc<Live>> {
        let live = Arc::new(Live::load(&self.ctx.store, self.inventory.clone(), record)?);
        self.lock().insert(live.id, live.clone());
        if !live.state().is_terminal() || live.has_reconcile() {
            self.tracker
                .spawn(driver::drive(live.clone(), self.ctx.clone()));
        }
        Ok(live)
    }

    /// Waits until every driver has stopped (after the shutdown token fired).
    pub async fn stopped(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Starts a rollout of `plan` (or previews it). Idempotent by `request_id`.
    pub async fn submit(&self, plan: Plan, request_id: &str, dry_run: bool) -> Result<Submitted> {
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let _guard = self.submit.lock().await;
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
            });
        }
        let mut hosts: Vec<String> = self
            .inventory
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
                    self.inventory.len(),
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
        let now = self.ctx.clock.now_ms();
        let mut record = pb::RolloutRecord {
            id: 0,
            name: plan.name.clone(),
            plan: Some(spec),
            hosts_selected: hosts.len() as u64,
            created_at_unix_ms: now,
            updated_at_unix_ms: now,
            request_id: if dry_run {
                String::new()
            } else {
                request_id.to_string()
            },
            ..Default::default()
        };
        State::Pending.write(&mut record);
        if dry_run {
            order::arrange(&mut hosts, plan.order);
            let preview = self.preview(&plan, &hosts);
            let live = Live::preview(self.inventory.clone(), record, &hosts)?;
            return Ok(Submitted {
                rollout: (*live.snapshot()).clone(),
                replayed: false,
                preview,
            });
        }
        record.id = self.ctx.store.next_id()?;
        self.ctx
            .store
            .create_rollout(&record, hosts.iter().map(String::as_str))
            .await?;
        self.ctx.store.append_event(&pb::EventRecord {
            at_unix_ms: now,
            rollout_id: record.id,
            rollout_name: record.name.clone(),
            kind: "submitted".into(),
            detail: format!("{} hosts selected", hosts.len()),
        })?;
        let live = self.adopt(record)?;
        info!(
            rollout = live.name(),
            id = live.id,
            hosts = hosts.len(),
            "submitted"
        );
        let rollout = (*live.snapshot()).clone();
        Ok(Submitted {
            rollout,
            replayed: false,
            preview: Vec::new(),
        })
    }

    /// The hosts each wave would take if the rollout started now.
    fn preview(&self, plan: &Plan, ordered: &[String]) -> Vec<pb::WavePreview> {
        let n = ordered.len() as u64;
        let mut before = 0u64;
        plan.waves
            .iter()
            .enumerate()
            .map(|(k, pct)| {
                let target = plan.wave_target(k, n);
                let ids = ordered[before as usize..target as usize]
                    .iter()
                    .take(self.options.preview_limit)
                    .cloned()
                    .collect();
                let wave = pb::WavePreview {
                    index: k as u32,
                    percent: pct.to_string(),
                    cumulative_hosts: target,
                    new_hosts: target - before,
                    host_ids: ids,
                };
                before = target;
                wave
            })
            .collect()
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
                format!(
                    "no rollout is named `{}`; `rollout status` lists them",
                    key.name
                )
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
    pub async fn control(&self, key: Key<'_>, event: Event) -> Result<Arc<pb::Rollout>> {
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let live = self.find(key)?;
        live.transition(&self.ctx.store, event, self.ctx.clock.now_ms())?;
        self.ctx.store.flush().await?;
        Ok(live.snapshot())
    }
}
