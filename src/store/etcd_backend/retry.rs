//! Asking etcd again: which failures say etcd could not answer now but may in a
//! moment ([`transient`]), and the pace of asking again ([`Retry`]).

use super::brief;

/// How long a call is asked again while etcd is busy: longer than an election of
/// etcd's own (a second or two) and than a leader's lease, with room for two of
/// etcd's own "request timed out" answers (about 7 s each) on a loaded machine: at
/// 15 s, tests/ha.rs once saw a rollout fail on etcd's election after its raft
/// leader was killed. A deposed leader stops asking at once whatever this says.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(30);

/// Errors that say etcd could not answer now but may in a moment: a member gone or
/// restarting (tonic says "transport error: connection reset", code Unknown), an
/// election of etcd's own under way ("leader changed", "request timed out", "no
/// leader"), a call that took too long (Cancelled: "Timeout expired").
pub(super) fn transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => true,
        Code::Unknown => status.message().contains("transport error"),
        _ => false,
    }
}

/// The pace of asking again: from 50 ms, doubling to a second, for [`RETRY_FOR`].
pub(super) struct Retry {
    started: std::time::Instant,
    pause: std::time::Duration,
}

impl Retry {
    pub(super) fn new() -> Retry {
        Retry {
            started: std::time::Instant::now(),
            pause: std::time::Duration::from_millis(50),
        }
    }

    /// Whether to ask again after `status` (waiting first); never once `deposed`.
    pub(super) fn again(&mut self, status: &tonic::Status, deposed: bool) -> bool {
        if deposed || !transient(status) || self.started.elapsed() >= RETRY_FOR {
            return false;
        }
        tracing::debug!(error = %brief(status), pause_ms = self.pause.as_millis(), "etcd is busy: asking again");
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(std::time::Duration::from_secs(1));
        true
    }
}
