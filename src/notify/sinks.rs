//! The sinks file (`rollout serve --notify FILE`, `rollout notify check FILE`): where
//! notifications go, which ones, and how they are signed. Read strictly at start,
//! each refusal naming the file, line, column and field; each sink's secret and CA
//! are read then too, so a typo is found before an incident, not during one.
//!
//! ```yaml
//! sinks:
//!   - name: incident-bridge          # [a-z0-9-], unique
//!     kind: webhook                  # webhook | slack | alertmanager
//!     url: https://hooks.internal/rollout
//!     events: ["rollout.*", "restart.*"]   # globs over event types (default: every event)
//!     rollouts: ["exo-*"]            # optional globs over rollout names
//!     secret_file: /etc/rollout/bridge.secret   # webhook: whsec_<base64>, signs every request
//!     ca_file: /etc/rollout/ca.pem   # optional private CA for https
//!     timeout: 5s                    # per request (default 5s)
//!     give_up_after: 24h             # then the event is recorded as undeliverable (default 24h)
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;
use wildmatch::WildMatch;

use super::{EVENT_TYPES, redact};
use crate::event_type::EventType;
use crate::text::{format_duration, parse_duration};
use crate::yamlfile::{self, Error};

/// Sinks one file may name at most.
const MAX_SINKS: usize = 32;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_GIVE_UP: Duration = Duration::from_secs(24 * 3600);
const MAX_GIVE_UP: Duration = Duration::from_secs(30 * 24 * 3600);
/// The events a Slack channel gets unless `events` says otherwise: those people read.
const SLACK_DEFAULT: [EventType; 8] = [
    EventType::Submitted,
    EventType::WaveCompleted,
    EventType::AwaitingApproval,
    EventType::Halted,
    EventType::RollingBack,
    EventType::Succeeded,
    EventType::CompletedWithFailures,
    EventType::Failed,
];

/// Where a sink's notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkKind {
    /// CloudEvents over HTTP, signed as Standard Webhooks.
    Webhook,
    /// A Slack incoming webhook: the status text.
    Slack,
    /// An Alertmanager: alerts firing while a rollout is halted, waits or failed.
    Alertmanager,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Slack => "slack",
            SinkKind::Alertmanager => "alertmanager",
        }
    }
}

/// A webhook's signing key (the bytes after `whsec_`, decoded). Never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A key as bytes (read from a secret file, or made by a test).
    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A validated sink. Its Debug shows the URL redacted and never the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Sink {
    pub name: String,
    pub kind: SinkKind,
    /// As written; show it with [`redact`].
    pub url: String,
    /// Globs over event types; never empty.
    pub events: Vec<String>,
    /// Globs over rollout names; empty: every rollout (and restart jobs).
    pub rollouts: Vec<String>,
    pub secret: Option<Secret>,
    /// The private CA's certificates (PEM), for https.
    pub ca_pem: Option<Vec<u8>>,
    pub timeout: Duration,
    pub give_up_after: Duration,
}

impl fmt::Debug for Sink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sink")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &redact(&self.url))
            .field("events", &self.events)
            .field("rollouts", &self.rollouts)
            .field("secret", &self.secret)
            .field("ca", &self.ca_pem.is_some())
            .field("timeout", &self.timeout)
            .field("give_up_after", &self.give_up_after)
            .finish()
    }
}

impl Sink {
    /// True when this sink takes an event of `event_type` about `rollout` (empty for
    /// a restart job or the controller itself).
    pub fn wants(&self, event_type: &str, rollout: &str) -> bool {
        let typed = self.events.iter().any(|g| WildMatch::new(g).matches(event_type));
        let named = self.rollouts.is_empty()
            || rollout.is_empty()
            || self.rollouts.iter().any(|g| WildMatch::new(g).matches(rollout));
        typed && named
    }

    /// One line for people: "incident-bridge: webhook to https://hooks.internal:443
    /// (rollout.*, restart.*; signed; timeout 5s, gives up after 1d)".
    pub fn describe(&self) -> String {
        format!(
            "{}: {} to {} ({}{}{}; timeout {}, gives up after {})",
            self.name,
            self.kind.as_str(),
            redact(&self.url),
            self.events.join(", "),
            if self.rollouts.is_empty() {
                String::new()
            } else {
                format!("; rollouts {}", self.rollouts.join(", "))
            },
            if self.secret.is_some() { "; signed" } else { "" },
            format_duration(self.timeout),
            format_duration(self.give_up_after)
        )
    }
}

/// Every sink of a file, in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sinks(pub Vec<Sink>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinksFile {
    sinks: Vec<SinkFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkFile {
    name: String,
    kind: String,
    url: String,
    #[serde(default)]
    events: Option<Vec<String>>,
    #[serde(default)]
    rollouts: Vec<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    give_up_after: Option<String>,
}

impl Sinks {
    /// Reads and validates the sinks file at `path`, its secrets and CAs too.
    pub fn load(path: &Path) -> Result<Sinks, Error> {
        let text = yamlfile::read(path, "sinks file")?;
        Sinks::parse(&text, &path.display().to_string())
    }

