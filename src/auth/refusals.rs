//! Refused calls, for the audit log: who, what, why (no credentials, the role, the
//! rate limit, a forged form), refused before any handler read the call.
//!
//! A flood of refusals must not fill the store: the [`Sampler`] writes the first
//! refusal of each kind (a principal, a method, a reason) at once, then the 10th,
//! 100th, 1000th... of the same kind within a minute, and at the minute's end one
//! line with the whole count. A principal hammering one call costs a handful of
//! lines a minute, however fast it calls; past [`MAX_KINDS`] kinds open at once,
//! the rest are counted together in one line a minute. The layer hands refusals over
//! without waiting ([`Refusals::report`]); when the queue is full they are counted
//! and the count is written instead.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Refusals waiting to be sampled; past it they are counted, not queued.
const QUEUE: usize = 4096;

/// Kinds of refusal the sampler follows one by one within a minute.
pub const MAX_KINDS: usize = 1024;

/// One minute: the span of a kind's count.
pub const WINDOW_MS: i64 = 60_000;

/// Why a call was refused before it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Why {
    /// No credentials, or credentials this controller does not know.
    Credentials,
    /// The caller's role does not allow the call.
    Role,
    /// The caller is over its change rate limit.
    RateLimit,
    /// A dashboard form without the session's CSRF token.
    Forgery,
}

impl Why {
    pub fn as_str(self) -> &'static str {
        match self {
            Why::Credentials => "credentials",
            Why::Role => "role",
            Why::RateLimit => "rate limit",
            Why::Forgery => "forged form",
        }
    }
}

/// One refused call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Who the caller proved to be; `unauthenticated` when it proved nothing.
    pub principal: String,
    /// Its role; empty when unauthenticated.
    pub role: String,
    /// The call (`SubmitPlan`) or the dashboard's action (`PauseRollout`).
    pub method: String,
    pub why: Why,
    /// What the caller was told.
    pub message: String,
    /// Where the call came from, when known.
    pub peer: Option<IpAddr>,
    /// "the dashboard" or "Slack" when the call did not come through the API.
    pub via: Option<&'static str>,
}

/// The name an unauthenticated caller is written under.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// A line for the audit log, about one kind of refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The first refusal of the kind in its minute (for the many, the first of them).
    pub refusal: Refusal,
    /// What the line says beside the refusal's message.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    principal: String,
    method: String,
    why: Why,
}

struct Open {
    first: Refusal,
    since_ms: i64,
    count: u64,
    /// The count the last line said.
    said: u64,
}

/// The refusals of more kinds than [`MAX_KINDS`] within a minute.
struct Crowd {
    first: Refusal,
    since_ms: i64,
    count: u64,
}

/// Decides which refusals are written one by one and which are counted (pure: the
/// caller gives the time).
#[derive(Default)]
pub struct Sampler {
    open: HashMap<Kind, Open>,
    crowd: Option<Crowd>,
}

impl Sampler {
    /// A refusal at `now_ms`: the line to write now, if any.
    pub fn admit(&mut self, now_ms: i64, refusal: Refusal) -> Option<Line> {
        let kind = Kind {
            principal: refusal.principal.clone(),
            method: refusal.method.clone(),
            why: refusal.why,
        };
        if let Some(open) = self.open.get_mut(&kind) {
            open.count += 1;
            if !power_of_ten(open.count) {
                return None;
            }
            open.said = open.count;
            return Some(Line {
                refusal,
                detail: format!(
                    "refused ({}): the {} like this within a minute",
                    kind.why.as_str(),
                    ordinal(open.count)
                ),
            });
        }
        if self.open.len() >= MAX_KINDS {
            let crowd = self.crowd.get_or_insert_with(|| Crowd {
                first: refusal.clone(),
                since_ms: now_ms,
                count: 0,
            });
            crowd.count += 1;
            return None;
        }
        let line = Line {
            detail: first_detail(&refusal),
            refusal: refusal.clone(),
        };
        self.open.insert(
            kind,
            Open {
                first: refusal,
                since_ms: now_ms,
                count: 1,
                said: 1,
            },
        );
        Some(line)
    }

