//! `rollout serve`: the wiring of one controller process. Opens the store, loads the
//! inventory, resumes unfinished rollouts, and serves the Controller API together
//! with `grpc.health.v1.Health` and server reflection, metrics and the dashboard.
//! With a store in etcd, `crate::cluster` decides when this process stands by (and
//! `standby` says what it serves then) and when it leads.

mod controller;
mod limits;
pub mod metrics;
mod rotation;
pub mod service;
mod snapshots;
mod standby;
pub mod web;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use controller::ControllerService;

use crate::auth::refusals::{self, Refusals};
use crate::auth::{AuthLayer, Credentials, RateLimit};
use crate::clock::Clock;
use crate::cluster::{self, Leading};
use crate::dashboard::Dashboard;
use crate::engine::audit::{Actor, Target};
use crate::engine::{self, Engine, GrpcFleet};
use crate::inventory::{FleetFile, Inventory};
use crate::proto::v1 as pb;
use crate::standard::incoming;
use crate::store::Store;
use crate::{Error, Result};

pub use crate::cluster::{Controllers, Etcd, StoreAt};

/// How `rollout serve` was asked to run.
pub struct Options {
    /// Where the store is: a data dir, or etcd shared with other controllers.
    pub store: StoreAt,
    /// Fleet file to load into the inventory; without it, the stored inventory is used.
    pub fleet: Option<PathBuf>,
    /// Deadline of each operation on an agent, from its start.
    pub agent_timeout: Duration,
    /// Host actions in flight at once across the controller (`--max-in-flight`).
    pub max_in_flight: usize,
    /// Wall-clock time for business hours and records (tests fix it).
    pub clock: Arc<dyn Clock>,
    /// TLS, credentials and limits of the API.
    pub security: Security,
    /// Where to serve Prometheus metrics (`GET /metrics`); None: not served.
    pub metrics: Option<TcpListener>,
    /// Where to serve the dashboard (and `/metrics` beside it); None: not served.
    pub http: Option<TcpListener>,
    /// On shutdown, how long calls in flight may take to finish and be recorded.
    pub grace: Duration,
    /// Judge business hours by a drill clock starting at this instant (unix ms).
    pub drill_from_ms: Option<i64>,
    /// The freeze calendar (`--freeze-calendar FILE`), read again at SIGHUP.
    pub freeze_calendar: Option<PathBuf>,
    /// Printed on standard output once the controller is ready to serve (`listening
    /// on ADDR` first): scripts that wait for them are right to go on.
    pub ready_lines: Vec<String>,
    /// Where notifications go (`--notify FILE`); empty: nowhere (they stay in the
    /// outbox for a controller that has sinks).
    pub sinks: crate::notify::Sinks,
    /// Where `sinks` came from (`--notify FILE`): read again at SIGHUP.
    pub sinks_file: Option<PathBuf>,
    /// The CloudEvents' source is `/rollout/{site}` (`--site`).
    pub site: String,
    /// How hosts at `ssh://` addresses are reached (`--ssh FILE`); None: they are
    /// refused, saying so.
    pub ssh: Option<crate::reach::ssh::config::SshConfig>,
    /// Where people find the dashboard (`--http-advertise`, else its address): the
    /// Slack sink's `Open dashboard` link.
    pub dashboard_url: Option<String>,
}

/// Who may talk to the controller, and how much.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS (mutual when it has a client CA); None: plaintext.
    pub tls: Option<tonic::transport::ServerTlsConfig>,
    /// The tokens file's credentials; None: authentication off (loopback only, or
    /// `--insecure-no-auth`).
    pub credentials: Option<Arc<Credentials>>,
    /// Where the credentials were read from (`--auth`): read again at SIGHUP.
    pub tokens_file: Option<PathBuf>,
    /// Changes each principal may make.
    pub rate: RateLimit,
    /// TLS to the agents (their CA, and this controller's identity); None: plaintext.
    pub agents: Option<tonic::transport::ClientTlsConfig>,
    /// TLS to the other controllers, for a standby forwarding calls to the leader
    /// (their CA, and this controller's identity); None: plaintext.
    pub peers: Option<tonic::transport::ClientTlsConfig>,
    /// How plans' analyses reach the site's Prometheus (its CA, a token); None: a
    /// client without either.
    pub prometheus: Option<Arc<crate::telemetry::prometheus::Prometheus>>,
    /// The dashboard's TLS (`--http-tls-cert`, `--http-tls-key`); None: plain HTTP.
    pub http_tls: Option<web::HttpTls>,
    /// Names the dashboard answers to besides its address (`--http-advertise`'s).
    pub http_names: Vec<String>,
    /// Slack's signing secret: the dashboard takes approvals from Slack's buttons.
    pub slack: Option<crate::dashboard::slack::SigningSecret>,
    /// Single sign-on through an OpenID provider (`--oidc`).
    pub sso: Option<Arc<crate::sso::Sso>>,
}

