//! A Slack incoming webhook: `{"text": message}`, the status text of the event, for
//! the events people read (see `sinks::SLACK_DEFAULT`).
//!
//! The status text quotes what hosts printed (a failed deploy's last lines), so it is
//! escaped as Slack's formatting rules say (`&`, `<`, `>`): a host cannot page the
//! channel (`<!channel>`) or post a link that reads as another (`<https://a|b>`).

use serde_json::json;

use crate::proto::v1 as pb;

/// The body delivering `n` to a Slack incoming webhook.
pub fn request(n: &pb::Notification) -> (Vec<u8>, Vec<(&'static str, String)>) {
    (
        json!({ "text": escape(&text(n)) }).to_string().into_bytes(),
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

/// `text` with Slack's three control characters escaped (api.slack.com, "Formatting
/// text for app surfaces": `&` as `&amp;`, `<` as `&lt;`, `>` as `&gt;`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
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

    #[test]
    fn what_hosts_print_cannot_page_or_link() {
        assert_eq!(
            escape("<!channel> approve at <https://evil.example|https://rollout.corp/approve> & go"),
            "&lt;!channel&gt; approve at &lt;https://evil.example|https://rollout.corp/approve&gt; &amp; go"
        );
    }
}
