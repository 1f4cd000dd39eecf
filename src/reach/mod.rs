//! How we reach a host: the [`Fleet`] trait the engine acts through (apply, probe),
//! and what every driver of it shares: a deadline on every call, and retries
//! bounded by a budget and a breaker per endpoint ([`crate::retry`]), under one
//! [`RetryPolicy`]. One driver per module beside this one: [`grpc`] (the
//! `rollout agent` protocol) and [`ssh`] (hosts with nothing installed, over SSH);
//! [`Fleets`] routes each address to its driver. A fake stands in for tests.
//!
//! Below the engine: this module imports only the generated protocol and the
//! shared retry pieces.

pub mod grpc;
mod reply;
mod results;
pub mod ssh;

pub use grpc::GrpcFleet;
pub use reply::{Answer, Answers, Reply};
pub use ssh::SshFleet;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::proto::v1 as pb;
use crate::retry::{Backoff, Breakers, CallStats, RetryBudget};

/// Why a call to a host came back without an answer, in this layer's words: each
/// driver says which (only the gRPC driver reads gRPC codes). Shown as the name of
/// the gRPC code it has always been shown as ("Unavailable"...): failure reasons,
/// which people group and search by, carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The host could not be reached, or stopped being reachable: worth another
    /// try; it may have acted.
    Unreachable,
    /// No answer within the deadline: worth another try; it may have acted.
    TimedOut,
    /// The connection broke under the call: worth another try; it may have acted.
    Broken,
    /// An error nobody explained: not tried again; it may have acted.
    Unexplained,
    /// Nobody awaits the answer any more: it may have acted.
    Abandoned,
    /// The host refused the operation (a fenced epoch, a precondition): it did not act.
    Refused,
    /// The host refused the caller.
    Forbidden,
    /// The request itself is wrong (an address, a missing version).
    Invalid,
    /// The host does not know the call.
    Unsupported,
    /// Another error the host answered with, by its code's name.
    Other(&'static str),
}

impl Failure {
    /// Worth another try (the operation id makes a repeat safe).
    pub fn retryable(self) -> bool {
        matches!(self, Failure::Unreachable | Failure::TimedOut | Failure::Broken)
    }

    /// The host may have acted although no answer came: a retry reuses the
    /// operation id.
    pub fn outcome_unknown(self) -> bool {
        matches!(
            self,
            Failure::Unreachable | Failure::TimedOut | Failure::Broken | Failure::Unexplained | Failure::Abandoned
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::Unreachable => "Unavailable",
            Failure::TimedOut => "DeadlineExceeded",
            Failure::Broken | Failure::Unexplained => "Unknown",
            Failure::Abandoned => "Cancelled",
            Failure::Refused => "FailedPrecondition",
            Failure::Forbidden => "PermissionDenied",
            Failure::Invalid => "InvalidArgument",
            Failure::Unsupported => "Unimplemented",
            Failure::Other(name) => name,
        })
    }
}

/// One attempt that failed, before the guard says whose it was.
#[derive(Debug, Clone)]
pub struct Fault {
    pub failure: Failure,
    pub message: String,
}

impl Fault {
    pub fn new(failure: Failure, message: impl Into<String>) -> Fault {
        Fault {
            failure,
            message: message.into(),
        }
    }

    /// The fault as the call to `address` failed.
    pub fn at(self, address: &str) -> CallError {
        CallError {
            address: address.to_string(),
            failure: self.failure,
            message: self.message,
        }
    }
}

/// A call to a host that did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("agent at {address}: {failure}: {message}")]
pub struct CallError {
    pub address: String,
    pub failure: Failure,
    pub message: String,
}

impl CallError {
    /// True when the agent may have acted even though we got no answer
    /// (timeouts, broken connections): a retry must reuse the operation_id.
    pub fn outcome_unknown(&self) -> bool {
        self.failure.outcome_unknown()
    }
}

/// The agents, as the engine sees them. A fake stands in for tests.
pub trait Fleet: Send + Sync + 'static {
    /// Applies, and awaits the answer.
    fn apply(&self, address: &str, request: pb::ApplyRequest) -> BoxFuture<'static, Answer>;

    /// Starts an Apply whose answer goes to `reply`: nothing awaits it here. By
    /// default a call held until it answers (dropped if the reply closes first);
    /// a driver that can keeps the operation as a record instead.
    fn start(&self, address: &str, request: pb::ApplyRequest, reply: Reply) {
        tokio::spawn(reply.answer_with(self.apply(address, request)));
    }
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
pub(crate) struct Guard {
    policy: RetryPolicy,
    budget: RetryBudget,
    breakers: Breakers,
    stats: CallStats,
    in_flight: tokio::sync::Semaphore,
}

impl Guard {
    pub(crate) fn new(policy: RetryPolicy) -> Guard {
        Guard {
            budget: RetryBudget::new(policy.budget_ratio, policy.budget_window),
            breakers: Breakers::new(policy.breaker_threshold, policy.breaker_cool_down),
            stats: CallStats::default(),
            in_flight: tokio::sync::Semaphore::new(policy.max_in_flight.max(1)),
            policy,
        }
    }
}

