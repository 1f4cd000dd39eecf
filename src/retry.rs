//! Bounded retries, so the orchestrator can never become a retry storm (the seed
//! outage was one): full-jitter exponential backoff, a retry budget of 10% of first
//! attempts over a sliding window, and a circuit breaker per endpoint. One
//! implementation for every caller: the drivers that reach hosts (`crate::reach`),
//! Prometheus queries (`crate::telemetry`).
//!
//! Only the caller sleeps; these types decide.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use rand::Rng;

/// Full-jitter exponential backoff: the n-th wait is uniform in [0, min(cap, base·2ⁿ)].
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap, attempt: 0 }
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(20)).min(self.cap);
        self.attempt += 1;
        let ms = ceiling.as_millis() as u64;
        Some(Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::rng().random_range(0..=ms)
        }))
    }
}

/// Retries allowed only while they stay within `ratio` of the first attempts made
/// over the last `window`.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    bucket: Duration,
    /// (bucket start, first attempts, retries), oldest first.
    buckets: Mutex<std::collections::VecDeque<(Instant, u64, u64)>>,
    slots: usize,
    /// Retries allowed over the window whatever the first attempts (Finagle's
    /// minimum): a caller whose first attempts stopped (a sink down for an hour) can
    /// still retry, slowly.
    minimum: u64,
}

impl RetryBudget {
    pub fn new(ratio: f64, window: Duration) -> RetryBudget {
        let slots = 10;
        RetryBudget {
            ratio,
            bucket: window / slots as u32,
            buckets: Mutex::new(Default::default()),
            slots,
            minimum: 0,
        }
    }

    /// The same budget, allowing `retries` over the window beyond the ratio.
    pub fn with_minimum(mut self, retries: u64) -> RetryBudget {
        self.minimum = retries;
        self
    }

    fn with_current<T>(&self, f: impl FnOnce(&mut std::collections::VecDeque<(Instant, u64, u64)>) -> T) -> T {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if b.back().is_none_or(|last| now.duration_since(last.0) >= self.bucket) {
            b.push_back((now, 0, 0));
        }
        while b.len() > self.slots {
            b.pop_front();
        }
        f(&mut b)
    }

    pub fn first_attempt(&self) {
        self.with_current(|b| {
            if let Some(last) = b.back_mut() {
                last.1 += 1;
            }
        });
    }

    /// Takes a retry from the budget if there is one.
    pub fn try_retry(&self) -> bool {
        self.with_current(|b| {
            let (firsts, retries) = b.iter().fold((0, 0), |acc, x| (acc.0 + x.1, acc.1 + x.2));
            let allowed = (retries + 1) as f64 <= self.ratio * firsts as f64 + self.minimum as f64;
            if allowed && let Some(last) = b.back_mut() {
                last.2 += 1;
            }
            allowed
        })
    }
}

/// Where an endpoint's breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through; `failures` in a row so far.
    Closed { failures: u32 },
    /// Calls fail fast until the cool-down ends.
    Open { until: Instant },
    /// One trial call is out; the others fail fast until it answers.
    HalfOpen,
}

/// One circuit breaker per agent endpoint.
#[derive(Debug)]
pub struct Breakers {
    threshold: u32,
    cool_down: Duration,
    states: Mutex<HashMap<String, BreakerState>>,
}

