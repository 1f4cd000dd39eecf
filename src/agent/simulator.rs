//! A whole fleet behind one gRPC endpoint, speaking the real Agent protocol.
//!
//! Each virtual host has a version, a previous version, a health flag and the
//! results of the operations it ran. Apply waits the configured latency, then
//! changes the host or fails at the configured rate; a repeated operation_id returns
//! the recorded result without running again. Randomness is drawn from a hash of the
//! seed and the operation_id, so a run is reproducible whatever the call order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

pub use super::latency::Latency;
use crate::engine::order::stable_hash;
use crate::error::Error;
use crate::inventory::FleetFile;
use crate::proto::v1 as pb;
use crate::proto::v1::agent_server::{Agent, AgentServer};

/// How the simulated fleet behaves.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Share of Apply calls that fail (0.0 ..= 1.0).
    pub fail_rate: f64,
    /// How long each Apply takes: uniform in a range, or log-normal with a tail.
    pub latency_ms: Latency,
    pub seed: u64,
    /// Share of hosts that start unhealthy (besides those the fleet file marks).
    pub unhealthy_rate: f64,
    /// Share of hosts whose agent answers every call with Unavailable (down).
    pub unavailable_rate: f64,
    /// Share of successful deploys that leave the host unhealthy (a bad change).
    pub break_rate: f64,
    /// Answer every Apply at once with success, touching nothing: the ceiling of what
    /// gRPC alone allows, for benchmarks.
    pub noop: bool,
}

impl Default for SimulatorOptions {
    fn default() -> SimulatorOptions {
        SimulatorOptions {
            fail_rate: 0.0,
            latency_ms: Latency::default(),
            seed: 0,
            unhealthy_rate: 0.0,
            unavailable_rate: 0.0,
            break_rate: 0.0,
            noop: false,
        }
    }
}