/// Runs `attempt` under the breaker, the budget and the backoff.
pub(crate) async fn guarded<T, F, Fut>(guard: Arc<Guard>, address: String, attempt: F) -> Result<T, CallError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Fault>>,
{
    guarded_as(guard, address, Call::First, attempt).await
}

/// What a call is, for the retry budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A first attempt: it earns the budget its share of retries.
    First,
    /// An operation asked again after its agent restarted (counted apart): it earns
    /// no retries, and its own retries spend the budget as any.
    Reask,
}

/// [`guarded`], for a call of kind `call`.
pub(crate) async fn guarded_as<T, F, Fut>(
    guard: Arc<Guard>,
    address: String,
    call: Call,
    attempt: F,
) -> Result<T, CallError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Fault>>,
{
    let mut backoff = Backoff::new(guard.policy.backoff_base, guard.policy.backoff_cap);
    let mut retries = 0;
    loop {
        if !guard.breakers.allow(&address) {
            guard.stats.breaker_rejected.inc();
            let open = "circuit open: the agent failed repeatedly; not called until its cool-down ends";
            return Err(Fault::new(Failure::Unreachable, open).at(&address));
        }
        if retries == 0 && call == Call::First {
            guard.budget.first_attempt();
            guard.stats.first_attempts.inc();
        } else if retries > 0 {
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
            Err(fault) if fault.failure.retryable() => {
                if guard.breakers.failure(&address) {
                    guard.stats.breaker_opened.inc();
                }
                if retries >= guard.policy.max_retries {
                    return Err(fault.at(&address));
                }
                if !guard.budget.try_retry() {
                    guard.stats.budget_exhausted.inc();
                    let mut e = fault.at(&address);
                    e.message
                        .push_str(" (not retried: the retry budget of 10% of first attempts is spent)");
                    return Err(e);
                }
                retries += 1;
                tokio::time::sleep(backoff.next().unwrap_or_default()).await;
            }
            Err(fault) => {
                // The agent answered, with a refusal: the endpoint is alive.
                guard.breakers.success(&address);
                return Err(fault.at(&address));
            }
        }
    }
}

/// Shared handle to any fleet.
pub type SharedFleet = Arc<dyn Fleet>;

/// One fleet of agents and SSH hosts, by the address's scheme (`ssh://` is an SSH
/// host), under one guard: the same budget, breakers and calls in flight.
pub struct Fleets {
    grpc: Arc<GrpcFleet>,
    ssh: Option<Arc<SshFleet>>,
}

impl Fleets {
    /// Agents through `grpc`; SSH hosts as `ssh` says (None: an `ssh://` host is
    /// refused, saying to give --ssh).
    pub fn new(grpc: Arc<GrpcFleet>, ssh: Option<ssh::config::SshConfig>, epoch: u64) -> Fleets {
        let ssh = ssh.map(|c| Arc::new(SshFleet::new(c, grpc.guard(), epoch)));
        Fleets { grpc, ssh }
    }

    /// The SSH driver, when there is one (its idle connections need reaping).
    pub fn ssh(&self) -> Option<Arc<SshFleet>> {
        self.ssh.clone()
    }

    fn ssh_for(&self, address: &str) -> Option<Result<&Arc<SshFleet>, CallError>> {
        address.starts_with("ssh://").then(|| {
            self.ssh.as_ref().ok_or_else(|| CallError {
                address: address.to_string(),
                failure: Failure::Refused,
                message: "this host is reached over SSH, and the controller runs without --ssh FILE (the SSH driver's key, known_hosts and commands)".into(),
            })
        })
    }
}

impl Fleet for Fleets {
    fn apply(&self, address: &str, request: pb::ApplyRequest) -> BoxFuture<'static, Answer> {
        match self.ssh_for(address) {
            Some(Ok(ssh)) => ssh.apply_call(address, request),
            Some(Err(e)) => Box::pin(async move { Err(e) }),
            None => self.grpc.apply(address, request),
        }
    }

    fn start(&self, address: &str, request: pb::ApplyRequest, reply: Reply) {
        match self.ssh_for(address) {
            // An SSH host runs one operation at a time and its session answers when
            // it ends: the held channel is how its result is learned (BENCHMARKS.md).
            Some(Ok(ssh)) => {
                tokio::spawn(reply.answer_with(ssh.apply_call(address, request)));
            }
            Some(Err(e)) => reply.send(Err(e)),
            None => self.grpc.start(address, request, reply),
        }
    }

    fn probe(&self, address: &str, host_id: &str) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>> {
        match self.ssh_for(address) {
            Some(Ok(ssh)) => ssh.probe_call(address, host_id),
            Some(Err(e)) => Box::pin(async move { Err(e) }),
            None => self.grpc.probe(address, host_id),
        }
    }
}
