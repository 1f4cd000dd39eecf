//! Where the answer of a started operation goes: to one caller awaiting it, or into
//! a channel shared by every operation of one dispatcher, with a token that tells
//! them apart. An operation in flight is then a record holding its
//! [`Reply`], not a task awaiting an answer.
//!
//! A reply whose receiver is gone (the dispatcher gave up on a stuck wave, the
//! caller was dropped) is closed: nobody awaits the operation any more, and the
//! driver stops tracking it.

use tokio::sync::mpsc;

use super::CallError;
use crate::proto::v1 as pb;

/// What an Apply comes to: the agent's answer, or why there is none.
pub type Answer = Result<pb::ApplyResponse, CallError>;

/// The channel a dispatcher receives its operations' answers on, by token.
pub type Answers = mpsc::UnboundedReceiver<(u64, Answer)>;

/// Where one operation's answer goes.
#[derive(Debug)]
pub struct Reply {
    tx: mpsc::UnboundedSender<(u64, Answer)>,
    token: u64,
}

impl Reply {
    /// A reply for one caller, and what it awaits ([`Reply::answer`]).
    pub fn once() -> (Reply, Answers) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Reply { tx, token: 0 }, rx)
    }

    /// The answer a caller of [`Reply::once`] awaits (None: nobody answers any more).
    pub async fn answer(answers: &mut Answers) -> Option<Answer> {
        answers.recv().await.map(|(_, answer)| answer)
    }

    /// A channel for many operations' replies (see [`Reply::to`]).
    pub fn channel() -> (mpsc::UnboundedSender<(u64, Answer)>, Answers) {
        mpsc::unbounded_channel()
    }

    /// The reply of operation `token` into the shared channel `tx`.
    pub fn to(tx: &mpsc::UnboundedSender<(u64, Answer)>, token: u64) -> Reply {
        Reply { tx: tx.clone(), token }
    }

    /// Hands the answer over (dropped if nobody awaits it any more).
    pub fn send(self, answer: Answer) {
        let _ = self.tx.send((self.token, answer));
    }

    /// Nobody awaits this answer any more.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when nobody awaits this answer any more (a watch that outlives the
    /// reply, for whoever handed it over).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let tx = self.tx.clone();
        async move { tx.closed().await }
    }

    /// Calls `call`, unless (or until) nobody awaits its answer: an abandoned held
    /// call is dropped, giving back its place among the calls in flight.
    pub async fn answer_with(self, call: impl std::future::Future<Output = Answer>) {
        tokio::select! {
            answer = call => self.send(answer),
            _ = self.closed() => {}
        }
    }
}
