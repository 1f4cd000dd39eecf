//! Prometheus metrics (prometheus-client, OpenMetrics text) on `--metrics-listen`:
//! hosts by rollout and state, percent complete, current wave, restart jobs by state,
//! agent calls (first attempts, retries, latency, budget exhaustion, breakers), and
//! gRPC requests by method and code, notifications by sink and outcome. Rollout figures are read from the engine's
//! snapshots at scrape time, so they are exactly what `rollout status` shows.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

use crate::cluster::Controllers;
use crate::engine::{Engine, GrpcFleet};
use crate::notify::Notifier;
use crate::proto::v1 as pb;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RolloutLabels {
    rollout: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    rollout: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    rollout: String,
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    rollout: String,
    check: String,
    verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    advertise: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: String,
    code: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    hosts: Family<HostLabels, Gauge>,
    percent: Family<RolloutLabels, Gauge<f64, AtomicU64>>,
    wave: Family<RolloutLabels, Gauge>,
    gate_waiting: Family<RolloutLabels, Gauge<f64, AtomicU64>>,
    state: Family<HostLabels, Gauge>,
    jobs: Family<StateLabels, Gauge>,
    analysis_value: Family<CheckLabels, Gauge<f64, AtomicU64>>,
    measurements: Family<VerdictLabels, Gauge>,
    breakers_open: Gauge,
    grpc: Family<GrpcLabels, Counter>,
    controllers: Family<ControllerLabels, Gauge>,
    leader_epoch: Gauge,
    leading: Gauge,
    /// The sinks' counters and pending gauges (`--notify`).
    notifier: std::sync::OnceLock<Option<Arc<Notifier>>>,
    /// The leader's engine and agent calls; None on a standby, which has neither.
    engine: Option<(Arc<Engine>, Arc<GrpcFleet>)>,
    /// Who the controllers sharing the store are (read at scrape time).
    peers: Controllers,
}

impl Metrics {
    /// A leading controller's metrics.
    pub fn new(
        engine: Arc<Engine>,
        fleet: Arc<GrpcFleet>,
        peers: Controllers,
        notifier: Option<Arc<Notifier>>,
    ) -> Arc<Metrics> {
        let m = Metrics::build(Some((engine, fleet)), peers);
        if let Some(n) = &notifier {
            n.register(&mut m.registry.lock().unwrap_or_else(|p| p.into_inner()));
        }
        // Set once: the metrics are made once per leadership.
        let _ = m.notifier.set(notifier);
        m
    }

    /// A standby's: the controllers and who leads, `rollout_leading` 0.
    pub fn standby(peers: Controllers) -> Arc<Metrics> {
        Metrics::build(None, peers)
    }