    /// Validates a sinks file's text; `shown` names it in errors. Secret and CA
    /// files are read (relative paths from the current directory).
    pub fn parse(text: &str, shown: &str) -> Result<Sinks, Error> {
        let file: SinksFile = yamlfile::parse(text, shown)?;
        let at = |field: String, message: String| Error::at(shown, text, &field, message);
        if file.sinks.is_empty() {
            return Err(at(
                "sinks".into(),
                "is empty: name at least one sink (name, kind, url)".into(),
            ));
        }
        if file.sinks.len() > MAX_SINKS {
            return Err(at(
                "sinks".into(),
                format!("has {} sinks; the limit is {MAX_SINKS}", file.sinks.len()),
            ));
        }
        let mut names = HashSet::new();
        let mut sinks = Vec::with_capacity(file.sinks.len());
        for (i, s) in file.sinks.into_iter().enumerate() {
            let field = |f: &str| format!("sinks[{i}].{f}");
            let sink = one(s).map_err(|(f, m)| at(field(f), m))?;
            if !names.insert(sink.name.clone()) {
                return Err(at(field("name"), format!("`{}` names two sinks", sink.name)));
            }
            sinks.push(sink);
        }
        Ok(Sinks(sinks))
    }
}

type Refusal = (&'static str, String);

/// One sink's fields checked; a refusal names the field and says what would do.
fn one(s: SinkFile) -> Result<Sink, Refusal> {
    if !is_name(&s.name) {
        return Err((
            "name",
            format!(
                "`{}` may use only a-z, 0-9 and inner dashes (like incident-bridge), at most 63",
                s.name
            ),
        ));
    }
    let kind = match s.kind.as_str() {
        "webhook" => SinkKind::Webhook,
        "slack" => SinkKind::Slack,
        "alertmanager" => SinkKind::Alertmanager,
        other => {
            return Err((
                "kind",
                format!("`{other}` is not a kind of sink: use webhook, slack or alertmanager"),
            ));
        }
    };
    let url = url::Url::parse(&s.url).map_err(|e| ("url", format!("`{}` is not a URL ({e})", redact(&s.url))))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(("url", format!("{} is not an http:// or https:// URL", redact(&s.url))));
    }
    let events = match s.events {
        None if kind == SinkKind::Slack => SLACK_DEFAULT.iter().map(|e| e.to_string()).collect(),
        None => vec!["*".to_string()],
        Some(list) if list.is_empty() => return Err(("events", "is empty: leave it out for every event".into())),
        Some(list) => list,
    };
    for glob in &events {
        if !EVENT_TYPES.iter().any(|t| WildMatch::new(glob).matches(t)) {
            return Err((
                "events",
                format!(
                    "`{glob}` matches no event type; the types are {}",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    if let Some(empty) = s.rollouts.iter().find(|g| g.trim().is_empty()) {
        return Err((
            "rollouts",
            format!("`{empty}` is empty: give a rollout name or glob (exo-*)"),
        ));
    }
    let secret = match (&s.secret_file, kind) {
        (Some(path), SinkKind::Webhook) => Some(read_secret(path)?),
        (None, SinkKind::Webhook) => {
            return Err((
                "secret_file",
                "is required for a webhook: every request is signed (a file holding whsec_ and base64, as Standard Webhooks makes them)".into(),
            ));
        }
        (Some(_), other) => {
            return Err((
                "secret_file",
                format!("a {} sink signs nothing: leave secret_file out", other.as_str()),
            ));
        }
        (None, _) => None,
    };
    let ca_pem = match &s.ca_file {
        None => None,
        Some(_) if url.scheme() != "https" => {
            return Err(("ca_file", "is for https URLs; this one is http://".into()));
        }
        Some(path) => Some(read_ca(path)?),
    };
    let duration =
        |field: &'static str, text: &Option<String>, default: Duration, max: Duration| -> Result<Duration, Refusal> {
            let Some(text) = text else { return Ok(default) };
            let d = parse_duration(text).map_err(|m| (field, m))?;
            if d < Duration::from_secs(1) || d > max {
                return Err((
                    field,
                    format!("{} is not between 1s and {}", format_duration(d), format_duration(max)),
                ));
            }
            Ok(d)
        };
    let timeout = duration("timeout", &s.timeout, DEFAULT_TIMEOUT, MAX_TIMEOUT)?;
    let give_up_after = duration("give_up_after", &s.give_up_after, DEFAULT_GIVE_UP, MAX_GIVE_UP)?;
    if give_up_after < timeout {
        return Err((
            "give_up_after",
            format!(
                "{} is shorter than the timeout {}: nothing could be tried",
                format_duration(give_up_after),
                format_duration(timeout)
            ),
        ));
    }
    Ok(Sink {
        name: s.name,
        kind,
        url: s.url,
        events,
        rollouts: s.rollouts,
        secret,
        ca_pem,
        timeout,
        give_up_after,
    })
}

/// A new Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Standard Webhooks secret: `whsec_` and the base64 of 24 to 64 random bytes.
/// Errors say what is wrong, never what the file holds.
fn read_secret(path: &Path) -> Result<Secret, Refusal> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ("secret_file", format!("cannot read {}: {e}", path.display())))?;
    let Some(encoded) = text.trim().strip_prefix("whsec_") else {
        return Err((
            "secret_file",
            format!(
                "{} does not start with whsec_ (a Standard Webhooks secret)",
                path.display()
            ),
        ));
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| {
        (
            "secret_file",
            format!("{}: what follows whsec_ is not base64", path.display()),
        )
    })?;
    if !(24..=64).contains(&bytes.len()) {
        return Err((
            "secret_file",
            format!(
                "{}: the key is {} bytes; Standard Webhooks keys are 24 to 64 (e.g. `rollout notify secret`)",
                path.display(),
                bytes.len()
            ),
        ));
    }
    Ok(Secret(bytes))
}

/// A private CA's PEM certificates, checked to parse.
fn read_ca(path: &Path) -> Result<Vec<u8>, Refusal> {
    let pem = std::fs::read(path).map_err(|e| ("ca_file", format!("cannot read {}: {e}", path.display())))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        _ => Err(("ca_file", format!("{} holds no PEM certificate", path.display()))),
    }
}

#[cfg(test)]
mod tests;
