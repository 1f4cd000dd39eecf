//! Leadership among the controllers that share one etcd prefix: one key, created
//! with an etcd lease of `--leader-lease` that the leader keeps alive. The epoch is
//! that key's create revision: it only grows. Once leader, the backend fences every
//! write with it (the transaction also compares the key's create revision), so a
//! deposed leader's writes fail; and when the lease cannot be kept alive for its
//! whole length (etcd lost, the process paused), leadership is given up as lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{EtcdBackend, EtcdError, brief, pb};
use pb::lease_client::LeaseClient;

/// The leadership key, inside the store's prefix.
pub(super) const LEADER: &[u8] = b"ld/leader";
/// `ct` ++ a controller's advertised URL -> `ControllerEntry`, under its own lease.
const CONTROLLERS: &[u8] = b"ct/";

/// Renewals of a lease per its length: an election of etcd's own (a member lost)
/// leaves the lease unconfirmed for a second or two, which must not cost the
/// leadership of a 3 s lease.
const RENEWALS: u32 = 6;

/// How often a standby looks whether the leader's key is gone.
const WATCH_EVERY: Duration = Duration::from_millis(200);

/// This controller leads, with `epoch`, until `lost` fires.
#[derive(Clone)]
pub struct Leadership {
    pub epoch: u64,
    lease: i64,
    /// Fired when the lease was not kept alive, or a write found the key changed.
    pub lost: CancellationToken,
}

/// How a controller says it is here (`ct/<url>`).
#[derive(Debug, Clone, Copy)]
pub struct Presence<'a> {
    /// Its `--advertise` URL.
    pub url: &'a str,
    /// Its dashboard's URL (empty: none).
    pub dashboard: &'a str,
    /// Since when it stands by, or leads.
    pub since_unix_ms: i64,
}

/// Who leads now, as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's `--advertise` URL.
    pub url: String,
    pub epoch: u64,
}

impl EtcdBackend {
    fn lease_client(&self) -> LeaseClient<tonic::transport::Channel> {
        LeaseClient::new(self.inner.channel.clone())
    }

    /// Who leads now, if anyone (blocking).
    pub fn leader(&self) -> std::result::Result<Option<Leader>, EtcdError> {
        let request = self.leader_request();
        let found = self.range_of(request)?.kvs;
        Ok(leader_of(found))
    }

    /// The same, awaited.
    async fn current_leader(&self) -> std::result::Result<Option<Leader>, EtcdError> {
        let (mut kv, request) = (self.inner.kv.clone(), self.leader_request());
        let found = self
            .on_runtime(async move { Ok(kv.range(request).await?.into_inner().kvs) })
            .await?;
        Ok(leader_of(found))
    }

    fn leader_request(&self) -> pb::RangeRequest {
        pb::RangeRequest {
            key: self.full(LEADER),
            ..Default::default()
        }
    }

