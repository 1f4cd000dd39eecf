//! Per-host truth: what happened to each host of a rollout or restart job and why,
//! as the API pages it (`ListRolloutHosts`), and the failures grouped by reason that
//! status, watch and the dashboard show.
//!
//! Groups are kept up to date as results arrive (never by re-reading a million rows),
//! and their number is bounded: past [`MAX_GROUPS`] reasons, the rest are counted
//! under one "other reasons" group.

use std::collections::HashMap;

use crate::proto::v1 as pb;

/// Host ids quoted per group.
const HOST_IDS_PER_GROUP: usize = 5;
/// Distinct reasons tracked; a fleet failing in a thousand ways shows the first ones.
const MAX_GROUPS: usize = 50;
/// Groups shown in a snapshot.
const SHOWN_GROUPS: usize = 10;
/// The longest reason kept as a group's key.
const MAX_REASON: usize = 200;
/// Earlier attempts kept per host.
const MAX_HISTORY: usize = 10;

/// Why a host is in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKind {
    /// The action did not take.
    Failed,
    /// It took, but the health gate found the host unhealthy or unreachable.
    Unhealthy,
}

impl GroupKind {
    fn as_str(self) -> &'static str {
        match self {
            GroupKind::Failed => "failed",
            GroupKind::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Group {
    hosts: u64,
    /// The first hosts seen with this reason (a removed one leaves its place).
    ids: Vec<String>,
}

/// Failures grouped by reason, kept up to date as hosts fail and are retried.
#[derive(Debug, Default, Clone)]
pub struct FailureGroups {
    groups: HashMap<(GroupKind, String), Group>,
}

/// The reason shared by hosts that failed for the same cause: the first line of the
/// detail, with the host's own id replaced, addresses and numbers of the transport
/// layer left as they are only when they do not name the host.
pub fn reason_key(host: &str, detail: &str) -> String {
    let mut line = detail
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    // Transport errors name the agent's address: one per host, one cause for all.
    if let Some(rest) = line.strip_prefix("agent at ")
        && let Some((_, tail)) = rest.split_once(": ")
    {
        line = format!("agent at <address>: {tail}");
    }
    let mut key = if host.is_empty() {
        line
    } else {
        line.replace(host, "<host>")
    };
    if key.is_empty() {
        key = "(no detail)".into();
    }
    if key.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !key.is_char_boundary(cut) {
            cut -= 1;
        }
        key.truncate(cut);
        key.push('…');
    }
    key
}

impl FailureGroups {
    /// Counts `host` under its reason.
    pub fn add(&mut self, kind: GroupKind, host: &str, detail: &str) {
        let mut key = (kind, reason_key(host, detail));
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            key.1 = "other reasons".into();
        }
        let group = self.groups.entry(key).or_default();
        group.hosts += 1;
        if group.ids.len() < HOST_IDS_PER_GROUP {
            group.ids.push(host.to_string());
        }
    }

    /// Takes `host` out of its reason's group (it is being retried).
    pub fn remove(&mut self, kind: GroupKind, host: &str, detail: &str) {
        let mut key = (kind, reason_key(host, detail));
        if !self.groups.contains_key(&key) {
            key.1 = "other reasons".into();
        }
        if let Some(group) = self.groups.get_mut(&key) {
            group.hosts = group.hosts.saturating_sub(1);
            group.ids.retain(|h| h != host);
            if group.hosts == 0 {
                self.groups.remove(&key);
            }
        }
    }

    /// Every group, as stored in a rollout's summary.
    pub fn to_records(&self) -> Vec<pb::FailureGroup> {
        let mut all: Vec<pb::FailureGroup> = self.groups.iter().map(|(k, g)| record(k, g)).collect();
        all.sort_by(|a, b| (&a.kind, &a.reason).cmp(&(&b.kind, &b.reason)));
        all
    }