    /// The lines of the minutes that ended by `now_ms`: each kind's whole count when
    /// no line said it yet, and the crowd's.
    pub fn due(&mut self, now_ms: i64) -> Vec<Line> {
        let mut lines = Vec::new();
        self.open.retain(|_, open| {
            if now_ms - open.since_ms < WINDOW_MS {
                return true;
            }
            if open.count > open.said {
                lines.push(Line {
                    refusal: open.first.clone(),
                    detail: format!(
                        "refused ({}): {} times like this within a minute",
                        open.first.why.as_str(),
                        open.count
                    ),
                });
            }
            false
        });
        if let Some(crowd) = self.crowd.take_if(|c| now_ms - c.since_ms >= WINDOW_MS) {
            let mut many = crowd.first;
            many.principal = "(many)".into();
            many.role = String::new();
            lines.push(Line {
                detail: format!(
                    "{} more refusals, of callers and calls beyond the {MAX_KINDS} written one by one within a minute (the first shown)",
                    crowd.count
                ),
                refusal: many,
            });
        }
        lines
    }

    /// Every line still owed (the controller is stopping).
    pub fn drain(&mut self) -> Vec<Line> {
        self.due(i64::MAX)
    }
}

/// The first refusal of a kind, as its line says it.
fn first_detail(refusal: &Refusal) -> String {
    let mut detail = format!("refused ({})", refusal.why.as_str());
    if let Some(peer) = refusal.peer {
        detail.push_str(&format!(" from {peer}"));
    }
    if let Some(via) = refusal.via {
        detail.push_str(&format!(" through {via}"));
    }
    detail
}

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, r) if r != 11 => "st",
        (2, r) if r != 12 => "nd",
        (3, r) if r != 13 => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// 1, 10, 100, 1000...
fn power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// Samples the refusals `rx` receives and hands each line to `write`, until `done`;
/// then the lines still owed. Every ten seconds, the minutes that ended and the
/// refusals the full queue lost.
pub async fn run<F, Fut>(mut rx: Receiver, now_ms: impl Fn() -> i64, mut write: F, done: CancellationToken)
where
    F: FnMut(Line) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            refusal = rx.queue.recv() => match refusal {
                Some(refusal) => {
                    if let Some(line) = sampler.admit(now_ms(), refusal) {
                        write(line).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                for line in sampler.due(now_ms()) {
                    write(line).await;
                }
                let lost = rx.lost();
                if lost > 0 {
                    write(lost_line(lost)).await;
                }
            }
            _ = done.cancelled() => break,
        }
    }
    for line in sampler.drain() {
        write(line).await;
    }
}

/// The line for refusals the full queue could not take.
fn lost_line(lost: u64) -> Line {
    Line {
        refusal: Refusal {
            principal: "(many)".into(),
            role: String::new(),
            method: String::new(),
            why: Why::RateLimit,
            message: "refused".into(),
            peer: None,
            via: None,
        },
        detail: format!("{lost} refusals came faster than they could be sampled and are only counted here"),
    }
}

/// Where the auth layer, the dashboard and Slack hand refused calls, without waiting.
#[derive(Clone)]
pub struct Refusals {
    queue: Option<mpsc::Sender<Refusal>>,
    /// Refusals the full queue could not take, since the last look.
    lost: Arc<AtomicU64>,
}

impl Refusals {
    /// Refusals go nowhere (a process without an audit log).
    pub fn none() -> Refusals {
        Refusals {
            queue: None,
            lost: Arc::default(),
        }
    }

