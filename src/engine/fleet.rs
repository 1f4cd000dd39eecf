//! How the engine reaches agents: the [`Fleet`] trait, and its gRPC implementation
//! with one reusable channel per agent address, a deadline on every call, and
//! retries bounded by a budget and a breaker per endpoint (see [`super::retry`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

use super::retry::{Backoff, Breakers, CallStats, RetryBudget};
use crate::proto::v1 as pb;
use crate::proto::v1::agent_client::AgentClient;

/// A call to an agent that did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("agent at {address}: {code:?}: {message}")]
pub struct CallError {
    pub address: String,
    pub code: tonic::Code,
    pub message: String,
}

impl CallError {
    /// True when the agent may have acted even though we got no answer
    /// (timeouts, broken connections): a retry must reuse the operation_id.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self.code,
            tonic::Code::DeadlineExceeded | tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        )
    }
}

/// The agents, as the engine sees them. A fake stands in for tests.
pub trait Fleet: Send + Sync + 'static {
    fn apply(
        &self,
        address: &str,
        request: pb::ApplyRequest,
    ) -> BoxFuture<'static, Result<pb::ApplyResponse, CallError>>;
    fn probe(&self, address: &str, host_id: &str) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>>;
}

/// How the gRPC fleet retries. The defaults are the contract of DESIGN.md: retries
/// at most 10% of first attempts, full jitter, a breaker per endpoint.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries per call at most (each also needs the budget).
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub budget_ratio: f64,
    pub budget_window: Duration,
    /// Consecutive failures that open an endpoint's breaker.
    pub breaker_threshold: u32,
    pub breaker_cool_down: Duration,
    /// Agent calls in flight at once across every rollout and job (each rollout is
    /// also bounded by its own max_parallel).
    pub max_in_flight: usize,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            budget_ratio: 0.1,
            budget_window: Duration::from_secs(60),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(5),
            max_in_flight: 4_096,
        }
    }
}

/// What every call shares: the retry budget, the breakers, the counters.
struct Guard {
    policy: RetryPolicy,
    budget: RetryBudget,
    breakers: Breakers,
    stats: CallStats,
    in_flight: tokio::sync::Semaphore,
}

/// Agents over gRPC: one lazily connected channel per address, a deadline on every
/// call, and retries bounded by [`RetryPolicy`].
pub struct GrpcFleet {
    channels: Mutex<HashMap<String, Channel>>,
    call_timeout: Duration,
    guard: Arc<Guard>,
    /// TLS to the agents (`https://`), with the controller's own identity for mutual TLS.
    tls: Option<tonic::transport::ClientTlsConfig>,
    /// The runtime that drives the connections to agents (the one the fleet was made
    /// on: the engine's), even when an API call on another runtime opens one.
    runtime: Option<tokio::runtime::Handle>,
    /// This controller's epoch, carried by every Apply (0: none).
    epoch: u64,
}

impl GrpcFleet {
    pub fn new(call_timeout: Duration) -> GrpcFleet {
        GrpcFleet::with_policy(call_timeout, RetryPolicy::default())
    }

    pub fn with_policy(call_timeout: Duration, policy: RetryPolicy) -> GrpcFleet {
        GrpcFleet {
            channels: Mutex::new(HashMap::new()),
            call_timeout,
            guard: Arc::new(Guard {
                budget: RetryBudget::new(policy.budget_ratio, policy.budget_window),
                breakers: Breakers::new(policy.breaker_threshold, policy.breaker_cool_down),
                stats: CallStats::default(),
                in_flight: tokio::sync::Semaphore::new(policy.max_in_flight.max(1)),
                policy,
            }),
            tls: None,
            runtime: tokio::runtime::Handle::try_current().ok(),
            epoch: 0,
        }
    }

    /// Speaks TLS to every agent.
    pub fn with_tls(mut self, tls: Option<tonic::transport::ClientTlsConfig>) -> GrpcFleet {
        self.tls = tls;
        self
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

    /// The channel for an address, created on first use (connections are lazy and
    /// shared by every call to that address).
    fn client(&self, address: &str) -> Result<AgentClient<Channel>, CallError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(address) {
            return Ok(AgentClient::new(ch.clone()));
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
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(AgentClient::new(channel))
    }
}

fn call_error(address: &str, status: tonic::Status) -> CallError {
    CallError {
        address: address.to_string(),
        code: status.code(),
        message: status.message().to_string(),
    }
}

/// Codes worth another try: the agent did not get or did not finish the call. Apply
/// is idempotent by operation_id, so a repeat after a deadline is safe.
fn retryable(code: tonic::Code) -> bool {
    matches!(code, tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
}

/// Runs `attempt` under the breaker, the budget and the backoff.
async fn guarded<T, F, Fut>(guard: Arc<Guard>, address: String, attempt: F) -> Result<T, CallError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = Backoff::new(guard.policy.backoff_base, guard.policy.backoff_cap);
    let mut retries = 0;
    loop {
        if !guard.breakers.allow(&address) {
            guard.stats.breaker_rejected.inc();
            return Err(CallError {
                address,
                code: tonic::Code::Unavailable,
                message: "circuit open: the agent failed repeatedly; not called until its cool-down ends".into(),
            });
        }
        if retries == 0 {
            guard.budget.first_attempt();
            guard.stats.first_attempts.inc();
        } else {
            guard.stats.retries.inc();
        }
        let answer = {
            // The global bound; only closed if the fleet is dropped.
            let _permit = guard.in_flight.acquire().await;
            let started = std::time::Instant::now();
            let answer = attempt().await;
            guard.stats.latency.observe(started.elapsed().as_secs_f64());
            answer
        };
        match answer {
            Ok(v) => {
                guard.breakers.success(&address);
                return Ok(v);
            }
            Err(status) if retryable(status.code()) => {
                if guard.breakers.failure(&address) {
                    guard.stats.breaker_opened.inc();
                }
                if retries >= guard.policy.max_retries {
                    return Err(call_error(&address, status));
                }
                if !guard.budget.try_retry() {
                    guard.stats.budget_exhausted.inc();
                    let mut e = call_error(&address, status);
                    e.message
                        .push_str(" (not retried: the retry budget of 10% of first attempts is spent)");
                    return Err(e);
                }
                retries += 1;
                tokio::time::sleep(backoff.next().unwrap_or_default()).await;
            }
            Err(status) => {
                // The agent answered, with a refusal: the endpoint is alive.
                guard.breakers.success(&address);
                return Err(call_error(&address, status));
            }
        }
    }
}

impl Fleet for GrpcFleet {
    fn apply(
        &self,
        address: &str,
        request: pb::ApplyRequest,
    ) -> BoxFuture<'static, Result<pb::ApplyResponse, CallError>> {
        let request = pb::ApplyRequest {
            epoch: self.epoch,
            ..request
        };
        let client = self.client(address);
        let (address, timeout, guard) = (address.to_string(), self.call_timeout, self.guard.clone());
        Box::pin(async move {
            let client = client?;
            guarded(guard, address, || {
                let mut client = client.clone();
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(timeout);
                async move { client.apply(req).await.map(tonic::Response::into_inner) }
            })
            .await
        })
    }

    fn probe(&self, address: &str, host_id: &str) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>> {
        let client = self.client(address);
        let (address, timeout, guard) = (address.to_string(), self.call_timeout, self.guard.clone());
        let host_id = host_id.to_string();
        Box::pin(async move {
            let client = client?;
            guarded(guard, address, || {
                let mut client = client.clone();
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

/// Shared handle to any fleet.
pub type SharedFleet = Arc<dyn Fleet>;
