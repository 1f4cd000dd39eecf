//! The host side of the Agent protocol.
//!
//! - [`host`]: `rollout agent --config agent.yaml`, the agent of one real host;
//!   [`config`] its file, [`command`] how it runs commands, [`state`] what it remembers.
//! - [`simulator`]: `rollout agent --simulate FLEET.yaml` serves every host of a
//!   fleet file on one port, with latency and failures, for demos, tests and benchmarks.

pub mod command;
pub mod config;
pub mod detached;
pub mod heartbeat;
pub mod host;
pub mod latency;
pub mod simulator;
pub mod state;
pub mod traffic;

use std::sync::atomic::{AtomicU64, Ordering};

pub use simulator::{Simulator, SimulatorOptions};

/// Fencing on the host: an Apply from a controller whose epoch is lower than the
/// highest this host has seen comes from a deposed leader and is refused; a higher
/// one is remembered (`highest`). Epoch 0 is a controller without one (sled).
pub fn check_epoch(highest: &mut u64, epoch: u64) -> Result<(), crate::error::Error> {
    if epoch < *highest {
        return Err(stale(epoch, *highest));
    }
    *highest = epoch;
    Ok(())
}

fn stale(epoch: u64, highest: u64) -> crate::error::Error {
    crate::error::Error::Refused(format!(
        "stale controller epoch {epoch} < {highest}: a newer leader has taken over"
    ))
}

/// The Apply calls an agent received since it started (replays and refusals
/// included: what a retry storm would inflate), and those it refused as a deposed
/// controller's (fencing at work); both reported by Probe.
#[derive(Default)]
pub struct ApplyCounts {
    calls: AtomicU64,
    stale: AtomicU64,
}

impl ApplyCounts {
    /// Counts a call received.
    pub fn received(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// [`check_epoch`], counting a refusal.
    pub fn check_epoch(&self, highest: &mut u64, epoch: u64) -> Result<(), crate::error::Error> {
        check_epoch(highest, epoch).inspect_err(|_| {
            self.stale.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// [`check_epoch`] on a shared number (raised at once, no lock), counting a refusal.
    pub fn check_epoch_atomic(&self, highest: &AtomicU64, epoch: u64) -> Result<(), crate::error::Error> {
        let seen = highest.fetch_max(epoch, Ordering::SeqCst);
        if epoch < seen {
            self.stale.fetch_add(1, Ordering::Relaxed);
            return Err(stale(epoch, seen));
        }
        Ok(())
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub fn stale(&self) -> u64 {
        self.stale.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lower_epoch_is_refused_and_a_higher_one_remembered() {
        let mut seen = 0;
        assert!(super::check_epoch(&mut seen, 7).is_ok());
        assert!(super::check_epoch(&mut seen, 9).is_ok());
        let refused = tonic::Status::from(super::check_epoch(&mut seen, 7).unwrap_err());
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().starts_with("stale controller epoch 7 < 9"),
            "{}",
            refused.message()
        );
        assert!(super::check_epoch(&mut seen, 9).is_ok(), "the same leader again");
        assert_eq!(seen, 9);
    }
}
