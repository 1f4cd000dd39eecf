//! Plans: what an operator asks the controller to do, read from YAML or from the
//! structured `PlanSpec` message, and validated strictly into a [`Plan`].
//!
//! Both inputs meet in one validator ([`Plan::from_spec`]): YAML is first read
//! into a `PlanSpec` (unknown fields are errors), so a rule is written once and a
//! plan means the same thing whichever way it arrives. Errors name the field, and
//! the file, line and column when the plan came from text.

mod analysis;
mod fault_domain;
mod gates;
mod quantity;
mod stages;
mod validate;
mod windows;

use validate::validate;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use crate::proto::v1 as pb;
use crate::text::{format_duration, parse_duration};
pub use fault_domain::FaultDomain;
pub use gates::{EMERGENCY_GATE, Gate, GateRole, MAX_APPROVALS, OnTimeout};
pub use quantity::{Percent, Threshold};
pub use stages::Stage;
pub use windows::Windows;

/// Plans are written by people; anything this large is a mistake or an attack.
pub const MAX_PLAN_BYTES: usize = 1024 * 1024;
/// Brackets nested deeper than this are refused before the YAML parser sees them:
/// libyaml takes quadratic time on deep flow nesting.
const MAX_NESTING: usize = 32;
const MAX_WAVES: usize = 20;
const MAX_PARALLEL: u32 = 1_000_000;
const MAX_BAKE: Duration = Duration::from_secs(24 * 3600);
const MAX_DESCRIPTION: usize = 2_000;

/// What a plan does to each selected host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deploy `version`.
    Fix,
    /// Return each host to the version it ran before (or to `version` when given).
    Rollback,
    /// Restart each host's service, version unchanged.
    Restart,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fix => "fix",
            Kind::Rollback => "rollback",
            Kind::Restart => "restart",
        }
    }
}

/// Which hosts go first when a wave is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Customers in their working day first, then those about to start it, then
    /// the rest; decided again when each wave starts.
    BusinessHoursFirst,
    /// The reverse, for risky changes: customers asleep go first.
    OffHoursFirst,
    /// By a hash of the host id: spread over regions and customers, the same every time.
    Stable,
    /// The order that costs customers the least working time: at each batch the
    /// optimum of the cost model for the hosts still waiting, at the restart capacity
    /// estimated so far (`crate::downtime::optimum`).
    LeastBusinessDowntime,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::BusinessHoursFirst => "business-hours-first",
            Order::OffHoursFirst => "off-hours-first",
            Order::Stable => "stable",
            Order::LeastBusinessDowntime => "least-business-downtime",
        }
    }

    /// Parses an order; `default` when empty.
    pub fn parse(text: &str, default: Order) -> Result<Order, String> {
        match text {
            "" => Ok(default),
            "business-hours-first" => Ok(Order::BusinessHoursFirst),
            "off-hours-first" => Ok(Order::OffHoursFirst),
            "stable" => Ok(Order::Stable),
            "least-business-downtime" => Ok(Order::LeastBusinessDowntime),
            other => Err(format!(
                "`{other}` is not an order: use business-hours-first, least-business-downtime, off-hours-first or stable"
            )),
        }
    }

    /// True when the order depends on the clock, so waiting hosts are re-ranked.
    pub fn is_timed(self) -> bool {
        !matches!(self, Order::Stable)
    }
}

/// What happens when a wave has more failures than it tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// Stop dispatching and wait for an operator (resume or abort).
    Halt,
    /// Stop, and return every host the rollout touched to its previous version.
    Rollback,
    /// Leave failed hosts behind and go on through the waves, until the failures of
    /// the whole rollout pass `max_failed` of the whole selection (which must then be
    /// written explicitly); then halt.
    Continue,
}

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Halt => "halt",
            FailureAction::Rollback => "rollback",
            FailureAction::Continue => "continue",
        }
    }
}

/// Label -> accepted values. A host matches when, for every key, its label has one
/// of the values.
pub type Selector = BTreeMap<String, Vec<String>>;