impl Security {
    /// Who a dashboard on `listener` answers to.
    fn http_hosts(&self, listener: &TcpListener) -> Arc<web::Hosts> {
        Arc::new(web::Hosts {
            port: listener.local_addr().map_or(0, |a| a.port()),
            advertised: self.http_names.clone(),
        })
    }
}

/// Concurrent HTTP/2 streams a connection may have open (watches included).
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// A unary call (or a stream's first answer) that takes longer is cancelled.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the controller on `listener` until `shutdown` fires. Then: health says
/// NOT_SERVING, nothing new is dispatched and changes are refused (Unavailable), calls
/// in flight get up to `grace` to finish and be recorded, the store is flushed, and
/// the API stops. A call still out after the grace stays "in doubt" in the store and
/// is asked about again by the next controller.
///
/// With a store in etcd, the controller stands by until it leads, and a leader that
/// loses the leadership stops dispatching at once and stands by again.
pub async fn run(listener: TcpListener, options: Options, shutdown: CancellationToken) -> Result<()> {
    let registry = cluster::connect(&options.store).await?;
    loop {
        let started = std::time::Instant::now();
        // Read before the store is: a standby has it ready when it takes over.
        let fleet_file = options.fleet.as_deref().map(FleetFile::load).transpose()?;
        let opened = cluster::open_store(
            &options.store,
            registry.as_ref(),
            options.security.peers.clone(),
            &*options.clock,
            |forward, peers, me, done| standby::serve(&listener, &options, forward, peers, me, done),
            &shutdown,
        )
        .await?;
        let Some((store, leading)) = opened else {
            info!("controller stopped while standing by");
            return Ok(());
        };
        let phase = Phase {
            listener: &listener,
            options: &options,
            shutdown: shutdown.child_token(),
            started,
        };
        match phase.lead(store, leading, fleet_file).await? {
            Ended::Stopped => {
                info!("controller stopped");
                return Ok(());
            }
            Ended::Deposed(epoch) => info!(epoch, "standing by again"),
        }
    }
}

/// One leadership of this controller (with a data dir, its whole run).
struct Phase<'a> {
    listener: &'a TcpListener,
    options: &'a Options,
    /// Fired to end the phase: by the controller's shutdown, or a lost leadership.
    shutdown: CancellationToken,
    started: std::time::Instant,
}

/// How a leadership ended.
enum Ended {
    /// Asked to stop: the controller exits.
    Stopped,
    /// Another controller leads now (this one's epoch was the number): stand by.
    Deposed(u64),
}

