//! The dispatcher against a fake fleet and a fake book, on paused time: what is in
//! flight when, what is recorded when, what a stuck wave and a pause leave behind.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Book, CONFIRMED, Dispatcher, Mode};
use crate::engine::Result;
use crate::engine::rollout::Dispatch;
use crate::engine::state::WaveReport;
use crate::plan::Kind;
use crate::proto::v1 as pb;
use crate::reach::{Answer, CallError, Fleet, Reply, SharedFleet};

/// What a fake host does with an Apply.
#[derive(Clone, Copy)]
enum Behave {
    Succeed(Duration),
    Fail(Duration),
    Never,
}

/// Hosts that answer as `behave` says; counts what is in flight (a call dropped,
/// abandoned, leaves too).
struct FakeFleet {
    behave: Box<dyn Fn(&str) -> Behave + Send + Sync>,
    /// What a probe answers (None: the probe fails).
    probed: Option<String>,
    in_flight: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    applied: Arc<Mutex<Vec<String>>>,
}

impl FakeFleet {
    fn new(behave: impl Fn(&str) -> Behave + Send + Sync + 'static) -> Arc<FakeFleet> {
        Arc::new(FakeFleet {
            behave: Box::new(behave),
            probed: None,
            in_flight: Arc::default(),
            peak: Arc::default(),
            applied: Arc::default(),
        })
    }

    fn every(b: Behave) -> Arc<FakeFleet> {
        FakeFleet::new(move |_| b)
    }
}

struct Flight(Arc<AtomicUsize>);

impl Drop for Flight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Fleet for FakeFleet {
    fn apply(&self, _address: &str, request: pb::ApplyRequest) -> BoxFuture<'static, Answer> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let flight = Flight(self.in_flight.clone());
        self.applied.lock().unwrap().push(request.host_id.clone());
        let behave = (self.behave)(&request.host_id);
        Box::pin(async move {
            let _flight = flight;
            match behave {
                Behave::Succeed(after) => {
                    tokio::time::sleep(after).await;
                    Ok(pb::ApplyResponse {
                        ok: true,
                        version: request.version,
                        detail: "deployed".into(),
                        ..Default::default()
                    })
                }
                Behave::Fail(after) => {
                    tokio::time::sleep(after).await;
                    Ok(pb::ApplyResponse {
                        ok: false,
                        detail: "disk full".into(),
                        ..Default::default()
                    })
                }
                Behave::Never => std::future::pending().await,
            }
        })
    }

    fn probe(
        &self,
        address: &str,
        _host_id: &str,
    ) -> BoxFuture<'static, std::result::Result<pb::ProbeResponse, CallError>> {
        let answer = match &self.probed {
            Some(version) => Ok(pb::ProbeResponse {
                version: version.clone(),
                ..Default::default()
            }),
            None => Err(CallError {
                address: address.to_string(),
                failure: crate::reach::Failure::Unreachable,
                message: "down".into(),
            }),
        };
        Box::pin(async move { answer })
    }
}

/// The rollout's queue and store, in memory.
struct FakeBook {
    start: Instant,
    pending: Mutex<VecDeque<Dispatch>>,
    batches: Mutex<Vec<usize>>,
    /// Each record: when (since the start), and the hosts recorded.
    records: Mutex<Vec<(Duration, Vec<Dispatch>)>>,
    unsent: Mutex<Vec<Dispatch>>,
    stop: AtomicBool,
    /// A freeze over every host, until this long after the start: nothing is taken
    /// before, and the hosts are said to wait.
    frozen_until: Option<Duration>,
}

impl FakeBook {
    fn new(hosts: usize) -> FakeBook {
        FakeBook {
            start: Instant::now(),
            pending: Mutex::new((0..hosts).map(host).collect()),
            batches: Mutex::default(),
            records: Mutex::default(),
            unsent: Mutex::default(),
            stop: AtomicBool::new(false),
            frozen_until: None,
        }
    }

    /// The freeze still in force now: how long it has left.
    fn frozen_for(&self) -> Option<Duration> {
        self.frozen_until
            .and_then(|until| until.checked_sub(self.start.elapsed()))
            .filter(|left| !left.is_zero())
    }

    fn recorded(&self) -> Vec<Dispatch> {
        let records = self.records.lock().unwrap();
        records.iter().flat_map(|(_, r)| r.iter().cloned()).collect()
    }

    /// The sizes of the batches of intents taken (empty ones left out).
    fn taken(&self) -> Vec<usize> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .copied()
            .filter(|&b| b > 0)
            .collect()
    }

    /// The records that recorded something: when, and which hosts.
    fn record_times(&self) -> Vec<(Duration, Vec<String>)> {
        let records = self.records.lock().unwrap();
        records
            .iter()
            .filter(|(_, r)| !r.is_empty())
            .map(|(at, r)| (*at, r.iter().map(|d| d.host.clone()).collect()))
            .collect()
    }
}

