//! Detached operations, the agent's side: an Apply with `detach` is admitted (its
//! host, its operation id, the controller's epoch: refusals keep their codes), then
//! answered at once with `running` while the operation goes on in a task of its own;
//! its result is appended to a log that `Results` serves from a cursor, many per
//! answer, as a long poll. A controller so holds no call per operation: one poll per
//! agent endpoint learns the results of every host behind it.
//!
//! One [`Detached`] per agent process, shared by the hosts it serves. The log is in
//! memory and names its instance: a controller whose cursor comes from another
//! instance (the agent restarted) or from before the results kept is told `reset`,
//! and asks each operation it awaits again (Apply is idempotent by operation_id).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::Status;

use crate::proto::v1 as pb;

/// Results per answer at most (about 100 bytes each, more with a command's output).
const MAX_RESULTS: usize = 10_000;
/// Bytes of results per answer at most (at least one result is sent): well within
/// the 4 MiB a gRPC client takes by default.
const MAX_BYTES: usize = 2 << 20;
/// The longest a Results call waits for a first result.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Once a result is there, how long an answer waits for more to come with it.
const LINGER: Duration = Duration::from_millis(20);
/// An operation that ends within this is answered with its result, as an Apply of
/// the earlier protocol would be (one round trip for quick ones); a longer one is
/// answered `running`.
const QUICK: Duration = Duration::from_millis(10);
/// Results kept for controllers that have not read them yet.
pub const KEEP: usize = 1 << 20;

struct Log {
    /// The cursor of `entries[0]`.
    first: u64,
    entries: VecDeque<pb::OperationResult>,
}

impl Log {
    fn next(&self) -> u64 {
        self.first + self.entries.len() as u64
    }
}

/// The detached operations of one agent process and the log of their results.
pub struct Detached {
    instance: String,
    log: Mutex<Log>,
    added: tokio::sync::Notify,
    /// Operations running now, by id: a repeated detached Apply answers `running`.
    running: Mutex<HashSet<String>>,
    keep: usize,
}

impl Default for Detached {
    fn default() -> Detached {
        Detached::new(KEEP)
    }
}

impl Detached {
    /// A log keeping the last `keep` results.
    pub fn new(keep: usize) -> Detached {
        Detached {
            instance: format!("{:016x}", rand::random::<u64>()),
            log: Mutex::new(Log {
                first: 1,
                entries: VecDeque::new(),
            }),
            added: tokio::sync::Notify::new(),
            running: Mutex::new(HashSet::new()),
            keep: keep.max(1),
        }
    }

    /// Starts `operation` (the admitted Apply, run as an undetached one would be) in
    /// a task of its own: its result when it ends within [`QUICK`], else `running`
    /// (the result goes to the log); an operation with this id already running is
    /// not started again.
    pub async fn start<F>(
        self: &std::sync::Arc<Self>,
        host_id: String,
        operation_id: String,
        operation: F,
    ) -> Result<pb::ApplyResponse, Status>
    where
        F: Future<Output = Result<pb::ApplyResponse, Status>> + Send + 'static,
    {
        let running = pb::ApplyResponse {
            running: true,
            ..Default::default()
        };
        let fresh = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operation_id.clone());
        if !fresh {
            return Ok(running);
        }
        // One that ends at its first step (a replay, a simulator without latency)
        // costs no task and no timer.
        let mut operation = Box::pin(operation);
        if let Some(answer) = futures::FutureExt::now_or_never(&mut operation) {
            self.forget(&operation_id);
            return answer;
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let id = operation_id.clone();
        tokio::spawn(async move {
            let answer = operation.await;
            match tx.send(answer) {
                // The Apply still waits: it answers with the result itself.
                Ok(()) => this.forget(&id),
                Err(answer) => this.finished(host_id, id, answer),
            }
        });
        if let Ok(Ok(answer)) = tokio::time::timeout(QUICK, &mut rx).await {
            return answer;
        }
        // No more waiting: a result sent before this is taken here, a later one is
        // logged by the task.
        rx.close();
        match rx.try_recv() {
            Ok(answer) => answer,
            Err(_) => Ok(running),
        }
    }

    fn forget(&self, operation_id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(operation_id);
    }

    /// Appends an operation's result to the log and wakes the controllers waiting.
    fn finished(&self, host_id: String, operation_id: String, answer: Result<pb::ApplyResponse, Status>) {
        self.forget(&operation_id);
        let entry = match answer {
            Ok(result) => pb::OperationResult {
                host_id,
                operation_id,
                result: Some(result),
                code: 0,
                message: String::new(),
            },
            Err(status) => pb::OperationResult {
                host_id,
                operation_id,
                result: None,
                code: status.code() as i32,
                message: status.message().to_string(),
            },
        };
        {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            log.entries.push_back(entry);
            while log.entries.len() > self.keep {
                log.entries.pop_front();
                log.first += 1;
            }
        }
        self.added.notify_waiters();
    }