/// A validated plan. Every field has been checked; the engine trusts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub name: String,
    pub kind: Kind,
    pub description: String,
    pub selector: Selector,
    pub version: Option<String>,
    /// Cumulative shares, strictly increasing, the last one 100%.
    pub waves: Vec<Percent>,
    pub order: Order,
    /// Host actions in flight at once; 0 until a share is resolved at submission.
    pub max_parallel: u32,
    /// `max_parallel: 25%`: the share of the selection it was given as.
    pub max_parallel_share: Option<Percent>,
    pub bake: Duration,
    pub max_failed: Threshold,
    pub on_failure: FailureAction,
    /// An active rollout to pause so this one may take the hosts they share.
    pub preempt: Option<String>,
    /// How a rollback of this rollout runs: fast, by default one wave.
    pub rollback_waves: Vec<Percent>,
    pub rollback_max_parallel: u32,
    /// A wave with no host answering for this long halts as stuck.
    pub progress_deadline: Duration,
    /// Share of the whole selection that must be healthy at the end of every bake.
    pub min_healthy: Option<Percent>,
    /// Telemetry gates measured during every bake.
    pub analysis: Option<crate::telemetry::Analysis>,
    /// Approval gates, in wave order: the rollout holds after these waves.
    pub gates: Vec<Gate>,
    /// The plan's stages, in order; empty: `waves` are its one stage. With stages,
    /// `waves` lists every stage's waves in order, each a share of its stage.
    pub stages: Vec<Stage>,
    /// At most a budget of each fault domain's hosts in flight at once.
    pub fault_domain: Option<FaultDomain>,
    /// When each host may start (its customers' night).
    pub windows: Option<Windows>,
    /// Passes freezes once an admin other than its submitter approves.
    pub emergency: bool,
}

