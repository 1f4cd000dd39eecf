//! Operations in flight as data, the controller's side of detached Apply: an
//! operation an agent answered `running` is a small record here (its request, for
//! asking again; its deadline; where its result goes), not a held call. One long
//! poll per agent endpoint with operations awaited (`Results`, from a cursor) learns
//! their results in batches and hands each to the caller awaiting it.
//!
//! - Before the first detached Apply to an endpoint, its cursor is read, so that no
//!   result recorded after the Apply can be missed. An agent of the earlier protocol
//!   answers `Unimplemented`: its calls are held as before (and it would ignore
//!   `detach` anyway, answering with the result).
//! - A `reset` (the agent restarted, or dropped results the controller had not read)
//!   asks every operation awaited there again, paced: Apply is idempotent by
//!   operation_id, so nothing runs twice, and a result already recorded comes back.
//! - An operation with no result by its deadline (`--agent-timeout` from its start)
//!   fails with DeadlineExceeded: its outcome is unknown, as a held call's was.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::grpc::{failure_of, fault};
use super::{Answer, Call, CallError, Failure, Guard, Reply, guarded_as};
use crate::proto::v1 as pb;
use crate::proto::v1::agent_client::AgentClient;
use crate::retry::Backoff;

/// How long a Results call asks the agent to wait for a first result.
const POLL_WAIT: Duration = Duration::from_secs(10);
/// Awaited operations asked again at once, per endpoint, after a reset.
const REASK_AT_ONCE: usize = 512;
/// How often the deadlines of awaited operations are checked.
const EXPIRY_EVERY: Duration = Duration::from_secs(1);
/// The longest an Apply's answer ("running") may take.
const ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// After an endpoint's cursor could not be read, how long calls go held instead of
/// asking again.
const CURSOR_RETRY: Duration = Duration::from_secs(1);

/// One agent endpoint as calls reach it.
pub(crate) struct Link {
    pub client: AgentClient<Channel>,
    pub address: String,
    pub guard: Arc<Guard>,
    /// Each operation's deadline (`--agent-timeout`).
    pub timeout: Duration,
}

impl Link {
    /// One Apply under the guard (breakers, budget, backoff), detached or held.
    async fn apply(&self, request: pb::ApplyRequest, detach: bool, call: Call) -> Answer {
        let request = pb::ApplyRequest { detach, ..request };
        let timeout = if detach {
            self.timeout.min(ACK_TIMEOUT)
        } else {
            self.timeout
        };
        guarded_as(self.guard.clone(), self.address.clone(), call, || {
            let mut client = self.client.clone();
            let mut req = tonic::Request::new(request.clone());
            req.set_timeout(timeout);
            async move { client.apply(req).await.map(tonic::Response::into_inner).map_err(fault) }
        })
        .await
    }

    async fn results(&self, request: pb::ResultsRequest) -> Result<pb::ResultsResponse, tonic::Status> {
        self.guard.stats.result_polls.inc();
        let mut client = self.client.clone();
        let mut req = tonic::Request::new(request);
        req.set_timeout(POLL_WAIT + Duration::from_secs(20));
        client.results(req).await.map(tonic::Response::into_inner)
    }
}

struct Waiter {
    /// Told apart from a later waiter for the same operation.
    id: u64,
    reply: Reply,
    deadline: Instant,
    request: pb::ApplyRequest,
    /// The agent answered `running`: counted in the awaited gauge.
    acked: bool,
}

#[derive(Default)]
struct Endpoint {
    waiting: HashMap<String, Waiter>,
    /// The agent instance and the cursor to ask Results from.
    cursor: Option<(String, u64)>,
    /// The agent speaks the earlier protocol (no Results): calls are held.
    legacy: bool,
    polling: bool,
    /// Serialises reading the cursor; when it last failed.
    reading: Arc<tokio::sync::Mutex<Option<Instant>>>,
}

/// The operations awaited on every agent endpoint.
#[derive(Default)]
pub(crate) struct Awaited {
    endpoints: Mutex<HashMap<String, Endpoint>>,
    ids: std::sync::atomic::AtomicU64,
}

impl Awaited {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts Apply on `link`, its answer going to `reply`: detached where the agent
    /// can (the operation is then a record here until its result comes; this task
    /// ends with the agent's "running"), held where it speaks the earlier protocol.
    pub(crate) async fn start(self: Arc<Self>, link: Arc<Link>, request: pb::ApplyRequest, reply: Reply) {
        if !self.ready(&link).await {
            return reply.answer_with(link.apply(request, false, Call::First)).await;
        }
        let operation_id = request.operation_id.clone();
        let id = self.ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let closed = reply.closed();
        {
            let mut endpoints = self.lock();
            let e = match endpoints.get_mut(&link.address) {
                Some(e) => e,
                None => endpoints.entry(link.address.clone()).or_default(),
            };
            let waiter = Waiter {
                id,
                reply,
                deadline: Instant::now() + link.timeout,
                request: request.clone(),
                acked: false,
            };
            if let Some(earlier) = e.waiting.insert(operation_id.clone(), waiter) {
                left(&link.guard, &earlier);
            }
        }
        let answer = tokio::select! {
            answer = link.apply(request, true, Call::First) => answer,
            // Nobody awaits it any more (the driver stopped, deposed): no retry of
            // this Apply goes out after that.
            _ = closed => return self.forget(&link, &operation_id, id),
        };
        match answer {
            Ok(started) if started.running => {
                self.acked(&link, &operation_id, id);
                self.poll_from(&link)
            }
            answer => self.resolve_waiter(&link, &operation_id, Some(id), answer),
        }
    }

