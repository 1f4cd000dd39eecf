//! An OpenSSH `known_hosts` file, checked strictly: a host's key must be listed for
//! it (by name, `[name]:port`, a hashed `|1|` entry, or a `*`/`?` pattern; `!`
//! negates), or its host certificate signed by a `@cert-authority` listed for it; a
//! `@revoked` key is refused, and so is a certificate signed by a `@revoked` CA key
//! (as OpenSSH does). Nothing is ever learned: an unknown host or a changed
//! key is refused, naming the key's SHA256 fingerprint and the file to fix.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use russh::keys::ssh_key::{self, HashAlg, PublicKey};
use wildmatch::WildMatch;

/// One line that names hosts.
#[derive(Debug, Clone)]
struct Entry {
    marker: Marker,
    patterns: Vec<String>,
    key: PublicKey,
    line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

/// A known_hosts file, read once.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    entries: Vec<Entry>,
}

/// Why a host's key was refused: one line saying what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "host {host} is not in {file}: its key {fingerprint} is not trusted (nothing trusts on first use); add its key to {file} after checking the fingerprint out of band"
    )]
    Unknown {
        host: String,
        fingerprint: String,
        file: String,
    },
    #[error(
        "host {host} presented key {fingerprint}, which does not match the one {file} lists for it at line {line}: the key changed (a reinstall, or someone in the middle); nothing was sent. Check it out of band and fix line {line}"
    )]
    Changed {
        host: String,
        fingerprint: String,
        file: String,
        line: usize,
    },
    #[error("host {host} presented key {fingerprint}, revoked in {file} at line {line}")]
    Revoked {
        host: String,
        fingerprint: String,
        file: String,
        line: usize,
    },
    #[error(
        "host {host} presented a host certificate signed by CA key {fingerprint}, revoked in {file} at line {line}: nothing was sent"
    )]
    RevokedAuthority {
        host: String,
        fingerprint: String,
        file: String,
        line: usize,
    },
    #[error("host {host} presented a host certificate {fingerprint} that {file} does not accept: {why}")]
    Certificate {
        host: String,
        fingerprint: String,
        file: String,
        why: String,
    },
}

/// What a host presented: a plain key, or a host certificate.
pub enum Presented<'a> {
    Key(&'a PublicKey),
    Certificate(&'a ssh_key::Certificate),
}

impl KnownHosts {
    /// Reads `path`; a line that does not parse is an error naming it.
    pub fn load(path: &Path) -> Result<KnownHosts, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        KnownHosts::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<KnownHosts, String> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let mut first = words.next().unwrap_or_default();
            let marker = match first {
                "@cert-authority" => Marker::CertAuthority,
                "@revoked" => Marker::Revoked,
                _ => Marker::None,
            };
            if marker != Marker::None {
                first = words.next().unwrap_or_default();
            }
            let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
                return Err(format!(
                    "{}:{}: expected `[marker] hosts key-type base64-key`",
                    path.display(),
                    i + 1
                ));
            };
            let key = PublicKey::from_openssh(&format!("{kind} {blob}"))
                .map_err(|e| format!("{}:{}: the key does not parse: {e}", path.display(), i + 1))?;
            entries.push(Entry {
                marker,
                patterns: first.split(',').map(str::to_string).collect(),
                key,
                line: i + 1,
            });
        }
        Ok(KnownHosts {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// True when a `@cert-authority` line names `host`:`port` (then a host
    /// certificate is asked for).
    pub fn has_authority_for(&self, host: &str, port: u16) -> bool {
        let name = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        self.entries
            .iter()
            .any(|e| e.marker == Marker::CertAuthority && matches(&e.patterns, &name))
    }

    /// Accepts what `host`:`port` presented, or says why not.
    pub fn check(&self, host: &str, port: u16, presented: Presented<'_>) -> Result<(), Refused> {
        let name = if port == 22 {
            host.to_string()
        } else {
            format!("[{host}]:{port}")
        };
        let file = self.path.display().to_string();
        let (key, cert) = match presented {
            Presented::Key(k) => (k.clone(), None),
            Presented::Certificate(c) => (PublicKey::from(c.public_key().clone()), Some(c)),
        };
        let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
        let names: Vec<&Entry> = self.entries.iter().filter(|e| matches(&e.patterns, &name)).collect();
        if let Some(r) = names
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key.key_data() == key.key_data())
        {
            return Err(Refused::Revoked {
                host: name,
                fingerprint,
                file,
                line: r.line,
            });
        }
        if let Some(cert) = cert {
            // As OpenSSH: a certificate whose signing CA key is revoked is refused,
            // whatever @cert-authority line names that key.
            let signer = cert.signature_key();
            if let Some(r) = names
                .iter()
                .find(|e| e.marker == Marker::Revoked && e.key.key_data() == signer)
            {
                return Err(Refused::RevokedAuthority {
                    host: name,
                    fingerprint: PublicKey::from(signer.clone()).fingerprint(HashAlg::Sha256).to_string(),
                    file,
                    line: r.line,
                });
            }
            let authorities: Vec<ssh_key::Fingerprint> = names
                .iter()
                .filter(|e| e.marker == Marker::CertAuthority)
                .map(|e| e.key.fingerprint(HashAlg::Sha256))
                .collect();
            let why = match certificate_valid(cert, &authorities, host) {
                Ok(()) => return Ok(()),
                Err(why) => why,
            };
            return Err(Refused::Certificate {
                host: name,
                fingerprint,
                file,
                why,
            });
        }
        let plain: Vec<&&Entry> = names.iter().filter(|e| e.marker == Marker::None).collect();
        if plain.iter().any(|e| e.key.key_data() == key.key_data()) {
            return Ok(());
        }
        match plain.iter().find(|e| e.key.algorithm() == key.algorithm()) {
            Some(e) => Err(Refused::Changed {
                host: name,
                fingerprint,
                file,
                line: e.line,
            }),
            None => Err(Refused::Unknown {
                host: name,
                fingerprint,
                file,
            }),
        }
    }
}

