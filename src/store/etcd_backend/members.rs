//! The etcd cluster's members as this client reaches them: one connection per member,
//! every call pinned to the current one, and the next one current once a call to it
//! failed the way a dead, paused or cut-off member fails (etcd's own client pins an
//! endpoint the same way). tonic's balanced channel is not used: its power-of-two
//! choice keeps picking a member that refuses connections, which answers fastest and
//! looks least loaded, so a controller cut from one member of three stalled.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::transport::{Channel, Endpoint};

use crate::proto::etcd::kv_client::KvClient;

/// Every member's connection, and which one calls go to.
pub struct Members {
    channels: Vec<Channel>,
    current: AtomicUsize,
}

/// The member a call went to: moved on from only if it is still the current one
/// (calls that failed together move on once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinned(usize);

impl Pinned {
    /// Its place in the address's list of members.
    pub fn index(self) -> usize {
        self.0
    }
}

impl Members {
    /// A connection to each of `endpoints`, made at its first call (inside a tokio
    /// runtime: the connections' tasks run there).
    pub(super) fn connect_lazy(endpoints: Vec<Endpoint>) -> Members {
        Members {
            channels: endpoints.into_iter().map(|e| e.connect_lazy()).collect(),
            current: AtomicUsize::new(0),
        }
    }

    /// The current member's connection, and which member it is.
    pub fn pinned(&self) -> (Pinned, Channel) {
        let i = self.current.load(Ordering::Acquire) % self.channels.len();
        (Pinned(i), self.channels[i].clone())
    }

    /// The current member's KV service.
    pub fn kv(&self) -> (Pinned, KvClient<Channel>) {
        let (pinned, channel) = self.pinned();
        (pinned, kv_client(channel))
    }

    /// A call to `pinned` failed with `status`: when it says the member could not
    /// answer (see [`super::transient`]), the next member becomes current.
    pub fn failed(&self, pinned: Pinned, status: &tonic::Status) {
        if super::transient(status) {
            self.move_on(pinned);
        }
    }

    /// The member after `pinned` becomes current, unless another call moved on first.
    pub fn move_on(&self, pinned: Pinned) {
        let next = (pinned.0 + 1) % self.channels.len();
        let _ = self
            .current
            .compare_exchange(pinned.0, next, Ordering::AcqRel, Ordering::Acquire);
        if self.channels.len() > 1 {
            tracing::debug!(
                from = pinned.0,
                to = next,
                "etcd: a member did not answer; calls go to the next"
            );
        }
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.channels.len()
    }

    /// Whether there are none (never, once connected).
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

/// The KV service over `channel`, with etcd's limits on message sizes.
pub fn kv_client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(16 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Members {
        let endpoints = (1..=3)
            .map(|i| Endpoint::from_shared(format!("http://127.0.0.1:{i}")).unwrap())
            .collect();
        Members::connect_lazy(endpoints)
    }

    #[tokio::test]
    async fn a_failed_member_hands_over_to_the_next_once() {
        let members = three();
        let (first, _) = members.pinned();
        assert_eq!(first, Pinned(0));
        let refused = tonic::Status::unavailable("tcp connect error: Connection refused");
        // Two calls to the same member failed together: one move.
        members.failed(first, &refused);
        members.failed(first, &refused);
        assert_eq!(members.pinned().0, Pinned(1));
        // A refusal that is etcd's answer (not a member that cannot answer) stays.
        members.failed(
            Pinned(1),
            &tonic::Status::invalid_argument("etcdserver: too many operations"),
        );
        assert_eq!(members.pinned().0, Pinned(1));
        members.move_on(Pinned(1));
        members.move_on(Pinned(2));
        assert_eq!(members.pinned().0, Pinned(0), "after the last, the first again");
    }
}
