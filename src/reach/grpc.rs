//! The gRPC driver: hosts that run `rollout agent` (or a simulated fleet), reached
//! over one lazily connected, reused channel per agent address, every call under
//! the deadline, the budget and the breakers of [`super::guarded`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Endpoint;

use super::results::Link;
use super::{Answer, CallError, Failure, Fault, Fleet, Guard, Reply, RetryPolicy, guarded};
use crate::proto::v1 as pb;
use crate::proto::v1::agent_client::AgentClient;
use crate::retry::CallStats;

/// The HTTP/2 connection window of the controller's channels to agents, and of a
/// simulator: room for the small messages of 10,000 streams at once (h2 closes a
/// connection with more small DATA frames buffered than half its window holds).
pub const CONNECTION_WINDOW: u32 = 16 << 20;

/// Agents over gRPC: one lazily connected channel per address, a deadline on every
/// call, and retries bounded by [`RetryPolicy`].
pub struct GrpcFleet {
    /// One link (its channel, its address, the guard) per agent address, made once.
    links: Mutex<HashMap<String, Arc<Link>>>,
    call_timeout: Duration,
    guard: Arc<Guard>,
    /// TLS to the agents (`https://`), with the controller's own identity for mutual TLS.
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// The runtime that drives the connections to agents (the one the fleet was made
    /// on: the engine's), even when an API call on another runtime opens one.
    runtime: Option<tokio::runtime::Handle>,
    /// This controller's epoch, carried by every Apply (0: none).
    epoch: u64,
    /// Operations started detached whose results are awaited, by endpoint.
    awaited: Arc<super::results::Awaited>,
}

impl GrpcFleet {
    pub fn new(call_timeout: Duration) -> GrpcFleet {
        GrpcFleet::with_policy(call_timeout, RetryPolicy::default())
    }

    pub fn with_policy(call_timeout: Duration, policy: RetryPolicy) -> GrpcFleet {
        GrpcFleet {
            links: Mutex::new(HashMap::new()),
            call_timeout,
            guard: Arc::new(Guard::new(policy)),
            tls: None,
            runtime: tokio::runtime::Handle::try_current().ok(),
            epoch: 0,
            awaited: Arc::default(),
        }
    }

    /// Speaks TLS to every agent.
    pub fn with_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> GrpcFleet {
        self.tls = tls;
        self
    }

    /// The guard its calls go through, for another driver to share.
    pub(crate) fn guard(&self) -> Arc<Guard> {
        self.guard.clone()
    }

    /// Every Apply carries `epoch` (the leader's, on etcd): agents refuse lower ones.
    pub fn with_epoch(mut self, epoch: u64) -> GrpcFleet {
        self.epoch = epoch;
        self
    }

    /// Counters for metrics: first attempts, retries, budget exhaustion, breakers.
    pub fn stats(&self) -> &CallStats {
        &self.guard.stats
    }

    /// Agents whose breaker is open (or half-open) now.
    pub fn open_breakers(&self) -> usize {
        self.guard.breakers.open()
    }

    /// The link to an address, created on first use (connections are lazy and
    /// shared by every call to that address): nothing is built per operation.
    fn link(&self, address: &str) -> Result<Arc<Link>, CallError> {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = links.get(address) {
            return Ok(link.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("{scheme}://{address}")
        };
        let bad = |message: String| Fault::new(Failure::Invalid, message).at(address);
        let mut endpoint = Endpoint::from_shared(url).map_err(|e| bad(format!("bad agent address: {e}")))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| bad(format!("TLS to the agent: {e}")))?;
        }
        // The channel's worker (and so its connection) is spawned where we stand.
        let _engine_runtime = self.runtime.as_ref().map(|h| h.enter());
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .timeout(self.call_timeout)
            .tcp_nodelay(true)
            // Thousands of answers at once from one endpoint (a simulator) are small
            // DATA frames: h2 refuses more buffered than half the window holds.
            .initial_connection_window_size(CONNECTION_WINDOW)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        let link = Arc::new(Link {
            client: AgentClient::new(channel),
            address: address.to_string(),
            guard: self.guard.clone(),
            timeout: self.call_timeout,
        });
        links.insert(address.to_string(), link.clone());
        Ok(link)
    }
}

