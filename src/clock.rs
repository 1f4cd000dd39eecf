//! Time: the wall clock (injected, so tests can set it), the drill clock business
//! hours can follow during a game day, and instants as people read them.

use std::sync::Arc;

/// Wall-clock time, injected so tests can set it.
pub trait Clock: Send + Sync + 'static {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> i64;
}

/// The real clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// Unix time in milliseconds from the system clock (only [`SystemClock`] reads it).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What a drill clock reading `hours_ms` is said as (status, the status text).
pub fn drill_text(hours_ms: i64) -> String {
    format!(
        "drill clock in force: business hours as of {} (not the real time)",
        format_instant(hours_ms)
    )
}

/// Business hours during a drill or a demo (`rollout serve --drill-clock TIME`): the
/// clock reads `from_ms` when the controller starts and advances in real time, so a
/// game day on a Saturday night can replay a Monday morning in Seoul. Records and the
/// audit log keep real time.
pub struct DrillClock {
    from_ms: i64,
    started_ms: i64,
    real: Arc<dyn Clock>,
}

impl DrillClock {
    pub fn new(from_ms: i64, real: Arc<dyn Clock>) -> DrillClock {
        DrillClock {
            from_ms,
            started_ms: real.now_ms(),
            real,
        }
    }
}

impl Clock for DrillClock {
    fn now_ms(&self) -> i64 {
        self.from_ms + (self.real.now_ms() - self.started_ms)
    }
}

/// An instant as people read it in the audit log and status: RFC 3339 in UTC.
pub fn format_instant(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map_or_else(|_| ms.to_string(), |t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}
