//! Who may call what. A caller proves who it is with a bearer token (checked against
//! the SHA-256 hashes of a tokens file, in constant time) or, with mutual TLS, with a
//! client certificate whose subject the tokens file names. Each principal has one
//! role; each RPC needs one capability ([`Need`]); [`Role::allows`] is the whole table.
//!
//! The tokens file (`rollout serve --auth tokens.yaml`):
//!
//! ```yaml
//! tokens:
//!   - principal: alice
//!     role: operator            # viewer | operator | admin | agent
//!     sha256: 9f86d081...       # `rollout token hash` prints it; the token is never stored
//!   - principal: apac-exo
//!     role: agent
//!     sha256: 2c26b46b...
//!     hosts: ["apac-exo-*"]     # the hosts it speaks for; without it, the host named like it
//!   - principal: bob
//!     role: operator
//!     sha256: 60303ae2...
//!     slack_user: U0123ABC      # bob's Slack user id: his Approve in Slack counts as his
//! certificates:
//!   - subject: ops-cli          # a client certificate's subject common name (mTLS)
//!     role: admin
//!   - subject: controller       # the other controllers: they forward callers, nothing else
//!     role: controller
//! ```
//!
//! SIGHUP reads the file again ([`Credentials::reload`]).

pub mod client;
mod layer;
pub mod refusals;
mod role;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use layer::{AuthLayer, ChangeLimit, RateLimit};
pub use role::{Need, Role, need};

/// Why the tokens file was refused.
pub use crate::yamlfile::Error;

/// The header a standby adds when it forwards a call whose caller it knows only by
/// its client certificate: the certificate's subject, which the standby checked.
/// The leader takes it only from a caller authenticated as a controller of its own
/// site (a `certificates:` entry of role `controller`), and refuses it from anyone
/// else; a standby removes it from what clients send.
pub const FORWARDED_SUBJECT: &str = "x-rollout-forwarded-subject";

/// Readies a call a standby forwards: whatever a client sent as
/// [`FORWARDED_SUBJECT`] is removed, and a caller this standby knows only by its
/// client certificate goes along as that certificate's subject (a token goes along
/// by itself, and the leader checks it again).
pub fn forwarding<B>(request: &mut http::Request<B>) -> Option<tonic::Status> {
    request.headers_mut().remove(FORWARDED_SUBJECT);
    let principal = request.extensions().get::<Principal>()?.clone();
    if bearer(request.headers()).is_some() || principal == Principal::anonymous() {
        return None;
    }
    match http::HeaderValue::from_str(&principal.name) {
        Ok(value) => {
            request.headers_mut().insert(FORWARDED_SUBJECT, value);
            None
        }
        Err(_) => Some(tonic::Status::from(crate::Error::Unauthenticated(
            "the client certificate's subject cannot be forwarded to the leader: use a token".into(),
        ))),
    }
}

/// The token of an `Authorization: Bearer TOKEN` header: None without the header,
/// `Some(None)` when the header is not of that form. The API and the dashboard read it.
pub fn bearer(headers: &http::HeaderMap) -> Option<Option<&str>> {
    let value = headers.get(http::header::AUTHORIZATION)?;
    Some(value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")))
}

/// Who is calling, once proven.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// The host ids an agent principal may speak for (its heartbeats): the tokens
    /// file's `hosts:` (ids or `*` globs); empty: only the host id equal to its name.
    pub hosts: Arc<[String]>,
}

impl Principal {
    /// A principal bound to nothing but its own name (as a host id, for an agent).
    pub fn new(name: impl Into<String>, role: Role) -> Principal {
        Principal {
            name: name.into(),
            role,
            hosts: Arc::from([]),
        }
    }

    /// The caller when authentication is off (loopback without `--auth`).
    pub fn anonymous() -> Principal {
        Principal::new("anonymous", Role::Admin)
    }

    /// May this principal speak for `host_id` (send its heartbeats, register it)? An
    /// admin may speak for any host; an agent for the hosts it is bound to; nobody
    /// else for any.
    pub fn speaks_for(&self, host_id: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Agent if self.hosts.is_empty() => self.name == host_id,
            Role::Agent => self
                .hosts
                .iter()
                .any(|pattern| wildmatch::WildMatch::new(pattern).matches(host_id)),
            Role::Viewer | Role::Operator | Role::Controller => false,
        }
    }

    /// What it speaks for, in one line (for a refusal).
    pub fn binding(&self) -> String {
        if self.hosts.is_empty() {
            format!("host `{}` only (its own name)", self.name)
        } else {
            format!("hosts {}", self.hosts.join(", "))
        }
    }
}

