//! A plan's `stages:`: rings and regions taken in order, each over its own hosts in
//! its own cumulative waves; the next starts when the previous reached 100%.
//!
//! ```yaml
//! stages:
//!   - name: canary               # [a-z0-9-]{1,63}, unique in the plan
//!     selector: {ring: "0"}      # narrows the plan's selector
//!     waves: [100%]
//!     bake: 30m                  # optional; else the plan's
//!   - name: apac
//!     selector: {region: apac}
//!     waves: [10%, 50%, 100%]
//!   - name: rest                 # no selector: every selected host no earlier stage took
//!     waves: [10%, 30%, 60%, 100%]
//! ```
//!
//! The engine runs the stages' waves one after another as the plan's waves
//! (`Plan::waves` lists them all, each a share of its stage's hosts), so a halt, a
//! gate, a retry, a rollback or a restart of the controller works inside a stage as
//! it does in any wave. A host belongs to the first stage whose selector it matches.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::validate::{bake_at, is_name, labels, waves};
use super::{FieldError, OneOrMany, Percent, Scalar, Selector, bad, format_duration};
use crate::proto::v1 as pb;

/// Stages one plan may have.
pub const MAX_STAGES: usize = 10;
/// Waves of all stages together: a gate is a bit of a 32-bit mask.
pub const MAX_ALL_WAVES: usize = 32;

/// A validated stage.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    /// Narrows the plan's selector; empty: every host no earlier stage took.
    pub selector: Selector,
    /// Cumulative shares of the stage's hosts.
    pub waves: Vec<Percent>,
    /// None: the plan's bake.
    pub bake: Option<Duration>,
    /// Its first wave among the plan's waves.
    pub first_wave: usize,
}