impl Book for FakeBook {
    type Item = Dispatch;
    type Report = WaveReport;

    fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    fn must_stop(&self, _wave: u32) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn start(&self, fleet: &SharedFleet, d: &Dispatch, reply: Reply) {
        let request = pb::ApplyRequest {
            host_id: d.host.clone(),
            operation_id: d.record.operation_id.clone(),
            version: "v2".into(),
            ..Default::default()
        };
        super::send(fleet, Kind::Fix, d, request, reply)
    }

    async fn intents(&self, _wave: u32, n: usize) -> Result<Vec<Dispatch>> {
        if self.frozen_for().is_some() {
            return Ok(Vec::new());
        }
        let mut pending = self.pending.lock().unwrap();
        let batch: Vec<Dispatch> = (0..n).map_while(|_| pending.pop_front()).collect();
        self.batches.lock().unwrap().push(batch.len());
        Ok(batch)
    }

    async fn record(&self, results: &[Dispatch]) -> Result<()> {
        let at = self.start.elapsed();
        self.records.lock().unwrap().push((at, results.to_vec()));
        Ok(())
    }

    fn unsend(&self, items: Vec<Dispatch>) -> Result<()> {
        self.unsent.lock().unwrap().extend(items);
        Ok(())
    }

    fn held(&self, _wave: u32) -> Option<Duration> {
        self.frozen_for().filter(|_| !self.pending.lock().unwrap().is_empty())
    }

    fn report(&self, wave: u32) -> WaveReport {
        let recorded = self.recorded();
        let failed = recorded
            .iter()
            .filter(|d| d.record.state() == pb::HostState::Failed)
            .count() as u64;
        WaveReport {
            wave,
            size: 0,
            answered: recorded.len() as u64,
            failed,
            allowed: 0,
            whole_rollout: None,
            examples: Vec::new(),
            failed_total: failed,
            stuck: None,
        }
    }

    fn stuck(&self, wave: u32, after: Duration, hosts: Vec<String>) -> WaveReport {
        WaveReport {
            stuck: Some((after, hosts)),
            ..self.report(wave)
        }
    }
}

fn host(i: usize) -> Dispatch {
    Dispatch {
        host: format!("h{i:05}"),
        address: Arc::from("fake:1"),
        record: pb::RolloutHostRecord {
            wave: 1,
            operation_id: format!("op-{i}"),
            ..Default::default()
        },
        probe_first: false,
    }
}

const DEADLINE: Duration = Duration::from_secs(600);

async fn run(
    book: &FakeBook,
    fleet: &Arc<FakeFleet>,
    mode: Mode,
    max_parallel: usize,
    deadline: Duration,
) -> WaveReport {
    run_with(
        book,
        fleet,
        mode,
        max_parallel,
        deadline,
        Vec::new(),
        watch::channel(0).1,
    )
    .await
}

async fn run_with(
    book: &FakeBook,
    fleet: &Arc<FakeFleet>,
    mode: Mode,
    max_parallel: usize,
    deadline: Duration,
    first: Vec<Dispatch>,
    control: watch::Receiver<u64>,
) -> WaveReport {
    let fleet: SharedFleet = fleet.clone();
    Dispatcher::new(mode, max_parallel, deadline, first)
        .run(book, &fleet, control, &CancellationToken::new())
        .await
        .expect("the fake book does not fail")
}

#[tokio::test(start_paused = true)]
async fn refill_sends_the_whole_wave_at_once() {
    let book = FakeBook::new(2_500);
    let fleet = FakeFleet::every(Behave::Succeed(Duration::from_secs(60)));
    let started = Instant::now();
    let report = run(&book, &fleet, Mode::Wave(0), 2_500, DEADLINE).await;
    assert_eq!(
        fleet.peak.load(Ordering::SeqCst),
        2_500,
        "the whole wave in flight at once"
    );
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "one deploy's time, not three"
    );
    assert_eq!(report.answered, 2_500);
    // Intents are written a batch (1,000) at a time (and asked again as answers come:
    // a retry may add hosts to the wave).
    assert_eq!(book.taken(), vec![1_000, 1_000, 500]);
    assert!(
        book.recorded()
            .iter()
            .all(|d| d.record.state() == pb::HostState::Succeeded)
    );
}

