//! The banner every live list and detail shows while the line is stopped: each
//! freeze in force (set by a person, or a window of the freeze calendar), who set it,
//! why, for which hosts and until when. Shown to every role: a freeze's reason is
//! what the room must see, never a secret.

use maud::{Markup, html};

use crate::proto::v1 as pb;

/// The banner, or nothing when no freeze is in force.
pub fn banner(freezes: &[pb::Freeze]) -> Markup {
    html! {
        @if !freezes.is_empty() {
            div.reason.freeze #freeze-banner role="alert" {
                strong { "The line is stopped. " }
                @for f in freezes {
                    span.frozen {
                        (sentence(f))
                    }
                    " "
                }
                "No new operation starts on those hosts but an approved emergency's; operations in flight finish."
            }
        }
    }
}

/// "Freeze 3 by alice: INC-1234 (every host, until 2026-12-07T14:00:00Z)."
fn sentence(f: &pb::Freeze) -> String {
    let until = match f.until_unix_ms {
        0 => "until unfrozen".to_string(),
        ms => format!("until {}", crate::clock::format_instant(ms)),
    };
    let scope = crate::freeze::scope(&crate::freeze::selector(f));
    if f.source == crate::freeze::CALENDAR {
        format!("Freeze calendar: {} ({scope}, {until}).", f.reason)
    } else {
        format!("Freeze {} by {}: {} ({scope}, {until}).", f.id, f.set_by, f.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_says_who_why_what_and_until_when_and_escapes_the_reason() {
        assert!(banner(&[]).0.is_empty());
        let f = pb::Freeze {
            id: 3,
            reason: "INC-1234 <script>".into(),
            set_by: "alice".into(),
            until_unix_ms: 0,
            source: crate::freeze::MANUAL.into(),
            ..Default::default()
        };
        let html = banner(&[f]).0;
        assert!(
            html.contains("Freeze 3 by alice: INC-1234 &lt;script&gt; (every host, until unfrozen)."),
            "{html}"
        );
        assert!(html.contains("id=\"freeze-banner\""), "{html}");
    }
}