/// A uniform number in [0, 1) from a seed, a purpose and a name: FNV-1a of the text,
/// then the SplitMix64 finaliser (FNV's high bits alone are far from uniform for
/// names that differ only at the end, like host ids).
fn unit(seed: u64, purpose: &str, name: &str) -> f64 {
    let mut z = stable_hash(&format!("{seed}:{purpose}:{name}")).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Parses `MIN..MAX` (or a single number) milliseconds, or `lognormal:60s,p99=5m`.
pub fn parse_latency(text: &str) -> Result<Latency, String> {
    Latency::parse(text)
}

/// One simulated host: what is fixed and checked before an Apply is admitted (its
/// agent down or not, the highest epoch it has seen), and its state, locked through
/// an operation.
struct SimEntry {
    /// Its agent is down: every call gets Unavailable.
    down: bool,
    /// The highest controller epoch seen.
    epoch: AtomicU64,
    host: Mutex<SimHost>,
}

#[derive(Debug, Default)]
struct SimHost {
    customers: Vec<String>,
    version: String,
    previous_version: String,
    healthy: bool,
    executed: u64,
    last_operation_id: String,
    results: HashMap<String, pb::ApplyResponse>,
}

/// The simulated fleet; share it with `Arc` to change its behaviour while it serves.
pub struct Simulator {
    hosts: HashMap<String, SimEntry>,
    /// `f64` bits of the fail rate, changeable at run time (tests lower it to let a
    /// halted rollout resume).
    fail_rate: AtomicU64,
    latency_ms: Latency,
    seed: u64,
    break_rate: f64,
    noop: bool,
    /// Per customer: healthy hosts being restarted now, and the most ever at once
    /// (what a disruption budget must bound).
    restarting: std::sync::Mutex<HashMap<String, (u64, u64)>>,
    /// Apply calls received, whatever their fate, and those refused as stale.
    applies: super::ApplyCounts,
    /// The service's traffic by version, for `--metrics-listen`.
    traffic: Option<Arc<super::traffic::Traffic>>,
    /// Operations started by a detached Apply, and their results for Results.
    detached: Arc<super::detached::Detached>,
}

impl Simulator {
    pub fn new(fleet: &FleetFile, options: &SimulatorOptions) -> Simulator {
        let rate = options.unhealthy_rate.clamp(0.0, 1.0);
        let hosts = fleet
            .hosts
            .iter()
            .map(|h| {
                let draw = unit(options.seed, "unhealthy", &h.id);
                let host = SimHost {
                    customers: crate::inventory::strings(&h.customers),
                    version: h.version.as_deref().unwrap_or_default().to_string(),
                    healthy: h.healthy && draw >= rate,
                    ..Default::default()
                };
                let entry = SimEntry {
                    down: unit(options.seed, "unavailable", &h.id) < options.unavailable_rate,
                    epoch: AtomicU64::new(0),
                    host: Mutex::new(host),
                };
                (h.id.clone(), entry)
            })
            .collect();
        Simulator {
            hosts,
            fail_rate: AtomicU64::new(options.fail_rate.clamp(0.0, 1.0).to_bits()),
            latency_ms: options.latency_ms,
            seed: options.seed,
            break_rate: options.break_rate.clamp(0.0, 1.0),
            noop: options.noop,
            restarting: std::sync::Mutex::new(HashMap::new()),
            applies: super::ApplyCounts::default(),
            traffic: None,
            detached: Arc::new(super::detached::Detached::default()),
        }
    }

    /// The same simulator, its hosts' traffic counted in `traffic` as their versions
    /// change.
    pub fn with_traffic(mut self, traffic: Arc<super::traffic::Traffic>) -> Simulator {
        self.traffic = Some(traffic);
        self
    }

    /// Apply calls received so far (first attempts, retries and replays alike).
    pub fn apply_calls(&self) -> u64 {
        self.applies.calls()
    }

    /// The most healthy hosts of `customer` ever restarting at the same time.
    pub fn max_concurrent_restarts(&self, customer: &str) -> u64 {
        self.restarting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(customer)
            .map_or(0, |c| c.1)
    }

    /// Hosts that are unhealthy now.
    pub async fn unhealthy(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, h) in &self.hosts {
            if !h.host.lock().await.healthy {
                out.push(id.clone());
            }
        }
        out.sort();
        out
    }

    fn count_restart(&self, customers: &[String], delta: i64) {
        let mut map = self.restarting.lock().unwrap_or_else(|p| p.into_inner());
        for c in customers {
            let e = map.entry(c.clone()).or_default();
            e.0 = (e.0 as i64 + delta).max(0) as u64;
            e.1 = e.1.max(e.0);
        }
    }

    pub fn set_fail_rate(&self, rate: f64) {
        self.fail_rate.store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    fn fail_rate(&self) -> f64 {
        f64::from_bits(self.fail_rate.load(Ordering::Relaxed))
    }

    /// A number in [0, 1) drawn from the seed, the operation and a purpose.
    fn draw(&self, operation_id: &str, purpose: &str) -> f64 {
        unit(self.seed, purpose, operation_id)
    }

    /// How many operations each host actually ran (replays excluded).
    pub async fn executed(&self, host_id: &str) -> Option<u64> {
        Some(self.hosts.get(host_id)?.host.lock().await.executed)
    }

    /// The gRPC service, ready to be added to a tonic server.
    pub fn service(self: Arc<Self>) -> AgentServer<SimulatorService> {
        AgentServer::new(SimulatorService(self)).max_decoding_message_size(1024 * 1024)
    }

    /// Apply, as the protocol has it: detached (answered at once, the result through
    /// Results) or held until the operation ends, as for an agent of the earlier
    /// protocol.
    async fn apply(self: &Arc<Self>, req: pb::ApplyRequest) -> Result<pb::ApplyResponse, Status> {
        self.applies.received();
        if self.noop {
            return Ok(pb::ApplyResponse {
                ok: true,
                version: req.version,
                ..Default::default()
            });
        }
        let action = self.admit(&req)?;
        if !req.detach {
            return self.run(req, action).await;
        }
        let this = self.clone();
        let (host, op) = (req.host_id.clone(), req.operation_id.clone());
        self.detached
            .start(host, op, async move { this.run(req, action).await })
            .await
    }

    /// What is checked before an operation starts: the host, the request, the agent
    /// up, the controller's epoch (fencing).
    fn admit(&self, req: &pb::ApplyRequest) -> Result<pb::Action, Error> {
        let entry = self
            .hosts
            .get(&req.host_id)
            .ok_or_else(|| Error::NotFound(format!("this simulator has no host `{}`", req.host_id)))?;
        if req.operation_id.is_empty() {
            return Err(Error::Usage(
                "operation_id is required: it makes Apply idempotent".into(),
            ));
        }
        let action = pb::Action::try_from(req.action).unwrap_or(pb::Action::Unspecified);
        if action == pb::Action::Unspecified {
            return Err(Error::Usage("action is required: DEPLOY, ROLLBACK or RESTART".into()));
        }
        if action == pb::Action::Deploy && req.version.is_empty() {
            return Err(Error::Usage("DEPLOY needs a version".into()));
        }
        if entry.down {
            return Err(Error::Unavailable("simulated: the agent is down".into()));
        }
        self.applies.check_epoch_atomic(&entry.epoch, req.epoch)?;
        Ok(action)
    }

    /// Runs an admitted operation, or replays its recorded result.
    async fn run(&self, req: pb::ApplyRequest, action: pb::Action) -> Result<pb::ApplyResponse, Status> {
        let entry = self
            .hosts
            .get(&req.host_id)
            .ok_or_else(|| Error::NotFound(format!("this simulator has no host `{}`", req.host_id)))?;
        // One action at a time per host, as on a real machine; the lock is held
        // through the latency so a duplicate call waits and then replays.
        let mut h = entry.host.lock().await;
        if let Some(done) = h.results.get(&req.operation_id) {
            let mut replay = done.clone();
            replay.replayed = true;
            return Ok(replay);
        }
        // A newer controller may have come while this one waited for the host.
        self.applies.check_epoch_atomic(&entry.epoch, req.epoch)?;
        // A healthy host being restarted is down for its customers meanwhile.
        let disrupts = action == pb::Action::Restart && h.healthy;
        if disrupts {
            self.count_restart(&h.customers, 1);
        }
        if !self.latency_ms.is_zero() {
            let unit = self.draw(&req.operation_id, "latency");
            let seed = stable_hash(&format!("{}:latency:{}", self.seed, req.operation_id));
            tokio::time::sleep(self.latency_ms.sample(unit, seed)).await;
        }
        if disrupts {
            self.count_restart(&h.customers, -1);
        }
        h.executed += 1;
        h.last_operation_id = req.operation_id.clone();
        let before = h.version.clone();
        let response = if self.draw(&req.operation_id, "fail") < self.fail_rate() {
            pb::ApplyResponse {
                ok: false,
                version: before.clone(),
                previous_version: h.previous_version.clone(),
                detail: format!(
                    "simulated {} failure",
                    action.as_str_name().trim_start_matches("ACTION_").to_lowercase()
                ),
                replayed: false,
                healthy: h.healthy,
                running: false,
            }
        } else {
            match action {
                pb::Action::Deploy => {
                    if h.version != req.version {
                        h.previous_version = std::mem::replace(&mut h.version, req.version.clone());
                    }
                    if self.draw(&req.operation_id, "break") < self.break_rate {
                        h.healthy = false;
                    }
                }
                pb::Action::Rollback => {
                    let target = if req.version.is_empty() {
                        h.previous_version.clone()
                    } else {
                        req.version.clone()
                    };
                    if !target.is_empty() && target != h.version {
                        h.previous_version = std::mem::replace(&mut h.version, target);
                    }
                }
                pb::Action::Restart => h.healthy = true,
                pb::Action::Unspecified => {}
            }
            if let Some(traffic) = &self.traffic {
                traffic.switch(&req.host_id, &h.version);
            }
            pb::ApplyResponse {
                ok: true,
                version: h.version.clone(),
                previous_version: before,
                detail: String::new(),
                replayed: false,
                healthy: h.healthy,
                running: false,
            }
        };
        h.results.insert(req.operation_id, response.clone());
        Ok(response)
    }

    async fn probe(&self, req: pb::ProbeRequest) -> Result<pb::ProbeResponse, Status> {
        let entry = self
            .hosts
            .get(&req.host_id)
            .ok_or_else(|| Error::NotFound(format!("this simulator has no host `{}`", req.host_id)))?;
        if entry.down {
            return Err(Error::Unavailable("simulated: the agent is down".into()).into());
        }
        let h = entry.host.lock().await;
        Ok(pb::ProbeResponse {
            version: h.version.clone(),
            previous_version: h.previous_version.clone(),
            healthy: h.healthy,
            detail: if h.healthy {
                "healthy".into()
            } else {
                "unhealthy (simulated)".into()
            },
            operations_executed: h.executed,
            last_operation_id: h.last_operation_id.clone(),
            apply_calls: self.apply_calls(),
            stale_applies_refused: self.applies.stale(),
        })
    }
}

/// Serves a simulator on `listener` until `shutdown` fires (health turns NOT_SERVING
/// first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    simulator: Arc<Simulator>,
    shutdown: tokio_util::sync::CancellationToken,
) -> crate::Result<()> {
    let standard = crate::standard::services::<AgentServer<SimulatorService>>(&shutdown).await?;
    tonic::transport::Server::builder()
        // One endpoint stands for thousands of hosts: let the controller's whole
        // parallelism through on one connection.
        .max_concurrent_streams(10_000)
        // And a connection window to match: h2 closes a connection whose peer has
        // more small DATA frames buffered than half its window allows (a flood
        // guard, ENHANCE_YOUR_CALM), which thousands of Applies at once would be.
        .initial_connection_window_size(crate::reach::grpc::CONNECTION_WINDOW)
        .add_service(standard.health)
        .add_service(standard.reflection_v1)
        .add_service(standard.reflection_v1alpha)
        .add_service(simulator.service())
        .serve_with_incoming_shutdown(crate::standard::incoming(listener), shutdown.cancelled_owned())
        .await
        .map_err(|source| crate::Error::Transport {
            context: "simulated agent server".into(),
            source,
        })
}

