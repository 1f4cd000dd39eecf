//! TLS from PEM files (rustls through tonic): the controller's and agents' server side,
//! with mutual TLS when a client CA is given, and the client side the CLI, the agents'
//! heartbeats and the controller's agent calls use.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Error, Result};

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("cannot read the {what} {}", path.display()), e))
}

/// A PEM file of certificates (a chain, or a CA's), checked to hold at least one.
fn read_certificates(path: &Path, what: &str) -> Result<Vec<u8>> {
    let pem = read(path, what)?;
    crate::pem::certificates(&pem).map_err(|e| Error::Usage(format!("the {what} {} {e}", path.display())))?;
    Ok(pem)
}

/// A PEM private key file, checked to hold one.
fn read_key(path: &Path, what: &str) -> Result<Vec<u8>> {
    let pem = read(path, what)?;
    crate::pem::private_key(&pem).map_err(|e| Error::Usage(format!("the {what} {} {e}", path.display())))?;
    Ok(pem)
}

/// A server's certificate and key, and the CA its clients' certificates must chain to
/// (mutual TLS: a client without one is refused during the handshake).
#[derive(Debug, Clone, Default)]
pub struct ServerFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
}

impl ServerFiles {
    /// The tonic config, or None when TLS is off. Half a pair is a usage error.
    pub fn config(&self) -> Result<Option<ServerTlsConfig>> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) if self.client_ca.is_none() => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                return Err(Error::Usage(
                    "TLS needs both --tls-cert and --tls-key (and --client-ca only with them)".into(),
                ));
            }
        };
        let identity = Identity::from_pem(read_certificates(cert, "certificate")?, read_key(key, "private key")?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read_certificates(ca, "client CA")?));
        }
        Ok(Some(config))
    }
}

/// What a client trusts (`--ca`) and proves itself with (`--cert`, `--key`).
#[derive(Debug, Clone, Default)]
pub struct ClientFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientFiles {
    /// True when the client should speak TLS.
    pub fn enabled(&self) -> bool {
        self.ca.is_some() || self.cert.is_some()
    }

    /// The tonic config, or None when TLS is off.
    pub fn config(&self) -> Result<Option<ClientTlsConfig>> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut config = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            config = config.ca_certificate(Certificate::from_pem(read_certificates(ca, "CA certificate")?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read_certificates(cert, "certificate")?,
                    read_key(key, "private key")?,
                ));
            }
            (None, None) => {}
            _ => return Err(Error::Usage("a client certificate needs both --cert and --key".into())),
        }
        Ok(Some(config))
    }
}
