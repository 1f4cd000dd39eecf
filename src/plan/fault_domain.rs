//! A plan's `fault_domain:`: hosts sharing a label value (a zone, a rack, a power
//! feed) fail together, so a rollout never has more than a budget of any domain's
//! hosts in flight at once, and may finish the domains it started in a wave before
//! it starts another (one zone at a time, as CodeDeploy's zonal deployments).
//!
//! ```yaml
//! fault_domain:
//!   label: zone              # hosts with the same value share a fault domain
//!   max_unavailable: 10%     # of each domain's selected hosts (or a number of hosts)
//!   domains_at_once: 1       # optional: a wave finishes the domains it started first
//! ```

use serde::Deserialize;

use super::{FieldError, Scalar, Threshold, bad};
use crate::proto::v1 as pb;

/// A validated fault domain policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultDomain {
    pub label: String,
    /// Hosts of one domain in flight at once: a number, or a share of the domain's
    /// selected hosts (rounded down, at least one).
    pub max_unavailable: Threshold,
    /// Domains a wave works on at once; None: any number.
    pub domains_at_once: Option<u32>,
}

impl FaultDomain {
    /// The domain a host with this label value (None: without the label) is in.
    pub fn domain_name(&self, value: Option<&str>) -> String {
        match value {
            Some(v) => v.to_string(),
            None => format!("(no {})", self.label),
        }
    }

    /// How many of a domain of `hosts` selected hosts may be in flight at once.
    pub fn budget(&self, hosts: u64) -> u64 {
        self.max_unavailable.allowed(hosts).max(1)
    }

    pub fn to_spec(&self) -> pb::FaultDomainSpec {
        pb::FaultDomainSpec {
            label: self.label.clone(),
            max_unavailable: self.max_unavailable.to_string(),
            domains_at_once: self.domains_at_once.unwrap_or(0),
        }
    }

    /// "zone: at most 10% of each zone's hosts at once, one zone at a time".
    pub fn describe(&self) -> String {
        let at_once = match self.domains_at_once {
            None => String::new(),
            Some(1) => format!(", one {} at a time", self.label),
            Some(n) => format!(", {n} {}s at a time", self.label),
        };
        format!(
            "{}: at most {} of each {}'s hosts in flight{at_once}",
            self.label,
            match self.max_unavailable {
                Threshold::Count(n) => format!("{n}"),
                Threshold::Share(p) => p.to_string(),
            },
            self.label
        )
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FaultDomainFile {
    label: String,
    max_unavailable: Scalar,
    #[serde(default)]
    domains_at_once: Option<u32>,
}

impl FaultDomainFile {
    pub(super) fn into_spec(self) -> pb::FaultDomainSpec {
        pb::FaultDomainSpec {
            label: self.label,
            max_unavailable: self.max_unavailable.into_text(),
            domains_at_once: self.domains_at_once.unwrap_or(0),
        }
    }
}

/// The plan's fault domain policy, if it has one.
pub(super) fn fault_domain(spec: Option<&pb::FaultDomainSpec>) -> Result<Option<FaultDomain>, FieldError> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    crate::ident::label_key(&spec.label).map_err(|e| bad("fault_domain.label", e.to_string()))?;
    let max_unavailable =
        Threshold::parse(&spec.max_unavailable).map_err(|m| bad("fault_domain.max_unavailable", m))?;
    let zero = match max_unavailable {
        Threshold::Count(n) => n == 0,
        Threshold::Share(p) => p.basis_points() == 0,
    };
    if zero {
        return Err(bad(
            "fault_domain.max_unavailable",
            format!(
                "{max_unavailable} would never send a host: give how many of each domain's hosts may be in flight at once, like 10% or 2"
            ),
        ));
    }
    Ok(Some(FaultDomain {
        label: spec.label.clone(),
        max_unavailable,
        domains_at_once: (spec.domains_at_once > 0).then_some(spec.domains_at_once),
    }))
}

#[cfg(test)]
mod tests {
    use super::super::Plan;

    const ZONED: &str = "\
name: zonal
kind: restart
selector: {service: exchange-routing}
waves: [10%, 100%]
fault_domain:
  label: zone
  max_unavailable: 10%
  domains_at_once: 1
";

    #[test]
    fn a_budget_is_a_share_of_each_domain_at_least_one_host() {
        let plan = Plan::from_yaml(ZONED, "p.yaml").unwrap();
        let fd = plan.fault_domain.clone().unwrap();
        assert_eq!((fd.budget(100), fd.budget(35), fd.budget(5)), (10, 3, 1));
        assert_eq!(fd.domains_at_once, Some(1));
        assert_eq!(fd.domain_name(None), "(no zone)");
        assert_eq!(
            fd.describe(),
            "zone: at most 10% of each zone's hosts in flight, one zone at a time"
        );
        assert_eq!(Plan::from_spec(&plan.to_spec()).unwrap(), plan);
        let counted = Plan::from_yaml(&ZONED.replace("10%\n", "2\n"), "p.yaml").unwrap();
        assert_eq!(counted.fault_domain.unwrap().budget(1_000), 2);
    }

    #[test]
    fn a_budget_of_zero_and_bad_labels_are_refused() {
        for (from, to, says) in [
            (
                "max_unavailable: 10%",
                "max_unavailable: 0",
                "p.yaml:7:3: fault_domain.max_unavailable: 0 would never send a host",
            ),
            (
                "max_unavailable: 10%",
                "max_unavailable: 0%",
                "fault_domain.max_unavailable: 0% would never send a host",
            ),
            (
                "max_unavailable: 10%",
                "max_unavailable: lots",
                "fault_domain.max_unavailable: `lots` is neither",
            ),
            (
                "label: zone",
                "label: \"../zone\"",
                "fault_domain.label: `../zone` is not a valid label key",
            ),
            (
                "  domains_at_once: 1\n",
                "  domains_at_once: 1\n  spread: yes\n",
                "unknown field `spread`",
            ),
        ] {
            let e = Plan::from_yaml(&ZONED.replace(from, to), "p.yaml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{to}: {e}");
        }
    }
}
