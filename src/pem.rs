//! PEM files checked when they are named (a certificate file holds a certificate, a
//! key file a key), so that a wrong file is refused at start, not at the first
//! handshake. Below everything that reads them: this module imports nothing of the
//! crate.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Checks that `pem` holds at least one certificate and nothing unreadable; the
/// reason when not.
pub fn certificates(pem: &[u8]) -> Result<(), String> {
    let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
    match parsed {
        Ok(certs) if !certs.is_empty() => Ok(()),
        Ok(_) => Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----): give the certificate file".into()),
        Err(e) => Err(format!("is not a readable PEM file ({e}): give the certificate file")),
    }
}

/// Checks that `pem` holds a private key; the reason when not.
pub fn private_key(pem: &[u8]) -> Result<(), String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map(|_| ())
        .map_err(|_| "holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC): give the key file".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_files_are_named_as_such() {
        assert!(
            certificates(b"tokens:\n  - principal: a\n")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(private_key(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
    }
}
