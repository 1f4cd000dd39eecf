//! The gRPC client the commands share: one connection, errors as one line.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::v1::controller_client::ControllerClient;
use crate::{Error, Result};

/// Connects to the controller at `server` (a URL like `http://127.0.0.1:50051`).
pub async fn connect(server: &str) -> Result<ControllerClient<Channel>> {
    let endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|_| {
            Error::Usage(format!(
                "--server `{server}` is not a URL: write it like http://127.0.0.1:50051"
            ))
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| {
        let cause = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
        Error::Usage(format!(
            "cannot reach the controller at {server}: {cause}; start it with `rollout serve` or point --server (or ROLLOUT_SERVER) at it"
        ))
    })?;
    Ok(ControllerClient::new(channel)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(4 * 1024 * 1024))
}