    /// The groups of a stored summary (kinds it does not know are skipped).
    pub fn from_records(records: Vec<pb::FailureGroup>) -> FailureGroups {
        let groups = records
            .into_iter()
            .filter_map(|r| {
                let kind = match r.kind.as_str() {
                    "failed" => GroupKind::Failed,
                    "unhealthy" => GroupKind::Unhealthy,
                    _ => return None,
                };
                let group = Group {
                    hosts: r.hosts,
                    ids: r.host_ids,
                };
                Some(((kind, r.reason), group))
            })
            .collect();
        FailureGroups { groups }
    }

    /// The largest groups, most hosts first (ties by reason), for snapshots.
    pub fn top(&self) -> Vec<pb::FailureGroup> {
        let mut all: Vec<(&(GroupKind, String), &Group)> = self.groups.iter().collect();
        all.sort_by(|a, b| b.1.hosts.cmp(&a.1.hosts).then_with(|| a.0.cmp(b.0)));
        all.into_iter().take(SHOWN_GROUPS).map(|(k, g)| record(k, g)).collect()
    }
}

fn record((kind, reason): &(GroupKind, String), g: &Group) -> pb::FailureGroup {
    pb::FailureGroup {
        reason: reason.clone(),
        kind: kind.as_str().to_string(),
        hosts: g.hosts,
        host_ids: g.ids.clone(),
    }
}

/// Keeps the host's attempt so far in its history before it is sent again.
pub fn push_history(rec: &mut pb::RolloutHostRecord) {
    if rec.operation_id.is_empty() && rec.detail.is_empty() {
        return;
    }
    if rec.history.len() >= MAX_HISTORY {
        rec.history.remove(0);
    }
    rec.history.push(pb::HostAttempt {
        attempt: rec.attempt,
        operation_id: rec.operation_id.clone(),
        state: host_state_name(rec.state()).into(),
        reason: rec.detail.clone(),
        started_at_unix_ms: rec.started_at_unix_ms,
        finished_at_unix_ms: rec.finished_at_unix_ms,
    });
}

pub fn host_state_name(state: pb::HostState) -> &'static str {
    match state {
        pb::HostState::Unspecified | pb::HostState::Pending | pb::HostState::Assigned => "pending",
        pb::HostState::Dispatched => "in-flight",
        pb::HostState::Succeeded => "succeeded",
        pb::HostState::Failed => "failed",
    }
}

/// True when a rollout's host belongs in the page asked for.
pub fn rollout_host_matches(filter: pb::HostFilter, rec: &pb::RolloutHostRecord) -> bool {
    let state = rec.state();
    match filter {
        pb::HostFilter::All => true,
        pb::HostFilter::Failed => state == pb::HostState::Failed,
        pb::HostFilter::Succeeded => state == pb::HostState::Succeeded,
        pb::HostFilter::InFlight => state == pb::HostState::Dispatched,
        pb::HostFilter::Pending => matches!(
            state,
            pb::HostState::Pending | pb::HostState::Assigned | pb::HostState::Unspecified
        ),
        pb::HostFilter::Unhealthy => state == pb::HostState::Succeeded && !rec.unhealthy_after.is_empty(),
        pb::HostFilter::Skipped => false,
    }
}

/// A rollout's host as the API shows it.
pub fn rollout_host_result(host: String, rec: pb::RolloutHostRecord) -> pb::HostResult {
    let state = rec.state();
    let reason = if !rec.unhealthy_after.is_empty() && state == pb::HostState::Succeeded {
        format!("health gate: {}", rec.unhealthy_after)
    } else {
        rec.detail
    };
    pb::HostResult {
        host_id: host,
        wave: rec.wave,
        state: host_state_name(state).into(),
        operation_id: rec.operation_id,
        attempt: rec.attempt,
        started_at_unix_ms: rec.started_at_unix_ms,
        finished_at_unix_ms: rec.finished_at_unix_ms,
        previous_version: rec.previous_version,
        version: rec.version,
        reason,
        outcome_unknown: rec.outcome_unknown,
        unhealthy: !rec.unhealthy_after.is_empty(),
        history: rec.history,
    }
}

