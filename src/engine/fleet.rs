//! How the engine reaches agents: the [`Fleet`] trait, and its gRPC implementation
//! with one reusable channel per agent address and a deadline on every call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

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

/// Agents over gRPC.
pub struct GrpcFleet {
    channels: Mutex<HashMap<String, Channel>>,
    call_timeout: Duration,
}

impl GrpcFleet {
    pub fn new(call_timeout: Duration) -> GrpcFleet {
        GrpcFleet {
            channels: Mutex::new(HashMap::new()),
            call_timeout,
        }
    }

    /// The channel for an address, created on first use (connections are lazy and
    /// shared by every call to that address).
    fn client(&self, address: &str) -> Result<AgentClient<Channel>, CallError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(address) {
            return Ok(AgentClient::new(ch.clone()));
        }
        let url = if address.contains("://") {
            address.to_string()
        } else {
            format!("http://{address}")
        };
        let endpoint = Endpoint::from_shared(url).map_err(|e| CallError {
            address: address.to_string(),
            code: tonic::Code::InvalidArgument,
            message: format!("bad agent address: {e}"),
        })?;
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

impl Fleet for GrpcFleet {
    fn apply(
        &self,
        address: &str,
        request: pb::ApplyRequest,
    ) -> BoxFuture<'static, Result<pb::ApplyResponse, CallError>> {
        let client = self.client(address);
        let address = address.to_string();
        let timeout = self.call_timeout;
        Box::pin(async move {
            let mut client = client?;
            let mut req = tonic::Request::new(request);
            req.set_timeout(timeout);
            client
                .apply(req)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| call_error(&address, s))
        })
    }

    fn probe(&self, address: &str, host_id: &str) -> BoxFuture<'static, Result<pb::ProbeResponse, CallError>> {
        let client = self.client(address);
        let address = address.to_string();
        let host_id = host_id.to_string();
        let timeout = self.call_timeout;
        Box::pin(async move {
            let mut client = client?;
            let mut req = tonic::Request::new(pb::ProbeRequest { host_id });
            req.set_timeout(timeout);
            client
                .probe(req)
                .await
                .map(tonic::Response::into_inner)
                .map_err(|s| call_error(&address, s))
        })
    }
}

/// Shared handle to any fleet.
pub type SharedFleet = Arc<dyn Fleet>;
