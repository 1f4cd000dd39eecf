//! A rollout's counters: hosts per state per wave, and customers mitigated. Kept up
//! to date as hosts move, and rebuilt from the rows at load, so what a client sees
//! always equals a re-count of the store.

use std::collections::HashMap;

use crate::proto::v1 as pb;

use pb::HostState;

/// Hosts per state, per wave. Index 0 holds the hosts in no wave yet; index k+1
/// holds wave k (the same numbering as `RolloutHostRecord.wave`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    counts: Vec<[u64; 6]>,
}

impl Tally {
    pub(super) fn new(waves: usize) -> Tally {
        Tally {
            counts: vec![[0; 6]; waves + 1],
        }
    }

    pub(super) fn slot(&mut self, wave_index: u32) -> &mut [u64; 6] {
        let i = (wave_index as usize).min(self.counts.len() - 1);
        &mut self.counts[i]
    }

    pub(super) fn add(&mut self, wave_index: u32, state: HostState) {
        self.slot(wave_index)[state as usize] += 1;
    }

    pub(super) fn remove(&mut self, wave_index: u32, state: HostState) {
        let c = &mut self.slot(wave_index)[state as usize];
        *c = c.saturating_sub(1);
    }

    /// A host of wave `wave_index` changed state.
    pub(super) fn moved(&mut self, wave_index: u32, from: HostState, to: HostState) {
        self.remove(wave_index, from);
        self.add(wave_index, to);
    }

    /// Counts of wave `wave` (0-based).
    pub fn wave(&self, wave: u32) -> [u64; 6] {
        self.counts.get(wave as usize + 1).copied().unwrap_or_default()
    }

    pub fn total(&self, state: HostState) -> u64 {
        self.counts.iter().map(|c| c[state as usize]).sum()
    }

    /// Flattened, slot after slot, for a rollout's summary.
    pub(super) fn to_record(&self) -> Vec<u64> {
        self.counts.iter().flatten().copied().collect()
    }

    /// A stored summary's counts for `waves` waves, or None if they do not fit.
    pub(super) fn from_record(waves: usize, flat: &[u64]) -> Option<Tally> {
        if flat.len() != (waves + 1) * 6 {
            return None;
        }
        let counts = flat.chunks(6).map(|c| c.try_into().unwrap_or([0; 6])).collect();
        Some(Tally { counts })
    }
}

/// Per customer: selected hosts and how many of them succeeded.
#[derive(Debug, Default)]
pub(super) struct Customers {
    pub(super) hosts: HashMap<String, (u32, u32)>,
    pub(super) mitigated: u64,
}

impl Customers {
    pub(super) fn select(&mut self, customers: &[impl AsRef<str>]) {
        for c in customers {
            self.counts(c.as_ref()).0 += 1;
        }
    }

    /// Counts a success while loading, before every host is selected: no verdicts yet.
    pub(super) fn count_success(&mut self, customers: &[impl AsRef<str>]) {
        for c in customers {
            self.counts(c.as_ref()).1 += 1;
        }
    }

    /// A customer's counts, its id copied only the first time (a million hosts share
    /// a few thousand customers).
    fn counts(&mut self, customer: &str) -> &mut (u32, u32) {
        if !self.hosts.contains_key(customer) {
            self.hosts.insert(customer.to_string(), (0, 0));
        }
        self.hosts.get_mut(customer).expect("inserted above")
    }

    pub(super) fn to_record(&self) -> Vec<pb::CustomerCount> {
        let mut all: Vec<pb::CustomerCount> = self
            .hosts
            .iter()
            .map(|(id, (selected, succeeded))| pb::CustomerCount {
                id: id.clone(),
                selected: *selected,
                succeeded: *succeeded,
            })
            .collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub(super) fn from_record(counts: Vec<pb::CustomerCount>) -> Customers {
        let mut customers = Customers {
            hosts: counts.into_iter().map(|c| (c.id, (c.selected, c.succeeded))).collect(),
            mitigated: 0,
        };
        customers.recount();
        customers
    }

    /// Recounts the mitigated customers once loading is done.
    pub(super) fn recount(&mut self) {
        self.mitigated = self.hosts.values().filter(|(sel, ok)| *sel > 0 && ok >= sel).count() as u64;
    }

    /// A host of these customers succeeded: a customer is mitigated with its last host.
    pub(super) fn succeeded(&mut self, customers: &[impl AsRef<str>]) {
        for c in customers {
            if let Some((sel, ok)) = self.hosts.get_mut(c.as_ref()) {
                *ok += 1;
                if *ok == *sel {
                    self.mitigated += 1;
                }
            }
        }
    }
}