impl Breakers {
    pub fn new(threshold: u32, cool_down: Duration) -> Breakers {
        Breakers {
            threshold,
            cool_down,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BreakerState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go to `endpoint` now? An open breaker past its cool-down lets one
    /// trial call through (half-open).
    /// Endpoints whose breaker is open or half-open now.
    pub fn open(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| !matches!(s, BreakerState::Closed { .. }))
            .count()
    }

    pub fn allow(&self, endpoint: &str) -> bool {
        let mut states = self.lock();
        let state = states
            .entry(endpoint.to_string())
            .or_insert(BreakerState::Closed { failures: 0 });
        match *state {
            BreakerState::Closed { .. } => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open { until } if Instant::now() >= until => {
                *state = BreakerState::HalfOpen;
                true
            }
            BreakerState::Open { .. } => false,
        }
    }

    /// The endpoint answered (even with an application error): close the breaker.
    pub fn success(&self, endpoint: &str) {
        self.lock()
            .insert(endpoint.to_string(), BreakerState::Closed { failures: 0 });
    }

    /// The endpoint did not answer. Returns true when this opened the breaker.
    pub fn failure(&self, endpoint: &str) -> bool {
        let mut states = self.lock();
        let state = states
            .entry(endpoint.to_string())
            .or_insert(BreakerState::Closed { failures: 0 });
        let open = BreakerState::Open {
            until: Instant::now() + self.cool_down,
        };
        match *state {
            BreakerState::Closed { failures } if failures + 1 >= self.threshold => {
                *state = open;
                true
            }
            BreakerState::Closed { failures } => {
                *state = BreakerState::Closed { failures: failures + 1 };
                false
            }
            BreakerState::HalfOpen | BreakerState::Open { .. } => {
                *state = open;
                true
            }
        }
    }

    pub fn state(&self, endpoint: &str) -> BreakerState {
        self.lock()
            .get(endpoint)
            .copied()
            .unwrap_or(BreakerState::Closed { failures: 0 })
    }

    /// Endpoints whose breaker is open or half-open now.
    pub fn open_count(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| !matches!(s, BreakerState::Closed { .. }))
            .count()
    }
}

/// Counters of the fleet driver, exported as metrics (prometheus-client types; a
/// clone shares the count).
#[derive(Debug, Clone)]
pub struct CallStats {
    pub first_attempts: Counter,
    pub retries: Counter,
    pub budget_exhausted: Counter,
    pub breaker_opened: Counter,
    pub breaker_rejected: Counter,
    /// Seconds each attempt took, answered or not.
    pub latency: Histogram,
    /// Operations started on agents (detached) whose results are awaited now.
    pub awaited: prometheus_client::metrics::gauge::Gauge,
    /// Results calls (long polls) sent to agents.
    pub result_polls: Counter,
    /// Awaited operations asked again because their agent restarted or its results
    /// were lost (Apply is idempotent: they do not run again).
    pub reasked: Counter,
}

impl Default for CallStats {
    fn default() -> Self {
        CallStats {
            first_attempts: Counter::default(),
            retries: Counter::default(),
            budget_exhausted: Counter::default(),
            breaker_opened: Counter::default(),
            breaker_rejected: Counter::default(),
            // 1 ms .. about 65 s.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            awaited: Default::default(),
            result_polls: Counter::default(),
            reasked: Counter::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let waits: Vec<Duration> = b.by_ref().take(6).collect();
        for (i, w) in waits.iter().enumerate() {
            let ceiling = (100u64 << i).min(800);
            assert!(w.as_millis() as u64 <= ceiling, "wait {i} = {w:?} over {ceiling}ms");
        }
        b.reset();
        assert!(b.next().unwrap() <= Duration::from_millis(100));
    }

    #[test]
    fn retries_stay_within_ten_percent_of_first_attempts() {
        let budget = RetryBudget::new(0.1, Duration::from_secs(10));
        assert!(!budget.try_retry(), "no first attempts, no retries");
        for _ in 0..100 {
            budget.first_attempt();
        }
        let granted = (0..50).filter(|_| budget.try_retry()).count();
        assert_eq!(granted, 10);
        let floor = RetryBudget::new(0.1, Duration::from_secs(10)).with_minimum(3);
        let granted = (0..50).filter(|_| floor.try_retry()).count();
        assert_eq!(granted, 3, "the minimum without any first attempt");
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_half_opens_after_cool_down() {
        let b = Breakers::new(3, Duration::from_millis(30));
        assert!(!b.failure("a") && !b.failure("a"));
        b.success("a");
        assert!(!b.failure("a") && !b.failure("a"));
        assert!(b.failure("a"), "third in a row opens it");
        assert!(!b.allow("a"));
        assert!(b.allow("b"), "breakers are per endpoint");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow("a"), "one trial call after the cool-down");
        assert!(!b.allow("a"), "only one");
        assert!(b.failure("a"), "a failed trial opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow("a"));
        b.success("a");
        assert_eq!(b.state("a"), BreakerState::Closed { failures: 0 });
    }
}