impl Phase<'_> {
    /// Loads the store and runs the engine and the API until asked to stop, or until
    /// the leadership is lost.
    async fn lead(self, store: Store, leading: Option<Leading>, fleet_file: Option<FleetFile>) -> Result<Ended> {
        let (options, shutdown) = (self.options, &self.shutdown);
        let store = match &leading {
            Some(_) => store,
            None => store.acting_as(&own_url(self.listener, options)),
        };
        let opened_ms = self.started.elapsed().as_millis();
        let inventory = Arc::new(load_inventory(&store, fleet_file)?);
        info!(
            hosts = inventory.len(),
            data = %options.store,
            store_open_ms = opened_ms,
            loaded_ms = self.started.elapsed().as_millis(),
            "inventory loaded"
        );
        let epoch = leading.as_ref().map_or(0, |l| l.leadership.epoch);
        let grpc_fleet = Arc::new(
            GrpcFleet::with_policy(
                options.agent_timeout,
                crate::reach::RetryPolicy {
                    max_in_flight: options.max_in_flight,
                    ..Default::default()
                },
            )
            .with_tls(options.security.agents.clone())
            .with_epoch(epoch),
        );
        let fleets = crate::reach::Fleets::new(grpc_fleet.clone(), options.ssh.clone(), epoch);
        if let Some(ssh) = fleets.ssh() {
            tokio::spawn(ssh.reap(shutdown.clone()));
        }
        let fleet: engine::SharedFleet = Arc::new(fleets);
        let engine = Engine::start(
            store.clone(),
            inventory,
            fleet,
            options.clock.clone(),
            engine::Options {
                drill_from_ms: options.drill_from_ms,
                freeze_calendar: options.freeze_calendar.clone(),
                prometheus: options.security.prometheus.clone(),
                max_in_flight: options.max_in_flight,
                ..engine::Options::default()
            },
            shutdown.clone(),
        )
        .await?;
        info!(
            since_start_ms = self.started.elapsed().as_millis(),
            "rollouts and restart jobs loaded"
        );
        if leading.is_some() {
            // Written by the new leader itself, fenced by its epoch.
            let told = crate::notify::leader_changed(store.writer(), epoch, options.clock.now_ms());
            store.put_notices(&[told])?;
        }
        let notifier = (!options.sinks.0.is_empty())
            .then(|| {
                crate::notify::Notifier::start(
                    store.clone(),
                    &options.sinks,
                    &options.site,
                    options.dashboard_url.as_deref(),
                    options.clock.clone(),
                    engine.clone(),
                    shutdown.clone(),
                )
            })
            .transpose()
            .map_err(Error::from)?;
        let reload = rotation::Reload {
            sinks: notifier.clone().zip(options.sinks_file.clone()),
            calendar: options.freeze_calendar.is_some(),
            ..rotation::Reload::tokens(&options.security)
        };
        rotation::on_hangup(reload, Some(engine.clone()), shutdown.clone());
        let controllers = controllers(leading.as_ref(), self.listener, options);
        // Reads are answered on a runtime of their own: a million-host rollout keeping
        // the engine's workers busy does not queue them behind its tasks.
        let api = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(API_THREADS)
            .thread_name("api")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the API's runtime", e))?;
        let metrics = (options.metrics.is_some() || options.http.is_some())
            .then(|| metrics::Metrics::new(engine.clone(), grpc_fleet, controllers.clone(), notifier.clone()));
        if let (Some(listener), Some(m)) = (&options.metrics, &metrics) {
            let listener = moved_to(&api, share(listener)?)?;
            api.spawn(web::serve_http(
                listener,
                metrics::router(m.clone()),
                shutdown.clone(),
                "metrics",
                None,
            ));
        }
        // One change budget per principal, for the API and the dashboard alike.
        let (refusals, refused) = Refusals::channel();
        api.spawn(audit_refusals(
            refused,
            engine.clone(),
            options.clock.clone(),
            shutdown.clone(),
        ));
        let auth = AuthLayer::new(options.security.credentials.clone(), options.security.rate, refusals);
        if let (Some(listener), Some(m)) = (&options.http, &metrics) {
            let security = &options.security;
            if let Some(sso) = security.sso.clone() {
                // The provider's discovery document, before the first sign-in needs it.
                tokio::spawn(async move { sso.warm().await });
            }
            let dashboard = Dashboard::new(
                engine.clone(),
                controllers.clone(),
                security.credentials.clone(),
                security.http_tls.is_some(),
                shutdown.clone(),
            )
            .with_slack(security.slack.clone())
            .with_sso(security.sso.clone())
            .with_change_limit(auth.change_limit());
            // /metrics beside the pages needs the dashboard's credentials.
            let app = dashboard
                .router_with(metrics::router(m.clone()))
                .layer(axum::middleware::from_fn_with_state(
                    security.http_hosts(listener),
                    web::host_check,
                ));
            let listener = moved_to(&api, share(listener)?)?;
            api.spawn(web::serve_http(
                listener,
                app,
                shutdown.clone(),
                "dashboard",
                security.http_tls.clone(),
            ));
        }
        // The API keeps answering reads while the engine drains; it stops after.
        let drained = CancellationToken::new();
        let listener = moved_to(&api, share(self.listener)?)?;
        let mut serving = api.spawn({
            let (engine, security, shutdown) = (engine.clone(), options.security.clone(), shutdown.clone());
            let signal = drained.clone().cancelled_owned();
            let notifier = notifier.clone();
            async move {
                let api = Api {
                    engine,
                    controllers,
                    notifier,
                };
                serve(listener, api, &security, auth, metrics, shutdown, signal).await
            }
        });
        // Ready: the store is open, the fleet loaded, the engine started.
        service::ready(&options.ready_lines, "leading");
        // A leader whose lease could not be renewed, or whose write found another
        // leader, stops at once: its writes are refused anyway, and agents refuse its
        // epoch.
        let lost = leading.as_ref().map(|l| l.leadership.lost.clone()).unwrap_or_default();
        let mut deposed = false;
        let early = tokio::select! {
            _ = shutdown.cancelled() => None,
            _ = lost.cancelled() => {
                deposed = true;
                None
            }
            served = &mut serving => Some(served),
        };
        shutdown.cancel();
        if deposed {
            warn!(
                epoch,
                "lost the leadership: stopped dispatching (a write or Apply of this epoch would be refused anyway)"
            );
        }
        let waited = tokio::time::timeout(options.grace, async {
            engine.stopped().await;
            if let Some(n) = &notifier {
                n.stopped().await;
            }
        })
        .await;
        if deposed {
            // Its calls in flight end at once: their records are refused.
            if waited.is_err() {
                warn!("tasks of the lost leadership still running after the grace period");
            }
        } else {
            match waited {
                Ok(()) => info!("every call in flight finished and was recorded"),
                Err(_) => warn!(
                    grace = %crate::text::format_duration(options.grace),
                    "calls still in flight after the grace period: their hosts stay in doubt and are asked again at the next start"
                ),
            }
            store.flush().await?;
            if let Some(l) = &leading {
                // The standbys need not wait for the lease to expire.
                l.resign().await;
            }
        }
        drained.cancel();
        let served = match early {
            Some(served) => served,
            None => serving.await,
        };
        // Its tasks have ended (streams end with `shutdown`); dropping a runtime inside
        // another would block.
        api.shutdown_background();
        if deposed {
            return Ok(Ended::Deposed(epoch));
        }
        served.map_err(|e| Error::Internal(format!("the gRPC server task failed: {e}")))??;
        Ok(Ended::Stopped)
    }
}

