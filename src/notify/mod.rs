//! Telling the incident room: the sinks a controller notifies (`rollout serve
//! --notify FILE`), the event types they may pick, and how a sink's URL is shown
//! without its secrets.
//!
//! - [`sinks`]: the sinks file, read strictly (file:line:column), each sink's
//!   secret and CA read at start; `rollout notify check` validates it offline.
//! - [`webhook`]: the wire format: a structured CloudEvent, signed as Standard
//!   Webhooks sign.

pub mod sinks;
pub mod webhook;

pub use sinks::{Sink, SinkKind, Sinks};

/// Every event type a notification may have (a contract: sinks filter on these).
pub const EVENT_TYPES: [&str; 18] = [
    "rollout.submitted",
    "rollout.wave.started",
    "rollout.wave.completed",
    "rollout.awaiting_approval",
    "rollout.approved",
    "rollout.paused",
    "rollout.resumed",
    "rollout.halted",
    "rollout.retried",
    "rollout.rolling_back",
    "rollout.succeeded",
    "rollout.completed_with_failures",
    "rollout.failed",
    "rollout.aborted",
    "analysis.failed",
    "restart.started",
    "restart.completed",
    "controller.leader_changed",
];

/// A URL as logs and errors may show it: no user, password or query (webhook URLs
/// carry their secret in either), and no fragment.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(a URL that does not parse)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_their_credentials_or_query() {
        assert_eq!(
            redact("https://bot:s3cret@hooks.internal:8443/services/T0/B0?token=xyz#frag"),
            "https://hooks.internal:8443/services/T0/B0"
        );
        assert_eq!(redact("http://127.0.0.1:9093"), "http://127.0.0.1:9093/");
        assert!(!redact("not a url with s3cret").contains("s3cret"));
    }
}
