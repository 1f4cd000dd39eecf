//! The agent's heartbeats: it registers its host with the controller (labels,
//! customers, address) and says, at jittered intervals, which version it runs and
//! whether its health command passes. A controller that misses three marks it
//! unreachable.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tracing::{debug, warn};

use super::host::HostAgent;
use crate::auth::client::{Bearer, Credentials};
use crate::proto::v1 as pb;
use crate::proto::v1::controller_client::ControllerClient;

type Client = ControllerClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>>;

/// A lazily connected client with the agent's TLS material and token (role `agent`).
fn heartbeat_client(controller: &str, credentials: &Credentials) -> crate::Result<Client> {
    let mut endpoint = Endpoint::from_shared(controller.to_string())
        .map_err(|e| crate::Error::Usage(format!("the controller URL `{controller}` is not valid: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    if let Some(tls) = credentials.tls.config()? {
        endpoint = endpoint.tls_config(tls).map_err(|source| crate::Error::Transport {
            context: "TLS to the controller (check --ca, --cert and --key)".into(),
            source,
        })?;
    }
    let bearer = Bearer::new(credentials.token.as_deref())?;
    Ok(ControllerClient::with_interceptor(endpoint.connect_lazy(), bearer))
}

/// Sends heartbeats to the configured controller until `shutdown`. `bound` is the
/// address the agent listens on, advertised unless the config names another.
pub async fn run(
    agent: Arc<HostAgent>,
    bound: std::net::SocketAddr,
    credentials: Credentials,
    shutdown: CancellationToken,
) {
    let config = agent.config().clone();
    let Some(controller) = config.controller.clone() else {
        return;
    };
    let mut client = match heartbeat_client(&controller, &credentials) {
        Ok(client) => client,
        Err(e) => {
            warn!(%controller, error = %e, "no heartbeats");
            return;
        }
    };
    let interval = config.heartbeat;
    let address = config.address.clone().unwrap_or_else(|| bound.to_string());
    loop {
        let (healthy, detail) = agent.health().await;
        let request = pb::HeartbeatRequest {
            host_id: config.host_id.clone(),
            address: address.clone(),
            labels: config.labels.clone().into_iter().collect(),
            customers: config.customers.clone(),
            version: agent.version(),
            healthy,
            detail,
            interval_ms: interval.as_millis() as u64,
        };
        match tokio::time::timeout(interval.max(Duration::from_secs(1)), client.heartbeat(request)).await {
            Ok(Ok(r)) => debug!(registered = r.into_inner().registered, "heartbeat"),
            Ok(Err(status)) => warn!(
                %controller,
                host = %config.host_id,
                code = ?status.code(),
                error = %status.message(),
                "heartbeat refused for this host"
            ),
            Err(_) => warn!(%controller, "heartbeat timed out"),
        }
        // Jitter (±20%) keeps a fleet restarted together from heartbeating in lockstep.
        let wait = interval.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