    /// Says this controller is here ([`EtcdBackend::announce`]) and waits until it is
    /// the leader, calling `standing_by` with the leader each time another one is
    /// seen; then keeps its lease of `ttl` alive and fences every write of this
    /// backend with the epoch. While etcd does not answer, it keeps asking.
    pub async fn campaign(
        &self,
        presence: &Presence<'_>,
        ttl: Duration,
        standing_by: impl Fn(&Leader),
    ) -> std::result::Result<Leadership, EtcdError> {
        let mut seen: Option<Leader> = None;
        let mut announced = false;
        loop {
            let round = async {
                if !announced {
                    self.announce(presence, ttl).await?;
                    announced = true;
                }
                self.try_lead(presence.url, ttl, &mut seen, &standing_by).await
            };
            match round.await {
                Ok(Some(leadership)) => return Ok(leadership),
                Ok(None) => tokio::time::sleep(WATCH_EVERY).await,
                // etcd briefly unreachable (a member restarting, an election of its
                // own): a standby keeps standing by and asks again.
                Err(EtcdError::Call(status)) => {
                    tracing::warn!(error = %brief(&status), "standing by: etcd did not answer; asking again");
                    tokio::time::sleep(WATCH_EVERY).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One round of the campaign: this controller's leadership, or None while another
    /// controller leads (`standing_by` is called when that one changes) or won the
    /// race for the key.
    async fn try_lead(
        &self,
        url: &str,
        ttl: Duration,
        seen: &mut Option<Leader>,
        standing_by: &impl Fn(&Leader),
    ) -> std::result::Result<Option<Leadership>, EtcdError> {
        let ttl_s = ttl.as_secs().max(1) as i64;
        if let Some(leader) = self.current_leader().await? {
            if seen.as_ref() != Some(&leader) {
                standing_by(&leader);
                *seen = Some(leader);
            }
            return Ok(None);
        }
        let mut lease = self.lease_client();
        let grant = pb::LeaseGrantRequest { ttl: ttl_s, id: 0 };
        let asked = Instant::now();
        let granted = self
            .on_runtime(async move { lease.lease_grant(grant).await.map(|r| r.into_inner()) })
            .await?;
        let id = granted.id;
        match self.take_lead(url, id).await? {
            Some(epoch) => {
                let leadership = Leadership {
                    epoch,
                    lease: id,
                    lost: CancellationToken::new(),
                };
                self.set_fence(epoch, leadership.lost.clone());
                self.keep_alive(id, asked, ttl, leadership.lost.clone());
                Ok(Some(leadership))
            }
            None => {
                // Another controller was faster: give the lease back and watch.
                let mut lease = self.lease_client();
                let revoke = pb::LeaseRevokeRequest { id };
                let _ = self.on_runtime(async move { lease.lease_revoke(revoke).await }).await;
                Ok(None)
            }
        }
    }

    /// Creates the leadership key if nobody holds it: the epoch (its create
    /// revision), or None.
    async fn take_lead(&self, url: &str, lease: i64) -> std::result::Result<Option<u64>, EtcdError> {
        use pb::compare::{CompareResult, CompareTarget, TargetUnion};
        let key = self.full(LEADER);
        let request = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Create as i32,
                key: key.clone(),
                target_union: Some(TargetUnion::CreateRevision(0)),
                range_end: Vec::new(),
            }],
            success: vec![pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                    key,
                    value: url.as_bytes().to_vec(),
                    lease,
                    ..Default::default()
                })),
            }],
            failure: Vec::new(),
        };
        let mut kv = self.inner.kv.clone();
        let answer = self
            .on_runtime(async move { Ok(kv.txn(request).await?.into_inner()) })
            .await?;
        Ok(answer.succeeded.then(|| answer.header.map_or(0, |h| h.revision as u64)))
    }

    /// Runs `future` on the client's runtime and awaits it from any runtime.
    async fn on_runtime<T: Send + 'static>(
        &self,
        future: impl std::future::Future<Output = std::result::Result<T, tonic::Status>> + Send + 'static,
    ) -> std::result::Result<T, EtcdError> {
        let runtime = self.inner.runtime.as_ref().ok_or(EtcdError::Gone)?;
        runtime
            .spawn(future)
            .await
            .map_err(|_| EtcdError::Gone)?
            .map_err(EtcdError::from)
    }

    /// Keeps lease `id` alive (a renewal every sixth of `ttl`) until it cannot be:
    /// then `lost` fires, exactly one `ttl` after the last renewal etcd confirmed was
    /// sent (etcd renewed it later, so the lease lasts at least that long), so that
    /// this controller stops before another can take over.
    fn keep_alive(&self, id: i64, granted: Instant, ttl: Duration, lost: CancellationToken) {
        let Some(runtime) = self.inner.runtime.as_ref() else {
            lost.cancel();
            return;
        };
        let client = self.lease_client();
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
                _ = renew(client, id, ttl / RENEWALS, renewed) => {}
                _ = expiry => {}
                _ = lost.cancelled() => {}
            }
            lost.cancel();
        });
    }

    /// Says this controller (at `url`) is here, from `since_unix_ms`, for as long as
    /// it runs: an entry under a lease of its own, kept alive (gone within `ttl` of its
    /// end), with its dashboard's URL (may be empty). Written again when it takes the
    /// lead.
    pub async fn announce(&self, presence: &Presence<'_>, ttl: Duration) -> std::result::Result<(), EtcdError> {
        // A lease that could not be kept alive (this process paused, etcd lost) is
        // gone: a new one is granted.
        let known = self
            .inner
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|(_, lost)| !lost.is_cancelled());
        let lease = match known {
            Some((id, _)) => id,
            None => {
                let mut lease = self.lease_client();
                let grant = pb::LeaseGrantRequest {
                    ttl: ttl.as_secs().max(1) as i64,
                    id: 0,
                };
                let asked = Instant::now();
                let granted = self
                    .on_runtime(async move { lease.lease_grant(grant).await.map(|r| r.into_inner()) })
                    .await?;
                let lost = CancellationToken::new();
                self.keep_alive(granted.id, asked, ttl, lost.clone());
                *self.inner.presence.lock().unwrap_or_else(|p| p.into_inner()) = Some((granted.id, lost));
                granted.id
            }
        };
        let entry = crate::proto::v1::ControllerEntry {
            advertise: presence.url.to_string(),
            since_unix_ms: presence.since_unix_ms,
            dashboard: presence.dashboard.to_string(),
        };
        let mut key = self.full(CONTROLLERS);
        key.extend_from_slice(presence.url.as_bytes());
        let put = pb::PutRequest {
            key,
            value: prost::Message::encode_to_vec(&entry),
            lease,
            ..Default::default()
        };
        let mut kv = self.inner.kv.clone();
        self.on_runtime(async move { kv.put(put).await.map(|_| ()) }).await
    }

    /// Every controller on this prefix, the leader first: (entry, its epoch when it
    /// leads).
    pub fn controllers(&self) -> std::result::Result<Vec<(crate::proto::v1::ControllerEntry, Option<u64>)>, EtcdError> {
        let leader = self.leader()?;
        let prefix = self.full(CONTROLLERS);
        let request = pb::RangeRequest {
            range_end: super::super::backend::prefix_end(&prefix).unwrap_or_default(),
            key: prefix,
            ..Default::default()
        };
        let found = self.range_of(request)?.kvs;
        let mut all: Vec<_> = found
            .into_iter()
            .filter_map(|kv| prost::Message::decode(kv.value.as_slice()).ok())
            .map(|entry: crate::proto::v1::ControllerEntry| {
                let epoch = leader.as_ref().filter(|l| l.url == entry.advertise).map(|l| l.epoch);
                (entry, epoch)
            })
            .collect();
        all.sort_by_key(|(e, epoch)| (epoch.is_none(), e.advertise.clone()));
        Ok(all)
    }

    /// Gives the leadership up at once (a clean stop): the standbys need not wait for
    /// the lease to expire.
    pub async fn resign(&self, leadership: &Leadership) {
        leadership.lost.cancel();
        let mut lease = self.lease_client();
        let revoke = pb::LeaseRevokeRequest { id: leadership.lease };
        let _ = self.on_runtime(async move { lease.lease_revoke(revoke).await }).await;
    }

    fn set_fence(&self, epoch: u64, lost: CancellationToken) {
        *self.inner.fence.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Fence { epoch, lost }));
    }
}