    /// Waiter `id` of an operation is no longer awaited.
    fn forget(&self, link: &Link, operation_id: &str, id: u64) {
        let mut endpoints = self.lock();
        if let Some(e) = endpoints.get_mut(&link.address)
            && e.waiting.get(operation_id).is_some_and(|w| w.id == id)
            && let Some(w) = e.waiting.remove(operation_id)
        {
            left(&link.guard, &w);
        }
    }

    /// The agent answered `running`: the operation is awaited (unless its result
    /// came first).
    fn acked(&self, link: &Link, operation_id: &str, id: u64) {
        let mut endpoints = self.lock();
        if let Some(w) = endpoints
            .get_mut(&link.address)
            .and_then(|e| e.waiting.get_mut(operation_id))
            .filter(|w| w.id == id)
        {
            w.acked = true;
            link.guard.stats.awaited.inc();
        }
    }

    /// Whether `link`'s agent takes detached operations: its cursor is known (read
    /// now if not). False for an agent of the earlier protocol, and while its cursor
    /// cannot be read (the call is then held, and fails as a held call would).
    async fn ready(&self, link: &Link) -> bool {
        let reading = {
            let mut endpoints = self.lock();
            if let Some(e) = endpoints.get(&link.address)
                && (e.cursor.is_some() || e.legacy)
            {
                return !e.legacy;
            }
            let e = endpoints.entry(link.address.clone()).or_default();
            e.reading.clone()
        };
        let mut failed = reading.lock().await;
        {
            let endpoints = self.lock();
            if let Some(e) = endpoints.get(&link.address)
                && (e.cursor.is_some() || e.legacy)
            {
                return !e.legacy;
            }
        }
        if failed.is_some_and(|at| at.elapsed() < CURSOR_RETRY) {
            return false;
        }
        let answer = link.results(pb::ResultsRequest::default()).await;
        let mut endpoints = self.lock();
        let e = endpoints.entry(link.address.clone()).or_default();
        match answer {
            Ok(r) => {
                e.cursor = Some((r.instance, r.next));
                true
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::info!(agent = %link.address, "the agent speaks the earlier protocol: its operations hold a call each");
                e.legacy = true;
                false
            }
            Err(_) => {
                *failed = Some(Instant::now());
                false
            }
        }
    }

    /// Starts the endpoint's long poll, unless it runs.
    fn poll_from(self: &Arc<Self>, link: &Arc<Link>) {
        {
            let mut endpoints = self.lock();
            let e = endpoints.entry(link.address.clone()).or_default();
            if e.polling {
                return;
            }
            e.polling = true;
        }
        tokio::spawn(self.clone().poll(link.clone()));
    }

    /// The long poll of one endpoint, while it has operations awaited.
    async fn poll(self: Arc<Self>, link: Arc<Link>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut expired_at = Instant::now();
        loop {
            let (instance, after) = {
                let mut endpoints = self.lock();
                let e = endpoints.entry(link.address.clone()).or_default();
                if e.waiting.is_empty() {
                    e.polling = false;
                    return;
                }
                e.cursor.clone().unwrap_or_default()
            };
            let request = pb::ResultsRequest {
                after,
                instance,
                wait_ms: POLL_WAIT.as_millis() as u32,
            };
            let mut again = Vec::new();
            match link.results(request).await {
                Ok(answer) => {
                    backoff.reset();
                    again = self.deliver(&link, answer);
                }
                Err(status) if status.code() == tonic::Code::Unimplemented => {
                    // An agent replaced by one of the earlier protocol: nothing will come.
                    self.fail_all(&link, fault(status).at(&link.address));
                }
                Err(_) => tokio::time::sleep(backoff.next().unwrap_or_default()).await,
            }
            if expired_at.elapsed() >= EXPIRY_EVERY {
                expired_at = Instant::now();
                self.expire(&link);
            }
            if !again.is_empty() {
                link.guard.stats.reasked.inc_by(again.len() as u64);
                tracing::warn!(agent = %link.address, operations = again.len(), "the agent restarted or lost results: asking its operations again (they do not run twice)");
                tokio::spawn(self.clone().reask(link.clone(), again));
            }
        }
    }