/// A host certificate signed by one of `authorities`, of type host, naming `host`
/// among its principals, valid now.
fn certificate_valid(
    cert: &ssh_key::Certificate,
    authorities: &[ssh_key::Fingerprint],
    host: &str,
) -> Result<(), String> {
    if authorities.is_empty() {
        return Err("no @cert-authority line names this host".into());
    }
    if cert.cert_type() != ssh_key::certificate::CertType::Host {
        return Err("it is a user certificate, not a host certificate".into());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    cert.validate_at(now, authorities.iter())
        .map_err(|e| format!("its signature or validity: {e}"))?;
    if !cert.valid_principals().is_empty() && !cert.valid_principals().iter().any(|p| p == host) {
        return Err(format!(
            "its principals ({}) do not name {host}",
            cert.valid_principals().join(", ")
        ));
    }
    Ok(())
}

/// True when `name` matches the patterns of a line (a negated match wins).
fn matches(patterns: &[String], name: &str) -> bool {
    let mut hit = false;
    for p in patterns {
        if let Some(negated) = p.strip_prefix('!') {
            if WildMatch::new(negated).matches(name) {
                return false;
            }
        } else if let Some(hashed) = p.strip_prefix("|1|") {
            hit |= hashed_matches(hashed, name);
        } else if WildMatch::new(p).matches(name) {
            hit = true;
        }
    }
    hit
}

/// `|1|salt|hash`: HMAC-SHA1 of the name under the salt.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti";

    fn key(k: &str) -> PublicKey {
        PublicKey::from_openssh(k).unwrap()
    }

    fn file(text: &str) -> KnownHosts {
        KnownHosts::parse(text, Path::new("/etc/rollout/known_hosts")).unwrap()
    }

    #[test]
    fn a_listed_key_is_accepted_by_name_port_pattern_or_hash() {
        let k = key(A);
        let hosts = file(&format!(
            "# the fleet\nexo-1 {A}\n[127.0.0.1]:2222 {A}\n*.apac.internal,!bad.apac.internal {A}\n"
        ));
        assert!(hosts.check("exo-1", 22, Presented::Key(&k)).is_ok());
        assert!(hosts.check("127.0.0.1", 2222, Presented::Key(&k)).is_ok());
        assert!(hosts.check("exo-9.apac.internal", 22, Presented::Key(&k)).is_ok());
        assert!(matches!(
            hosts.check("bad.apac.internal", 22, Presented::Key(&k)),
            Err(Refused::Unknown { .. })
        ));
        assert!(matches!(
            hosts.check("127.0.0.1", 22, Presented::Key(&k)),
            Err(Refused::Unknown { .. })
        ));
        // `ssh-keygen -H` of "exo-2" with this salt.
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"exo-2");
        let b64 = base64::engine::general_purpose::STANDARD;
        let hashed = format!(
            "|1|{}|{} {A}\n",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        assert!(file(&hashed).check("exo-2", 22, Presented::Key(&k)).is_ok());
        assert!(file(&hashed).check("exo-3", 22, Presented::Key(&k)).is_err());
    }

    #[test]
    fn a_changed_or_unknown_key_is_refused_with_its_fingerprint_and_the_file() {
        let hosts = file(&format!("exo-1 {A}\n"));
        let b = key(B);
        let fingerprint = b.fingerprint(HashAlg::Sha256).to_string();
        let changed = hosts.check("exo-1", 22, Presented::Key(&b)).unwrap_err();
        assert_eq!(
            changed,
            Refused::Changed {
                host: "exo-1".into(),
                fingerprint: fingerprint.clone(),
                file: "/etc/rollout/known_hosts".into(),
                line: 1
            }
        );
        let said = changed.to_string();
        assert!(
            said.contains(&fingerprint) && said.contains("SHA256:") && said.contains("line 1"),
            "{said}"
        );
        let unknown = hosts.check("exo-2", 22, Presented::Key(&b)).unwrap_err().to_string();
        assert!(
            unknown.contains("is not in /etc/rollout/known_hosts") && unknown.contains(&fingerprint),
            "{unknown}"
        );
        assert!(unknown.contains("nothing trusts on first use"), "{unknown}");
        let revoked = file(&format!("exo-1 {A}\n@revoked * {B}\nexo-1 {B}\n"));
        assert!(matches!(
            revoked.check("exo-1", 22, Presented::Key(&b)),
            Err(Refused::Revoked { line: 2, .. })
        ));
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = KnownHosts::parse("exo-1 ssh-ed25519\n", Path::new("kh")).unwrap_err();
        assert!(e.starts_with("kh:1: "), "{e}");
        let e = KnownHosts::parse("exo-1 ssh-ed25519 bm90IGEga2V5\n", Path::new("kh")).unwrap_err();
        assert!(e.starts_with("kh:1: the key does not parse"), "{e}");
    }
}
