//! The webhook wire format (a contract): a CloudEvents 1.0 event in structured mode
//! (`Content-Type: application/cloudevents+json`), signed as Standard Webhooks sign
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! id.timestamp.body>`), so any CloudEvents SDK parses it and any Standard Webhooks
//! library verifies it.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::sinks::Secret;
use crate::proto::v1 as pb;

/// The content type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The CloudEvent for notification `n` of site `site`: its data is the data written
/// with the change, and the controller that acted.
pub fn cloudevent(n: &pb::Notification, site: &str) -> Value {
    let mut data: Value = serde_json::from_str(&n.data_json).unwrap_or_else(|_| json!({}));
    if let Some(fields) = data.as_object_mut() {
        fields.insert("controller".into(), json!(n.controller));
    }
    let time = jiff::Timestamp::from_millisecond(n.at_unix_ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default();
    json!({
        "specversion": "1.0",
        "id": n.id,
        "source": format!("/rollout/{site}"),
        "type": n.r#type,
        "subject": n.subject,
        "time": time,
        "datacontenttype": "application/json",
        "data": data,
    })
}

/// The body and headers of the request delivering `n`, signed at `timestamp` (unix
/// seconds, the real clock: receivers refuse a timestamp far from theirs).
pub fn request(
    n: &pb::Notification,
    site: &str,
    secret: Option<&Secret>,
    timestamp: i64,
) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let body = cloudevent(n, site).to_string().into_bytes();
    let mut headers = vec![("content-type", CONTENT_TYPE.to_string())];
    if let Some(secret) = secret {
        headers.push(("webhook-id", n.id.clone()));
        headers.push(("webhook-timestamp", timestamp.to_string()));
        headers.push(("webhook-signature", signature(secret, &n.id, timestamp, &body)));
    }
    (body, headers)
}

/// The `webhook-signature` header for a request `id` sent at `timestamp` (unix
/// seconds) with `body`.
pub fn signature(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification, signed the same.
    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let secret = super::super::sinks::Secret::from_bytes(key);
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn the_event_is_a_structured_cloudevent_with_the_controller() {
        let n = pb::Notification {
            id: "rollout-12-5".into(),
            r#type: "rollout.wave.completed".into(),
            subject: "exo-retry-fix".into(),
            rollout_id: 12,
            seq: 5,
            at_unix_ms: 1_796_233_500_123,
            data_json: r#"{"rollout":"exo-retry-fix","seq":5}"#.into(),
            controller: "http://127.0.0.1:50051".into(),
            ..Default::default()
        };
        let e = cloudevent(&n, "apac-1");
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["source"], "/rollout/apac-1");
        assert_eq!(e["time"], "2026-12-02T17:45:00.123Z");
        assert_eq!(e["data"]["seq"], 5);
        assert_eq!(e["data"]["controller"], "http://127.0.0.1:50051");
    }
}