    /// Refusals go to the receiver, which [`Sampler`]s them.
    pub fn channel() -> (Refusals, Receiver) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let lost = Arc::new(AtomicU64::new(0));
        (
            Refusals {
                queue: Some(tx),
                lost: lost.clone(),
            },
            Receiver { queue: rx, lost },
        )
    }

    /// Hands a refusal over; counted as lost when the queue is full.
    pub fn report(&self, refusal: Refusal) {
        if let Some(queue) = &self.queue
            && queue.try_send(refusal).is_err()
        {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The other end of [`Refusals::channel`].
pub struct Receiver {
    pub queue: mpsc::Receiver<Refusal>,
    lost: Arc<AtomicU64>,
}

impl Receiver {
    /// How many refusals the full queue could not take since the last call.
    pub fn lost(&self) -> u64 {
        self.lost.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(principal: &str, method: &str) -> Refusal {
        Refusal {
            principal: principal.into(),
            role: "viewer".into(),
            method: method.into(),
            why: Why::Role,
            message: format!("`{principal}` has the viewer role; {method} needs the operator role"),
            peer: Some(IpAddr::from([127, 0, 0, 1])),
            via: None,
        }
    }

    #[test]
    fn a_flood_of_one_kind_is_a_handful_of_lines_and_its_whole_count() {
        let mut s = Sampler::default();
        let mut lines = Vec::new();
        for i in 0..5000 {
            lines.extend(s.admit(i, refusal("val", "SubmitPlan")));
        }
        let said: Vec<_> = lines.iter().map(|l| l.detail.as_str()).collect();
        assert_eq!(
            said,
            [
                "refused (role) from 127.0.0.1",
                "refused (role): the 10th like this within a minute",
                "refused (role): the 100th like this within a minute",
                "refused (role): the 1000th like this within a minute",
            ]
        );
        assert!(s.due(59_999).is_empty(), "the minute has not ended");
        let end = s.due(60_000);
        assert_eq!(end.len(), 1);
        assert_eq!(end[0].detail, "refused (role): 5000 times like this within a minute");
        assert_eq!(end[0].refusal.principal, "val");
        // A new minute starts again with a line at once.
        let again = s.admit(61_000, refusal("val", "SubmitPlan")).expect("a line");
        assert_eq!(again.detail, "refused (role) from 127.0.0.1");
    }

    #[test]
    fn a_count_a_line_already_said_is_not_said_again() {
        let mut s = Sampler::default();
        for i in 0..10 {
            s.admit(i, refusal("val", "PauseRollout"));
        }
        assert!(s.due(70_000).is_empty(), "the 10th line said it all");
        assert!(s.drain().is_empty());
    }

    #[test]
    fn kinds_are_principal_method_and_why() {
        let mut s = Sampler::default();
        assert!(s.admit(0, refusal("val", "SubmitPlan")).is_some());
        assert!(s.admit(1, refusal("val", "PauseRollout")).is_some());
        assert!(s.admit(2, refusal("eve", "SubmitPlan")).is_some());
        let mut limited = refusal("val", "SubmitPlan");
        limited.why = Why::RateLimit;
        assert!(s.admit(3, limited).is_some());
        assert!(s.admit(4, refusal("val", "SubmitPlan")).is_none());
    }

    #[test]
    fn past_the_kinds_followed_the_rest_is_one_count() {
        let mut s = Sampler::default();
        for i in 0..MAX_KINDS + 500 {
            s.admit(0, refusal(&format!("p{i}"), "SubmitPlan"));
        }
        let end = s.due(WINDOW_MS);
        let crowd: Vec<_> = end.iter().filter(|l| l.refusal.principal == "(many)").collect();
        assert_eq!(crowd.len(), 1);
        assert!(crowd[0].detail.starts_with("500 more refusals"), "{}", crowd[0].detail);
        assert!(s.due(2 * WINDOW_MS).is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_counts_what_it_could_not_take() {
        let (refusals, mut rx) = Refusals::channel();
        for _ in 0..QUEUE + 7 {
            refusals.report(refusal("val", "SubmitPlan"));
        }
        assert_eq!(rx.lost(), 7);
        assert_eq!(rx.lost(), 0, "counted once");
        assert!(rx.queue.recv().await.is_some());
    }

    #[test]
    fn ordinals() {
        assert_eq!(ordinal(1), "1st");
        assert_eq!(ordinal(10), "10th");
        assert_eq!(ordinal(11), "11th");
        assert_eq!(ordinal(22), "22nd");
        assert!(power_of_ten(1000) && !power_of_ten(20) && !power_of_ten(0));
    }
}
