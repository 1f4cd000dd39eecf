//! A plan's `gates:`: holds after a wave until enough people approve. As written in
//! YAML (strict, like the rest of the plan), and their rules; each refusal names the
//! field (`gates[0].after`) and says what would be accepted.
//!
//! ```yaml
//! gates:
//!   - after: 10%          # a wave of this plan, by its cumulative share; not 100%
//!                         # (with stages: `canary`, a stage's end, or `apac/50%`)
//!     approvals: 2        # distinct principals needed (default 1, at most 10)
//!     role: operator      # least role that may approve: operator | admin
//!     four_eyes: true     # the submitter's own approval does not count
//!     timeout: 2h         # how long the gate waits (default: until approved or aborted)
//!     on_timeout: halt    # halt | abort | rollback (fix plans only)
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::{FieldError, Kind, Percent, Scalar, Stage, bad, format_duration, parse_duration};
use crate::proto::v1 as pb;

/// `Gate.index` of an emergency plan's gate before its first wave (not a gate of
/// the plan's own `gates:`).
pub const EMERGENCY_GATE: u32 = u32::MAX;

/// Approvals one gate may ask for at most.
pub const MAX_APPROVALS: u32 = 10;
/// The longest a gate may wait before its `on_timeout` acts.
const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A validated gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// The wave it follows (0-based).
    pub wave: u32,
    /// That wave as the plan named it: its cumulative share (`10%`), or in a plan
    /// with stages a stage's end (`canary`) or a wave within one (`apac/50%`).
    pub after: String,
    /// Distinct principals needed.
    pub approvals: u32,
    pub role: GateRole,
    /// The submitter's own approval does not count.
    pub four_eyes: bool,
    /// None: waits until approved or aborted.
    pub timeout: Option<Duration>,
    pub on_timeout: OnTimeout,
}

/// The least role that may approve a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GateRole {
    Operator,
    Admin,
}

impl GateRole {
    pub fn as_str(self) -> &'static str {
        match self {
            GateRole::Operator => "operator",
            GateRole::Admin => "admin",
        }
    }

    /// True when a principal of `role` (as the auth layer names roles) may approve.
    pub fn admits(self, role: &str) -> bool {
        match self {
            GateRole::Operator => matches!(role, "operator" | "admin"),
            GateRole::Admin => role == "admin",
        }
    }
}

/// What a gate does when its timeout passes without the approvals it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Halt the rollout for a person (resume opens the gate again, abort ends it).
    Halt,
    /// End the rollout where it is.
    Abort,
    /// End it and return every host it touched to its previous version.
    Rollback,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Halt => "halt",
            OnTimeout::Abort => "abort",
            OnTimeout::Rollback => "rollback",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GateFile {
    after: Scalar,
    #[serde(default)]
    approvals: Option<u32>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    four_eyes: Option<bool>,
    #[serde(default)]
    timeout: Option<Scalar>,
    #[serde(default)]
    on_timeout: Option<String>,
}

impl GateFile {
    pub(super) fn into_spec(self) -> pb::GateSpec {
        pb::GateSpec {
            after: self.after.into_text(),
            approvals: self.approvals.unwrap_or(0),
            role: self.role.unwrap_or_default(),
            four_eyes: self.four_eyes.unwrap_or(false),
            timeout: self.timeout.map(Scalar::into_text).unwrap_or_default(),
            on_timeout: self.on_timeout.unwrap_or_default(),
        }
    }
}

impl Gate {
    pub fn to_spec(&self) -> pb::GateSpec {
        pb::GateSpec {
            after: self.after.clone(),
            approvals: self.approvals,
            role: self.role.as_str().to_string(),
            four_eyes: self.four_eyes,
            timeout: self.timeout.map(format_duration).unwrap_or_default(),
            on_timeout: self.on_timeout.as_str().to_string(),
        }
    }

    /// True when one principal could never open this gate alone: a controller
    /// without `--auth` knows only one.
    pub fn needs_several(&self) -> bool {
        self.approvals > 1 || self.four_eyes
    }

    /// "after 10%: 2 approvals (operator or above), four-eyes, times out after 2h
    /// (then halt)", as `plan check` and the dry run show it.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "after {}: {} approval{} ({} or above)",
            self.after,
            self.approvals,
            if self.approvals == 1 { "" } else { "s" },
            self.role.as_str()
        );
        if self.four_eyes {
            text.push_str(", four-eyes (not the submitter)");
        }
        match self.timeout {
            Some(t) => text.push_str(&format!(
                ", times out after {} (then {})",
                format_duration(t),
                self.on_timeout.as_str()
            )),
            None => text.push_str(", waits until approved or aborted"),
        }
        text
    }
}

