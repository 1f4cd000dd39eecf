//! What the driver reports to the state machine: how a wave went (its hosts'
//! answers) and what the health gate found at the end of its bake, and the reasons
//! a wave halts, in the sentences operators read.

/// How a wave went, as counted by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveReport {
    pub wave: u32,
    /// Hosts in the wave.
    pub size: u64,
    /// Hosts with a result (succeeded or failed).
    pub answered: u64,
    pub failed: u64,
    /// Failed hosts the wave tolerates.
    pub allowed: u64,
    /// Under `on_failure.action: continue`, the hosts selected: `failed` and
    /// `allowed` then count the whole rollout so far, not this wave alone.
    pub whole_rollout: Option<u64>,
    /// A few failed hosts with their error, for the halt reason.
    pub examples: Vec<String>,
    /// Hosts of the whole rollout that failed so far: a rollout that ends with any is
    /// not a success.
    pub failed_total: u64,
    /// Set when the wave made no progress for its plan's progress_deadline: how long,
    /// and the hosts it was waiting on.
    pub stuck: Option<(std::time::Duration, Vec<String>)>,
}

impl WaveReport {
    pub fn over_threshold(&self) -> bool {
        self.failed > self.allowed
    }

    pub fn complete(&self) -> bool {
        self.answered >= self.size
    }
}

/// What the probes at the end of a bake found in a wave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    pub wave: u32,
    pub size: u64,
    /// Hosts whose apply failed (already within the threshold, or it would have halted).
    pub failed: u64,
    /// Hosts that applied fine but are unhealthy (or unreachable) now.
    pub unhealthy: u64,
    pub allowed: u64,
    /// As in [`WaveReport::whole_rollout`]: counts cover every wave so far.
    pub whole_rollout: Option<u64>,
    pub examples: Vec<String>,
    /// As in [`WaveReport::failed_total`].
    pub failed_total: u64,
    /// The `min_healthy` floor of the whole selection, when the plan sets one.
    pub fleet: Option<FleetHealth>,
}

/// Health of the whole selection at the end of a bake, against `min_healthy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetHealth {
    pub selected: u64,
    pub healthy: u64,
    /// Healthy hosts required.
    pub required: u64,
    /// The floor as the plan wrote it ("95%").
    pub floor: String,
    pub examples: Vec<String>,
}

impl HealthReport {
    /// Why the gate closes, or None when the wave may go on.
    pub(super) fn breach(&self) -> Option<String> {
        let wave = self.wave + 1;
        if self.failed + self.unhealthy > self.allowed {
            let mut reason = match self.whole_rollout {
                None => format!(
                    "wave {wave}: {} of {} hosts unhealthy after the bake ({} failed to apply), more than the {} allowed by on_failure.max_failed",
                    self.unhealthy, self.size, self.failed, self.allowed
                ),
                Some(selected) => format!(
                    "wave {wave}: {} hosts unhealthy after the bake and {} failed to apply so far, of {selected} selected, more than the {} allowed by on_failure.max_failed (action: continue)",
                    self.unhealthy, self.failed, self.allowed
                ),
            };
            push_examples(&mut reason, &self.examples);
            return Some(reason);
        }
        let fleet = self.fleet.as_ref().filter(|f| f.healthy < f.required)?;
        let mut reason = format!(
            "wave {wave}: {} of {} selected hosts healthy after the bake ({:.1}%), below min_healthy {} ({} needed)",
            fleet.healthy,
            fleet.selected,
            fleet.healthy as f64 * 100.0 / fleet.selected.max(1) as f64,
            fleet.floor,
            fleet.required
        );
        push_examples(&mut reason, &fleet.examples);
        Some(reason)
    }
}

/// "; e.g. h1, h2, h3: connection refused; h4: disk full": the examples (each
/// `host: message`) grouped by message, so a message several hosts share is said once.
fn push_examples(reason: &mut String, examples: &[String]) {
    if examples.is_empty() {
        return;
    }
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for example in examples {
        let (host, message) = example.split_once(": ").unwrap_or(("", example));
        match groups.iter_mut().find(|(m, _)| *m == message) {
            Some((_, hosts)) => hosts.push(host),
            None => groups.push((message, vec![host])),
        }
    }
    let said: Vec<String> = groups
        .iter()
        .map(|(message, hosts)| match hosts.as_slice() {
            [""] => message.to_string(),
            _ => format!("{}: {message}", hosts.join(", ")),
        })
        .collect();
    reason.push_str("; e.g. ");
    reason.push_str(&said.join("; "));
}

/// "wave 2: 7 of 180 hosts failed, more than the 3 allowed ...; e.g. h1: ..., h2: ..."
pub(super) fn halt_reason(r: &WaveReport) -> String {
    let mut reason = match r.whole_rollout {
        None => format!(
            "wave {}: {} of {} hosts failed, more than the {} allowed by on_failure.max_failed",
            r.wave + 1,
            r.failed,
            r.size,
            r.allowed
        ),
        Some(selected) => format!(
            "wave {}: {} hosts failed so far, of {selected} selected, more than the {} allowed by on_failure.max_failed (action: continue)",
            r.wave + 1,
            r.failed,
            r.allowed
        ),
    };
    push_examples(&mut reason, &r.examples);
    reason
}

#[cfg(test)]
mod grouped_tests {
    #[test]
    fn a_message_several_hosts_share_is_said_once() {
        let mut reason = "wave 1: 3 of 10 hosts failed".to_string();
        let examples = ["h1: connection refused", "h2: disk full", "h3: connection refused"].map(String::from);
        super::push_examples(&mut reason, &examples);
        assert_eq!(
            reason,
            "wave 1: 3 of 10 hosts failed; e.g. h1, h3: connection refused; h2: disk full"
        );
    }
}