#[tokio::test(start_paused = true)]
async fn max_parallel_bounds_what_is_in_flight_and_one_batch_waits() {
    let book = FakeBook::new(100);
    let fleet = FakeFleet::every(Behave::Succeed(Duration::from_secs(1)));
    let started = Instant::now();
    let report = run(&book, &fleet, Mode::Wave(0), 10, DEADLINE).await;
    assert_eq!(fleet.peak.load(Ordering::SeqCst), 10);
    assert_eq!(started.elapsed(), Duration::from_secs(10), "ten rounds of ten");
    assert_eq!(report.answered, 100);
    // Each refill writes one batch ahead of the places that free up.
    let batches = book.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().sum::<usize>(), 100);
    assert!(batches.iter().all(|&b| b <= 10), "{batches:?}");
}

#[tokio::test(start_paused = true)]
async fn results_are_recorded_in_groups_and_a_failure_at_once() {
    let book = FakeBook::new(5);
    let fleet = FakeFleet::new(|h| match h {
        "h00000" => Behave::Fail(Duration::from_millis(10)),
        "h00001" => Behave::Succeed(Duration::from_millis(20)),
        "h00002" => Behave::Succeed(Duration::from_millis(30)),
        "h00003" => Behave::Succeed(Duration::from_millis(40)),
        _ => Behave::Succeed(Duration::from_millis(200)),
    });
    run(&book, &fleet, Mode::Wave(0), 10, DEADLINE).await;
    let ms = Duration::from_millis;
    assert_eq!(
        book.record_times(),
        vec![
            // The failure at once: the wave's failure budget may stop it.
            (ms(10), vec!["h00000".to_string()]),
            // Successes within RESULT_FLUSH of the last record.
            (ms(60), vec!["h00001".into(), "h00002".into(), "h00003".into()]),
            // The last one at once: nothing else is in flight.
            (ms(200), vec!["h00004".into()]),
        ]
    );
    let recorded = book.recorded();
    assert_eq!(recorded[0].record.detail, "agent reported failure: disk full");
    assert!(!recorded[0].record.outcome_unknown);
    assert_eq!(
        recorded[1].record.finished_at_unix_ms, 20,
        "stamped when answered, not when recorded"
    );
    assert_eq!(recorded[1].record.version, "v2");
}