/// Hosts per page when the caller does not say, and at most.
pub const DEFAULT_PAGE: usize = 500;
pub const MAX_PAGE: usize = 10_000;

/// One page of a rollout's or restart job's hosts.
#[derive(Debug, Default)]
pub struct Page {
    pub hosts: Vec<pb::HostResult>,
    /// The host id to continue after; empty on the last page.
    pub next: String,
}

impl super::Engine {
    /// A page of the hosts of a rollout (`key`) or restart job (`job` non-zero) that
    /// match `filter`, by host id after `after`. Reads the store from that host on,
    /// so a page of a million-host rollout costs what it returns plus what it skips.
    pub fn host_page(
        &self,
        key: super::Key<'_>,
        job: u64,
        filter: pb::HostFilter,
        after: &str,
        page_size: usize,
    ) -> super::Result<Page> {
        let limit = match page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let (hosts, more) = if job != 0 {
            self.find_job(job)?.page(filter, after, limit)
        } else {
            let live = self.find(key)?;
            let mut hosts = Vec::new();
            let mut more = false;
            for row in self.ctx.store.rollout_hosts_after(live.id, after) {
                let (host, rec) = row?;
                if !rollout_host_matches(filter, &rec) {
                    continue;
                }
                if hosts.len() == limit {
                    more = true;
                    break;
                }
                hosts.push(rollout_host_result(host, rec));
            }
            (hosts, more)
        };
        let next = match (more, hosts.last()) {
            (true, Some(last)) => last.host_id.clone(),
            _ => String::new(),
        };
        Ok(Page { hosts, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One cause is one group whatever host it hit; a retried host leaves its group.
    #[test]
    fn failures_group_by_reason_without_the_host_id() {
        let mut g = FailureGroups::default();
        g.add(GroupKind::Failed, "h1", "exit code 1: disk full on /var\nmore output");
        g.add(GroupKind::Failed, "h2", "exit code 1: disk full on /var");
        g.add(GroupKind::Failed, "h3", "host h3 is down");
        g.add(GroupKind::Unhealthy, "h4", "unhealthy (503)");
        g.add(
            GroupKind::Failed,
            "h5",
            "agent at 10.0.0.5:7070: Unavailable: connection refused",
        );
        g.add(
            GroupKind::Failed,
            "h6",
            "agent at 10.0.0.6:7070: Unavailable: connection refused",
        );
        let top = g.top();
        let disk = top
            .iter()
            .find(|t| t.reason == "exit code 1: disk full on /var")
            .unwrap();
        assert_eq!((disk.hosts, disk.host_ids.clone()), (2, vec!["h1".into(), "h2".into()]));
        // Most hosts first.
        assert!(top.windows(2).all(|w| w[0].hosts >= w[1].hosts));
        assert!(
            top.iter()
                .any(|t| t.reason == "host <host> is down" && t.kind == "failed")
        );
        assert!(top.iter().any(|t| t.kind == "unhealthy" && t.hosts == 1));
        assert!(
            top.iter()
                .any(|t| t.reason == "agent at <address>: Unavailable: connection refused" && t.hosts == 2)
        );
        g.remove(GroupKind::Failed, "h1", "exit code 1: disk full on /var");
        g.remove(GroupKind::Failed, "h3", "host h3 is down");
        let top = g.top();
        assert_eq!(top.len(), 3);
        assert!(top.iter().any(|t| t.host_ids == vec!["h2".to_string()]));
    }

    /// Past the bound, new reasons share one group and are still counted.
    #[test]
    fn groups_are_bounded() {
        let mut g = FailureGroups::default();
        for i in 0..(MAX_GROUPS + 30) {
            g.add(GroupKind::Failed, &format!("h{i}"), &format!("reason {i}"));
        }
        assert_eq!(g.groups.len(), MAX_GROUPS + 1);
        let other = g.groups.get(&(GroupKind::Failed, "other reasons".into())).unwrap();
        assert_eq!(other.hosts, 30);
        assert_eq!(g.top().len(), SHOWN_GROUPS);
    }
}