impl Stage {
    /// The stage's wave `k` (0-based, of the stage) as a gate names it: `apac/50%`.
    pub fn wave_label(&self, k: usize) -> String {
        format!("{}/{}", self.name, self.waves[k])
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageFile {
    name: String,
    #[serde(default)]
    selector: BTreeMap<String, OneOrMany>,
    waves: Vec<Scalar>,
    #[serde(default)]
    bake: Option<Scalar>,
}

impl StageFile {
    pub(super) fn into_spec(self) -> pb::StageSpec {
        pb::StageSpec {
            name: self.name,
            selector: super::selector_spec(self.selector),
            waves: self.waves.into_iter().map(Scalar::into_text).collect(),
            bake: self.bake.map(Scalar::into_text).unwrap_or_default(),
        }
    }
}

impl Stage {
    pub fn to_spec(&self) -> pb::StageSpec {
        pb::StageSpec {
            name: self.name.clone(),
            selector: self
                .selector
                .iter()
                .map(|(k, v)| (k.clone(), pb::LabelValues { values: v.clone() }))
                .collect(),
            waves: self.waves.iter().map(|w| w.to_string()).collect(),
            bake: self.bake.map(format_duration).unwrap_or_default(),
        }
    }
}

/// A plan's stages and all their waves, in order.
pub(super) type Staged = (Vec<Stage>, Vec<Percent>);

/// The stages of `spec`, checked against the plan's `selector`, and all their waves
/// in order; None when the plan has no stages (its `waves` are then its one stage).
pub(super) fn stages(spec: &pb::PlanSpec, selector: &Selector) -> Result<Option<Staged>, FieldError> {
    if spec.stages.is_empty() {
        return Ok(None);
    }
    if !spec.waves.is_empty() {
        return Err(bad(
            "waves",
            "a plan with stages lists its waves in each stage: remove the plan's waves",
        ));
    }
    if spec.stages.len() > MAX_STAGES {
        return Err(bad(
            "stages",
            format!("has {} stages; the limit is {MAX_STAGES}", spec.stages.len()),
        ));
    }
    let mut stages: Vec<Stage> = Vec::with_capacity(spec.stages.len());
    let mut all: Vec<Percent> = Vec::new();
    for (i, s) in spec.stages.iter().enumerate() {
        let at = |field: &str| format!("stages[{i}].{field}");
        if !is_name(&s.name) {
            return Err(bad(
                at("name"),
                format!(
                    "`{}` is not a stage name: 1 to 63 of a-z, 0-9 and inner dashes (like canary or apac)",
                    crate::ident::escaped(&s.name)
                ),
            ));
        }
        if stages.iter().any(|t| t.name == s.name) {
            return Err(bad(at("name"), format!("`{}` names two stages", s.name)));
        }
        if let Some(open) = stages.iter().find(|t| t.selector.is_empty()) {
            return Err(bad(
                at("name"),
                format!(
                    "follows stage `{}`, which has no selector and takes every host left: this stage would get none; put it earlier",
                    open.name
                ),
            ));
        }
        let own = labels(&at("selector"), &s.selector)?;
        narrows(selector, &own).map_err(|m| bad(at("selector"), m))?;
        let stage_waves = waves(&at("waves"), &s.waves)?;
        let bake = match s.bake.as_str() {
            "" => None,
            b => Some(bake_at(&at("bake"), b)?),
        };
        if all.len() + stage_waves.len() > MAX_ALL_WAVES {
            return Err(bad(
                at("waves"),
                format!("the stages have more than {MAX_ALL_WAVES} waves together; merge some"),
            ));
        }
        stages.push(Stage {
            name: s.name.clone(),
            selector: own,
            first_wave: all.len(),
            waves: stage_waves.clone(),
            bake,
        });
        all.extend(stage_waves);
    }
    Ok(Some((stages, all)))
}

/// A stage's selector may only narrow the plan's: a label the plan selects on must
/// keep to the plan's values.
fn narrows(plan: &Selector, stage: &Selector) -> Result<(), String> {
    for (key, values) in stage {
        if let Some(allowed) = plan.get(key)
            && let Some(outside) = values.iter().find(|v| !allowed.contains(v))
        {
            return Err(format!(
                "{key}: `{}` is outside the plan's selector ({key} in [{}]): a stage narrows the plan's selection, never widens it",
                crate::ident::escaped(outside),
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Plan;
    use crate::plan::Percent;

    const STAGED: &str = "\
name: netfix
kind: fix
selector:
  service: exchange-routing
  region: [apac, emea, amer]
version: 2.0.1
bake: 5m
stages:
  - name: canary
    selector: {ring: \"0\"}
    waves: [100%]
    bake: 30m
  - name: apac
    selector: {region: apac}
    waves: [10%, 50%, 100%]
  - name: rest
    waves: [10%, 30%, 60%, 100%]
gates:
  - after: canary
  - after: apac/50%
    approvals: 2
";

    fn refused(from: &str, to: &str) -> String {
        Plan::from_yaml(&STAGED.replace(from, to), "p.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn stages_are_the_plans_waves_in_order() {
        let plan = Plan::from_yaml(STAGED, "p.yaml").unwrap();
        assert_eq!(plan.waves.len(), 8);
        assert_eq!(
            (0..8).map(|k| plan.wave_label(k)).collect::<Vec<_>>(),
            [
                "canary/100%",
                "apac/10%",
                "apac/50%",
                "apac/100%",
                "rest/10%",
                "rest/30%",
                "rest/60%",
                "rest/100%"
            ]
        );
        assert_eq!(
            (plan.stage_of_wave(0), plan.stage_of_wave(3), plan.stage_of_wave(4)),
            (0, 1, 2)
        );
        assert_eq!(plan.bake_of(0).as_secs(), 1800, "the canary's own bake");
        assert_eq!(plan.bake_of(1).as_secs(), 300, "else the plan's");
        let gates: Vec<(u32, &str)> = plan.gates.iter().map(|g| (g.wave, g.after.as_str())).collect();
        assert_eq!(gates, [(0, "canary"), (2, "apac/50%")]);
        // 10 canary hosts, 200 in apac, 1,000 in the rest: targets are shares of
        // each stage, on top of the stages before it.
        let sizes = [10, 200, 1_000];
        let targets: Vec<u64> = (0..8).map(|k| plan.wave_target(k, &sizes)).collect();
        assert_eq!(targets, [10, 30, 110, 210, 310, 510, 810, 1_210]);
        assert_eq!(plan.stages[1].waves[1], Percent::from_basis_points(5_000));
        let stored = plan.to_spec();
        assert!(stored.waves.is_empty() && stored.stages.len() == 3);
        assert_eq!(Plan::from_spec(&stored).unwrap(), plan);
    }

    #[test]
    fn hostile_stages_are_refused_naming_the_field() {
        for (from, to, says) in [
            (
                "after: canary",
                "after: emea",
                "gates[0].after: `emea` is not a stage of this plan: name a stage's end or a wave within one: canary, apac/10%, apac/50%, apac, rest/10%, rest/30%, rest/60%",
            ),
            (
                "after: apac/50%",
                "after: apac/20%",
                "gates[1].after: 20% is not a wave of stage `apac`",
            ),
            ("after: canary", "after: rest", "gates[0].after: rest is the last wave"),
            (
                "  - name: apac\n",
                "  - name: canary\n",
                "stages[1].name: `canary` names two stages",
            ),
            (
                "  - name: apac\n",
                "  - name: Apac\n",
                "stages[1].name: `Apac` is not a stage name",
            ),
            (
                "selector: {region: apac}",
                "selector: {region: [apac, oceania]}",
                "stages[1].selector: region: `oceania` is outside the plan's selector (region in [amer, apac, emea])",
            ),
            (
                "    waves: [10%, 50%, 100%]\n",
                "    waves: [10%, 50%]\n",
                "stages[1].waves[1]: waves must end at 100%",
            ),
            (
                "    bake: 30m\n",
                "    bake: 2d\n",
                "stages[0].bake: 2days is longer than 24h",
            ),
            (
                "bake: 5m\n",
                "bake: 5m\nwaves: [100%]\n",
                "waves: a plan with stages lists its waves in each stage",
            ),
            (
                "  - name: rest\n    waves",
                "  - name: rest\n    wave",
                "unknown field `wave`",
            ),
        ] {
            let e = refused(from, to);
            assert!(e.contains(says), "{to}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let late = STAGED.replace(
            "  - name: rest\n    waves: [10%, 30%, 60%, 100%]\n",
            "  - name: rest\n    waves: [10%, 30%, 60%, 100%]\n  - name: late\n    selector: {ring: \"9\"}\n    waves: [100%]\n",
        );
        let e = Plan::from_yaml(&late, "p.yaml").unwrap_err().to_string();
        assert!(
            e.contains("stages[3].name: follows stage `rest`, which has no selector"),
            "{e}"
        );
        let many: String = (0..11)
            .map(|i| format!("  - name: s{i}\n    selector: {{ring: \"{i}\"}}\n    waves: [100%]\n"))
            .collect();
        let text = format!("{}stages:\n{many}", STAGED.split("stages:\n").next().unwrap());
        let e = Plan::from_yaml(&text, "p.yaml").unwrap_err().to_string();
        assert!(e.contains("stages: has 11 stages; the limit is 10"), "{e}");
    }
}
