//! The gRPC client the commands share: one connection, TLS and a bearer token when
//! configured, errors as one line.

use std::sync::OnceLock;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use crate::auth::client::{Bearer, Credentials};
use crate::proto::v1::controller_client::ControllerClient;
use crate::tls::ClientFiles;
use crate::{Error, Result};

/// A Controller client that sends the caller's token with every call.
pub type Client = ControllerClient<InterceptedService<Channel, Bearer>>;

/// The command line's credentials, set once at start-up by `main`.
static CREDENTIALS: OnceLock<Credentials> = OnceLock::new();

/// Sets the credentials every later [`connect`] uses (once per process).
pub fn set_credentials(credentials: Credentials) {
    let _ = CREDENTIALS.set(credentials);
}

/// The command line's credentials (none before `set_credentials`).
pub fn credentials() -> Credentials {
    CREDENTIALS.get().cloned().unwrap_or_default()
}

/// A channel to `server` (`http://` or, with TLS, `https://`; `HOST:PORT` alone is
/// taken as `http://`), connected now. Errors say what was reached and the fix.
pub async fn channel(server: &str, tls: &ClientFiles, what: &str) -> Result<Channel> {
    let server = with_scheme(server);
    let mut endpoint = Endpoint::from_shared(server.clone())
        .map_err(|_| {
            Error::Usage(format!(
                "--server `{server}` is not a URL: write it like http://127.0.0.1:50051"
            ))
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    match tls.config()? {
        Some(config) => {
            endpoint = endpoint.tls_config(config).map_err(|source| Error::Transport {
                context: "TLS configuration (check --ca, --cert and --key)".into(),
                source,
            })?;
        }
        None if server.starts_with("https://") => {
            return Err(Error::Usage(format!(
                "{server} speaks TLS: give the CA that signed {what}'s certificate with --ca FILE (or ROLLOUT_CA)"
            )));
        }
        None => {}
    }
    endpoint.connect().await.map_err(|e| {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(&e);
        let mut refused = false;
        while let Some(s) = source {
            cause = s.to_string();
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
            }
            source = s.source();
        }
        if refused {
            Error::Unreachable(format!(
                "nothing listens at {server} (connection refused): start {what} (`rollout serve`), or point --server (or ROLLOUT_SERVER) at its --listen address"
            ))
        } else {
            Error::Unreachable(format!(
                "cannot reach {what} at {server}: {cause}: check the address, and that the network lets you through"
            ))
        }
    })
}

/// A failed command's error, said better when it is a broken connection to a plain
/// `http://` server that speaks TLS: asked once more (an HTTP/2 preface, whose answer
/// from a TLS server is a TLS alert record), it says so and what to do.
pub async fn explain(error: Error, server: &str) -> Error {
    let broken =
        matches!(&error, Error::Remote { message, .. } if message.starts_with(crate::error::BROKEN_CONNECTION));
    let server = with_scheme(server);
    let Some(address) = server.strip_prefix("http://") else {
        return error;
    };
    if broken && speaks_tls(address.trim_end_matches('/')).await {
        return Error::Unreachable(format!(
            "{address} speaks TLS, not plain HTTP: use --server https://{address} and give the CA that signed the controller's certificate with --ca FILE (or ROLLOUT_CA)",
            address = address.trim_end_matches('/')
        ));
    }
    error
}

/// Does the server at `address` answer the start of an HTTP/2 preface with a TLS
/// alert? Five bytes only, a TLS record header's length: a TLS server refuses them
/// with nothing left unread, so it closes cleanly and its alert is not lost to a
/// reset; a plain HTTP/2 server waits for the rest, which ends the probe at its bound.
async fn speaks_tls(address: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(b"PRI *").await.ok()?;
        let mut first = [0u8; 2];
        stream.read_exact(&mut first).await.ok()?;
        // A TLS record: content type 21 (alert), protocol major version 3.
        Some(first == [0x15, 0x03])
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), probe).await,
        Ok(Some(true))
    )
}

/// `HOST:PORT` as `http://HOST:PORT`; a URL as it is.
fn with_scheme(server: &str) -> String {
    if server.contains("://") {
        server.to_string()
    } else {
        format!("http://{server}")
    }
}

/// Connects to the controller at `server` with the command line's credentials.
pub async fn connect(server: &str) -> Result<Client> {
    connect_with(server, &credentials()).await
}

/// Connects to the controller at `server` with `credentials`.
pub async fn connect_with(server: &str, credentials: &Credentials) -> Result<Client> {
    let channel = channel(server, &credentials.tls, "the controller").await?;
    let bearer = Bearer::new(credentials.token.as_deref())?;
    Ok(ControllerClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(4 * 1024 * 1024))
}

/// The rollout named `name` (the active one, else the most recent), as it is now.
pub async fn rollout_named(client: &mut Client, name: &str) -> Result<crate::proto::v1::Rollout> {
    let request = crate::proto::v1::GetRolloutRequest {
        name: name.to_string(),
        id: 0,
    };
    Ok(client.get_rollout(request).await?.into_inner())
}