/// Writes the calls refused before a handler read them (sampled) to the audit log,
/// until `shutdown`.
async fn audit_refusals(
    refused: refusals::Receiver,
    engine: Arc<Engine>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let write = |line: refusals::Line| {
        let engine = engine.clone();
        async move {
            let r = line.refusal;
            let actor = Actor::new(&r.principal, &r.role, &r.method, "");
            engine.record_call(&actor, Target::None, line.detail, &r.message).await;
        }
    };
    refusals::run(refused, move || clock.now_ms(), write, shutdown).await;
}

/// A second handle on a listening socket: each phase of the controller (standing by,
/// leading) serves on its own, the controller keeps the original.
fn share(listener: &TcpListener) -> Result<TcpListener> {
    use std::os::fd::AsFd;
    let cloned = (|| {
        let fd = listener.as_fd().try_clone_to_owned()?;
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        TcpListener::from_std(std)
    })();
    cloned.map_err(|e| Error::io("cannot share a listening socket between the controller's phases", e))
}

/// Threads of the API's runtime. Reads are cheap (snapshots), but on a 2-core machine
/// one thread is an eighth of the runnable threads during a big rollout: with one,
/// GetRollout's p99 during the 100k-host rollout was 36 ms, with two 8.6 ms
/// (BENCHMARKS.md).
const API_THREADS: usize = 2;

/// The nice value of the engine's threads: 10 gives a thread about a tenth of the
/// CPU weight of a normal one when both want the core (Linux's CFS weights).
const ENGINE_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority (its nice value) to
/// [`ENGINE_NICE`], for the threads of the engine's runtime; the API's threads keep
/// the normal priority. Best effort: a failure leaves the thread as it was.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and setpriority take and return plain integers; on Linux the
        // nice value is a per-thread attribute and `who` names this thread.
        let done = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, ENGINE_NICE)
        };
        if done != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "engine thread priority unchanged");
        }
    }
}

