//! What the Controller service sends back of rollouts and restart jobs: each as
//! clients see it (the drill clock said plainly, the status text), and the streams
//! of snapshots that `WatchRollout` and `WatchRestartJob` answer with.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::Result;
use crate::engine::Engine;
use crate::proto::v1 as pb;

/// A stream of snapshots: the current one, then one per change, until `done` says
/// the thing has ended or the controller stops.
pub(super) type Snapshots<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

pub(super) fn snapshots<T: Clone + Send + Sync + 'static>(
    rx: tokio::sync::watch::Receiver<Arc<T>>,
    shutdown: CancellationToken,
    done: fn(&T) -> bool,
) -> Snapshots<T> {
    enum Phase {
        First,
        Next,
        Done,
    }
    let stream = futures::stream::unfold(
        (rx, Phase::First, shutdown),
        move |(mut rx, phase, shutdown)| async move {
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
            let next = if done(&snapshot) { Phase::Done } else { Phase::Next };
            Some((Ok((*snapshot).clone()), (rx, next, shutdown)))
        },
    );
    Box::pin(stream)
}

/// A rollout as clients see it: the drill clock said plainly when one is in force,
/// and the status text.
pub(super) fn shown(engine: &Engine, mut r: pb::Rollout) -> pb::Rollout {
    r.drill_clock = engine.drill_clock().unwrap_or_default();
    r.limits = engine.limits(r.plan.as_ref()).unwrap_or_default();
    r.summary = crate::summary::rollout(&r);
    r
}

/// A restart job as clients see it, likewise.
pub(super) fn shown_job(engine: &Engine, mut j: pb::RestartJob) -> pb::RestartJob {
    j.drill_clock = engine.drill_clock().unwrap_or_default();
    j.summary = crate::summary::restart_job(&j);
    j
}
