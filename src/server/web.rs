//! The HTTP side of a controller (the dashboard, and `/metrics` beside it or on
//! `--metrics-listen`): served in plain HTTP or, with `--http-tls-cert` and
//! `--http-tls-key`, in TLS; and the check that a request's Host is one this
//! controller answers to, so that a page of another site cannot read the dashboard
//! through DNS rebinding (a name of the attacker's that resolves to this address).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{Credentials, Need};
use crate::{Error, Result};

/// The dashboard's TLS (`--http-tls-cert`, `--http-tls-key`).
pub type HttpTls = Arc<rustls::ServerConfig>;

/// Reads a PEM certificate chain and its private key into a TLS server config.
pub fn tls_config(cert: &Path, key: &Path) -> Result<HttpTls> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<std::result::Result<_, _>>())
        .map_err(|e| Error::Usage(format!("--http-tls-cert {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Usage(format!(
            "--http-tls-cert {} holds no certificate (PEM)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Usage(format!("--http-tls-key {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| Error::Usage(format!("the dashboard's certificate and key: {e}")))?;
    Ok(Arc::new(config))
}

/// Serves an HTTP app on `listener` until `shutdown`, in TLS when `tls` is given.
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    shutdown: CancellationToken,
    what: &'static str,
    tls: Option<HttpTls>,
) {
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "{what} on {scheme}://{addr}/");
    }
    let Some(tls) = tls else {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "the {what} HTTP server failed");
        }
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "the {what} HTTPS server cannot accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, shutdown) = (acceptor.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp)).await;
            let stream = match handshake {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake refused"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                done = connection.as_mut() => if let Err(e) = done { debug!(%peer, error = %e, "connection ended") },
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// The names a dashboard answers to: its port, and the authority of its advertised
/// URL (`--http-advertise`), if any.
#[derive(Debug, Clone, Default)]
pub struct Hosts {
    /// The port it listens on.
    pub port: u16,
    /// `name:port` (or `name` for the scheme's default port) as advertised.
    pub advertised: Vec<String>,
}

impl Hosts {
    /// True when a request with this Host may be answered: an IP address (no DNS in
    /// between, so nothing to rebind) or `localhost` on the port it listens on, or an
    /// advertised name.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.advertised.iter().any(|a| a.eq_ignore_ascii_case(&host)) {
            return true;
        }
        let Ok(authority) = host.parse::<http::uri::Authority>() else {
            return false;
        };
        if authority.port_u16() != Some(self.port) {
            return false;
        }
        let name = authority.host().trim_start_matches('[').trim_end_matches(']');
        name == "localhost" || name.parse::<std::net::IpAddr>().is_ok()
    }
}

/// Refuses (421 Misdirected Request) a request whose Host this dashboard does not
/// answer to.
pub async fn host_check(State(hosts): State<Arc<Hosts>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if hosts.allows(&h) => next.run(req).await,
        other => {
            warn!(host = %crate::ident::escaped(other.as_deref().unwrap_or("")), "dashboard request refused: Host is not this controller's");
            (
                StatusCode::MISDIRECTED_REQUEST,
                "This dashboard answers only to its own address or advertised name (--http-advertise).\n",
            )
                .into_response()
        }
    }
}

/// Answers only callers with a viewer's (or higher) bearer token, when the
/// controller has credentials: `/metrics` on a standby's dashboard port.
pub async fn viewer_only(State(credentials): State<Option<Arc<Credentials>>>, req: Request, next: Next) -> Response {
    let Some(credentials) = credentials else {
        return next.run(req).await;
    };
    let principal = crate::auth::bearer(req.headers())
        .flatten()
        .and_then(|t| credentials.by_token(t));
    match principal {
        Some(p) if p.role.allows(Need::View) => next.run(req).await,
        Some(_) => (StatusCode::FORBIDDEN, "a viewer, operator or admin token is needed\n").into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send a viewer token as Authorization: Bearer (Prometheus: its authorization setting), or scrape --metrics-listen\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_its_own_names_are_answered() {
        let hosts = Hosts {
            port: 8080,
            advertised: vec!["rollout.corp.example".into(), "rollout.corp.example:8443".into()],
        };
        for ok in [
            "127.0.0.1:8080",
            "[::1]:8080",
            "localhost:8080",
            "10.0.0.7:8080",
            "rollout.corp.example",
            "ROLLOUT.corp.example:8443",
        ] {
            assert!(hosts.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:9999",
            "localhost",
            "",
            "rollout.corp.example:9999",
        ] {
            assert!(!hosts.allows(bad), "{bad}");
        }
    }
}