/// A listener bound on the engine's runtime, handed over to `runtime`'s reactor.
fn moved_to(runtime: &tokio::runtime::Runtime, listener: TcpListener) -> Result<TcpListener> {
    let std = listener
        .into_std()
        .map_err(|e| Error::io("cannot hand the listener to the API's runtime", e))?;
    let _entered = runtime.enter();
    TcpListener::from_std(std).map_err(|e| Error::io("cannot hand the listener to the API's runtime", e))
}

/// What the gRPC API of a leader answers from.
pub struct Api {
    pub engine: Arc<Engine>,
    pub controllers: Controllers,
    /// None without `--notify`.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
}

/// Serves the gRPC API for an engine until `signal` completes. Streams end when
/// `shutdown` fires, so a graceful stop never waits on a watcher.
pub async fn serve(
    listener: TcpListener,
    api: Api,
    security: &Security,
    auth: AuthLayer,
    metrics: Option<Arc<metrics::Metrics>>,
    shutdown: CancellationToken,
    signal: impl Future<Output = ()> + Send,
) -> Result<()> {
    let standard =
        crate::standard::services::<pb::controller_server::ControllerServer<ControllerService>>(&shutdown).await?;
    let one_principal = security.credentials.is_none();
    let controller = ControllerService::new(api.engine, shutdown, api.controllers, one_principal)
        .with_notifier(api.notifier)
        .into_server();
    api_server(security)?
        .layer(tower::util::MapResponseLayer::new(
            limits::resource_exhausted_when_too_large,
        ))
        .layer(tower::util::option_layer(metrics.map(metrics::CountLayer)))
        .layer(auth)
        .add_service(standard.health)
        .add_service(standard.reflection_v1)
        .add_service(standard.reflection_v1alpha)
        .add_service(controller)
        .serve_with_incoming_shutdown(incoming(listener), signal)
        .await
        .map_err(|source| Error::Transport {
            context: "gRPC server".into(),
            source,
        })
}

/// The gRPC server of the API, a leader's or a standby's: TLS as configured, the
/// stream and time limits.
pub(crate) fn api_server(security: &Security) -> Result<tonic::transport::Server> {
    let builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .timeout(REQUEST_TIMEOUT);
    match &security.tls {
        None => Ok(builder),
        Some(tls) => builder.tls_config(tls.clone()).map_err(|source| Error::Transport {
            context: "TLS configuration (check --tls-cert, --tls-key and --client-ca)".into(),
            source,
        }),
    }
}

/// Who the controllers are, for ListControllers: from etcd (the leader first), or
/// this one alone with a data dir.
fn controllers(leading: Option<&Leading>, listener: &TcpListener, options: &Options) -> Controllers {
    if let Some(l) = leading {
        return l.registry.controllers();
    }
    cluster::alone(
        own_url(listener, options),
        options.clock.now_ms(),
        options.dashboard_url.as_deref(),
    )
}

/// This controller's URL with a data dir (it advertises none): its API's address.
fn own_url(listener: &TcpListener, options: &Options) -> String {
    let scheme = if options.security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    listener
        .local_addr()
        .map(|a| format!("{scheme}://{a}"))
        .unwrap_or_default()
}

/// The stored inventory (hosts registered by heartbeats included), with the fleet
/// file's hosts and customers over it when one is given; the result is stored, so a
/// restart without the file keeps the same inventory.
fn load_inventory(store: &Store, fleet: Option<FleetFile>) -> Result<Inventory> {
    let Some(mut file) = fleet else {
        let (hosts, customers) = store.inventory(|_| true)?;
        return Ok(Inventory::new(FleetFile::from_records(hosts, customers))?);
    };
    // Hosts registered by heartbeat that the file does not list stay.
    let known: std::collections::HashSet<&str> = file.hosts.iter().map(|h| h.id.as_str()).collect();
    let (registered, _) = store.inventory(|id| !known.contains(id))?;
    drop(known);
    file.hosts.extend(FleetFile::from_records(registered, Vec::new()).hosts);
    // One representation at a time: a million hosts are a gigabyte each.
    let (hosts, customers) = file.into_records();
    store.put_inventory(&hosts, &customers)?;
    Ok(Inventory::new(FleetFile::from_records(hosts, customers))?)
}
