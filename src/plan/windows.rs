//! A plan's `windows:`: when each host may start. The wave takes its hosts as
//! always, but a host starts only when its window is open.
//!
//! ```yaml
//! windows:
//!   avoid: business-hours   # a host waits while any of its customers is in its
//!   lookahead: 2h           # working day, or starts it within this long
//! ```
//!
//! Hosts without customers never wait.

use std::time::Duration;

use serde::Deserialize;

use super::{FieldError, Scalar, bad};
use crate::proto::v1 as pb;

/// The longest lookahead: beyond a working day's gap it would close every window.
const MAX_LOOKAHEAD: Duration = Duration::from_secs(12 * 3600);

/// A validated `windows:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// A host waits while a customer works or starts within this long.
    pub lookahead: Duration,
}

impl Windows {
    pub fn to_spec(&self) -> pb::WindowsSpec {
        pb::WindowsSpec {
            avoid: "business-hours".into(),
            lookahead: crate::text::format_duration(self.lookahead),
        }
    }

    /// "a host starts only outside its customers' working day (and 2h before it)".
    pub fn describe(&self) -> String {
        format!(
            "a host starts only outside its customers' working day and not within {} of its start",
            crate::text::format_duration(self.lookahead)
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WindowsFile {
    avoid: String,
    #[serde(default)]
    lookahead: Option<Scalar>,
}

impl WindowsFile {
    pub(super) fn into_spec(self) -> pb::WindowsSpec {
        pb::WindowsSpec {
            avoid: self.avoid,
            lookahead: self.lookahead.map(Scalar::into_text).unwrap_or_default(),
        }
    }
}

/// The plan's windows, if it has them.
pub(super) fn windows(spec: Option<&pb::WindowsSpec>) -> Result<Option<Windows>, FieldError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    if spec.avoid != "business-hours" {
        return Err(bad(
            "windows.avoid",
            format!(
                "`{}` is not a window this plan can avoid: write business-hours",
                crate::text::one_line(&spec.avoid)
            ),
        ));
    }
    let lookahead = match spec.lookahead.trim() {
        "" => Duration::from_millis(crate::hours::DEFAULT_LOOKAHEAD_MS as u64),
        text => crate::text::parse_duration(text).map_err(|m| bad("windows.lookahead", m))?,
    };
    if lookahead > MAX_LOOKAHEAD {
        return Err(bad(
            "windows.lookahead",
            format!(
                "{} is over the limit of {}: a lookahead that long would close most customers' nights",
                crate::text::format_duration(lookahead),
                crate::text::format_duration(MAX_LOOKAHEAD)
            ),
        ));
    }
    Ok(Some(Windows { lookahead }))
}

#[cfg(test)]
mod tests {
    use super::super::Plan;

    const PLAN: &str = "\
name: risky-change
kind: fix
version: '2.0'
selector: {service: exchange-routing}
waves: [10%, 100%]
windows:
  avoid: business-hours
  lookahead: 30m
";

    #[test]
    fn windows_are_read_and_written_back() {
        let plan = Plan::from_yaml(PLAN, "p.yaml").map_err(|e| e.to_string());
        let plan = plan
            .as_ref()
            .map(|p| (p.windows, Plan::from_spec(&p.to_spec()).map(|q| q.windows).ok()));
        let want = Some(super::Windows {
            lookahead: std::time::Duration::from_secs(1800),
        });
        assert_eq!(plan, Ok((want, Some(want))));
    }

    #[test]
    fn bad_windows_name_the_field() {
        for (from, to, says) in [
            (
                "avoid: business-hours",
                "avoid: lunch",
                "p.yaml:7:3: windows.avoid: `lunch` is not a window",
            ),
            ("lookahead: 30m", "lookahead: soon", "windows.lookahead"),
            ("lookahead: 30m", "lookahead: 13h", "over the limit of 12h"),
            (
                "  lookahead: 30m\n",
                "  lookahead: 30m\n  later: 1h\n",
                "unknown field `later`",
            ),
        ] {
            let text = PLAN.replace(from, to);
            let e = Plan::from_yaml(&text, "p.yaml")
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(says), "{e}");
        }
    }
}
