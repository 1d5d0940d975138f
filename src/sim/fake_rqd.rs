//! A fake RQD fleet: one in-process grpcio server on 127.0.0.1 that stands for every host
//! (point `[rqd] endpoint` at `"127.0.0.1:{port}"`), records every `LaunchFrame`, and — when
//! given a database — "runs" each frame for its layer's runtime and then completes it as
//! Cuebot's completion path would: proc deleted, host idle restored, frame SUCCEEDED (or, at
//! the configured failure rate, back to WAITING for a retry or DEAD), job FINISHED when done.
//!
//! Tests use [`Behaviour`] to make it refuse or stall launches.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerBuilder, ServerCredentials, UnarySink};
use parking_lot::Mutex;

use crate::pb::{
    rqd::{
        RqdStaticKillRunningFrameRequest, RqdStaticKillRunningFrameResponse,
        RqdStaticLaunchFrameRequest, RqdStaticLaunchFrameResponse, RunFrame,
    },
    rqd_grpc::{RqdInterface, create_rqd_interface},
};

/// The layer environment key the simulator reads a frame's runtime from (milliseconds).
pub const RUNTIME_ENV: &str = "SIM_RUNTIME_MS";

/// How often the fleet's hosts "report" (refresh `host_stat.ts_ping`).
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How the fake answers `LaunchFrame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Accept every launch.
    Accept,
    /// Refuse every launch with this gRPC status code.
    Refuse(RpcStatusCode),
    /// Answer after this long (longer than the client's deadline = a timeout).
    Stall(Duration),
    /// Start `per_mille` of the launches (they run and complete as accepted ones do) but
    /// answer those only after `delay`: RQD started the frame, the client saw a timeout.
    /// The other launches are accepted at once.
    StartSlowly {
        /// Launches per thousand that start and answer late.
        per_mille: u32,
        /// How late they answer.
        delay: Duration,
    },
}

#[derive(Default)]
struct Record {
    launches: Vec<RunFrame>,
    kills: Vec<(String, String)>,
    /// Frames running now: frame id → the procs (RunFrame.resource_id) running it.
    running: HashMap<String, Vec<String>>,
    /// Every launch of a frame that arrived while another proc still ran it.
    double_runs: Vec<DoubleRun>,
    /// Kills answered with an error instead of killing.
    refuse_kills: bool,
    /// Procs whose launch arrived after the client's deadline (it had given up on them).
    late: std::collections::HashSet<String>,
    /// Procs whose launch was refused.
    refused: std::collections::HashSet<String>,
    /// Procs that ended on RQD while the database had no such proc (nothing to complete).
    unknown: std::collections::HashSet<String>,
    /// Procs whose completion report is in flight, and since when.
    reporting: std::collections::HashSet<String>,
    reporting_since: Option<Instant>,
}

/// A frame that ran twice at once: the evidence of a double booking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DoubleRun {
    /// `frame.pk_frame`.
    pub frame: String,
    /// The proc already running it.
    pub running: String,
    /// The proc launched on top.
    pub launched: String,
}

impl Record {
    /// A frame starts running as `proc`; a second copy is recorded as a double run.
    fn start(&mut self, frame: &RunFrame) {
        let procs = self.running.entry(frame.frame_id.clone()).or_default();
        if let Some(other) = procs.first() {
            self.double_runs.push(DoubleRun {
                frame: frame.frame_id.clone(),
                running: other.clone(),
                launched: frame.resource_id.clone(),
            });
        }
        procs.push(frame.resource_id.clone());
    }

    /// `proc` of `frame` stopped running (it completed, or was killed).
    fn stop(&mut self, frame: &str, proc: &str) {
        if let Some(procs) = self.running.get_mut(frame) {
            procs.retain(|p| p != proc);
            if procs.is_empty() {
                self.running.remove(frame);
            }
        }
    }
}

/// Frames to complete, soonest due first.
type CompletionQueue = Mutex<BinaryHeap<Reverse<(Instant, Completion)>>>;

/// One frame the completer will finish.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Completion {
    proc: String,
    frame: String,
    failed: bool,
}

#[derive(Clone)]
struct Service {
    record: Arc<Mutex<Record>>,
    behaviour: Arc<Mutex<Behaviour>>,
    completions: Option<Arc<CompletionQueue>>,
    failure_per_mille: u32,
    counter: Arc<AtomicU64>,
    slow_counter: Arc<AtomicU64>,
}

impl RqdInterface for Service {
    fn launch_frame(
        &mut self,
        ctx: RpcContext<'_>,
        req: RqdStaticLaunchFrameRequest,
        sink: UnarySink<RqdStaticLaunchFrameResponse>,
    ) {
        let frame = req.run_frame.clone().unwrap_or_default();
        if ctx.deadline().exceeded() {
            // RQD runs it all the same; the soak wants to know who was late.
            self.record.lock().late.insert(frame.resource_id.clone());
        }
        let behaviour = *self.behaviour.lock();
        match behaviour {
            Behaviour::Refuse(code) => {
                let mut record = self.record.lock();
                record.refused.insert(frame.resource_id.clone());
                record.launches.push(frame);
                drop(record);
                ctx.spawn(async move {
                    let _ = sink
                        .fail(RpcStatus::with_message(code, "fake RQD refuses".into()))
                        .await;
                });
                return;
            }
            Behaviour::Stall(delay) => {
                self.record.lock().launches.push(frame);
                // Never sleep on a completion-queue thread: answer from a helper thread.
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = futures_executor::block_on(
                        sink.success(RqdStaticLaunchFrameResponse::new()),
                    );
                });
                return;
            }
            Behaviour::StartSlowly { per_mille, delay } => {
                let n = self.slow_counter.fetch_add(1, Ordering::Relaxed);
                let h = n.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 40;
                if (h % 1000) < u64::from(per_mille) {
                    self.run(frame);
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        let _ = futures_executor::block_on(
                            sink.success(RqdStaticLaunchFrameResponse::new()),
                        );
                    });
                    return;
                }
            }
            Behaviour::Accept => {}
        }
        self.run(frame);
        ctx.spawn(async move {
            let _ = sink.success(RqdStaticLaunchFrameResponse::new()).await;
        });
    }

    fn kill_running_frame(
        &mut self,
        ctx: RpcContext<'_>,
        req: RqdStaticKillRunningFrameRequest,
        sink: UnarySink<RqdStaticKillRunningFrameResponse>,
    ) {
        let refused = {
            let mut record = self.record.lock();
            record
                .kills
                .push((req.frame_id.clone(), req.message.clone()));
            if !record.refuse_kills {
                // RQD kills the frame if it runs it and answers OK either way.
                record.running.remove(&req.frame_id);
            }
            record.refuse_kills
        };
        ctx.spawn(async move {
            let _ = if refused {
                sink.fail(RpcStatus::with_message(
                    RpcStatusCode::UNAVAILABLE,
                    "fake RQD refuses kills".into(),
                ))
                .await
            } else {
                sink.success(RqdStaticKillRunningFrameResponse::new()).await
            };
        });
    }
}

impl Service {
    /// The frame starts: recorded as running and, with a database, queued for completion.
    fn run(&self, frame: RunFrame) {
        if let Some(queue) = &self.completions {
            let runtime_ms: u64 = frame
                .environment
                .get(RUNTIME_ENV)
                .and_then(|v| v.parse().ok())
                .unwrap_or(5_000);
            // Deterministic jitter (±25 %) and failures from a counter, so runs repeat.
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33;
            let jitter = 0.75 + (h % 500) as f64 / 1000.0;
            let failed = (h % 1000) < u64::from(self.failure_per_mille);
            let due = Instant::now() + Duration::from_millis((runtime_ms as f64 * jitter) as u64);
            queue.lock().push(Reverse((
                due,
                Completion {
                    proc: frame.resource_id.clone(),
                    frame: frame.frame_id.clone(),
                    failed,
                },
            )));
        }
        let mut record = self.record.lock();
        record.start(&frame);
        record.launches.push(frame);
    }
}

/// A running fake RQD fleet.
pub struct FakeRqd {
    server: grpcio::Server,
    port: u16,
    record: Arc<Mutex<Record>>,
    behaviour: Arc<Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
    completer: Option<JoinHandle<()>>,
    completed: Arc<AtomicU64>,
    queue: Option<Arc<CompletionQueue>>,
}

/// Options of the simulated fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// Database to complete frames in; `None` only records launches.
    pub database_url: Option<String>,
    /// Frames that fail, per thousand (they retry until `job.int_max_retries`, then die).
    pub failure_per_mille: u32,
}

impl FakeRqd {
    /// Starts the server on 127.0.0.1 (a free port) and, with a database, the completer.
    pub fn start(options: FleetOptions) -> Result<FakeRqd, grpcio::Error> {
        let record = Arc::new(Mutex::new(Record::default()));
        let behaviour = Arc::new(Mutex::new(Behaviour::Accept));
        let completions = options
            .database_url
            .as_ref()
            .map(|_| Arc::new(Mutex::new(BinaryHeap::new())));
        let service = Service {
            record: Arc::clone(&record),
            behaviour: Arc::clone(&behaviour),
            completions: completions.clone(),
            failure_per_mille: options.failure_per_mille,
            counter: Arc::new(AtomicU64::new(0)),
            slow_counter: Arc::new(AtomicU64::new(0)),
        };
        let env = Arc::new(
            grpcio::EnvBuilder::new()
                .cq_count(2)
                .name_prefix("fake-rqd")
                .build(),
        );
        let mut server = ServerBuilder::new(env)
            .register_service(create_rqd_interface(service))
            .build()?;
        let port = server.add_listening_port("127.0.0.1:0", ServerCredentials::insecure())?;
        server.start();
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicU64::new(0));
        let completions_handle = completions.clone();
        let completer = match (options.database_url, completions) {
            (Some(url), Some(queue)) => {
                let (stop, completed) = (Arc::clone(&stop), Arc::clone(&completed));
                Some(
                    std::thread::Builder::new()
                        .name("fake-rqd-complete".into())
                        .spawn({
                            let record = Arc::clone(&record);
                            move || complete_loop(&url, &queue, &stop, &completed, &record)
                        })
                        .map_err(|e| {
                            grpcio::Error::RpcFailure(RpcStatus::with_message(
                                RpcStatusCode::INTERNAL,
                                e.to_string(),
                            ))
                        })?,
                )
            }
            _ => None,
        };
        Ok(FakeRqd {
            server,
            port,
            record,
            behaviour,
            stop,
            completer,
            completed,
            queue: completions_handle,
        })
    }

    /// The port every simulated host's RQD answers on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes how launches are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock() = behaviour;
    }

    /// Every launch received so far.
    pub fn launches(&self) -> Vec<RunFrame> {
        self.record.lock().launches.clone()
    }

    /// Number of launches received.
    pub fn launch_count(&self) -> usize {
        self.record.lock().launches.len()
    }

    /// Makes `KillRunningFrame` fail (UNAVAILABLE) without killing, or work again.
    pub fn set_refuse_kills(&self, refuse: bool) {
        self.record.lock().refuse_kills = refuse;
    }

    /// Frames running now, with the procs running each.
    pub fn running(&self) -> HashMap<String, Vec<String>> {
        self.record.lock().running.clone()
    }

    /// Every launch that arrived while another proc still ran the same frame.
    pub fn double_runs(&self) -> Vec<DoubleRun> {
        self.record.lock().double_runs.clone()
    }

    /// Every kill received: (frame id, message).
    pub fn kills(&self) -> Vec<(String, String)> {
        self.record.lock().kills.clone()
    }

    /// A handle other threads can share (the server itself is not `Sync`).
    pub fn handle(&self) -> RqdHandle {
        RqdHandle {
            record: Arc::clone(&self.record),
            behaviour: Arc::clone(&self.behaviour),
            queue: self.queue.clone(),
            completed: Arc::clone(&self.completed),
        }
    }

    /// Frames completed in the database so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Stops the completer and the server.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.completer.take() {
            let _ = t.join();
        }
        let _ = futures_executor::block_on(self.server.shutdown());
    }
}

/// A shareable view of the fleet: its record, its behaviour and its completion queue.
#[derive(Clone)]
pub struct RqdHandle {
    record: Arc<Mutex<Record>>,
    behaviour: Arc<Mutex<Behaviour>>,
    queue: Option<Arc<CompletionQueue>>,
    completed: Arc<AtomicU64>,
}

impl RqdHandle {
    /// As [`FakeRqd::set_behaviour`].
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.behaviour.lock() = behaviour;
    }

    /// As [`FakeRqd::set_refuse_kills`].
    pub fn set_refuse_kills(&self, refuse: bool) {
        self.record.lock().refuse_kills = refuse;
    }

    /// As [`FakeRqd::running`].
    pub fn running(&self) -> HashMap<String, Vec<String>> {
        self.record.lock().running.clone()
    }

    /// As [`FakeRqd::double_runs`].
    pub fn double_runs(&self) -> Vec<DoubleRun> {
        self.record.lock().double_runs.clone()
    }

    /// The `resource_id` (proc) of every launch received so far.
    pub fn launched_procs(&self) -> std::collections::HashSet<String> {
        let record = self.record.lock();
        record
            .launches
            .iter()
            .map(|l| l.resource_id.clone())
            .collect()
    }

    /// Number of launches received.
    pub fn launch_count(&self) -> usize {
        self.record.lock().launches.len()
    }

    /// For each frame: (launches received, kills received).
    pub fn frame_history(&self) -> HashMap<String, (usize, usize)> {
        let record = self.record.lock();
        let mut out: HashMap<String, (usize, usize)> = HashMap::new();
        for l in &record.launches {
            out.entry(l.frame_id.clone()).or_default().0 += 1;
        }
        for (frame, _) in &record.kills {
            out.entry(frame.clone()).or_default().1 += 1;
        }
        out
    }

    /// Procs whose launch was refused, and procs that ended on RQD while the database had
    /// no such proc.
    pub fn refused_and_unknown(
        &self,
    ) -> (
        std::collections::HashSet<String>,
        std::collections::HashSet<String>,
    ) {
        let record = self.record.lock();
        (record.refused.clone(), record.unknown.clone())
    }

    /// Procs whose launch arrived after the client's deadline had passed.
    pub fn late_launches(&self) -> std::collections::HashSet<String> {
        self.record.lock().late.clone()
    }

    /// Frames completed in the database so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Relaxed)
    }

    /// Cuebot's kill through RQD, in process (the chaos stand-in's kills): the frame stops
    /// running unless kills are refused; returns whether it was killed.
    pub fn kill_frame(&self, frame: &str, message: &str) -> bool {
        let mut record = self.record.lock();
        record.kills.push((frame.to_owned(), message.to_owned()));
        if record.refuse_kills {
            return false;
        }
        record.running.remove(frame);
        true
    }

    /// Procs whose completion is still to come (running, their report in flight, or being
    /// retried).
    pub fn pending_procs(&self) -> std::collections::HashSet<String> {
        let mut procs: std::collections::HashSet<String> = self
            .queue
            .as_ref()
            .map(|q| {
                q.lock()
                    .iter()
                    .map(|Reverse((_, c))| c.proc.clone())
                    .collect()
            })
            .unwrap_or_default();
        procs.extend(self.record.lock().reporting.iter().cloned());
        procs
    }

    /// How long the completion report in flight has been running (and for how many procs).
    pub fn reporting(&self) -> Option<(usize, Duration)> {
        let record = self.record.lock();
        record
            .reporting_since
            .map(|t| (record.reporting.len(), t.elapsed()))
    }
}

fn complete_loop(
    url: &str,
    queue: &CompletionQueue,
    stop: &AtomicBool,
    completed: &AtomicU64,
    record: &Mutex<Record>,
) {
    let mut client: Option<postgres::Client> = None;
    let mut next_ping = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        // Every RQD reports in periodically and Cuebot stamps host_stat.ts_ping; without it
        // the farm would go stale (`[hosts] ping_timeout`) in any run longer than that.
        if now >= next_ping {
            if let Some(c) = client.as_mut().filter(|c| !c.is_closed()) {
                if let Err(e) = c.execute("UPDATE host_stat SET ts_ping = now()", &[]) {
                    log::warn!("fake RQD: host report failed: {e}");
                }
            } else if let Ok(c) = connect_reporter(url) {
                client = Some(c);
                continue;
            }
            next_ping = now + PING_INTERVAL;
        }
        let mut due = Vec::new();
        {
            let mut q = queue.lock();
            while q.peek().map(|Reverse((t, _))| *t <= now).unwrap_or(false) {
                if let Some(Reverse((_, c))) = q.pop() {
                    due.push(c);
                }
            }
        }
        if due.is_empty() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let conn = match client.as_mut() {
            Some(c) if !c.is_closed() => c,
            _ => match connect_reporter(url) {
                Ok(c) => client.insert(c),
                Err(e) => {
                    log::warn!("fake RQD: database unreachable, retrying completions: {e}");
                    requeue(queue, due);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        {
            // The processes exit before RQD reports them (and whether or not Cuebot still
            // knows their procs): a frame the report makes WAITING again is no longer running.
            let mut record = record.lock();
            for c in &due {
                record.stop(&c.frame, &c.proc);
            }
            record.reporting = due.iter().map(|c| c.proc.clone()).collect();
            record.reporting_since = Some(Instant::now());
        }
        let outcome = complete(conn, &due);
        {
            let mut record = record.lock();
            record.reporting.clear();
            record.reporting_since = None;
        }
        match outcome {
            Ok(deleted) => {
                completed.fetch_add(deleted.len() as u64, Ordering::Relaxed);
                let mut record = record.lock();
                for c in due.iter().filter(|c| !deleted.contains(&c.proc)) {
                    record.unknown.insert(c.proc.clone());
                }
            }
            Err(e) => {
                log::warn!(
                    "fake RQD: completing {} frames failed, retrying: {e}",
                    due.len()
                );
                client = None;
                requeue(queue, due);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The completer's connection, named so a stuck report can be found in pg_stat_activity.
fn connect_reporter(url: &str) -> Result<postgres::Client, postgres::Error> {
    let mut config: postgres::Config = url.parse()?;
    config.application_name("fake-rqd-report");
    config.connect(postgres::NoTls)
}

fn requeue(queue: &CompletionQueue, items: Vec<Completion>) {
    let at = Instant::now() + Duration::from_millis(100);
    let mut q = queue.lock();
    for c in items {
        q.push(Reverse((at, c)));
    }
}

/// Cuebot's completion of `procs` — (proc, frame, failed) — as the fleet completes its own
/// (the chaos stand-in completes and fails the frames it booked with it); returns the procs
/// found.
pub fn complete_procs(
    client: &mut postgres::Client,
    procs: &[(String, String, bool)],
) -> Result<u64, crate::db::DbError> {
    let due: Vec<Completion> = procs
        .iter()
        .map(|(proc, frame, failed)| Completion {
            proc: proc.clone(),
            frame: frame.clone(),
            failed: *failed,
        })
        .collect();
    Ok(complete(client, &due)?.len() as u64)
}

/// Cuebot's completion of a batch of frames, in one transaction, locking rows in the same
/// order as stagehand's booking (layer_stat, job_stat, hosts) so the two never deadlock.
fn complete(
    client: &mut postgres::Client,
    due: &[Completion],
) -> Result<Vec<String>, crate::db::DbError> {
    let mut tx = client.transaction()?;
    let procs: Vec<&str> = due.iter().map(|c| c.proc.as_str()).collect();
    // Stats first (the booking's lock order), for the procs as they look now; then only what
    // this transaction really deletes is completed and given back, as Cuebot's
    // deleteVirtualProc does: a proc another writer released meanwhile is not returned twice.
    let keys = tx.query(
        "SELECT DISTINCT pk_layer, pk_job FROM proc WHERE pk_proc = ANY($1)",
        &[&procs],
    )?;
    let mut stat_layers: Vec<String> = keys.iter().map(|r| r.get(0)).collect();
    let mut stat_jobs: Vec<String> = keys.iter().map(|r| r.get(1)).collect();
    stat_layers.sort();
    stat_layers.dedup();
    stat_jobs.sort();
    stat_jobs.dedup();
    let layer_keys: Vec<&str> = stat_layers.iter().map(String::as_str).collect();
    let job_keys: Vec<&str> = stat_jobs.iter().map(String::as_str).collect();
    crate::db::booking::lock_stat_rows(&mut tx, &layer_keys, &job_keys)?;
    let rows = tx.query(
        "DELETE FROM proc p WHERE p.pk_proc = ANY($1)
         RETURNING p.pk_proc, p.pk_host, p.pk_frame, p.pk_layer, p.pk_job, p.int_cores_reserved,
                   p.int_mem_reserved, p.int_gpus_reserved, p.int_gpu_mem_reserved",
        &[&procs],
    )?;
    if rows.is_empty() {
        tx.commit()?;
        return Ok(Vec::new());
    }
    let mut per_host: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
    let mut jobs: Vec<String> = Vec::new();
    let (mut ok_frames, mut failed_frames) = (Vec::new(), Vec::new());
    for r in &rows {
        let e = per_host.entry(r.get(1)).or_default();
        e.0 += r.get::<_, i64>(5);
        e.1 += r.get::<_, i64>(6);
        e.2 += i64::from(r.get::<_, i32>(7));
        e.3 += r.get::<_, i64>(8);
        jobs.push(r.get(4));
        let frame: String = r.get(2);
        let failed = due.iter().any(|c| c.frame == frame && c.failed);
        if failed {
            failed_frames.push(frame)
        } else {
            ok_frames.push(frame)
        }
    }
    jobs.sort();
    jobs.dedup();
    let hosts: Vec<&String> = per_host.keys().collect();
    // Cuebot's usage counters of a successful frame (run time in whole seconds, at least 1):
    // the layer history the reservation policy estimates run times from.
    tx.execute(
        "UPDATE layer_usage lu
            SET int_clock_time_success = lu.int_clock_time_success + t.secs,
                int_frame_success_count = lu.int_frame_success_count + t.n,
                int_core_time_success = lu.int_core_time_success + t.core_secs,
                int_clock_time_high = greatest(lu.int_clock_time_high, t.hi),
                int_clock_time_low = CASE WHEN lu.int_clock_time_low = 0 THEN t.lo
                                          ELSE least(lu.int_clock_time_low, t.lo) END
           FROM (SELECT f.pk_layer, sum(r.secs)::int AS secs, count(*)::int AS n,
                        sum(r.secs * f.int_cores / 100)::bigint AS core_secs,
                        max(r.secs)::int AS hi, min(r.secs)::int AS lo
                   FROM frame f
                  CROSS JOIN LATERAL (SELECT greatest(1, ceil(extract(epoch FROM now() - f.ts_started)))::bigint AS secs) r
                  WHERE f.pk_frame = ANY($1) AND f.str_state = 'RUNNING' AND f.ts_started IS NOT NULL
                  GROUP BY f.pk_layer) t
          WHERE lu.pk_layer = t.pk_layer",
        &[&ok_frames],
    )?;
    tx.execute(
        "UPDATE frame SET str_state = 'SUCCEEDED', int_exit_status = 0, ts_stopped = now(), ts_updated = now(),
                int_version = int_version + 1
          WHERE pk_frame = ANY($1) AND str_state = 'RUNNING'",
        &[&ok_frames],
    )?;
    if !failed_frames.is_empty() {
        tx.execute(
            "UPDATE frame f SET str_state = CASE WHEN f.int_retries >= j.int_max_retries THEN 'DEAD' ELSE 'WAITING' END,
                    int_exit_status = 1, ts_stopped = now(), ts_updated = now(), int_version = f.int_version + 1
               FROM job j WHERE j.pk_job = f.pk_job AND f.pk_frame = ANY($1) AND f.str_state = 'RUNNING'",
            &[&failed_frames],
        )?;
    }
    tx.execute(
        "SELECT 1 FROM host WHERE pk_host = ANY($1) ORDER BY pk_host FOR UPDATE",
        &[&hosts],
    )?;
    let cores: Vec<i64> = per_host.values().map(|v| v.0).collect();
    let mem: Vec<i64> = per_host.values().map(|v| v.1).collect();
    let gpus: Vec<i64> = per_host.values().map(|v| v.2).collect();
    let gpu_mem: Vec<i64> = per_host.values().map(|v| v.3).collect();
    tx.execute(
        "UPDATE host h SET int_cores_idle = least(h.int_cores, h.int_cores_idle + t.c),
                int_mem_idle = least(h.int_mem, h.int_mem_idle + t.m),
                int_gpus_idle = least(h.int_gpus, h.int_gpus_idle + t.g),
                int_gpu_mem_idle = least(h.int_gpu_mem, h.int_gpu_mem_idle + t.gm)
           FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[]) AS t(id, c, m, g, gm)
          WHERE h.pk_host = t.id",
        &[&hosts, &cores, &mem, &gpus, &gpu_mem],
    )?;
    tx.execute(
        "UPDATE job j SET str_state = 'FINISHED', ts_stopped = now()
           FROM job_stat js
          WHERE js.pk_job = j.pk_job AND j.pk_job = ANY($1) AND j.str_state = 'PENDING'
            AND js.int_waiting_count = 0 AND js.int_running_count = 0 AND js.int_depend_count = 0
            AND js.int_dead_count = 0",
        &[&jobs],
    )?;
    tx.commit()?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