    /// Hands each result to its waiter; on a reset, returns the requests to ask again.
    fn deliver(&self, link: &Link, answer: pb::ResultsResponse) -> Vec<pb::ApplyRequest> {
        let mut endpoints = self.lock();
        let e = endpoints.entry(link.address.clone()).or_default();
        e.cursor = Some((answer.instance, answer.next));
        for result in answer.results {
            if let Some(w) = e.waiting.remove(&result.operation_id) {
                left(&link.guard, &w);
                w.reply.send(answer_of(&link.address, result));
            }
        }
        if answer.reset {
            e.waiting.values().map(|w| w.request.clone()).collect()
        } else {
            Vec::new()
        }
    }

    /// Asks operations again, a few at a time; an answer other than `running` is
    /// their result. Those whose answer is unknown too (the agent not back yet, its
    /// breaker open) stay awaited and are asked again after a backoff, until they
    /// have an answer or their deadline passes.
    async fn reask(self: Arc<Self>, link: Arc<Link>, requests: Vec<pb::ApplyRequest>) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
        let mut asking = requests;
        while !asking.is_empty() {
            let unknown = Mutex::new(Vec::new());
            futures::stream::iter(asking)
                .for_each_concurrent(REASK_AT_ONCE, |request| {
                    let (this, link, unknown) = (self.clone(), link.clone(), &unknown);
                    async move {
                        if !this.awaits(&link.address, &request.operation_id) {
                            return;
                        }
                        let answer = link.apply(request.clone(), true, Call::Reask).await;
                        match answer {
                            Ok(a) if a.running => {}
                            Err(e) if e.outcome_unknown() => {
                                unknown.lock().unwrap_or_else(|p| p.into_inner()).push(request)
                            }
                            answer => this.resolve(&link, &request.operation_id, answer),
                        }
                    }
                })
                .await;
            asking = unknown.into_inner().unwrap_or_else(|p| p.into_inner());
            if !asking.is_empty() {
                tokio::time::sleep(backoff.next().unwrap_or_default()).await;
            }
        }
    }

    /// Whether an operation is still awaited (a result, its deadline or its caller
    /// may have ended that).
    fn awaits(&self, address: &str, operation_id: &str) -> bool {
        self.lock()
            .get(address)
            .and_then(|e| e.waiting.get(operation_id))
            .is_some_and(|w| !w.reply.is_closed())
    }

    fn resolve(&self, link: &Link, operation_id: &str, answer: Answer) {
        self.resolve_waiter(link, operation_id, None, answer)
    }

    /// Hands `answer` to the operation's waiter (only to waiter `id`, if given: not
    /// to a later one for the same operation).
    fn resolve_waiter(&self, link: &Link, operation_id: &str, id: Option<u64>, answer: Answer) {
        let waiter = {
            let mut endpoints = self.lock();
            let Some(e) = endpoints.get_mut(&link.address) else {
                return;
            };
            if id.is_some_and(|id| e.waiting.get(operation_id).is_none_or(|w| w.id != id)) {
                return;
            }
            e.waiting.remove(operation_id)
        };
        if let Some(w) = waiter {
            left(&link.guard, &w);
            w.reply.send(answer);
        }
    }

    /// The agent no longer serves Results (replaced by one of the earlier protocol):
    /// its awaited operations fail, outcome unknown, and its next calls are held.
    fn fail_all(&self, link: &Link, error: CallError) {
        let mut endpoints = self.lock();
        if let Some(e) = endpoints.get_mut(&link.address) {
            e.legacy = true;
            e.cursor = None;
            for (_, w) in e.waiting.drain() {
                left(&link.guard, &w);
                w.reply.send(Err(error.clone()));
            }
        }
    }

    /// Operations past their deadline fail: no result came in time. Those nobody
    /// awaits any more (a stuck wave given up, a caller gone) are forgotten.
    fn expire(&self, link: &Link) {
        let now = Instant::now();
        let mut endpoints = self.lock();
        let Some(e) = endpoints.get_mut(&link.address) else {
            return;
        };
        let late: Vec<String> = e
            .waiting
            .iter()
            .filter(|(_, w)| w.deadline <= now || w.reply.is_closed())
            .map(|(op, _)| op.clone())
            .collect();
        for op in late {
            if let Some(w) = e.waiting.remove(&op) {
                left(&link.guard, &w);
                w.reply.send(Err(CallError {
                    address: link.address.clone(),
                    failure: Failure::TimedOut,
                    message: format!(
                        "no result within --agent-timeout ({}) of the operation's start: its outcome is unknown",
                        crate::text::format_duration(link.timeout)
                    ),
                }));
            }
        }
    }
}

/// A waiter no longer awaited: out of the gauge, if it was in.
fn left(guard: &Guard, w: &Waiter) {
    if w.acked {
        guard.stats.awaited.dec();
    }
}

/// A result from the log as the caller of Apply would have had it.
fn answer_of(address: &str, result: pb::OperationResult) -> Answer {
    match result.result {
        Some(response) if result.code == 0 => Ok(response),
        _ => Err(CallError {
            address: address.to_string(),
            failure: failure_of(tonic::Code::from_i32(result.code)),
            message: result.message,
        }),
    }
}
