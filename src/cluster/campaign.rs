//! The campaign: before a controller on etcd opens the store it serves as a
//! standby (its API forwarding to the leader, its metrics, the leader's dashboard)
//! and campaigns; once it leads, it says so in the registry and opens the store,
//! every write fenced by its epoch. A leader that loses the leadership comes back
//! here. With a data dir the store is opened at once.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Controllers, Forwarder, Leading, Presence, Registry, StoreAt, election};
use crate::clock::Clock;
use crate::store::Store;
use crate::{Error, Result};

/// Opens the store: at once for a data dir; for etcd (`registry`), once this
/// controller leads (None: it was asked to stop while standing by). Meanwhile
/// `serve` serves the standby's endpoints, given its forwarding Controller service
/// (reaching an https:// leader with `peers_tls`), the controllers and this one's
/// advertised URL, until the token it is given fires.
pub async fn open_store(
    store: &StoreAt,
    registry: Option<&Registry>,
    peers_tls: Option<tonic::transport::ClientTlsConfig>,
    clock: &dyn Clock,
    serve: impl FnOnce(Forwarder, Controllers, &str, CancellationToken) -> Result<Vec<JoinHandle<()>>>,
    shutdown: &CancellationToken,
) -> Result<Option<(Store, Option<Leading>)>> {
    let (etcd, registry) = match (store, registry) {
        (StoreAt::Etcd(etcd), Some(registry)) => (etcd, registry.clone()),
        (StoreAt::Dir(dir), _) => return Ok(Some((Store::open(dir)?, None))),
        (StoreAt::Etcd(_), None) => return Err(Error::Internal("etcd is not connected".into())),
    };
    let switch = Forwarder::standing_by("this controller is starting: it is looking for the leader", peers_tls);
    let standby_done = CancellationToken::new();
    let standing = serve(
        switch.clone(),
        registry.controllers(),
        &etcd.advertise,
        standby_done.clone(),
    )?;
    let presence = Presence {
        url: &etcd.advertise,
        dashboard: &etcd.dashboard,
        since_unix_ms: clock.now_ms(),
    };
    let campaign = election::campaign(&registry, &presence, etcd.lease, |leader| {
        info!(leader = %leader.url, epoch = leader.epoch, "standing by: another controller leads");
        switch.say(format!(
            "this controller is a standby; the leader is {} (epoch {})",
            leader.url, leader.epoch
        ));
        switch.follow(&leader.url);
    });
    let won = tokio::select! {
        won = campaign => Some(won),
        _ = shutdown.cancelled() => None,
    };
    standby_done.cancel();
    for served in standing {
        let _ = served.await;
    }
    let Some(won) = won else {
        return Ok(None);
    };
    let leadership = won.map_err(|e| crate::store::Error::Backend(e.into()))?;
    info!(epoch = leadership.epoch, advertise = %etcd.advertise, "leading");
    let presence = Presence {
        since_unix_ms: clock.now_ms(),
        ..presence
    };
    registry
        .announce(&presence, etcd.lease)
        .await
        .map_err(|e| crate::store::Error::Backend(e.into()))?;
    let backend = registry.backend().clone();
    let store = Store::with_backend(Arc::new(backend))?.written_by(&etcd.advertise);
    Ok(Some((store, Some(Leading { registry, leadership }))))
}