/// The tonic service wrapping a shared [`Simulator`].
pub struct SimulatorService(Arc<Simulator>);

#[tonic::async_trait]
impl Agent for SimulatorService {
    async fn apply(&self, request: Request<pb::ApplyRequest>) -> Result<Response<pb::ApplyResponse>, Status> {
        self.0.apply(request.into_inner()).await.map(Response::new)
    }

    async fn probe(&self, request: Request<pb::ProbeRequest>) -> Result<Response<pb::ProbeResponse>, Status> {
        self.0.probe(request.into_inner()).await.map(Response::new)
    }

    async fn results(&self, request: Request<pb::ResultsRequest>) -> Result<Response<pb::ResultsResponse>, Status> {
        Ok(Response::new(self.0.detached.results(request.into_inner()).await))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{GenerateOptions, generate};

    fn sim(fail_rate: f64) -> Arc<Simulator> {
        let fleet = generate(&GenerateOptions {
            hosts: 10,
            agent: "x".into(),
            seed: 1,
            unhealthy_rate: 0.0,
        });
        Arc::new(Simulator::new(
            &fleet,
            &SimulatorOptions {
                fail_rate,
                ..Default::default()
            },
        ))
    }

    fn deploy(host: &str, op: &str) -> pb::ApplyRequest {
        pb::ApplyRequest {
            host_id: host.into(),
            operation_id: op.into(),
            action: pb::Action::Deploy as i32,
            version: "2".into(),
            epoch: 0,
            detach: false,
        }
    }

    /// A deposed leader's Apply is refused, per host: a newer leader reached it.
    #[tokio::test]
    async fn a_host_refuses_a_controller_older_than_one_it_has_seen() {
        let sim = sim(0.0);
        let mut hosts = sim.hosts.keys().cloned();
        let (h1, h2) = (hosts.next().unwrap(), hosts.next().unwrap());
        let newer = pb::ApplyRequest {
            epoch: 9,
            ..deploy(&h1, "r1-h1-a1")
        };
        assert!(sim.apply(newer).await.unwrap().ok);
        let older = pb::ApplyRequest {
            epoch: 7,
            ..deploy(&h1, "r1-h1-a2")
        };
        let refused = sim.apply(older.clone()).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            refused.message(),
            "stale controller epoch 7 < 9: a newer leader has taken over"
        );
        let elsewhere = pb::ApplyRequest { host_id: h2, ..older };
        assert!(sim.apply(elsewhere).await.unwrap().ok, "h2 has not seen epoch 9");
    }

