//! etcd leases, as the election and the registry hold them: granted with a TTL, kept
//! alive by a renewal every sixth of it, revoked on a clean stop, and given up as
//! lost exactly one TTL after the last renewal etcd confirmed was sent (etcd renewed
//! it later, so the lease lasts at least that long): whoever held it stops before
//! another controller can take over.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::proto::etcd as pb;
use crate::store::etcd_backend::members::Members;
use crate::store::etcd_backend::{EtcdBackend, EtcdError};
use pb::lease_client::LeaseClient;

/// Renewals of a lease per its length: an election of etcd's own (a member lost)
/// leaves the lease unconfirmed for a second or two, which must not cost the
/// leadership of a 3 s lease.
const RENEWALS: u32 = 6;

/// A new lease of `ttl` (whole seconds, at least one): its id, and when it was asked
/// for (the start of its first TTL).
pub async fn grant(backend: &EtcdBackend, ttl: Duration) -> Result<(i64, Instant), EtcdError> {
    let grant = pb::LeaseGrantRequest {
        ttl: ttl.as_secs().max(1) as i64,
        id: 0,
    };
    let asked = Instant::now();
    let granted = backend
        .on_channel(move |channel| async move {
            let mut lease = LeaseClient::new(channel);
            lease.lease_grant(grant).await.map(|r| r.into_inner())
        })
        .await?;
    Ok((granted.id, asked))
}

/// Gives lease `id` back (its keys go at once); an error is ignored: the lease then
/// expires by itself.
pub async fn revoke(backend: &EtcdBackend, id: i64) {
    let revoke = pb::LeaseRevokeRequest { id };
    let _ = backend
        .on_channel(move |channel| async move { LeaseClient::new(channel).lease_revoke(revoke).await })
        .await;
}

/// Keeps lease `id` alive (a renewal every sixth of `ttl`) until it cannot be:
/// then `lost` fires, exactly one `ttl` after the last renewal etcd confirmed was
/// sent, so that this controller stops before another can take over.
pub fn keep_alive(backend: &EtcdBackend, id: i64, granted: Instant, ttl: Duration, lost: CancellationToken) {
    let Some(runtime) = backend.runtime() else {
        lost.cancel();
        return;
    };
    let members = backend.members();
    runtime.spawn(async move {
        let (renewed, mut last) = tokio::sync::watch::channel(granted);
        let expiry = async move {
            loop {
                let deadline = *last.borrow_and_update() + ttl;
                tokio::select! {
                    _ = tokio::time::sleep_until(deadline.into()) => return,
                    changed = last.changed() => if changed.is_err() {
                        tokio::time::sleep_until(deadline.into()).await;
                        return;
                    }
                }
            }
        };
        tokio::select! {
            _ = renew(&members, id, ttl / RENEWALS, renewed) => {}
            _ = expiry => {}
            _ = lost.cancelled() => {}
        }
        lost.cancel();
    });
}

/// Renews lease `id` every `every`, telling `renewed` when each renewal etcd
/// confirmed was sent; returns when etcd says the lease is gone (expired, revoked).
/// A stream that breaks or stalls is opened again, on the next member.
async fn renew(members: &Members, id: i64, every: Duration, renewed: tokio::sync::watch::Sender<Instant>) {
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let (pinned, channel) = members.pinned();
        let mut client = LeaseClient::new(channel);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        // The first renewal goes with the call: etcd answers the stream's headers with
        // its first answer.
        let mut sent = Instant::now();
        let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
        let Ok(Ok(answers)) = tokio::time::timeout(every, client.lease_keep_alive(stream)).await else {
            members.move_on(pinned);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut answers = answers.into_inner();
        loop {
            match tokio::time::timeout(every, answers.message()).await {
                Ok(Ok(Some(a))) if a.ttl > 0 => {
                    renewed.send_replace(sent);
                }
                // The lease is gone: expired, or revoked.
                Ok(Ok(Some(_))) => return,
                _ => {
                    members.move_on(pinned);
                    break;
                }
            }
            tokio::time::sleep(every).await;
            sent = Instant::now();
            if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                break;
            }
        }
    }
}
