//! A Slack incoming webhook: `{"text": message}`, the status text of the event, for
//! the events people read (see `sinks::SLACK_DEFAULT`).

use serde_json::json;

use crate::proto::v1 as pb;

/// The body delivering `n` to a Slack incoming webhook.
pub fn request(n: &pb::Notification) -> (Vec<u8>, Vec<(&'static str, String)>) {
    (
        json!({ "text": text(n) }).to_string().into_bytes(),
        vec![("content-type", "application/json".to_string())],
    )
}

/// The message of `n`, or what it is when it has none.
pub fn text(n: &pb::Notification) -> String {
    serde_json::from_str::<serde_json::Value>(&n.data_json)
        .ok()
        .and_then(|d| d["message"].as_str().map(str::to_string))
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("{} ({})", n.r#type, n.subject))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_gets_the_status_text() {
        let n = pb::Notification {
            r#type: "rollout.halted".into(),
            subject: "exo".into(),
            data_json: r#"{"message":"The fix has been deployed to 10%."}"#.into(),
            ..Default::default()
        };
        let (body, _) = request(&n);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"text": "The fix has been deployed to 10%."}));
        let bare = pb::Notification {
            data_json: "{}".into(),
            ..n
        };
        assert_eq!(text(&bare), "rollout.halted (exo)");
    }
}
