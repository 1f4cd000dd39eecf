//! High availability: several controllers on one etcd prefix, one leading, the
//! others standing by. What happens on failover, file by file:
//!
//! - [`election`]: how the leader is elected (one key under a lease; its create
//!   revision is the epoch that fences every write, and every Apply on the hosts);
//! - [`lease`]: how the leases are kept alive, and lost within one lease when they
//!   cannot be;
//! - [`campaign`]: the standby phase: a controller serves as a standby and campaigns
//!   until it leads, then opens the store, fenced by its epoch; a leader that loses
//!   the leadership stops dispatching at once and comes back here;
//! - [`forward`]: the forwarding service a standby's API is ([`Forwarder`]): every
//!   Controller call goes to the leader;
//! - [`registry`]: who the controllers are ([`Controllers`]), each announced under
//!   a lease of its own;
//! - [`proxy`]: the leader's dashboard, shown through a standby's.
//!
//! A takeover is a restart: the new leader loads unfinished work from the store and
//! reconciles intents with the hosts (`crate::engine`). `crate::server` runs the
//! phases of one process; this module knows nothing of the API it serves.
//! With a data dir there is one controller, the leader of epoch 0 for its whole run.

mod campaign;
mod election;
mod forward;
mod lease;
pub mod proxy;
mod registry;

use std::time::Duration;

pub use campaign::open_store;
pub use election::{Leader, Leadership};
pub use forward::Forwarder;
pub use registry::{Controllers, Presence, Registry, alone};

use crate::store::etcd_backend::{EtcdAddress, EtcdBackend};
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

/// This controller's leadership, and the registry (with the backend it fences).
pub struct Leading {
    pub registry: Registry,
    pub leadership: Leadership,
}

impl Leading {
    /// Gives the leadership up at once (a clean stop): the standbys need not wait
    /// for the lease to expire.
    pub async fn resign(&self) {
        election::resign(self.registry.backend(), &self.leadership).await;
    }
}

/// Connects to etcd once, at start (an address or TLS mistake stops the controller
/// at once, saying so); None with a data dir. The connection serves every leadership
/// of this controller: it reconnects by itself.
pub async fn connect(store: &StoreAt) -> Result<Option<Registry>> {
    let StoreAt::Etcd(etcd) = store else {
        return Ok(None);
    };
    let (address, tls) = (etcd.address.clone(), etcd.tls.clone());
    let backend = tokio::task::spawn_blocking(move || EtcdBackend::connect_with(&address, tls))
        .await
        .map_err(|e| Error::Usage(format!("connecting to etcd: {e}")))?
        .map_err(crate::store::Error::Backend)?;
    Ok(Some(Registry::new(backend)))
}
