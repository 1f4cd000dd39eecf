//! How the leader is elected among the controllers that share one etcd prefix: one
//! key, created with an etcd lease of `--leader-lease` that the leader keeps alive
//! ([`super::lease`]). The epoch is that key's create revision: it only grows. Once
//! leader, the store's backend fences every write with it (the transaction also
//! compares the key's create revision), so a deposed leader's writes fail; and when
//! the lease cannot be kept alive for its whole length (etcd lost, the process
//! paused), leadership is given up as lost. Agents refuse an Apply of a lower epoch:
//! the fence reaches the hosts.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lease;
use super::registry::{Presence, Registry};
use crate::proto::etcd as pb;
use crate::store::etcd_backend::{EtcdBackend, EtcdError, brief};

/// The leadership key, inside the store's prefix.
const LEADER: &[u8] = b"ld/leader";

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

/// Who leads now, as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The leader's `--advertise` URL.
    pub url: String,
    pub epoch: u64,
}

/// Who leads now, if anyone (blocking).
pub fn leader(backend: &EtcdBackend) -> Result<Option<Leader>, EtcdError> {
    let found = backend.range_of(leader_request(backend))?.kvs;
    Ok(leader_of(found))
}

/// The same, awaited.
async fn current_leader(backend: &EtcdBackend) -> Result<Option<Leader>, EtcdError> {
    let request = leader_request(backend);
    let found = backend
        .on_kv(move |mut kv| async move { Ok(kv.range(request).await?.into_inner().kvs) })
        .await?;
    Ok(leader_of(found))
}

fn leader_request(backend: &EtcdBackend) -> pb::RangeRequest {
    pb::RangeRequest {
        key: backend.full(LEADER),
        ..Default::default()
    }
}

/// Says this controller is here ([`Registry::announce`]) and waits until it is the
/// leader, calling `standing_by` with the leader each time another one is seen; then
/// keeps its lease of `ttl` alive and fences every write of the registry's backend
/// with the epoch. While etcd does not answer, it keeps asking.
pub async fn campaign(
    registry: &Registry,
    presence: &Presence<'_>,
    ttl: Duration,
    standing_by: impl Fn(&Leader),
) -> Result<Leadership, EtcdError> {
    let mut seen: Option<Leader> = None;
    let mut announced = false;
    loop {
        let round = async {
            if !announced {
                registry.announce(presence, ttl).await?;
                announced = true;
            }
            try_lead(registry.backend(), presence.url, ttl, &mut seen, &standing_by).await
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
/// controller leads (`standing_by` is called when that one changes) or won the race
/// for the key.
async fn try_lead(
    backend: &EtcdBackend,
    url: &str,
    ttl: Duration,
    seen: &mut Option<Leader>,
    standing_by: &impl Fn(&Leader),
) -> Result<Option<Leadership>, EtcdError> {
    if let Some(leader) = current_leader(backend).await? {
        if seen.as_ref() != Some(&leader) {
            standing_by(&leader);
            *seen = Some(leader);
        }
        return Ok(None);
    }
    let (id, asked) = lease::grant(backend, ttl).await?;
    match take_lead(backend, url, id).await? {
        Some(epoch) => {
            let leadership = Leadership {
                epoch,
                lease: id,
                lost: CancellationToken::new(),
            };
            backend.fence(LEADER, epoch, leadership.lost.clone());
            lease::keep_alive(backend, id, asked, ttl, leadership.lost.clone());
            Ok(Some(leadership))
        }
        None => {
            // Another controller was faster: give the lease back and watch.
            lease::revoke(backend, id).await;
            Ok(None)
        }
    }
}

/// Creates the leadership key if nobody holds it: the epoch (its create revision),
/// or None.
async fn take_lead(backend: &EtcdBackend, url: &str, lease: i64) -> Result<Option<u64>, EtcdError> {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let key = backend.full(LEADER);
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
    let answer = backend
        .on_kv(move |mut kv| async move { Ok(kv.txn(request).await?.into_inner()) })
        .await?;
    Ok(answer.succeeded.then(|| answer.header.map_or(0, |h| h.revision as u64)))
}

/// Gives the leadership up at once (a clean stop): the standbys need not wait for the
/// lease to expire.
pub async fn resign(backend: &EtcdBackend, leadership: &Leadership) {
    leadership.lost.cancel();
    lease::revoke(backend, leadership.lease).await;
}

/// The leader the leadership key names, if it is there.
fn leader_of(found: Vec<pb::KeyValue>) -> Option<Leader> {
    found.into_iter().next().map(|kv| Leader {
        url: String::from_utf8_lossy(&kv.value).into_owned(),
        epoch: kv.create_revision as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::store::etcd_backend::local;
    use crate::store::{Backend, Batch};

    /// A controller at `url`, for the election.
    fn at(url: &str) -> Presence<'_> {
        Presence {
            url,
            dashboard: "",
            since_unix_ms: 0,
        }
    }

    /// Two controllers on one prefix: one leads, the other stands by and sees who
    /// leads; when the leader's lease ends the other takes over with a higher epoch,
    /// and the old leader's writes are refused (its leadership marked lost), naming
    /// the one that leads now.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_leads_the_other_takes_over_and_the_old_one_is_fenced() {
        let Some(etcd) = local::LocalEtcd::start_for_test(1).await else {
            return;
        };
        let a = EtcdBackend::connect(&etcd.address("ha")).unwrap();
        let b = EtcdBackend::connect(&etcd.address("ha")).unwrap();
        let (ra, rb) = (Registry::new(a.clone()), Registry::new(b.clone()));
        let ttl = std::time::Duration::from_secs(2);
        let first = campaign(&ra, &at("http://a"), ttl, |_| {}).await.unwrap();
        assert_eq!(
            leader(&a).unwrap().map(|l| (l.url, l.epoch)),
            Some(("http://a".into(), first.epoch))
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let standby = tokio::spawn({
            let (rb, seen) = (rb.clone(), seen.clone());
            async move { campaign(&rb, &at("http://b"), ttl, |l| seen.lock().unwrap().push(l.url.clone())).await }
        });
        let mut batch = Batch::default();
        batch.put("k", "by a");
        assert!(a.commit(batch).unwrap(), "the leader writes");
        // Still leading after more than a lease: the lease is kept alive.
        tokio::time::sleep(ttl * 2).await;
        assert!(!first.lost.is_cancelled() && !standby.is_finished());
        assert_eq!(seen.lock().unwrap().as_slice(), ["http://a"]);
        resign(&a, &first).await;
        let second = tokio::time::timeout(std::time::Duration::from_secs(10), standby)
            .await
            .expect("the standby takes over")
            .unwrap()
            .unwrap();
        assert!(second.epoch > first.epoch, "{} > {}", second.epoch, first.epoch);
        let mut late = Batch::default();
        late.put("k", "by a, too late");
        let refused = a.commit(late).unwrap_err().to_string();
        assert!(refused.contains("no longer the leader"), "{refused}");
        assert!(
            refused.contains("http://b leads now"),
            "the refusal names who leads: {refused}"
        );
        let mut batch = Batch::default();
        batch.put("k", "by b");
        assert!(b.commit(batch).unwrap());
        assert_eq!(b.get(b"k").unwrap(), Some(b"by b".to_vec()));
        assert!(!second.lost.is_cancelled());
        etcd.stop();
    }
}
