//! The gRPC driver: hosts that run `rollout agent` (or a simulated fleet), reached
//! over one lazily connected, reused channel per agent address, every call under
//! the deadline, the budget and the breakers of [`super::guarded`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::Endpoint;

use super::results::Link;
use super::{Answer, CallError, Fleet, Guard, Reply, RetryPolicy, guarded};
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
        let bad = |message: String| CallError {
            address: address.to_string(),
            code: tonic::Code::InvalidArgument,
            message,
        };
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
                Err(CallError {
                    address: address_,
                    code: tonic::Code::Cancelled,
                    message: "the controller stopped awaiting this operation's result".into(),
                })
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
                async move { client.probe(req).await.map(tonic::Response::into_inner) }
            })
            .await
        })
    }
}