impl Fleet for GrpcFleet {
    fn apply(&self, address: &str, request: pb::ApplyRequest) -> BoxFuture<'static, Answer> {
        let (reply, mut answers) = Reply::once();
        let address_ = address.to_string();
        self.start(address, request, reply);
        Box::pin(async move {
            Reply::answer(&mut answers).await.unwrap_or_else(|| {
                let gone = "the controller stopped awaiting this operation's result";
                Err(Fault::new(Failure::Abandoned, gone).at(&address_))
            })
        })
    }

    fn start(&self, address: &str, request: pb::ApplyRequest, reply: Reply) {
        let request = pb::ApplyRequest {
            epoch: self.epoch,
            ..request
        };
        let link = match self.link(address) {
            Ok(link) => link,
            Err(e) => return reply.send(Err(e)),
        };
        tokio::spawn(self.awaited.clone().start(link, request, reply));
    }

    fn probe(&self, address: &str, host_id: &str) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>> {
        let link = self.link(address);
        let host_id = host_id.to_string();
        Box::pin(async move {
            let link = link?;
            let timeout = link.timeout;
            guarded(link.guard.clone(), link.address.clone(), || {
                let mut client = link.client.clone();
                let mut req = tonic::Request::new(pb::ProbeRequest {
                    host_id: host_id.clone(),
                });
                req.set_timeout(timeout);
                async move { client.probe(req).await.map(tonic::Response::into_inner).map_err(fault) }
            })
            .await
        })
    }
}

/// A gRPC status in the reach layer's words: the one place tonic's codes are read.
/// A status tonic made itself for a connection that broke ("transport error", "h2
/// protocol error", code Unknown) is a broken call, worth another try.
pub(crate) fn fault(status: tonic::Status) -> Fault {
    let message = status.message().to_string();
    let failure = match status.code() {
        tonic::Code::Unknown if message.starts_with("transport error") || message.starts_with("h2 protocol error") => {
            Failure::Broken
        }
        code => failure_of(code),
    };
    Fault { failure, message }
}

/// The failure a gRPC code (an agent's answer, or a result in its log) stands for.
pub(crate) fn failure_of(code: tonic::Code) -> Failure {
    use tonic::Code;
    match code {
        Code::Unavailable => Failure::Unreachable,
        Code::DeadlineExceeded => Failure::TimedOut,
        Code::Unknown => Failure::Unexplained,
        Code::Cancelled => Failure::Abandoned,
        Code::FailedPrecondition => Failure::Refused,
        Code::PermissionDenied | Code::Unauthenticated => Failure::Forbidden,
        Code::InvalidArgument => Failure::Invalid,
        Code::Unimplemented => Failure::Unsupported,
        Code::Ok => Failure::Other("Ok"),
        Code::NotFound => Failure::Other("NotFound"),
        Code::AlreadyExists => Failure::Other("AlreadyExists"),
        Code::ResourceExhausted => Failure::Other("ResourceExhausted"),
        Code::Aborted => Failure::Other("Aborted"),
        Code::OutOfRange => Failure::Other("OutOfRange"),
        Code::Internal => Failure::Other("Internal"),
        Code::DataLoss => Failure::Other("DataLoss"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a connection that broke under the call is tried again among the Unknown
    /// statuses; every failure reads as the code it came from, as reasons always did.
    #[test]
    fn statuses_become_failures_that_say_what_to_do() {
        let broken = fault(tonic::Status::unknown("transport error: connection reset"));
        assert_eq!(broken.failure, Failure::Broken);
        assert!(broken.failure.retryable() && broken.failure.outcome_unknown());
        let odd = fault(tonic::Status::unknown("the agent panicked"));
        assert_eq!(odd.failure, Failure::Unexplained);
        assert!(!odd.failure.retryable() && odd.failure.outcome_unknown());
        let fenced = fault(tonic::Status::failed_precondition("stale epoch"));
        assert!(!fenced.failure.retryable() && !fenced.failure.outcome_unknown());
        let down = fault(tonic::Status::unavailable("connection refused")).at("10.0.0.1:7443");
        assert_eq!(
            down.to_string(),
            "agent at 10.0.0.1:7443: Unavailable: connection refused"
        );
        assert_eq!(failure_of(tonic::Code::Internal).to_string(), "Internal");
    }
}