/// The wave a gate's `after` names, and the name as the plan keeps it; or why not.
fn wave_named(after: &str, waves: &[Percent], stages: &[Stage]) -> Result<(usize, String), String> {
    if stages.is_empty() {
        let share = Percent::parse(after)?;
        return match waves.iter().position(|w| *w == share) {
            Some(k) => Ok((k, share.to_string())),
            None => {
                let listed: Vec<String> = waves.iter().map(|w| w.to_string()).collect();
                Err(format!(
                    "{share} is not a wave of this plan: use one of {}",
                    listed[..listed.len().saturating_sub(1)].join(", ")
                ))
            }
        };
    }
    let (name, share) = match after.split_once('/') {
        Some((name, share)) => (name.trim(), Some(Percent::parse(share.trim())?)),
        None => (after.trim(), None),
    };
    let choices = || {
        let mut names = Vec::new();
        for s in stages {
            names.extend((0..s.waves.len().saturating_sub(1)).map(|k| s.wave_label(k)));
            names.push(s.name.clone());
        }
        names.pop(); // the last stage's end: nothing follows it
        names.join(", ")
    };
    let Some(stage) = stages.iter().find(|s| s.name == name) else {
        return Err(format!(
            "`{}` is not a stage of this plan: name a stage's end or a wave within one: {}",
            crate::ident::escaped(name),
            choices()
        ));
    };
    let k = match share {
        None => stage.waves.len() - 1,
        Some(share) => stage
            .waves
            .iter()
            .position(|w| *w == share)
            .ok_or_else(|| format!("{share} is not a wave of stage `{name}`: use one of {}", choices()))?,
    };
    let label = if k + 1 == stage.waves.len() {
        stage.name.clone()
    } else {
        stage.wave_label(k)
    };
    Ok((stage.first_wave + k, label))
}

/// The gates of a plan of `kind` whose waves are `waves` (of `stages`, when it has
/// them), in wave order.
pub(super) fn gates(
    specs: &[pb::GateSpec],
    kind: Kind,
    waves: &[Percent],
    stages: &[Stage],
) -> Result<Vec<Gate>, FieldError> {
    let mut gates: Vec<Gate> = Vec::with_capacity(specs.len());
    for (i, spec) in specs.iter().enumerate() {
        let at = |field: &str| format!("gates[{i}].{field}");
        let (wave, after) = wave_named(&spec.after, waves, stages).map_err(|m| bad(at("after"), m))?;
        if wave + 1 == waves.len() {
            return Err(bad(
                at("after"),
                format!("{after} is the last wave: nothing follows it to hold; gate an earlier wave"),
            ));
        }
        if gates.iter().any(|g| g.wave == wave as u32) {
            return Err(bad(at("after"), format!("two gates follow the {after} wave")));
        }
        let approvals = match spec.approvals {
            0 => 1,
            n if n > MAX_APPROVALS => {
                return Err(bad(
                    at("approvals"),
                    format!("{n} is over the limit of {MAX_APPROVALS} distinct approvers"),
                ));
            }
            n => n,
        };
        let role = match spec.role.as_str() {
            "" | "operator" => GateRole::Operator,
            "admin" => GateRole::Admin,
            other => {
                return Err(bad(
                    at("role"),
                    format!("`{other}` is not a role that may approve: use operator or admin"),
                ));
            }
        };
        let timeout = match spec.timeout.as_str() {
            "" => None,
            t => {
                let d = parse_duration(t).map_err(|m| bad(at("timeout"), m))?;
                if d.is_zero() || d > MAX_TIMEOUT {
                    return Err(bad(
                        at("timeout"),
                        format!("{} is not between 1s and 30d", format_duration(d)),
                    ));
                }
                Some(d)
            }
        };
        let on_timeout = match spec.on_timeout.as_str() {
            "" | "halt" => OnTimeout::Halt,
            "abort" => OnTimeout::Abort,
            "rollback" if kind == Kind::Fix => OnTimeout::Rollback,
            "rollback" => {
                return Err(bad(
                    at("on_timeout"),
                    format!(
                        "rollback is for fix plans only (this one is {}): use halt or abort",
                        kind.as_str()
                    ),
                ));
            }
            other => {
                return Err(bad(
                    at("on_timeout"),
                    format!("`{other}` is not a choice: use halt, abort or rollback"),
                ));
            }
        };
        if timeout.is_none() && !spec.on_timeout.is_empty() && spec.on_timeout != "halt" {
            return Err(bad(
                at("on_timeout"),
                "acts when the gate times out, and this gate has no timeout: set timeout (e.g. 2h)",
            ));
        }
        gates.push(Gate {
            wave: wave as u32,
            after,
            approvals,
            role,
            four_eyes: spec.four_eyes,
            timeout,
            on_timeout,
        });
    }
    gates.sort_by_key(|g| g.wave);
    Ok(gates)
}