/// Renews lease `id` every `every`, telling `renewed` when each renewal etcd
/// confirmed was sent; returns when etcd says the lease is gone (expired, revoked).
/// A stream that breaks or stalls is opened again.
async fn renew(
    client: LeaseClient<tonic::transport::Channel>,
    id: i64,
    every: Duration,
    renewed: tokio::sync::watch::Sender<Instant>,
) {
    loop {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut client = client.clone();
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        // The first renewal goes with the call: etcd answers the stream's headers with
        // its first answer.
        let mut sent = Instant::now();
        let _ = tx.send(pb::LeaseKeepAliveRequest { id }).await;
        let Ok(Ok(answers)) = tokio::time::timeout(every, client.lease_keep_alive(stream)).await else {
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
                _ => break,
            }
            tokio::time::sleep(every).await;
            sent = Instant::now();
            if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                break;
            }
        }
    }
}

/// The leader the leadership key names, if it is there.
fn leader_of(found: Vec<pb::KeyValue>) -> Option<Leader> {
    found.into_iter().next().map(|kv| Leader {
        url: String::from_utf8_lossy(&kv.value).into_owned(),
        epoch: kv.create_revision as u64,
    })
}

/// The leader's epoch that every write is conditioned on.
pub(super) struct Fence {
    pub epoch: u64,
    pub lost: CancellationToken,
}
