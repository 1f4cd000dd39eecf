//! A Slack incoming webhook: `{"text": message}`, the status text of the event, for
//! the events people read (see `sinks::SLACK_DEFAULT`). A rollout awaiting approval
//! also gets Block Kit: the text, an `Approve` button carrying the rollout and the
//! open gate's id (answered at the dashboard's `POST /slack/interactions`), and an
//! `Open dashboard` link when the controller knows its dashboard's URL.
//!
//! The status text quotes what hosts printed (a failed deploy's last lines), so it is
//! escaped as Slack's formatting rules say (`&`, `<`, `>`): a host cannot page the
//! channel (`<!channel>`) or post a link that reads as another (`<https://a|b>`).

use serde_json::{Value, json};

use crate::proto::v1 as pb;

/// The `Approve` button's `action_id`.
pub const APPROVE: &str = "rollout.approve";

/// What the button says: the rollout, and the gate the person looked at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Button {
    pub rollout: String,
    pub gate_id: String,
}

/// The `Approve` button for `rollout`'s open gate `gate_id` (Block Kit), and the link
/// to its page when the dashboard's URL is known.
pub fn actions(rollout: &str, gate_id: &str, dashboard: Option<&str>) -> Value {
    let value = json!({ "rollout": rollout, "gate_id": gate_id }).to_string();
    let mut elements = vec![json!({
        "type": "button",
        "action_id": APPROVE,
        "style": "primary",
        "text": { "type": "plain_text", "text": "Approve" },
        "value": value,
    })];
    if let Some(base) = dashboard {
        elements.push(json!({
            "type": "button",
            "action_id": "rollout.open",
            "text": { "type": "plain_text", "text": "Open dashboard" },
            "url": format!("{}/rollouts/{rollout}", base.trim_end_matches('/')),
        }));
    }
    json!({ "type": "actions", "elements": elements })
}

/// The body delivering `n` to a Slack incoming webhook; `dashboard`: where people
/// find the dashboard.
pub fn request(n: &pb::Notification, dashboard: Option<&str>) -> (Vec<u8>, Vec<(&'static str, String)>) {
    let text = escape(&text(n));
    let mut body = json!({ "text": text });
    if let Some((rollout, gate)) = awaiting(n) {
        body["blocks"] = json!([
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            actions(&rollout, &gate, dashboard),
        ]);
    }
    (
        body.to_string().into_bytes(),
        vec![("content-type", "application/json".to_string())],
    )
}

/// The rollout and open gate of an awaiting-approval notification.
fn awaiting(n: &pb::Notification) -> Option<(String, String)> {
    if n.r#type != crate::event_type::EventType::AwaitingApproval.as_str() {
        return None;
    }
    let data: serde_json::Value = serde_json::from_str(&n.data_json).ok()?;
    let rollout = data["rollout"].as_str()?.to_string();
    let gate = data["gate"]["gate_id"].as_str()?.to_string();
    Some((rollout, gate))
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
        let (body, _) = request(&n, Some("https://rollout.corp"));
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

    #[test]
    fn awaiting_approval_comes_with_the_approve_button_of_the_open_gate() {
        let n = pb::Notification {
            r#type: "rollout.awaiting_approval".into(),
            subject: "exo-fix".into(),
            data_json: json!({"rollout": "exo-fix", "gate": {"gate_id": "0123456789ab"}, "message": "Awaiting approval <now>."})
                .to_string(),
            ..Default::default()
        };
        let (body, _) = request(&n, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["text"], "Awaiting approval &lt;now&gt;.");
        assert_eq!(v["blocks"][0]["text"]["text"], "Awaiting approval &lt;now&gt;.");
        let button: Button = serde_json::from_str(v["blocks"][1]["elements"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(
            button,
            Button {
                rollout: "exo-fix".into(),
                gate_id: "0123456789ab".into()
            }
        );
    }

    #[test]
    fn the_button_carries_the_gate_and_the_link_the_page() {
        let a = actions("exo-fix", "0123456789ab", Some("https://rollout.corp/"));
        assert_eq!(a["elements"][0]["text"]["text"], "Approve");
        let value: Button = serde_json::from_str(a["elements"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(value.gate_id, "0123456789ab");
        assert_eq!(a["elements"][1]["text"]["text"], "Open dashboard");
        assert_eq!(a["elements"][1]["url"], "https://rollout.corp/rollouts/exo-fix");
        assert_eq!(actions("x", "g", None)["elements"].as_array().unwrap().len(), 1);
    }
}
