//! Where the controller's store is, and for a store in etcd, who leads: the
//! controller campaigns for the leadership before it opens the store, answering calls
//! meanwhile as a standby (forwarding calls to the leader), and runs the engine only
//! once it leads, every write fenced by its epoch.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::controller::Controllers;
use super::standby::Standby;
use super::{Options, Security, metrics};
use crate::auth::AuthLayer;
use crate::proto::v1 as pb;
use crate::standard::incoming;
use crate::store::Store;
use crate::store::etcd_backend::{EtcdAddress, EtcdBackend, Leadership, Presence};
use crate::{Error, Result};

/// Where the controller's store is.
pub enum StoreAt {
    /// A sled data dir: one controller.
    Dir(std::path::PathBuf),
    /// A prefix of an etcd cluster, shared by the site's controllers: one leads.
    Etcd(Box<Etcd>),
}

/// A store in etcd, and how this controller takes part in the election.
pub struct Etcd {
    pub address: EtcdAddress,
    /// TLS to etcd (its CA; this controller's identity for mutual TLS).
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    /// How clients and the other controllers reach this one.
    pub advertise: String,
    /// How the other controllers reach this one's dashboard (empty: none served).
    pub dashboard: String,
    /// The leadership's etcd lease.
    pub lease: Duration,
}

impl std::fmt::Display for StoreAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreAt::Dir(dir) => write!(f, "{}", dir.display()),
            StoreAt::Etcd(e) => write!(
                f,
                "etcd://{}{}",
                e.address.endpoints.join(","),
                String::from_utf8_lossy(&e.address.prefix).trim_end_matches('/')
            ),
        }
    }
}

/// This controller's leadership, and the backend it fences.
pub struct Leading {
    pub backend: EtcdBackend,
    pub leadership: Leadership,
}

/// Connects to etcd once, at start (an address or TLS mistake stops the controller
/// at once, saying so); None with a data dir. The connection serves every leadership
/// of this controller: it reconnects by itself.
pub async fn connect(options: &Options) -> Result<Option<EtcdBackend>> {
    let StoreAt::Etcd(etcd) = &options.store else {
        return Ok(None);
    };
    let (address, tls) = (etcd.address.clone(), etcd.tls.clone());
    let backend = tokio::task::spawn_blocking(move || EtcdBackend::connect_with(&address, tls))
        .await
        .map_err(|e| Error::Usage(format!("connecting to etcd: {e}")))?
        .map_err(crate::store::Error::Backend)?;
    Ok(Some(backend))
}

/// Opens the store: at once for a data dir; for etcd (`backend`), once this
/// controller leads (None: it was asked to stop while standing by).
pub async fn open_store(
    listener: &TcpListener,
    options: &Options,
    backend: Option<&EtcdBackend>,
    shutdown: &CancellationToken,
) -> Result<Option<(Store, Option<Leading>)>> {
    let (etcd, backend) = match (&options.store, backend) {
        (StoreAt::Etcd(etcd), Some(backend)) => (etcd, backend.clone()),
        (StoreAt::Dir(dir), _) => return Ok(Some((Store::open(dir)?, None))),
        (StoreAt::Etcd(_), None) => return Err(Error::Usage("etcd is not connected".into())),
    };
    let switch = Standby::standing_by(
        "this controller is starting: it is looking for the leader",
        options.security.peers.clone(),
    );
    let standby_done = CancellationToken::new();
    let mut standing = vec![tokio::spawn(serve_standby(
        super::share(listener)?,
        super::api_server(&options.security)?,
        switch.clone(),
        options.security.clone(),
        standby_done.clone(),
    ))];
    // Its metrics, and the leader's dashboard shown through it.
    let peers = peers(backend.clone());
    let metrics = metrics::Metrics::standby(peers.clone());
    if let Some(http) = &options.http {
        let app = crate::dashboard::proxy::router(leader_dashboard(peers.clone()), etcd.advertise.clone())?
            .merge(metrics::router(metrics.clone()));
        let served = super::serve_http(super::share(http)?, app, standby_done.clone(), "dashboard (standby)");
        standing.push(tokio::spawn(served));
    }
    if let Some(listener) = &options.metrics {
        let served = super::serve_http(
            super::share(listener)?,
            metrics::router(metrics.clone()),
            standby_done.clone(),
            "metrics (standby)",
        );
        standing.push(tokio::spawn(served));
    }
    let presence = Presence {
        url: &etcd.advertise,
        dashboard: &etcd.dashboard,
        since_unix_ms: options.clock.now_ms(),
    };
    let campaign = backend.campaign(&presence, etcd.lease, |leader| {
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
        since_unix_ms: options.clock.now_ms(),
        ..presence
    };
    backend
        .announce(&presence, etcd.lease)
        .await
        .map_err(|e| crate::store::Error::Backend(e.into()))?;
    let store = Store::with_backend(Arc::new(backend.clone()))?.written_by(&etcd.advertise);
    Ok(Some((store, Some(Leading { backend, leadership }))))
}

/// The API of a standby: every Controller call answered Unavailable (naming the
/// leader), health saying the Controller is not served here, until `done`.
async fn serve_standby(
    listener: TcpListener,
    server: tonic::transport::Server,
    switch: Standby,
    security: Security,
    done: CancellationToken,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_not_serving::<Standby>().await;
    let served = server
        .layer(AuthLayer::new(security.credentials.clone(), security.rate))
        .add_service(health)
        .add_service(switch)
        .serve_with_incoming_shutdown(incoming(listener), done.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "the standby's API stopped");
    }
}

/// Who the controllers are, for ListControllers: from etcd (the leader first), or
/// this one alone with a data dir.
pub fn controllers(leading: Option<&Leading>, listener: &TcpListener, options: &Options) -> Controllers {
    if let Some(l) = leading {
        return peers(l.backend.clone());
    }
    let scheme = if options.security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let me = pb::ControllerInfo {
        advertise: listener
            .local_addr()
            .map(|a| format!("{scheme}://{a}"))
            .unwrap_or_default(),
        role: "leader".into(),
        epoch: 0,
        since_unix_ms: options.clock.now_ms(),
        dashboard: String::new(),
    };
    Arc::new(move || Ok(vec![me.clone()]))
}

/// The controllers sharing the etcd prefix, read when asked (blocking).
fn peers(backend: EtcdBackend) -> Controllers {
    Arc::new(move || {
        let all = backend
            .controllers()
            .map_err(|e| crate::store::Error::Backend(e.into()))?;
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

/// The leader's dashboard, for a standby's to show: (its URL, the leader's
/// advertised URL), or why there is none.
fn leader_dashboard(peers: Controllers) -> crate::dashboard::proxy::Leader {
    Arc::new(move || {
        let all = peers().map_err(|e| format!("the controllers cannot be read: {e}"))?;
        let leader = all
            .into_iter()
            .find(|c| c.role == "leader")
            .ok_or_else(|| "no controller leads right now".to_string())?;
        if leader.dashboard.is_empty() {
            return Err(format!(
                "the leader at {} serves no dashboard (--http-listen)",
                leader.advertise
            ));
        }
        Ok((leader.dashboard, leader.advertise))
    })
}