    #[tokio::test]
    async fn a_repeated_operation_runs_once() {
        let s = sim(0.0);
        let host = s.hosts.keys().next().unwrap().clone();
        let first = s.apply(deploy(&host, "op-1")).await.unwrap();
        let again = s.apply(deploy(&host, "op-1")).await.unwrap();
        assert!(first.ok && !first.replayed && again.replayed);
        assert_eq!(s.executed(&host).await, Some(1));
        let probe = s.probe(pb::ProbeRequest { host_id: host }).await.unwrap();
        assert_eq!(probe.version, "2");
        assert_eq!(probe.previous_version, "15.20.8207.11");
    }

    #[tokio::test]
    async fn failures_leave_the_version_and_follow_the_rate() {
        let s = sim(1.0);
        let host = s.hosts.keys().next().unwrap().clone();
        let r = s.apply(deploy(&host, "op-1")).await.unwrap();
        assert!(!r.ok);
        assert_eq!(r.version, "15.20.8207.11");
        s.set_fail_rate(0.0);
        assert!(s.apply(deploy(&host, "op-2")).await.unwrap().ok);
        let unknown = s.apply(deploy("nope", "op-3")).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
    }

    #[test]
    fn latency_ranges_parse() {
        assert_eq!(parse_latency("5..50").unwrap(), (5, 50).into());
        assert_eq!(parse_latency("7").unwrap(), (7, 7).into());
        assert!(parse_latency("50..5").is_err());
        assert!(parse_latency("fast").is_err());
    }
}