/// The tokens file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
    #[serde(default)]
    certificates: Vec<CertificateEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    principal: String,
    role: String,
    sha256: String,
    /// For an agent: the host ids (or `*` globs) it may speak for.
    #[serde(default)]
    hosts: Vec<String>,
    /// The principal's Slack user id (`U0123ABC`): a button pressed in Slack by that
    /// user acts as this principal.
    #[serde(default)]
    slack_user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateEntry {
    subject: String,
    role: String,
    #[serde(default)]
    hosts: Vec<String>,
}

/// The credentials the controller accepts: the tokens file as last read. SIGHUP
/// reads it again ([`Credentials::reload`]); every check reads the table in force,
/// so a removed token is refused from the next call on.
#[derive(Debug, Default)]
pub struct Credentials {
    table: std::sync::RwLock<Arc<Table>>,
}

/// One reading of the tokens file.
#[derive(Debug, Default)]
struct Table {
    tokens: Vec<([u8; 32], Principal)>,
    subjects: HashMap<String, Principal>,
    /// By Slack user id.
    slack: HashMap<String, Principal>,
}

impl Table {
    fn principals(&self) -> std::collections::BTreeSet<(String, Role)> {
        self.tokens
            .iter()
            .map(|(_, p)| p)
            .chain(self.subjects.values())
            .map(|p| (p.name.clone(), p.role))
            .collect()
    }
}

/// What a re-read of the tokens file changed, for the log and the audit trail
/// (principals only: never a token or its hash).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Principals (with their role) no longer in the file: refused from now on.
    pub removed: Vec<String>,
    /// Principals new in the file.
    pub added: Vec<String>,
    /// Entries in the file now.
    pub entries: usize,
}

impl fmt::Display for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        write!(
            f,
            "tokens file re-read: {} entries; removed {}; added {}",
            self.entries,
            list(&self.removed),
            list(&self.added)
        )
    }
}

/// An entry's `hosts:`: only for agents; each a host id, or a glob of host-id
/// characters and `*` (`apac-exo-*`; `*` alone is the whole fleet, and says so).
fn host_patterns(role: Role, hosts: &[String], at: &str) -> Result<Arc<[String]>, (String, String)> {
    if !hosts.is_empty() && role != Role::Agent {
        return Err((
            format!("{at}.hosts"),
            format!("binds hosts, which only an agent speaks for; the {role} role speaks for none: remove it"),
        ));
    }
    for (i, pattern) in hosts.iter().enumerate() {
        let ok = !pattern.is_empty()
            && pattern.len() <= crate::ident::MAX_HOST_ID
            && pattern
                .bytes()
                .all(|c| c == b'*' || c.is_ascii_alphanumeric() || b"._-:".contains(&c));
        if !ok {
            return Err((
                format!("{at}.hosts[{i}]"),
                format!(
                    "`{}` is not a host id or a glob of one (letters, digits, . _ - : and *)",
                    crate::ident::escaped(pattern)
                ),
            ));
        }
    }
    Ok(hosts.iter().map(|h| h.trim().to_string()).collect())
}