/// Why a plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// Where the plan came from (`plans/fix.yaml`, or `plan` for a structured one).
    pub source_name: String,
    /// The field at fault, as a path: `waves[2]`, `on_failure.max_failed`.
    pub field: String,
    pub message: String,
    /// 1-based line and column when the plan came from text.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::text::one_line;
        write!(f, "{}", one_line(&self.source_name))?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", one_line(&self.message))
        } else {
            write!(f, ": {}: {}", one_line(&self.field), one_line(&self.message))
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error about a field found after validation (the selector matches no host of
    /// the inventory), placed in the plan's text when it came as text.
    pub fn at_field(source_name: &str, text: Option<&str>, field: &str, message: String) -> Error {
        Error {
            source_name: source_name.to_string(),
            field: field.to_string(),
            message,
            location: text.and_then(|t| crate::yamlfile::locate(t, field)),
        }
    }
}

/// A field-level complaint before the source is known.
struct FieldError {
    field: String,
    message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// The plan file as written. Mirrors `PlanSpec`; exists for `deny_unknown_fields`
/// and for the YAML conveniences (a single selector value, numbers for counts).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: String,
    kind: String,
    #[serde(default)]
    description: String,
    selector: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    version: Option<Scalar>,
    #[serde(default)]
    waves: Vec<Scalar>,
    #[serde(default)]
    stages: Vec<stages::StageFile>,
    #[serde(default)]
    fault_domain: Option<fault_domain::FaultDomainFile>,
    #[serde(default)]
    windows: Option<windows::WindowsFile>,
    #[serde(default)]
    emergency: bool,
    #[serde(default)]
    order: Option<String>,
    #[serde(default)]
    max_parallel: Option<Scalar>,
    #[serde(default)]
    bake: Option<Scalar>,
    #[serde(default)]
    on_failure: Option<OnFailureFile>,
    #[serde(default)]
    preempt: Option<String>,
    #[serde(default)]
    rollback: Option<RollbackFile>,
    #[serde(default)]
    progress_deadline: Option<Scalar>,
    #[serde(default)]
    min_healthy: Option<Scalar>,
    #[serde(default)]
    analysis: Option<analysis::AnalysisFile>,
    #[serde(default)]
    gates: Vec<gates::GateFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackFile {
    #[serde(default)]
    waves: Vec<Scalar>,
    #[serde(default)]
    max_parallel: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnFailureFile {
    #[serde(default)]
    max_failed: Option<Scalar>,
    #[serde(default)]
    action: Option<String>,
}

/// A YAML scalar kept as text: `1%` is a string to YAML, `3` a number, and the
/// validator wants to say what is wrong with either in the plan's own terms.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Scalar {
    fn into_text(self) -> String {
        match self {
            Scalar::Text(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Scalar),
    Many(Vec<Scalar>),
}

impl PlanFile {
    fn into_spec(self) -> Result<pb::PlanSpec, FieldError> {
        let (max_parallel, max_parallel_share) = match self.max_parallel {
            None => (0, String::new()),
            Some(s) => {
                let text = s.into_text();
                if text.trim().ends_with('%') {
                    (0, text)
                } else {
                    match text.parse::<u32>() {
                        Ok(n) if (1..=MAX_PARALLEL).contains(&n) => (n, String::new()),
                        _ => {
                            return Err(bad(
                                "max_parallel",
                                format!(
                                    "`{text}` is not a whole number of hosts between 1 and {MAX_PARALLEL}, nor a share of the selection like 25%"
                                ),
                            ));
                        }
                    }
                }
            }
        };
        Ok(pb::PlanSpec {
            name: self.name,
            kind: self.kind,
            description: self.description,
            selector: selector_spec(self.selector),
            version: self.version.map(Scalar::into_text).unwrap_or_default(),
            waves: self.waves.into_iter().map(Scalar::into_text).collect(),
            order: self.order.unwrap_or_default(),
            max_parallel,
            bake: self.bake.map(Scalar::into_text).unwrap_or_default(),
            preempt: self.preempt.unwrap_or_default(),
            progress_deadline: self.progress_deadline.map(Scalar::into_text).unwrap_or_default(),
            min_healthy: self.min_healthy.map(Scalar::into_text).unwrap_or_default(),
            rollback: self.rollback.map(|r| pb::RollbackSpec {
                waves: r.waves.into_iter().map(Scalar::into_text).collect(),
                max_parallel: r.max_parallel.unwrap_or(0),
            }),
            on_failure: self.on_failure.map(|f| pb::OnFailureSpec {
                max_failed: f.max_failed.map(Scalar::into_text).unwrap_or_default(),
                action: f.action.unwrap_or_default(),
            }),
            analysis: self.analysis.map(analysis::AnalysisFile::into_spec),
            gates: self.gates.into_iter().map(gates::GateFile::into_spec).collect(),
            max_parallel_share,
            stages: self.stages.into_iter().map(stages::StageFile::into_spec).collect(),
            fault_domain: self.fault_domain.map(fault_domain::FaultDomainFile::into_spec),
            windows: self.windows.map(windows::WindowsFile::into_spec),
            emergency: self.emergency,
        })
    }
}

/// A selector as written (a value, or a list of them) as the structured message.
fn selector_spec(selector: BTreeMap<String, OneOrMany>) -> std::collections::HashMap<String, pb::LabelValues> {
    selector
        .into_iter()
        .map(|(k, v)| {
            let values = match v {
                OneOrMany::One(s) => vec![s.into_text()],
                OneOrMany::Many(list) => list.into_iter().map(Scalar::into_text).collect(),
            };
            (k, pb::LabelValues { values })
        })
        .collect()
}

impl Plan {
    /// Parses and validates a plan file's text. `source_name` names it in errors.
    pub fn from_yaml(text: &str, source_name: &str) -> Result<Plan> {
        Self::spec_from_yaml(text, source_name).and_then(|spec| {
            Plan::from_spec(&spec).map_err(|mut e| {
                e.source_name = source_name.to_string();
                e.location = crate::yamlfile::locate(text, &e.field);
                e
            })
        })
    }

    /// Reads a plan file's text into the structured message, without the semantic checks.
    pub fn spec_from_yaml(text: &str, source_name: &str) -> Result<pb::PlanSpec> {
        let whole = |message: String, location| Error {
            source_name: source_name.to_string(),
            field: String::new(),
            message,
            location,
        };
        if text.len() > MAX_PLAN_BYTES {
            return Err(whole(
                format!("plan is {} bytes; the limit is {MAX_PLAN_BYTES} (1 MiB)", text.len()),
                None,
            ));
        }
        if text.trim().is_empty() {
            return Err(whole(
                "plan is empty: a plan needs at least name, kind, selector and waves".into(),
                None,
            ));
        }
        if let Some((line, column)) = too_deep(text) {
            return Err(whole(
                format!("brackets nest deeper than {MAX_NESTING} levels; a plan never needs that"),
                Some((line, column)),
            ));
        }
        let file: PlanFile = serde_yaml::from_str(text).map_err(|e| {
            let location = e.location().map(|l| (l.line(), l.column()));
            whole(crate::yamlfile::strip_location(&e.to_string()), location)
        })?;
        file.into_spec().map_err(|e| Error {
            source_name: source_name.to_string(),
            location: crate::yamlfile::locate(text, &e.field),
            field: e.field,
            message: e.message,
        })
    }

    /// Validates a structured plan. Errors name the field; the source is `plan`.
    pub fn from_spec(spec: &pb::PlanSpec) -> Result<Plan> {
        validate(spec).map_err(|e| Error {
            source_name: "plan".to_string(),
            field: e.field,
            message: e.message,
            location: None,
        })
    }

    /// The plan as the structured message, with every default written out; this is
    /// what the store keeps, so a stored rollout never depends on today's defaults.
    pub fn to_spec(&self) -> pb::PlanSpec {
        pb::PlanSpec {
            name: self.name.clone(),
            kind: self.kind.as_str().to_string(),
            description: self.description.clone(),
            selector: self
                .selector
                .iter()
                .map(|(k, v)| (k.clone(), pb::LabelValues { values: v.clone() }))
                .collect(),
            version: self.version.clone().unwrap_or_default(),
            waves: if self.stages.is_empty() {
                self.waves.iter().map(|w| w.to_string()).collect()
            } else {
                Vec::new()
            },
            stages: self.stages.iter().map(Stage::to_spec).collect(),
            fault_domain: self.fault_domain.as_ref().map(FaultDomain::to_spec),
            windows: self.windows.as_ref().map(Windows::to_spec),
            emergency: self.emergency,
            order: self.order.as_str().to_string(),
            max_parallel: self.max_parallel,
            bake: format_duration(self.bake),
            on_failure: Some(pb::OnFailureSpec {
                max_failed: self.max_failed.to_string(),
                action: self.on_failure.as_str().to_string(),
            }),
            preempt: self.preempt.clone().unwrap_or_default(),
            progress_deadline: format_duration(self.progress_deadline),
            min_healthy: self.min_healthy.map(|p| p.to_string()).unwrap_or_default(),
            rollback: Some(pb::RollbackSpec {
                waves: self.rollback_waves.iter().map(|w| w.to_string()).collect(),
                max_parallel: self.rollback_max_parallel,
            }),
            analysis: self.analysis.as_ref().map(crate::telemetry::Analysis::to_spec),
            gates: self.gates.iter().map(Gate::to_spec).collect(),
            max_parallel_share: self.max_parallel_share.map(|p| p.to_string()).unwrap_or_default(),
        }
    }

    /// The plan for `selected` hosts: a share of the selection given as max_parallel
    /// (and a rollback's default, four times it) becomes a number of hosts, at least
    /// one. A plan given in hosts is as it was.
    pub fn resolved(mut self, selected: usize) -> Plan {
        if let Some(share) = self.max_parallel_share
            && self.max_parallel == 0
        {
            self.max_parallel = (share.of(selected as u64).max(1)).min(u64::from(MAX_PARALLEL)) as u32;
        }
        if self.rollback_max_parallel == 0 {
            self.rollback_max_parallel = self.max_parallel.max(1).saturating_mul(4).min(MAX_PARALLEL);
        }
        self
    }

    /// The gate after wave `wave` (0-based), if the plan has one.
    pub fn gate_after(&self, wave: u32) -> Option<(usize, &Gate)> {
        self.gates.iter().enumerate().find(|(_, g)| g.wave == wave)
    }

    /// Hosts covered once wave `k` is done, for stages of `sizes` hosts (one size,
    /// the selection's, for a plan without stages).
    pub fn wave_target(&self, k: usize, sizes: &[u64]) -> u64 {
        let total: u64 = sizes.iter().sum();
        let Some(share) = self.waves.get(k) else {
            return total;
        };
        let stage = self.stage_of_wave(k);
        let before: u64 = sizes.iter().take(stage).sum();
        before + share.of(sizes.get(stage).copied().unwrap_or(0))
    }

    /// The stage wave `k` belongs to (0 for a plan without stages).
    pub fn stage_of_wave(&self, k: usize) -> usize {
        self.stages.iter().rposition(|s| s.first_wave <= k).unwrap_or(0)
    }

    /// The stage a host belongs to: the first whose selector it `matches` (0 for a
    /// plan without stages); None: no stage takes it.
    pub fn stage_of(&self, matches: impl Fn(&Selector) -> bool) -> Option<usize> {
        if self.stages.is_empty() {
            return Some(0);
        }
        self.stages.iter().position(|s| matches(&s.selector))
    }

    /// How many stages the hosts are split into (1 for a plan without stages).
    pub fn stage_count(&self) -> usize {
        self.stages.len().max(1)
    }

    /// The bake after wave `k`: its stage's, else the plan's.
    pub fn bake_of(&self, k: usize) -> Duration {
        self.stages
            .get(self.stage_of_wave(k))
            .and_then(|s| s.bake)
            .unwrap_or(self.bake)
    }

    /// Wave `k` as people name it: `10%`, or `apac/50%` in a plan with stages.
    pub fn wave_label(&self, k: usize) -> String {
        match self.stages.get(self.stage_of_wave(k)) {
            Some(s) => s.wave_label(k - s.first_wave),
            None => self.waves.get(k).map(|w| w.to_string()).unwrap_or_default(),
        }
    }
}

/// Where flow brackets (`[`, `{`) first nest deeper than [`MAX_NESTING`], ignoring
/// quoted text and comments.
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut quote): (usize, Option<char>) = (0, None);
    for (n, line) in text.lines().enumerate() {
        let mut previous = ' ';
        for (col, c) in line.chars().enumerate() {
            match (quote, c) {
                (Some(q), _) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if previous.is_whitespace() => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some((n + 1, col + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
    }
    None
}

#[cfg(test)]
mod tests;

/// A selector from outside a plan (a freeze's), checked as a plan's: the error is
/// `field.key: why`.
pub fn checked_selector(
    field: &str,
    given: &std::collections::HashMap<String, pb::LabelValues>,
) -> std::result::Result<Selector, String> {
    validate::labels(field, given).map_err(|e| format!("{}: {}", e.field, e.message))
}
