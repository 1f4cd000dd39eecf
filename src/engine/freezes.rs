//! Freezes in the engine: an admin stops the line (`rollout freeze`) and starts it
//! again (`rollout unfreeze`), a freeze ends at its `--until` by itself, and the
//! freeze calendar is read (at start and at SIGHUP). Each freeze is stored with its
//! audit line and its notification in one transaction; the [`Board`] every
//! dispatcher reads is rebuilt after each change, and the rollouts and restart jobs
//! that may wait on it are woken.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tracing::{info, warn};

use super::audit::{Actor, Target};
use super::{Engine, Error, Result, State};
use crate::event_type::EventType;
use crate::freeze::{self, Board, calendar::Calendar};
use crate::proto::v1 as pb;

/// The longest a freeze's reason may be.
const MAX_REASON: usize = 500;
/// The freeze task looks again at least this often (the calendar's windows move with
/// the clock, a drill clock included).
const TICK: Duration = Duration::from_secs(30);

/// The freeze calendar file, what it said, and why its last re-read was refused.
#[derive(Default)]
struct CalendarFile {
    path: Option<PathBuf>,
    parsed: Calendar,
    error: String,
}

/// The freezes the engine knows: those people set (ended ones included, for the
/// listing), the calendar, and the board built from both.
#[derive(Default)]
pub(crate) struct FreezeBook {
    board: RwLock<Arc<Board>>,
    manual: Mutex<Vec<pb::Freeze>>,
    calendar: Mutex<CalendarFile>,
    /// Wakes the freeze task when something changed.
    changed: Arc<tokio::sync::Notify>,
}

