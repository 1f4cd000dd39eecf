//! The controllers' registry: every controller on an etcd prefix says it is here
//! (its advertised URL, its dashboard, since when) under an etcd lease of its own,
//! kept alive for as long as it runs, so the list is right within a lease of a
//! controller's loss. [`Controllers`] is how the API (ListControllers), the metrics
//! and the dashboard read it; with a data dir, it is this controller alone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::election;
use super::lease;
use crate::proto::etcd as etcd_pb;
use crate::proto::v1 as pb;
use crate::store::etcd_backend::{EtcdBackend, EtcdError};

/// `ct` ++ a controller's advertised URL -> `ControllerEntry`, under its own lease.
const CONTROLLERS: &[u8] = b"ct/";

/// Who the controllers sharing the store are (ListControllers, metrics, the
/// dashboard), read when asked; blocking (etcd may be asked).
pub type Controllers = Arc<dyn Fn() -> crate::Result<Vec<pb::ControllerInfo>> + Send + Sync>;

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

/// The registry on one etcd prefix, as this controller takes part in it. Cheap to
/// clone; one per process (it holds this controller's own lease).
#[derive(Clone)]
pub struct Registry {
    backend: EtcdBackend,
    /// The lease of this controller's entry, and what fires when it could not be
    /// kept alive.
    presence: Arc<Mutex<Option<(i64, CancellationToken)>>>,
}

impl Registry {
    pub fn new(backend: EtcdBackend) -> Registry {
        Registry {
            backend,
            presence: Arc::default(),
        }
    }

    /// The store's backend this registry (and the election) speaks to etcd through.
    pub fn backend(&self) -> &EtcdBackend {
        &self.backend
    }

    /// Says this controller (at `url`) is here, from `since_unix_ms`, for as long as
    /// it runs: an entry under a lease of its own, kept alive (gone within `ttl` of its
    /// end), with its dashboard's URL (may be empty). Written again when it takes the
    /// lead.
    pub async fn announce(&self, presence: &Presence<'_>, ttl: Duration) -> Result<(), EtcdError> {
        // A lease that could not be kept alive (this process paused, etcd lost) is
        // gone: a new one is granted.
        let known = self
            .presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|(_, lost)| !lost.is_cancelled());
        let lease = match known {
            Some((id, _)) => id,
            None => {
                let (id, asked) = lease::grant(&self.backend, ttl).await?;
                let lost = CancellationToken::new();
                lease::keep_alive(&self.backend, id, asked, ttl, lost.clone());
                *self.presence.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, lost));
                id
            }
        };
        let entry = pb::ControllerEntry {
            advertise: presence.url.to_string(),
            since_unix_ms: presence.since_unix_ms,
            dashboard: presence.dashboard.to_string(),
        };
        let mut key = self.backend.full(CONTROLLERS);
        key.extend_from_slice(presence.url.as_bytes());
        let put = etcd_pb::PutRequest {
            key,
            value: prost::Message::encode_to_vec(&entry),
            lease,
            ..Default::default()
        };
        self.backend
            .on_kv(move |mut kv| async move { kv.put(put).await.map(|_| ()) })
            .await
    }

    /// Every controller on this prefix, the leader first: (entry, its epoch when it
    /// leads). Blocking.
    pub fn list(&self) -> Result<Vec<(pb::ControllerEntry, Option<u64>)>, EtcdError> {
        let leader = election::leader(&self.backend)?;
        let prefix = self.backend.full(CONTROLLERS);
        let request = etcd_pb::RangeRequest {
            range_end: crate::store::prefix_end(&prefix).unwrap_or_default(),
            key: prefix,
            ..Default::default()
        };
        let found = self.backend.range_of(request)?.kvs;
        let mut all: Vec<_> = found
            .into_iter()
            .filter_map(|kv| prost::Message::decode(kv.value.as_slice()).ok())
            .map(|entry: pb::ControllerEntry| {
                let epoch = leader.as_ref().filter(|l| l.url == entry.advertise).map(|l| l.epoch);
                (entry, epoch)
            })
            .collect();
        all.sort_by_key(|(e, epoch)| (epoch.is_none(), e.advertise.clone()));
        Ok(all)
    }

    /// The controllers on this prefix, read when asked, as the API shows them.
    pub fn controllers(&self) -> Controllers {
        let registry = self.clone();
        Arc::new(move || {
            let all = registry.list().map_err(|e| crate::store::Error::Backend(e.into()))?;
            Ok(all
                .into_iter()
                .map(|(entry, epoch)| pb::ControllerInfo {
                    advertise: entry.advertise,
                    role: if epoch.is_some() { "leader" } else { "standby" }.into(),
                    epoch: epoch.unwrap_or(0),
                    since_unix_ms: entry.since_unix_ms,
                    dashboard: entry.dashboard,
                })
                .collect())
        })
    }
}

/// A controller with a data dir: it alone, the leader of epoch 0, with its
/// dashboard's URL when it serves one.
pub fn alone(advertise: String, since_unix_ms: i64, dashboard: Option<&str>) -> Controllers {
    let me = pb::ControllerInfo {
        advertise,
        role: "leader".into(),
        epoch: 0,
        since_unix_ms,
        dashboard: dashboard.unwrap_or_default().to_string(),
    };
    Arc::new(move || Ok(vec![me.clone()]))
}
