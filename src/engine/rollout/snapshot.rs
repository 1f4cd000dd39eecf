//! What a rollout shows: how a wave stands against its threshold, and the snapshot
//! published to the API, watchers and the dashboard (only what is durable).

use std::sync::Arc;

use super::{EXAMPLES, HostState, Inner, Live, State, WaveReport};
use crate::plan::FailureAction;
use crate::proto::v1 as pb;

impl Live {
    /// Failed hosts wave `wave` tolerates: a share of the wave's own size, or under
    /// `on_failure.action: continue` of the whole selection, for the whole rollout.
    pub fn allowed_failures(&self, wave: u32, selected: u64) -> u64 {
        match self.plan.on_failure {
            FailureAction::Continue => self.plan.max_failed.allowed(selected),
            _ => self.plan.max_failed.allowed(self.wave_size(wave)),
        }
    }

    /// True when failures are judged over the whole rollout so far rather than wave by
    /// wave (`on_failure.action: continue`).
    pub fn judges_whole_rollout(&self) -> bool {
        self.plan.on_failure == FailureAction::Continue
    }

    /// The plan's stages with their waves' progress (none for a plan without).
    fn stages(&self, waves: &[pb::Wave]) -> Vec<pb::Stage> {
        self.plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let own = &waves[s.first_wave.min(waves.len())..(s.first_wave + s.waves.len()).min(waves.len())];
                let hosts = self.stage_sizes.get(i).copied().unwrap_or(0);
                let done = own.iter().all(|w| w.state() == pb::WaveState::Done);
                let begun = own.iter().any(|w| w.state() != pb::WaveState::Pending);
                let state = match (hosts, done, begun) {
                    (0, _, _) => "skipped",
                    (_, true, _) => "done",
                    (_, _, true) => "running",
                    _ => "not-started",
                };
                pb::Stage {
                    name: s.name.clone(),
                    hosts,
                    succeeded: own.iter().map(|w| w.succeeded).sum(),
                    failed: own.iter().map(|w| w.failed).sum(),
                    first_wave: s.first_wave as u32,
                    waves: s.waves.len() as u32,
                    state: state.to_string(),
                }
            })
            .collect()
    }

    pub(super) fn wave_size(&self, wave: u32) -> u64 {
        let target = self.wave_target(wave as usize);
        let before = if wave == 0 {
            0
        } else {
            self.wave_target(wave as usize - 1)
        };
        target.saturating_sub(before)
    }

    /// Failed hosts counted against the threshold when `wave` is judged: the wave's
    /// own, or every wave's so far under `continue`.
    pub(super) fn failures_judged(&self, inner: &Inner, wave: u32) -> u64 {
        let failed = |w: u32| inner.tally.wave(w)[HostState::Failed as usize];
        if self.judges_whole_rollout() {
            (0..=wave).map(failed).sum()
        } else {
            failed(wave)
        }
    }

    /// How the wave stands now.
    pub fn report(&self, wave: u32) -> WaveReport {
        let inner = self.lock();
        let selected = inner.record.hosts_selected;
        let c = inner.tally.wave(wave);
        let examples = if self.judges_whole_rollout() {
            let all = inner.examples.iter().take(wave as usize + 2).flatten();
            all.rev().take(EXAMPLES).cloned().collect()
        } else {
            inner.examples.get(wave as usize + 1).cloned().unwrap_or_default()
        };
        WaveReport {
            wave,
            size: self.wave_size(wave),
            answered: c[HostState::Succeeded as usize] + c[HostState::Failed as usize],
            failed: self.failures_judged(&inner, wave),
            allowed: self.allowed_failures(wave, selected),
            whole_rollout: self.judges_whole_rollout().then_some(selected),
            examples,
            failed_total: inner.tally.total(HostState::Failed),
            stuck: None,
        }
    }

    /// True when nothing more may be sent for `wave`: the state moved on (pause,
    /// abort) or the failures already pass what the wave tolerates.
    pub fn must_stop(&self, wave: u32) -> bool {
        let inner = self.lock();
        if inner.state != (State::Running { wave }) {
            return true;
        }
        self.failures_judged(&inner, wave) > self.allowed_failures(wave, inner.record.hosts_selected)
    }

    /// Makes everything written so far durable, then lets snapshots show it: the one
    /// way a change becomes visible (progress never goes back after a crash).
    pub async fn commit(&self, store: &crate::store::Store) -> crate::engine::Result<()> {
        store.flush().await?;
        self.mark_durable();
        Ok(())
    }

    /// Everything recorded so far is durable (just flushed): snapshots may show it.
    fn mark_durable(&self) {
        let mut inner = self.lock();
        inner.durable = (inner.tally.clone(), inner.customers.mitigated);
        self.publish(&inner);
    }

    pub(super) fn publish(&self, inner: &Inner) {
        let mut r = self.build(inner);
        r.summary = crate::summary::rollout(&r);
        self.snapshot.send_replace(Arc::new(r));
    }

    pub(super) fn build(&self, inner: &Inner) -> pb::Rollout {
        self.build_counted(inner, &inner.durable.0, inner.durable.1)
    }

    /// The snapshot with counters `t` and `mitigated` customers: the durable ones for
    /// clients, the current ones for a notification written with the change.
    pub(super) fn build_counted(&self, inner: &Inner, t: &super::Tally, mitigated: u64) -> pb::Rollout {
        let r = &inner.record;
        let selected = r.hosts_selected;
        // The record keeps the last wave after the rollout ends.
        let current = r.current_wave;
        let mut waves = Vec::with_capacity(self.plan.waves.len());
        for (k, pct) in self.plan.waves.iter().enumerate() {
            let k32 = k as u32;
            let c = t.wave(k32);
            let answered = c[HostState::Succeeded as usize] + c[HostState::Failed as usize];
            let wave_state = match &inner.state {
                State::Succeeded | State::CompletedWithFailures { .. } => pb::WaveState::Done,
                State::Pending => pb::WaveState::Pending,
                _ if k32 < current => pb::WaveState::Done,
                _ if k32 > current => pb::WaveState::Pending,
                State::Running { .. } => pb::WaveState::Running,
                State::Baking { .. } => pb::WaveState::Baking,
                State::Halted { .. } => pb::WaveState::Halted,
                State::AwaitingApproval { .. } => pb::WaveState::Done,
                State::Paused { bake_until_ms, .. } => match bake_until_ms {
                    Some(_) => pb::WaveState::Baking,
                    None => pb::WaveState::Running,
                },
                State::Failed { .. } | State::Aborted { .. } => match answered >= self.wave_size(k32) {
                    true => pb::WaveState::Done,
                    false => pb::WaveState::Halted,
                },
            };
            waves.push(pb::Wave {
                index: k32,
                percent: pct.to_string(),
                target_hosts: self.wave_target(k),
                stage: self
                    .plan
                    .stages
                    .get(self.plan.stage_of_wave(k))
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
                size: self.wave_size(k32),
                succeeded: c[HostState::Succeeded as usize],
                failed: c[HostState::Failed as usize],
                in_flight: c[HostState::Dispatched as usize],
                pending: c[HostState::Assigned as usize],
                state: wave_state as i32,
                max_failed: self.allowed_failures(k32, selected),
            });
        }
        let stages = self.stages(&waves);
        let succeeded = t.total(HostState::Succeeded);
        pb::Rollout {
            stages,
            id: r.id,
            name: r.name.clone(),
            kind: self.plan.kind.as_str().to_string(),
            description: self.plan.description.clone(),
            version: self.plan.version.clone().unwrap_or_default(),
            state: inner.state.proto() as i32,
            current_wave: current,
            waves,
            hosts_selected: selected,
            hosts_succeeded: succeeded,
            hosts_failed: t.total(HostState::Failed),
            hosts_in_flight: t.total(HostState::Dispatched),
            hosts_pending: t.total(HostState::Pending) + t.total(HostState::Assigned),
            percent_complete: if selected == 0 {
                0.0
            } else {
                succeeded as f64 * 100.0 / selected as f64
            },
            customers_affected: inner.customers.hosts.len() as u64,
            customers_mitigated: mitigated,
            halt_reason: inner.state.reason().to_string(),
            created_at_unix_ms: r.created_at_unix_ms,
            updated_at_unix_ms: r.updated_at_unix_ms,
            finished_at_unix_ms: r.finished_at_unix_ms,
            bake_until_unix_ms: r.bake_until_unix_ms,
            plan: r.plan.clone(),
            failures: inner.failures.top(),
            hosts_unhealthy: inner.unhealthy,
            retries: r.retries,
            drill_clock: String::new(),
            summary: String::new(),
            limits: String::new(),
            measurements: inner.measurements.clone(),
            gate: r.gate.clone(),
            gates_closed: r.gates_closed.clone(),
            submitted_by: r.submitted_by.clone(),
            waiting: if matches!(inner.state, State::Running { .. }) {
                inner.waiting.text()
            } else {
                String::new()
            },
            emergency: self.plan.emergency,
            rolls_back: r.rolls_back.clone(),
        }
    }
}