/// The hash a tokens file keeps of `token`, as hex.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 64 hex digits as 32 bytes (a SHA-256 hash, an HMAC), or None.
pub fn unhex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl Credentials {
    /// Reads and checks a tokens file.
    pub fn load(path: &Path) -> Result<Credentials, Error> {
        let text = crate::yamlfile::read(path, "tokens file")?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, shown: &str) -> Result<Credentials, Error> {
        let invalid = |field: String, message: &str| Error::invalid(shown, field, message);
        let file: TokensFile = crate::yamlfile::parse(text, shown)?;
        let role = |text: &str, at: String| {
            Role::parse(text).ok_or_else(|| {
                invalid(
                    format!("{at}.role"),
                    &format!(
                        "`{}` is not a role: use viewer, operator, admin or agent (or controller, for a certificate)",
                        crate::ident::escaped(text)
                    ),
                )
            })
        };
        let mut credentials = Table::default();
        for (i, t) in file.tokens.iter().enumerate() {
            let at = format!("tokens[{i}]");
            if t.principal.trim().is_empty() {
                return Err(invalid(format!("{at}.principal"), "is empty: name who holds the token"));
            }
            let hash = unhex(&t.sha256).ok_or_else(|| {
                invalid(
                    format!("{at}.sha256"),
                    "is not 64 hex digits: put the output of `rollout token hash` there, never the token",
                )
            })?;
            if credentials.tokens.iter().any(|(h, _)| *h == hash) {
                return Err(invalid(at, "the same token is listed twice"));
            }
            let role = role(&t.role, at.clone())?;
            let principal = Principal {
                name: t.principal.trim().to_string(),
                role,
                hosts: host_patterns(role, &t.hosts, &at).map_err(|(f, m)| invalid(f, &m))?,
            };
            if let Some(user) = &t.slack_user {
                let field = format!("{at}.slack_user");
                if !slack_user_id(user) {
                    return Err(invalid(
                        field,
                        &format!(
                            "`{}` is not a Slack user id: U or W and 2 to 20 capital letters and digits, as `U0123ABC` (the person's profile, \"Copy member ID\")",
                            crate::ident::escaped(user)
                        ),
                    ));
                }
                if !matches!(role, Role::Viewer | Role::Operator | Role::Admin) {
                    return Err(invalid(field, "is for people (viewer, operator or admin), not agents"));
                }
                if credentials.slack.insert(user.clone(), principal.clone()).is_some() {
                    return Err(invalid(field, &format!("`{user}` is listed twice")));
                }
            }
            credentials.tokens.push((hash, principal));
        }
        for (i, c) in file.certificates.iter().enumerate() {
            let at = format!("certificates[{i}]");
            let role = role(&c.role, at.clone())?;
            let principal = Principal {
                name: c.subject.trim().to_string(),
                role,
                hosts: host_patterns(role, &c.hosts, &at).map_err(|(f, m)| invalid(f, &m))?,
            };
            if credentials
                .subjects
                .insert(c.subject.trim().to_string(), principal)
                .is_some()
            {
                return Err(invalid(at, &format!("subject `{}` is listed twice", c.subject)));
            }
        }
        if credentials.tokens.is_empty() && credentials.subjects.is_empty() {
            return Err(invalid(
                "tokens".into(),
                "lists no tokens and no certificates: nobody could call the controller",
            ));
        }
        Ok(Credentials {
            table: std::sync::RwLock::new(Arc::new(credentials)),
        })
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads `path` again and puts it in force; a file that does not parse keeps the
    /// table in force and says why (nothing changes).
    pub fn reload(&self, path: &Path) -> Result<Rotation, Error> {
        let fresh = Credentials::load(path)?.table();
        let mut slot = self.table.write().unwrap_or_else(|p| p.into_inner());
        let (before, after) = (slot.principals(), fresh.principals());
        let shown = |set: &std::collections::BTreeSet<(String, Role)>,
                     other: &std::collections::BTreeSet<(String, Role)>| {
            set.difference(other)
                .map(|(name, role)| format!("{name} ({role})"))
                .collect::<Vec<_>>()
        };
        let rotation = Rotation {
            removed: shown(&before, &after),
            added: shown(&after, &before),
            entries: fresh.tokens.len() + fresh.subjects.len(),
        };
        *slot = fresh;
        Ok(rotation)
    }

    /// True while the file in force still names `principal` with its role (a
    /// dashboard session opened before a rotation ends when its principal goes).
    pub fn still_holds(&self, principal: &Principal) -> bool {
        self.table()
            .principals()
            .contains(&(principal.name.clone(), principal.role))
    }

    /// The principal a bearer token proves, if any. Every entry is compared, in
    /// constant time, whichever matches.
    pub fn by_token(&self, token: &str) -> Option<Principal> {
        let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let mut found = None;
        for (hash, principal) in &self.table().tokens {
            if bool::from(hash.ct_eq(&presented)) {
                found = Some(principal.clone());
            }
        }
        found
    }

    /// The principal a verified client certificate's subject proves, if listed.
    pub fn by_subject(&self, subject: &str) -> Option<Principal> {
        self.table().subjects.get(subject).cloned()
    }

    /// The principal whose entry names Slack user `user` (whose request Slack signed).
    pub fn by_slack_user(&self, user: &str) -> Option<Principal> {
        self.table().slack.get(user).cloned()
    }
}

/// A Slack user id: `U` or `W` (an Enterprise Grid user) and 2 to 20 capital letters
/// and digits.
fn slack_user_id(id: &str) -> bool {
    let b = id.as_bytes();
    (3..=21).contains(&b.len())
        && matches!(b[0], b'U' | b'W')
        && b[1..].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// A tokens file's entry, as `rollout token new` prints it (indented under
/// `tokens:`), checked by reading it back as the controller will.
pub fn token_entry(principal: &str, role: Role, hosts: &[String], sha256: &str) -> Result<String, String> {
    let mut entry = format!("  - principal: \"{principal}\"\n    role: {role}\n    sha256: {sha256}\n");
    if !hosts.is_empty() {
        let quoted: Vec<String> = hosts
            .iter()
            .map(|h| format!("\"{}\"", h.replace(['"', '\\'], "")))
            .collect();
        entry.push_str(&format!("    hosts: [{}]\n", quoted.join(", ")));
    }
    Credentials::parse(&format!("tokens:\n{entry}"), "the new entry").map_err(|e| e.to_string())?;
    Ok(entry)
}

/// The subject common name of a DER certificate (the first CN), if it parses.
pub fn subject_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_table() {
        use Need::*;
        let table = [
            (Role::Agent, [true, true, false, false, false, false]),
            (Role::Viewer, [true, false, true, false, true, false]),
            (Role::Operator, [true, false, true, true, true, false]),
            (Role::Admin, [true, true, true, true, true, true]),
            // Another controller does nothing of its own: it only forwards callers.
            (Role::Controller, [true, false, false, false, false, false]),
        ];
        for (role, allowed) in table {
            for (need, want) in [Nothing, Heartbeat, View, Change, Approve, Inventory]
                .into_iter()
                .zip(allowed)
            {
                assert_eq!(role.allows(need), want, "{role} {need:?}");
            }
        }
        assert_eq!(need("/rollout.v1.Controller/SubmitPlan"), Change);
        assert_eq!(need("/rollout.v1.Controller/WatchRollout"), View);
        assert_eq!(need("/rollout.v1.Controller/Heartbeat"), Heartbeat);
        // A viewer passes to the gate, which refuses it (and audits the refusal).
        assert_eq!(need("/rollout.v1.Controller/ApproveRollout"), Approve);
        assert_eq!(need("/rollout.v1.Controller/Freeze"), Freeze);
        assert_eq!(need("/rollout.v1.Controller/ListFreezes"), View);
        assert_eq!(
            need("/rollout.v1.Controller/SomethingNew"),
            Inventory,
            "closed by default"
        );
        assert_eq!(need("/grpc.health.v1.Health/Check"), Nothing);
        assert_eq!(need("/evil"), Inventory);
    }

    #[test]
    fn tokens_are_checked_by_hash() {
        let text = format!(
            "tokens:\n  - principal: alice\n    role: operator\n    sha256: {}\ncertificates:\n  - subject: ops-cli\n    role: admin\n",
            hash_token("s3cret")
        );
        let c = Credentials::parse(&text, "tokens.yaml").unwrap();
        assert_eq!(c.by_token("s3cret"), Some(Principal::new("alice", Role::Operator)));
        assert_eq!(c.by_token("s3cret!"), None);
        assert_eq!(c.by_subject("ops-cli").map(|p| p.role), Some(Role::Admin));
        assert_eq!(c.by_subject("other"), None);
    }

    #[test]
    fn a_slack_user_id_names_one_person() {
        let entry = |name: &str, role: &str, token: &str, user: &str| {
            format!(
                "  - principal: {name}\n    role: {role}\n    sha256: {}\n    slack_user: {user}\n",
                hash_token(token)
            )
        };
        let text = format!("tokens:\n{}", entry("bob", "operator", "b", "U0123ABC"));
        let c = Credentials::parse(&text, "tokens.yaml").unwrap();
        assert_eq!(c.by_slack_user("U0123ABC"), Some(Principal::new("bob", Role::Operator)));
        assert_eq!(c.by_slack_user("U0123ABD"), None);
        for (text, want) in [
            (
                format!("tokens:\n{}", entry("bob", "operator", "b", "bob")),
                "tokens[0].slack_user: `bob` is not a Slack user id",
            ),
            (
                format!("tokens:\n{}", entry("exo", "agent", "a", "U0123ABC")),
                "tokens[0].slack_user: is for people",
            ),
            (
                format!(
                    "tokens:\n{}{}",
                    entry("bob", "operator", "b", "U0123ABC"),
                    entry("eve", "admin", "e", "U0123ABC")
                ),
                "tokens[1].slack_user: `U0123ABC` is listed twice",
            ),
        ] {
            let e = Credentials::parse(&text, "tokens.yaml").unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn bad_tokens_files_are_refused_with_the_field() {
        let cases = [
            (
                "tokens:\n  - principal: a\n    role: root\n    sha256: x\n",
                "sha256: is not 64 hex digits",
            ),
            (
                &format!(
                    "tokens:\n  - principal: a\n    role: root\n    sha256: {}\n",
                    hash_token("t")
                ),
                "tokens[0].role: `root` is not a role",
            ),
            ("tokens: []\n", "nobody could call"),
            ("tokenz: []\n", "unknown field `tokenz`"),
        ];
        for (text, want) in cases {
            let e = Credentials::parse(text, "tokens.yaml").unwrap_err().to_string();
            assert!(e.starts_with("tokens.yaml") && e.contains(want), "{e}");
        }
    }
}
