//! Fault domains (`fault_domain:` in the plan): which hosts may be sent now so that
//! no domain has more than its budget of hosts in flight, and, with
//! `domains_at_once`, a wave finishes the domains it started before it starts
//! another. Hosts are taken in the plan's order among those the budgets allow.
//!
//! A domain's budget is a share of its hosts in the plan's selection (rounded down,
//! at least one). Hosts in flight are counted per domain as they are sent and
//! answered; intents found without a result at start-up count as in flight.

use std::collections::{HashMap, VecDeque};

use crate::inventory::Inventory;
use crate::plan::{FaultDomain, Plan};
use crate::proto::v1 as pb;

/// A rollout's fault domains: the policy and each domain's budget.
#[derive(Debug)]
pub(crate) struct Domains {
    policy: FaultDomain,
    budget: HashMap<String, u64>,
    /// The domain of hosts without the label: `(no zone)`.
    unlabelled: String,
}

/// What a rollout has in flight per domain, and the domains its current wave works on.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    by_domain: HashMap<String, u64>,
    wave: u32,
    open: Vec<String>,
}

impl Flight {
    fn of(&self, domain: &str) -> u64 {
        self.by_domain.get(domain).copied().unwrap_or(0)
    }

    fn add(&mut self, domain: &str) {
        match self.by_domain.get_mut(domain) {
            Some(n) => *n += 1,
            None => {
                self.by_domain.insert(domain.to_string(), 1);
            }
        }
    }

    fn is_open(&self, domain: &str) -> bool {
        self.open.iter().any(|d| d == domain)
    }
}

impl Domains {
    /// The domains of `plan`'s selection in `inventory`; None without `fault_domain:`.
    pub fn of(plan: &Plan, inventory: &Inventory) -> Option<Domains> {
        let policy = plan.fault_domain.clone()?;
        let mut hosts: HashMap<String, u64> = HashMap::new();
        for h in inventory.select(&plan.selector) {
            *hosts
                .entry(policy.domain_name(h.labels.get(&policy.label)))
                .or_default() += 1;
        }
        let budget = hosts.into_iter().map(|(d, n)| (d, policy.budget(n))).collect();
        let unlabelled = policy.domain_name(None);
        Some(Domains {
            policy,
            budget,
            unlabelled,
        })
    }

    /// The domain `host` is in.
    pub fn domain<'a>(&'a self, inventory: &'a Inventory, host: &str) -> &'a str {
        inventory
            .host(host)
            .and_then(|h| h.labels.get(&self.policy.label))
            .unwrap_or(&self.unlabelled)
    }

    fn budget(&self, domain: &str) -> u64 {
        self.budget.get(domain).copied().unwrap_or(1)
    }

    /// `hosts` per domain, most first, each with its domain's budget (the dry run).
    pub fn count(&self, inventory: &Inventory, hosts: &[String]) -> Vec<pb::LabelCount> {
        let mut counts = super::order::count_by(hosts, |h| self.domain(inventory, h).to_string());
        for c in &mut counts {
            c.budget = self.budget(&c.value);
        }
        counts
    }

    /// Takes up to `n` hosts of `wave` (or retried ones of earlier waves) from the
    /// front of `assigned` that the budgets allow and `held` does not keep back,
    /// counting them in flight; the others keep their order.
    pub fn pick(
        &self,
        inventory: &Inventory,
        assigned: &mut VecDeque<(String, pb::RolloutHostRecord)>,
        flight: &mut Flight,
        wave: u32,
        n: usize,
        held: &mut dyn FnMut(&str) -> bool,
    ) -> Vec<(String, pb::RolloutHostRecord)> {
        if flight.wave != wave {
            flight.wave = wave;
            flight.open.clear();
        }
        let ours = |r: &pb::RolloutHostRecord| r.wave <= wave + 1;
        // Only an open domain with nothing in flight may be finished: then (and only
        // then) look through the queue for its waiting hosts.
        if self.policy.domains_at_once.is_some() && flight.open.iter().any(|d| flight.of(d) == 0) {
            // The domains this wave opened and has not finished: hosts waiting or in flight.
            let mut waiting: HashMap<&str, u64> = HashMap::new();
            for (h, _) in assigned.iter().filter(|(_, r)| ours(r)) {
                *waiting.entry(self.domain(inventory, h)).or_default() += 1;
            }
            let by_domain = &flight.by_domain;
            flight
                .open
                .retain(|d| by_domain.get(d).copied().unwrap_or(0) > 0 || waiting.contains_key(d.as_str()));
        }
        let at_once = self.policy.domains_at_once.map_or(usize::MAX, |k| k as usize);
        let mut out = Vec::new();
        // Hosts passed over keep their place: back at the front, in order. (Rebuilding
        // the whole queue on every batch moved a wave's every host each time: 8% of a
        // 100,000-host rollout's throughput.)
        let mut kept = Vec::new();
        while let Some((host, rec)) = assigned.pop_front() {
            if out.len() >= n || !ours(&rec) {
                assigned.push_front((host, rec));
                break;
            }
            let domain = self.domain(inventory, &host);
            let open = flight.is_open(domain);
            if flight.of(domain) < self.budget(domain) && (open || flight.open.len() < at_once) && !held(&host) {
                if !open {
                    flight.open.push(domain.to_string());
                }
                flight.add(domain);
                out.push((host, rec));
            } else {
                kept.push((host, rec));
            }
        }
        put_back(assigned, kept);
        out
    }

    /// `host` is no longer in flight (answered, or never sent).
    pub fn landed(&self, inventory: &Inventory, flight: &mut Flight, host: &str) {
        if let Some(n) = flight.by_domain.get_mut(self.domain(inventory, host)) {
            *n = n.saturating_sub(1);
        }
    }

    /// `host` is in flight (an intent found at start-up without a result).
    pub fn in_flight(&self, inventory: &Inventory, flight: &mut Flight, host: &str) {
        flight.add(self.domain(inventory, host));
    }
}

/// Hosts passed over, back at the front of `assigned` in the order they were in.
pub(super) fn put_back(
    assigned: &mut VecDeque<(String, pb::RolloutHostRecord)>,
    kept: Vec<(String, pb::RolloutHostRecord)>,
) {
    for item in kept.into_iter().rev() {
        assigned.push_front(item);
    }
}