#[tokio::test(start_paused = true)]
async fn a_wave_without_answers_for_its_deadline_is_stuck() {
    let book = FakeBook::new(8);
    let fleet = FakeFleet::new(|h| match h {
        "h00001" | "h00003" => Behave::Succeed(Duration::from_secs(5)),
        _ => Behave::Never,
    });
    let started = Instant::now();
    let report = run(&book, &fleet, Mode::Wave(0), 4, Duration::from_secs(30)).await;
    // The last answer came at 5 s: stuck 30 s later.
    assert_eq!(started.elapsed(), Duration::from_secs(35));
    let (deadline, hosts) = report.stuck.expect("stuck");
    assert_eq!(deadline, Duration::from_secs(30));
    // h0 and h2 from the first four, and h4, h5 sent when h1 and h3 answered.
    assert_eq!(hosts, vec!["h00000", "h00002", "h00004", "h00005"]);
    let recorded = book.recorded();
    let stuck: Vec<&Dispatch> = recorded.iter().filter(|d| d.record.outcome_unknown).collect();
    assert_eq!(stuck.len(), 4);
    assert!(stuck.iter().all(|d| d.record.state() == pb::HostState::Failed
        && d.record.detail == "stuck: no answer within the progress deadline (30s)"));
    // Written ahead, never sent: back to the queue.
    let unsent: Vec<String> = book.unsent.lock().unwrap().iter().map(|d| d.host.clone()).collect();
    assert_eq!(unsent, vec!["h00006", "h00007"]);
    // The calls given up on are dropped: they hold no place any more.
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(fleet.in_flight.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn reconcile_sends_only_what_it_was_given_and_is_never_stuck() {
    let book = FakeBook::new(50);
    let fleet = FakeFleet::every(Behave::Succeed(Duration::from_secs(600)));
    let first: Vec<Dispatch> = (1000..1003).map(host).collect();
    let started = Instant::now();
    let report = run_with(
        &book,
        &fleet,
        Mode::Reconcile,
        100,
        Duration::from_secs(30),
        first,
        watch::channel(0).1,
    )
    .await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(600),
        "waited past the progress deadline"
    );
    assert!(report.stuck.is_none());
    assert!(book.batches.lock().unwrap().is_empty(), "no intents taken");
    assert_eq!(*fleet.applied.lock().unwrap(), vec!["h01000", "h01001", "h01002"]);
    assert_eq!(report.answered, 3);
}

#[tokio::test(start_paused = true)]
async fn a_pause_stops_sending_and_what_was_sent_finishes() {
    let book = FakeBook::new(30);
    let fleet = FakeFleet::every(Behave::Succeed(Duration::from_secs(1)));
    let (control, watching) = watch::channel(0);
    let pause = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        book.stop.store(true, Ordering::SeqCst);
        control.send_replace(1);
    };
    let (report, ()) = tokio::join!(
        run_with(&book, &fleet, Mode::Wave(0), 10, DEADLINE, Vec::new(), watching),
        pause
    );
    // 10 answered at 1 s, 10 more sent then and answered at 2 s; the batch written
    // ahead goes back.
    assert_eq!(report.answered, 20);
    assert_eq!(fleet.applied.lock().unwrap().len(), 20);
    let unsent: Vec<String> = book.unsent.lock().unwrap().iter().map(|d| d.host.clone()).collect();
    assert_eq!(unsent, (20..30).map(|i| format!("h{i:05}")).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_host_in_doubt_already_on_the_version_is_not_applied_again() {
    let book = FakeBook::new(0);
    let mut fake = Arc::into_inner(FakeFleet::every(Behave::Succeed(Duration::from_secs(1)))).unwrap();
    fake.probed = Some("v2".into());
    let fleet = Arc::new(fake);
    let mut doubt = host(1);
    doubt.probe_first = true;
    let mut gone = host(2);
    gone.address = Arc::from("");
    let report = run_with(
        &book,
        &fleet,
        Mode::Reconcile,
        10,
        DEADLINE,
        vec![doubt, gone],
        watch::channel(0).1,
    )
    .await;
    assert!(fleet.applied.lock().unwrap().is_empty(), "nothing applied");
    assert_eq!(report.answered, 2);
    let recorded = book.recorded();
    let confirmed = recorded.iter().find(|d| d.host == "h00001").unwrap();
    assert_eq!(confirmed.record.state(), pb::HostState::Succeeded);
    assert_eq!(confirmed.record.detail, CONFIRMED);
    let gone = recorded.iter().find(|d| d.host == "h00002").unwrap();
    assert_eq!(gone.record.state(), pb::HostState::Failed);
    assert_eq!(gone.record.detail, "the host is no longer in the inventory");
}

/// A restart job's batches: picked once half the places are free, as many as are
/// free, never written ahead (what is picked is sent at once), so a job never has
/// more picked than it has places, and nothing is left unsent when it stops.
#[tokio::test(start_paused = true)]
async fn a_job_picks_as_places_free_and_never_ahead() {
    let book = FakeBook::new(10);
    // Each host answers after its own time: places free one by one.
    let fleet = FakeFleet::new(|h| {
        let i: u64 = h[1..].parse().unwrap();
        Behave::Succeed(Duration::from_secs(1 + i))
    });
    run(&book, &fleet, Mode::Job, 4, DEADLINE).await;
    assert_eq!(fleet.peak.load(Ordering::SeqCst), 4);
    assert_eq!(book.recorded().len(), 10, "every host restarted");
    let batches = book.taken();
    assert_eq!(batches[0], 4, "the first batch fills every place");
    assert!(
        batches[1..].iter().all(|&b| b >= 2),
        "later batches wait until half the places are free: {batches:?}"
    );
    assert!(book.unsent.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_freeze_holds_the_wave_until_its_time_and_the_deadline_counts_from_then() {
    let mut book = FakeBook::new(30);
    book.frozen_until = Some(Duration::from_secs(3_600));
    let fleet = FakeFleet::every(Behave::Succeed(Duration::from_secs(10)));
    let started = Instant::now();
    // A progress deadline far shorter than the freeze: waiting is not being stuck.
    let report = run(&book, &fleet, Mode::Wave(0), 10, Duration::from_secs(60)).await;
    assert_eq!(report.stuck, None);
    assert_eq!(report.answered, 30);
    // Nothing was sent during the hour; then three rounds of ten.
    assert_eq!(started.elapsed(), Duration::from_secs(3_600 + 30));
    let first = book.record_times().first().map(|(at, _)| *at);
    assert_eq!(first, Some(Duration::from_secs(3_610)));
}

#[tokio::test(start_paused = true)]
async fn a_pause_during_a_freeze_ends_the_wait_without_sending() {
    let mut book = FakeBook::new(5);
    book.frozen_until = Some(Duration::from_secs(3_600));
    let book = Arc::new(book);
    let fleet = FakeFleet::every(Behave::Succeed(Duration::from_secs(1)));
    let (tx, rx) = watch::channel(0u64);
    let pausing = {
        let book = book.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            book.stop.store(true, Ordering::SeqCst);
            let _ = tx.send(1);
            tx
        })
    };
    let started = Instant::now();
    let report = run_with(&book, &fleet, Mode::Wave(0), 5, DEADLINE, Vec::new(), rx).await;
    let _tx = pausing.await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(60),
        "woken by the pause, not the freeze's end"
    );
    assert_eq!(report.answered, 0);
    assert!(fleet.applied.lock().unwrap().is_empty());
}
