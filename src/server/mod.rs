//! `rollout serve`: the controller process. Opens the store, loads the inventory,
//! resumes unfinished rollouts, and serves the Controller API together with
//! `grpc.health.v1.Health` and server reflection.

mod controller;
mod limits;
pub mod metrics;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use controller::ControllerService;

use crate::auth::{AuthLayer, Credentials, RateLimit};
use crate::engine::{self, Clock, Engine, GrpcFleet};
use crate::fleet::{FleetFile, Inventory};
use crate::proto::v1 as pb;
use crate::store::Store;
use crate::{Error, Result};

/// How `rollout serve` was asked to run.
pub struct Options {
    /// Directory of the sled store; created if missing.
    pub data: PathBuf,
    /// Fleet file to load into the inventory; without it, the stored inventory is used.
    pub fleet: Option<PathBuf>,
    /// Deadline of each call to an agent.
    pub agent_timeout: Duration,
    /// Wall-clock time for business hours and records (tests fix it).
    pub clock: Arc<dyn Clock>,
    /// TLS, credentials and limits of the API.
    pub security: Security,
    /// Where to serve Prometheus metrics (`GET /metrics`); None: not served.
    pub metrics: Option<TcpListener>,
}

/// Who may talk to the controller, and how much.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS (mutual when it has a client CA); None: plaintext.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// The tokens file's credentials; None: authentication off (loopback only, or
    /// `--insecure-no-auth`).
    pub credentials: Option<Arc<Credentials>>,
    /// Changes each principal may make.
    pub rate: RateLimit,
    /// TLS to the agents (their CA, and this controller's identity); None: plaintext.
    pub agents: Option<tonic::transport::ClientTlsConfig>,
}

/// Concurrent HTTP/2 streams a connection may have open (watches included).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// A unary call (or a stream's first answer) that takes longer is cancelled.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the controller on `listener` until `shutdown` fires, then stops dispatching,
/// lets calls in flight finish and be recorded, and returns.
pub async fn run(listener: TcpListener, options: Options, shutdown: CancellationToken) -> Result<()> {
    let store = Store::open(&options.data)?;
    let inventory = Arc::new(load_inventory(&store, options.fleet.as_deref())?);
    info!(hosts = inventory.len(), data = %options.data.display(), "inventory loaded");
    let grpc_fleet = Arc::new(GrpcFleet::new(options.agent_timeout).with_tls(options.security.agents.clone()));
    let fleet: engine::SharedFleet = grpc_fleet.clone();
    let engine = Engine::start(
        store.clone(),
        inventory,
        fleet,
        options.clock.clone(),
        engine::Options::default(),
        shutdown.clone(),
    )
    .await?;
    let metrics = match options.metrics {
        Some(listener) => {
            let metrics = metrics::Metrics::new(engine.clone(), grpc_fleet);
            let signal = shutdown.clone().cancelled_owned();
            tokio::spawn(metrics::serve(listener, metrics.clone(), signal));
            Some(metrics)
        }
        None => None,
    };
    let served = serve(
        listener,
        engine.clone(),
        &options.security,
        metrics,
        shutdown.clone(),
        shutdown.clone().cancelled_owned(),
    )
    .await;
    shutdown.cancel();
    engine.stopped().await;
    store.flush().await?;
    info!("controller stopped");
    served
}

/// Serves the gRPC API for an engine until `signal` completes. Streams end when
/// `shutdown` fires, so a graceful stop never waits on a watcher.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    security: &Security,
    metrics: Option<Arc<metrics::Metrics>>,
    shutdown: CancellationToken,
    signal: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<pb::controller_server::ControllerServer<ControllerService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Usage(format!("reflection: {e}")))?;
    let controller = ControllerService::new(engine, shutdown).into_server();
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .timeout(REQUEST_TIMEOUT);
    if let Some(tls) = &security.tls {
        builder = builder.tls_config(tls.clone()).map_err(|source| Error::Transport {
            context: "TLS configuration (check --tls-cert, --tls-key and --client-ca)".into(),
            source,
        })?;
    }
    builder
        .layer(tower::util::MapResponseLayer::new(
            limits::resource_exhausted_when_too_large,
        ))
        .layer(tower::util::option_layer(metrics.map(metrics::CountLayer)))
        .layer(AuthLayer::new(security.credentials.clone(), security.rate))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(controller)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal)
        .await
        .map_err(|source| Error::Transport {
            context: "gRPC server".into(),
            source,
        })
}

/// The stored inventory (hosts registered by heartbeats included), with the fleet
/// file's hosts and customers over it when one is given; the result is stored, so a
/// restart without the file keeps the same inventory.
fn load_inventory(store: &Store, fleet: Option<&std::path::Path>) -> Result<Inventory> {
    let (hosts, customers) = store.inventory()?;
    let stored = FleetFile::from_records(hosts, customers);
    let Some(path) = fleet else {
        return Ok(Inventory::new(stored)?);
    };
    let mut file = FleetFile::load(path)?;
    let known: std::collections::HashSet<String> = file.hosts.iter().map(|h| h.id.clone()).collect();
    file.hosts
        .extend(stored.hosts.into_iter().filter(|h| !known.contains(&h.id)));
    let (hosts, customers) = file.to_records();
    store.put_inventory(&hosts, &customers)?;
    Ok(Inventory::new(file)?)
}