    fn build(engine: Option<(Arc<Engine>, Arc<GrpcFleet>)>, peers: Controllers) -> Arc<Metrics> {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("rollout")),
            hosts: Family::default(),
            percent: Family::default(),
            wave: Family::default(),
            gate_waiting: Family::default(),
            state: Family::default(),
            jobs: Family::default(),
            analysis_value: Family::default(),
            measurements: Family::default(),
            breakers_open: Gauge::default(),
            grpc: Family::default(),
            controllers: Family::default(),
            leader_epoch: Gauge::default(),
            leading: Gauge::default(),
            notifier: std::sync::OnceLock::new(),
            engine,
            peers,
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|p| p.into_inner());
            r.register(
                "controllers",
                "1 for each controller sharing the store, by its advertised URL and role (leader or standby)",
                m.controllers.clone(),
            );
            r.register(
                "leader_epoch",
                "The leading controller's epoch (0 with a data dir)",
                m.leader_epoch.clone(),
            );
            r.register(
                "leading",
                "1 when this controller leads (runs the rollouts), 0 when it stands by",
                m.leading.clone(),
            );
            m.leading.set(i64::from(m.engine.is_some()));
            let Some((_, fleet)) = &m.engine else {
                drop(r);
                return Arc::new(m);
            };
            r.register("hosts", "Hosts of each rollout by state", m.hosts.clone());
            r.register(
                "percent_complete",
                "Share of a rollout's selected hosts on the new version",
                m.percent.clone(),
            );
            r.register(
                "current_wave",
                "The wave a rollout is at (1-based; 0 when ended)",
                m.wave.clone(),
            );
            r.register(
                "gate_waiting_seconds",
                "Seconds the open approval gate of a rollout awaiting approval has waited",
                m.gate_waiting.clone(),
            );
            r.register(
                "state",
                "1 for the state each rollout is in (succeeded, completed-with-failures, halted...)",
                m.state.clone(),
            );
            r.register("restart_jobs", "Restart jobs by state", m.jobs.clone());
            r.register(
                "analysis_value",
                "The last value a rollout's analysis measured, by check",
                m.analysis_value.clone(),
            );
            r.register(
                "analysis_measurements",
                "Measurements of a rollout's analysis, by check and verdict (pass, fail, inconclusive)",
                m.measurements.clone(),
            );
            let stats = fleet.stats();
            r.register(
                "agent_first_attempts",
                "Agent calls, first attempts",
                stats.first_attempts.clone(),
            );
            r.register("agent_retries", "Agent calls, retries", stats.retries.clone());
            r.register(
                "agent_retry_budget_exhausted",
                "Retries refused because the retry budget was spent",
                stats.budget_exhausted.clone(),
            );
            r.register(
                "agent_breaker_opened",
                "Times an agent's breaker opened",
                stats.breaker_opened.clone(),
            );
            r.register(
                "agent_breaker_rejected",
                "Calls failed fast by an open breaker",
                stats.breaker_rejected.clone(),
            );
            r.register(
                "agent_breakers_open",
                "Agents whose breaker is open now",
                m.breakers_open.clone(),
            );
            r.register(
                "agent_call_duration_seconds",
                "Seconds each agent call attempt took",
                stats.latency.clone(),
            );
            r.register(
                "agent_operations_awaited",
                "Operations started on agents whose results are awaited (in flight as data)",
                stats.awaited.clone(),
            );
            r.register(
                "agent_result_polls",
                "Results calls (long polls) sent to agents",
                stats.result_polls.clone(),
            );
            r.register(
                "agent_operations_reasked",
                "Awaited operations asked again after their agent restarted (never run twice)",
                stats.reasked.clone(),
            );
            r.register("grpc_requests", "gRPC requests by method and code", m.grpc.clone());
        }
        Arc::new(m)
    }

    /// The exposition, with the rollout figures read now, and `controllers` (see
    /// [`Metrics::controllers`]).
    pub fn render(&self, controllers: &[pb::ControllerInfo]) -> String {
        self.controllers.clear();
        for c in controllers {
            let labels = ControllerLabels {
                advertise: c.advertise.clone(),
                role: c.role.clone(),
            };
            self.controllers.get_or_create(&labels).set(1);
            if c.role == "leader" {
                self.leader_epoch.set(c.epoch as i64);
            }
        }
        if let Some((engine, fleet)) = &self.engine {
            self.render_engine(engine, fleet);
        }
        if let Some(Some(n)) = self.notifier.get() {
            n.refresh_metrics();
        }
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            text.clear();
        }
        text
    }

    /// The rollouts' and restart jobs' figures, read now.
    fn render_engine(&self, engine: &Engine, fleet: &GrpcFleet) {
        self.hosts.clear();
        self.percent.clear();
        self.wave.clear();
        self.gate_waiting.clear();
        self.state.clear();
        self.jobs.clear();
        self.analysis_value.clear();
        self.measurements.clear();
        for r in engine.list(&[]) {
            for m in &r.measurements {
                let check = CheckLabels {
                    rollout: r.name.clone(),
                    check: m.check.clone(),
                };
                if m.value.is_finite() {
                    self.analysis_value.get_or_create(&check).set(m.value);
                }
                let verdict = VerdictLabels {
                    rollout: r.name.clone(),
                    check: m.check.clone(),
                    verdict: m.verdict.clone(),
                };
                self.measurements.get_or_create(&verdict).inc();
            }
            let rollout = r.name.clone();
            let state = |s: &str| HostLabels {
                rollout: rollout.clone(),
                state: s.to_string(),
            };
            self.hosts
                .get_or_create(&state("succeeded"))
                .set(r.hosts_succeeded as i64);
            self.hosts.get_or_create(&state("failed")).set(r.hosts_failed as i64);
            self.hosts
                .get_or_create(&state("in_flight"))
                .set(r.hosts_in_flight as i64);
            self.hosts.get_or_create(&state("pending")).set(r.hosts_pending as i64);
            self.hosts
                .get_or_create(&state("unhealthy"))
                .set(r.hosts_unhealthy as i64);
            self.state
                .get_or_create(&state(pb::RolloutState::label(r.state())))
                .set(1);
            let labels = RolloutLabels { rollout };
            self.percent.get_or_create(&labels).set(r.percent_complete);
            if let Some(g) = r
                .gate
                .as_ref()
                .filter(|_| r.state() == pb::RolloutState::AwaitingApproval)
            {
                let waited = (engine.wall_ms() - g.opened_at_unix_ms).max(0) as f64 / 1000.0;
                self.gate_waiting.get_or_create(&labels).set(waited);
            }
            let terminal = r.state().is_terminal();
            self.wave
                .get_or_create(&labels)
                .set(if terminal { 0 } else { i64::from(r.current_wave) + 1 });
        }
        for j in engine.restart_jobs() {
            let state = j.state().label().to_string();
            self.jobs.get_or_create(&StateLabels { state }).inc();
        }
        self.breakers_open.set(fleet.open_breakers() as i64);
    }

    /// The controllers sharing the store, read now (from etcd: off the runtime's
    /// threads); none when they cannot be read.
    pub async fn controllers(&self) -> Vec<pb::ControllerInfo> {
        let peers = self.peers.clone();
        tokio::task::spawn_blocking(move || peers())
            .await
            .ok()
            .and_then(|listed| listed.ok())
            .unwrap_or_default()
    }

    fn count(&self, method: &str, code: &str) {
        self.grpc
            .get_or_create(&GrpcLabels {
                method: method.to_string(),
                code: code.to_string(),
            })
            .inc();
    }
}

/// `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                let controllers = metrics.controllers().await;
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(&controllers),
                )
            }
        }),
    )
}

/// Counts gRPC requests by method and the code of the answer's headers (a handler's
/// error, or a refusal); a call whose status comes in the trailers counts as OK.
#[derive(Clone)]
pub struct CountLayer(pub Arc<Metrics>);

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;

    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Count<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = std::result::Result<T, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Count<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
        let metrics = self.metrics.clone();
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = ready.call(req).await?;
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map_or(tonic::Code::Ok, tonic::Code::from);
            metrics.count(&method, &format!("{code:?}"));
            Ok(response)
        })
    }
}