    /// Detached operations running now.
    pub fn running(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The Results call: what was recorded from the cursor on, waiting up to
    /// `wait_ms` (at most [`MAX_WAIT`]) for a first result.
    pub async fn results(&self, req: pb::ResultsRequest) -> pb::ResultsResponse {
        let answer = |results, next, reset| pb::ResultsResponse {
            results,
            next,
            instance: self.instance.clone(),
            reset,
        };
        let head = || self.log.lock().unwrap_or_else(|p| p.into_inner()).next();
        if req.instance != self.instance {
            // No cursor yet: where to start from. Another instance's: results are lost.
            let reset = !(req.instance.is_empty() && req.after == 0);
            return answer(Vec::new(), head(), reset);
        }
        let wait = Duration::from_millis(req.wait_ms.into()).min(MAX_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        let mut lingered = false;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let waiting = {
                let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
                if req.after < log.first {
                    return answer(Vec::new(), log.next(), true);
                }
                let from = (req.after - log.first) as usize;
                if from < log.entries.len() && (lingered || wait.is_zero()) {
                    let mut bytes = 0;
                    let results: Vec<_> = log
                        .entries
                        .iter()
                        .skip(from)
                        .take(MAX_RESULTS)
                        .take_while(|r| {
                            bytes += prost::Message::encoded_len(*r);
                            bytes <= MAX_BYTES || bytes == prost::Message::encoded_len(*r)
                        })
                        .cloned()
                        .collect();
                    let next = req.after + results.len() as u64;
                    return answer(results, next, false);
                }
                from < log.entries.len()
            };
            if waiting {
                // Let the results finishing with this one come in the same answer.
                lingered = true;
                tokio::time::sleep(LINGER).await;
            } else if tokio::time::timeout_at(deadline, added).await.is_err() {
                return answer(Vec::new(), req.after, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn ok(version: &str) -> Result<pb::ApplyResponse, Status> {
        Ok(pb::ApplyResponse {
            ok: true,
            version: version.into(),
            ..Default::default()
        })
    }

    async fn head(d: &Detached) -> pb::ResultsResponse {
        d.results(pb::ResultsRequest::default()).await
    }

    #[tokio::test(start_paused = true)]
    async fn results_come_from_the_cursor_on_and_a_running_operation_is_not_started_twice() {
        let d = Arc::new(Detached::new(100));
        let start = head(&d).await;
        assert!(!start.reset && start.results.is_empty());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let answer = d
            .start("h1".into(), "op1".into(), async move {
                let _ = rx.await;
                ok("v2")
            })
            .await
            .unwrap();
        assert!(answer.running, "not ended within QUICK: running");
        let again = d.start("h1".into(), "op1".into(), async { ok("again") }).await;
        assert!(again.unwrap().running, "running already: not started twice");
        assert_eq!(d.running(), 1);
        let cursor = pb::ResultsRequest {
            after: start.next,
            instance: start.instance.clone(),
            wait_ms: 5_000,
        };
        // Nothing yet: the long poll ends empty at its deadline, the cursor unmoved.
        let empty = d.results(cursor.clone()).await;
        assert!(empty.results.is_empty() && !empty.reset);
        assert_eq!(empty.next, start.next);
        let poll = tokio::spawn({
            let d = d.clone();
            let cursor = cursor.clone();
            async move { d.results(cursor).await }
        });
        tx.send(()).unwrap();
        let got = poll.await.unwrap();
        assert_eq!(got.results.len(), 1, "{got:?}");
        assert_eq!(got.results[0].operation_id, "op1");
        assert_eq!(got.results[0].result.as_ref().unwrap().version, "v2");
        assert_eq!(d.running(), 0);
        // From the new cursor, nothing more.
        let after = d
            .results(pb::ResultsRequest {
                after: got.next,
                wait_ms: 0,
                ..cursor
            })
            .await;
        assert!(after.results.is_empty());
    }

    /// An operation that takes a second (past QUICK: its result goes to the log).
    async fn slow(answer: Result<pb::ApplyResponse, Status>) -> Result<pb::ApplyResponse, Status> {
        tokio::time::sleep(Duration::from_secs(1)).await;
        answer
    }

    #[tokio::test(start_paused = true)]
    async fn a_quick_operation_is_answered_with_its_result_and_not_logged() {
        let d = Arc::new(Detached::new(10));
        let start = head(&d).await;
        let answer = d.start("h".into(), "quick".into(), async { ok("v3") }).await.unwrap();
        assert!(!answer.running && answer.ok && answer.version == "v3");
        let refused = d
            .start("h".into(), "refused".into(), async {
                Err(Status::failed_precondition("stale controller epoch 1 < 2"))
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        let logged = d
            .results(pb::ResultsRequest {
                after: start.next,
                instance: start.instance,
                wait_ms: 0,
            })
            .await;
        assert!(logged.results.is_empty(), "{logged:?}");
        assert_eq!(d.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_keep_their_code_and_lost_results_say_reset() {
        let d = Arc::new(Detached::new(2));
        let start = head(&d).await;
        let refusal = || slow(Err(Status::failed_precondition("stale controller epoch 1 < 2")));
        assert!(d.start("h".into(), "stale".into(), refusal()).await.unwrap().running);
        for i in 0..3 {
            d.start("h".into(), format!("op{i}"), slow(ok("v"))).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Four results, two kept: a cursor from before them has missed some.
        let late = d
            .results(pb::ResultsRequest {
                after: start.next,
                instance: start.instance.clone(),
                wait_ms: 0,
            })
            .await;
        assert!(late.reset && late.results.is_empty());
        let other = d
            .results(pb::ResultsRequest {
                after: 7,
                instance: "an earlier agent".into(),
                wait_ms: 0,
            })
            .await;
        assert!(other.reset, "another instance's cursor is a reset");
        let d = Arc::new(Detached::new(10));
        let start = head(&d).await;
        d.start("h".into(), "stale".into(), refusal()).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let got = d
            .results(pb::ResultsRequest {
                after: start.next,
                instance: start.instance,
                wait_ms: 1_000,
            })
            .await;
        assert_eq!(got.results[0].code, tonic::Code::FailedPrecondition as i32);
        assert!(got.results[0].result.is_none());
    }
}