impl FreezeBook {
    /// What holds hosts now.
    pub fn board(&self) -> Arc<Board> {
        self.board.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets when freeze `id` started (a freeze is on the board before it says since
    /// when).
    fn set_started(&self, id: u64, at_ms: i64) {
        if let Some(f) = self.manual().iter_mut().find(|f| f.id == id) {
            f.started_at_unix_ms = at_ms;
        }
    }

    fn clone_notify(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    fn manual(&self) -> std::sync::MutexGuard<'_, Vec<pb::Freeze>> {
        self.manual.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn calendar(&self) -> std::sync::MutexGuard<'_, CalendarFile> {
        self.calendar.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the board again: the freezes people set that have not ended, and the
    /// calendar's windows from a day before `hours_ms` to [`freeze::HORIZON_MS`] after.
    fn rebuild(&self, hours_ms: i64, drill: bool) {
        let (windows, file) = {
            let cal = self.calendar();
            let file = cal.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
            (
                cal.parsed.windows(hours_ms - 86_400_000, hours_ms + freeze::HORIZON_MS),
                file,
            )
        };
        let windows = windows.iter().map(|w| freeze::window_freeze(w, &file, drill)).collect();
        let board = Board::new(self.manual().clone(), windows);
        *self.board.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(board);
    }

    /// Reads the calendar file; a file that does not parse keeps the calendar in
    /// force and says why. Returns the audit line and its result.
    fn read_calendar(&self) -> Option<(String, String)> {
        let mut cal = self.calendar();
        let path = cal.path.clone()?;
        let read = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|text| Calendar::parse(&text));
        Some(match read {
            Ok(parsed) => {
                cal.parsed = parsed;
                cal.error.clear();
                (format!("freeze calendar read: {}", path.display()), "ok".to_string())
            }
            Err(e) => {
                let why = format!("{}: {e}", path.display());
                cal.error = why.clone();
                (
                    format!(
                        "freeze calendar not re-read ({}): the calendar read before stays in force",
                        path.display()
                    ),
                    why,
                )
            }
        })
    }
}

/// A freeze's notification: `freeze.started` (seq 1) or `freeze.ended` (seq 2), with
/// its status text.
fn notice(f: &pb::Freeze, kind: EventType, message: String, now_ms: i64) -> pb::Notification {
    let seq = if kind == EventType::FreezeEnded { 2 } else { 1 };
    let selector: serde_json::Map<String, serde_json::Value> = freeze::selector(f)
        .into_iter()
        .map(|(k, v)| (k, serde_json::json!(v)))
        .collect();
    let data = serde_json::json!({
        "kind": "freeze",
        "seq": seq,
        "freeze": {
            "id": f.id,
            "reason": f.reason,
            "set_by": f.set_by,
            "selector": selector,
            "started_at": crate::clock::format_instant(f.started_at_unix_ms),
            "until": (f.until_unix_ms != 0).then(|| crate::clock::format_instant(f.until_unix_ms)),
            "ended_at": (f.ended_at_unix_ms != 0).then(|| crate::clock::format_instant(f.ended_at_unix_ms)),
            "ended_by": f.ended_by,
        },
        "message": message,
    });
    pb::Notification {
        id: format!("freeze-{}-{seq}", f.id),
        r#type: kind.to_string(),
        subject: format!("freeze-{}", f.id),
        freeze_id: f.id,
        seq,
        at_unix_ms: now_ms,
        data_json: data.to_string(),
        ..Default::default()
    }
}

impl Engine {
    /// The freeze calendar file to read at start and at SIGHUP.
    pub(super) fn start_freezes(self: &Arc<Self>, calendar: Option<PathBuf>) -> Result<()> {
        let book = &self.ctx.freezes;
        *book.manual() = self.ctx.store.freezes()?;
        book.calendar().path = calendar;
        if let Some((line, result)) = book.read_calendar()
            && result != "ok"
        {
            warn!(error = %result, "{line}");
        }
        book.rebuild(self.ctx.hours.now_ms(), self.ctx.drill);
        self.watch_freezes();
        Ok(())
    }

    /// Reads the freeze calendar again (SIGHUP): the audit line and its result; None
    /// without `--freeze-calendar`.
    pub fn reload_freeze_calendar(&self) -> Option<(String, String)> {
        let book = &self.ctx.freezes;
        let read = book.read_calendar()?;
        book.rebuild(self.ctx.hours.now_ms(), self.ctx.drill);
        book.changed.notify_one();
        self.wake_waiting();
        Some(read)
    }

    /// Stops the line: stores the freeze with its audit line and `freeze.started`, and
    /// holds every host it covers from now. Idempotent by request id.
    pub async fn freeze(&self, req: pb::FreezeRequest, actor: &Actor) -> Result<(pb::Freeze, bool)> {
        if self.ctx.shutdown.is_cancelled() {
            return Err(Error::ShuttingDown);
        }
        let _guard = self.submit.lock().await;
        if !req.request_id.is_empty()
            && let Some(id) = self.ctx.store.freeze_for_request(&req.request_id)?
            && let Some(f) = self.ctx.freezes.manual().iter().find(|f| f.id == id)
        {
            return Ok((f.clone(), true));
        }
        let mut f = checked(&req, actor, self.ctx.clock.now_ms())?;
        f.id = self.ctx.store.next_id()?;
        // The line stops before the freeze says since when: it goes on the board
        // first, and its start is read after, so that every host started after it
        // was picked with this freeze on the board (a dispatcher reads its clock,
        // then the board).
        self.ctx.freezes.manual().push(f.clone());
        self.freezes_changed();
        let now = self.ctx.clock.now_ms();
        f.started_at_unix_ms = now;
        self.ctx.freezes.set_started(f.id, now);
        let waiting = self.active_names();
        let message = crate::summary::freeze_started(&f, &waiting);
        let line = format!(
            "freeze {} set: {} {}: {}",
            f.id,
            freeze::scope(&freeze::selector(&f)),
            match f.until_unix_ms {
                0 => "until unfrozen".to_string(),
                ms => format!("until {}", crate::clock::format_instant(ms)),
            },
            f.reason
        );
        let audit = actor.event(now, Target::None, line, "ok");
        let started = notice(&f, EventType::FreezeStarted, message, now);
        if let Err(e) = self.ctx.store.put_freeze(&f, &[audit], &[started]).await {
            // Not recorded: not in force.
            self.ctx.freezes.manual().retain(|m| m.id != f.id);
            self.freezes_changed();
            return Err(e.into());
        }
        info!(freeze = f.id, by = %actor.principal, "the line is stopped");
        self.freezes_changed();
        Ok((f, false))
    }

    /// Ends freeze `id` now, by `actor`.
    pub async fn unfreeze(&self, id: u64, actor: &Actor) -> Result<pb::Freeze> {
        let _guard = self.submit.lock().await;
        let Some(f) = self.ctx.freezes.manual().iter().find(|f| f.id == id).cloned() else {
            return Err(Error::NotFound(format!(
                "no freeze has id {id}: `rollout freezes` lists them"
            )));
        };
        if f.ended_at_unix_ms != 0 {
            return Err(Error::Refused(format!(
                "freeze {id} ended already, at {} ({})",
                crate::clock::format_instant(f.ended_at_unix_ms),
                f.ended_by
            )));
        }
        self.end_freeze(f, actor, &format!("unfrozen by {}", actor.principal))
            .await
    }

    /// Ends `f` (unfrozen, or its `--until` passed): stored with its audit line and
    /// `freeze.ended`.
    async fn end_freeze(&self, mut f: pb::Freeze, actor: &Actor, by: &str) -> Result<pb::Freeze> {
        let now = self.ctx.clock.now_ms();
        f.ended_at_unix_ms = now;
        f.ended_by = by.to_string();
        let waiting = self.active_names();
        let message = crate::summary::freeze_ended(&f, &waiting);
        let audit = actor.event(now, Target::None, format!("freeze {} ended: {by}", f.id), "ok");
        let ended = notice(&f, EventType::FreezeEnded, message, now);
        self.ctx.store.put_freeze(&f, &[audit], &[ended]).await?;
        info!(freeze = f.id, by, "freeze ended");
        if let Some(kept) = self.ctx.freezes.manual().iter_mut().find(|x| x.id == f.id) {
            *kept = f.clone();
        }
        self.freezes_changed();
        Ok(f)
    }

    /// Freezes people set (in force first, then, asked, those ended, newest first)
    /// and the calendar's windows in force and next.
    pub fn list_freezes(&self, include_ended: bool) -> pb::ListFreezesResponse {
        let now = self.ctx.clock.now_ms();
        let mut freezes: Vec<pb::Freeze> = self
            .ctx
            .freezes
            .manual()
            .iter()
            .filter(|f| include_ended || freeze::in_force(f, now))
            .cloned()
            .collect();
        freezes.sort_by_key(|f| (!freeze::in_force(f, now), std::cmp::Reverse(f.id)));
        let cal = self.ctx.freezes.calendar();
        pb::ListFreezesResponse {
            freezes,
            calendar: self.ctx.freezes.board().next_windows(self.ctx.hours.now_ms()),
            calendar_file: cal.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            calendar_error: cal.error.clone(),
        }
    }

    /// The freezes in force now (the dashboard's banner).
    pub fn freezes_in_force(&self) -> Vec<pb::Freeze> {
        let board = self.ctx.freezes.board();
        board
            .in_force(self.ctx.clock.now_ms(), self.ctx.hours.now_ms())
            .into_iter()
            .cloned()
            .collect()
    }

    /// Refuses a submission whose selection a freeze in force covers (an emergency
    /// plan is let through: it waits for its approval instead).
    pub(super) fn refuse_frozen(&self, hosts: &[String], what: &str) -> Result<()> {
        let board = self.ctx.freezes.board();
        if board.is_empty() {
            return Ok(());
        }
        let inventory = self.ctx.inventory();
        let selected = hosts.iter().filter_map(|h| inventory.host(h));
        let Some((f, covered)) = board.covering(selected, self.ctx.clock.now_ms(), self.ctx.hours.now_ms()) else {
            return Ok(());
        };
        let unfreeze = if f.source == freeze::CALENDAR {
            "wait for the window to end".to_string()
        } else {
            format!("`rollout unfreeze {}` ends it", f.id)
        };
        Err(Error::Refused(format!(
            "{covered} of the {} hosts {what} are frozen by {}: {unfreeze}, or mark the plan `emergency: true` for an admin's approval",
            hosts.len(),
            freeze::name(&f)
        )))
    }

    /// The board changed: build it again, wake what waits on it.
    fn freezes_changed(&self) {
        self.ctx.freezes.rebuild(self.ctx.hours.now_ms(), self.ctx.drill);
        self.ctx.freezes.changed.notify_one();
        self.wake_waiting();
    }

    /// Wakes the rollouts that dispatch and the restart jobs that run, so that they
    /// look at the board again.
    fn wake_waiting(&self) {
        for live in self.lock().values() {
            if matches!(live.state(), State::Running { .. }) {
                live.control.send_modify(|n| *n += 1);
            }
        }
        for job in self.jobs().values() {
            if job.is_active() {
                job.control.send_modify(|n| *n += 1);
            }
        }
    }

    /// The names of the rollouts that run (a freeze's status text names them).
    fn active_names(&self) -> Vec<String> {
        self.lock()
            .values()
            .filter(|l| !l.state().is_terminal())
            .map(|l| l.name().to_string())
            .collect()
    }

    /// The task that ends freezes at their `--until` and moves the calendar's windows
    /// with the clock.
    fn watch_freezes(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.ctx.shutdown.clone();
        self.spawn(async move {
            let mut in_force: Vec<(u64, String, i64)> = Vec::new();
            loop {
                let Some(engine) = weak.upgrade() else { return };
                let (wall, hours) = (engine.ctx.clock.now_ms(), engine.ctx.hours.now_ms());
                let expired: Vec<pb::Freeze> = engine
                    .ctx
                    .freezes
                    .manual()
                    .iter()
                    .filter(|f| f.ended_at_unix_ms == 0 && f.until_unix_ms != 0 && f.until_unix_ms <= wall)
                    .cloned()
                    .collect();
                for f in expired {
                    let until = crate::clock::format_instant(f.until_unix_ms);
                    if let Err(e) = engine
                        .end_freeze(f, &Actor::controller(), &format!("its --until ({until}) passed"))
                        .await
                    {
                        warn!(error = %e, "cannot end a freeze at its time; trying again");
                    }
                }
                engine.ctx.freezes.rebuild(hours, engine.ctx.drill);
                let board = engine.ctx.freezes.board();
                let now_in_force: Vec<(u64, String, i64)> = board
                    .in_force(wall, hours)
                    .iter()
                    .map(|f| (f.id, f.calendar_uid.clone(), f.started_at_unix_ms))
                    .collect();
                if now_in_force != in_force {
                    in_force = now_in_force;
                    engine.wake_waiting();
                }
                let next = board
                    .next_change_ms(wall, hours)
                    .map_or(TICK, |ms| Duration::from_millis(ms.max(1) as u64).min(TICK));
                let changed = engine.ctx.freezes.clone_notify();
                drop(engine);
                tokio::select! {
                    _ = tokio::time::sleep(next) => {}
                    _ = changed.notified() => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

/// The freeze `req` asks for, checked (a reason of one line, an `--until` ahead of
/// `now_ms`, a selector of the one grammar); its id is the caller's to give.
fn checked(req: &pb::FreezeRequest, actor: &Actor, now_ms: i64) -> Result<pb::Freeze> {
    let invalid = |field: &str, message: String| Error::Invalid {
        field: field.to_string(),
        message,
    };
    let reason = req.reason.trim();
    if reason.is_empty() {
        return Err(invalid(
            "reason",
            "is missing: say why the line stops (an incident id)".into(),
        ));
    }
    if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
        return Err(invalid(
            "reason",
            format!("must be one line of at most {MAX_REASON} characters"),
        ));
    }
    if req.until_unix_ms != 0 && req.until_unix_ms <= now_ms {
        return Err(invalid(
            "until",
            format!(
                "{} has passed: give a time in the future (or none, to freeze until someone unfreezes)",
                crate::clock::format_instant(req.until_unix_ms)
            ),
        ));
    }
    let selector = crate::plan::checked_selector("selector", &req.selector).map_err(|m| invalid("selector", m))?;
    Ok(pb::Freeze {
        reason: reason.to_string(),
        set_by: actor.principal.clone(),
        selector: selector
            .iter()
            .map(|(k, v)| (k.clone(), pb::LabelValues { values: v.clone() }))
            .collect(),
        started_at_unix_ms: now_ms,
        until_unix_ms: req.until_unix_ms,
        source: freeze::MANUAL.into(),
        request_id: req.request_id.clone(),
        ..Default::default()
    })
}
