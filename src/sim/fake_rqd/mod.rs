//! A fake RQD fleet: one in-process grpcio server on 127.0.0.1 that stands for every host
//! (point `[rqd] endpoint` at `"127.0.0.1:{port}"`), records every `LaunchFrame`, and — when
//! given a database — "runs" each frame for its layer's runtime and then completes it as
//! Cuebot's completion path would: proc deleted, host idle restored, frame SUCCEEDED (or, at
//! the configured failure rate, back to WAITING for a retry or DEAD), job FINISHED when done.
//!
//! Tests use [`Behaviour`] to make it refuse, stall or start-but-answer-late launches, and
//! `set_refuse_kills` to make kills fail; it records which frames run now and every frame
//! that ran twice. [`RqdHandle`] shares all that with other threads (the chaos soak's
//! sampler and Cuebot stand-in); `report` is its completion path.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerBuilder, ServerCredentials, UnarySink};
use parking_lot::Mutex;

use crate::db::licenses::{LICENSES_ENV, parse_list};
use crate::pb::{
    rqd::{
        RqdStaticKillRunningFrameRequest, RqdStaticKillRunningFrameResponse,
        RqdStaticLaunchFrameRequest, RqdStaticLaunchFrameResponse, RunFrame,
    },
    rqd_grpc::{RqdInterface, create_rqd_interface},
};

mod depends;
mod handle;
mod memory;
mod report;

use super::licenses::{LICENSE_DENIED_EXIT, LicenseSeats};

pub use handle::RqdHandle;
pub(crate) use memory::MEMORY_INCREASE_KB;
use report::complete_loop;
pub(crate) use report::complete_procs;

/// The layer environment key the simulator reads a frame's runtime from (milliseconds).
pub const RUNTIME_ENV: &str = "SIM_RUNTIME_MS";

/// The layer environment key the simulator reads the memory a frame uses from (KB). A frame
/// "uses" 90–100 % of it; one whose use is above its RunFrame's hard memory limit is killed
/// and fails with [`EXIT_MEMORY_FAILURE`], its max RSS at the limit. Without it a frame
/// reports no memory use.
pub const MEM_USED_ENV: &str = "SIM_MEM_USED_KB";

/// Cuebot's out-of-memory exit (`Dispatcher.EXIT_STATUS_MEMORY_FAILURE`): RQD reports it
/// for a frame it killed for memory, and Cuebot's completion raises the layer's memory.
pub const EXIT_MEMORY_FAILURE: i32 = 33;

/// The exit of the other simulated failures (`failure_per_mille`).
const EXIT_FAILED: i32 = 1;

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
    /// Every launch waits this long in RQD's own request queue, then starts and is
    /// answered: past the client's deadline, a kill sent after the timeout finds no frame
    /// (RQD answers "OK" to a kill of a frame it does not know) and the frame starts later.
    StartLate(Duration),
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
    /// The license server the frames check seats out of (`None`: licenses are not faked).
    licenses: Option<LicenseSeats>,
    /// Licensed frames that started and have yet to check their seats out (the completer
    /// looks their hosts up, then queues their completion or denial).
    starts: Vec<(Instant, Completion, Vec<String>)>,
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

    /// A kill of `frame` arrived: recorded, and the frame stops running unless kills are
    /// refused. Returns whether it was killed.
    fn kill(&mut self, frame: &str, message: &str) -> bool {
        self.kills.push((frame.to_owned(), message.to_owned()));
        if self.refuse_kills {
            return false;
        }
        if let (Some(seats), Some(procs)) = (&self.licenses, self.running.get(frame)) {
            procs.iter().for_each(|p| seats.check_in(p));
        }
        // RQD kills the frame if it runs it and answers OK either way.
        self.running.remove(frame);
        true
    }

    /// `proc` of `frame` stopped running (it completed, or was killed).
    fn stop(&mut self, frame: &str, proc: &str) {
        if let Some(seats) = &self.licenses {
            seats.check_in(proc);
        }
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

/// One frame the completer will finish: its exit status (0 succeeded; a refused license
/// ends it with [`LICENSE_DENIED_EXIT`]) and the most memory it used (KB), as RQD's
/// FrameCompleteReport carries them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Completion {
    proc: String,
    frame: String,
    exit: i32,
    max_rss_kb: i64,
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
            Behaviour::StartLate(delay) => {
                let service = self.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    service.run(frame);
                    let _ = futures_executor::block_on(
                        sink.success(RqdStaticLaunchFrameResponse::new()),
                    );
                });
                return;
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
        let refused = !self.record.lock().kill(&req.frame_id, &req.message);
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
            let (oom, max_rss_kb) = memory_use(&frame, h);
            let exit = if oom {
                EXIT_MEMORY_FAILURE
            } else if failed {
                EXIT_FAILED
            } else {
                0
            };
            let due = Instant::now() + Duration::from_millis((runtime_ms as f64 * jitter) as u64);
            let completion = Completion {
                proc: frame.resource_id.clone(),
                frame: frame.frame_id.clone(),
                exit,
                max_rss_kb,
            };
            let licenses = frame
                .environment
                .get(LICENSES_ENV)
                .map(|v| parse_list(v))
                .unwrap_or_default();
            let mut record = self.record.lock();
            if record.licenses.is_some() && !licenses.is_empty() {
                record.starts.push((due, completion, licenses));
            } else {
                drop(record);
                queue.lock().push(Reverse((due, completion)));
            }
        }
        let mut record = self.record.lock();
        record.start(&frame);
        record.launches.push(frame);
    }
}

/// Whether `frame` runs out of memory, and the most it used (KB): 90–100 % of the layer's
/// [`MEM_USED_ENV`] (from the hash `h`), cut at the RunFrame's hard limit when above it.
fn memory_use(frame: &RunFrame, h: u64) -> (bool, i64) {
    let Some(used) = frame
        .environment
        .get(MEM_USED_ENV)
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return (false, 0);
    };
    let used = (used as f64 * (0.9 + ((h >> 10) % 101) as f64 / 1000.0)) as i64;
    let limit = frame.hard_memory_limit;
    if limit > 0 && used > limit {
        (true, limit)
    } else {
        (false, used)
    }
}

/// A running fake RQD fleet. Its accessors are the [`RqdHandle`]'s, which holds everything
/// but the server itself.
pub struct FakeRqd {
    server: grpcio::Server,
    port: u16,
    shared: RqdHandle,
    stop: Arc<AtomicBool>,
    completer: Option<JoinHandle<()>>,
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
            shared: RqdHandle {
                record,
                behaviour,
                queue: completions_handle,
                completed,
            },
            stop,
            completer,
        })
    }

    /// The port every simulated host's RQD answers on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Changes how launches are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.set_behaviour(behaviour);
    }

    /// Every launch received so far.
    pub fn launches(&self) -> Vec<RunFrame> {
        self.shared.record.lock().launches.clone()
    }

    /// Number of launches received.
    pub fn launch_count(&self) -> usize {
        self.shared.launch_count()
    }

    /// Makes `KillRunningFrame` fail (UNAVAILABLE) without killing, or work again.
    pub fn set_refuse_kills(&self, refuse: bool) {
        self.shared.set_refuse_kills(refuse);
    }

    /// Frames running now, with the procs running each.
    pub fn running(&self) -> HashMap<String, Vec<String>> {
        self.shared.running()
    }

    /// Every launch that arrived while another proc still ran the same frame.
    pub fn double_runs(&self) -> Vec<DoubleRun> {
        self.shared.double_runs()
    }

    /// Makes the frames check their `CUE_LICENSES` seats out of `seats` when they start
    /// (a refused frame ends at once, denied); until then licenses are not faked.
    pub fn set_licenses(&self, seats: LicenseSeats) {
        self.shared.record.lock().licenses = Some(seats);
    }

    /// Every kill received: (frame id, message).
    pub fn kills(&self) -> Vec<(String, String)> {
        self.shared.record.lock().kills.clone()
    }

    /// A handle other threads can share (the server itself is not `Sync`).
    pub(crate) fn handle(&self) -> RqdHandle {
        self.shared.clone()
    }

    /// Frames completed in the database so far.
    pub fn completed(&self) -> u64 {
        self.shared.completed()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(used_kb: Option<i64>, hard_kb: i64) -> RunFrame {
        let mut f = RunFrame::new();
        f.hard_memory_limit = hard_kb;
        if let Some(kb) = used_kb {
            f.environment.insert(MEM_USED_ENV.into(), kb.to_string());
        }
        f
    }

    #[test]
    fn a_frame_above_its_hard_limit_runs_out_of_memory_at_the_limit() {
        // 90–100 % of 5,000,000 KB is above a 4,000,000 KB limit whatever the hash.
        for h in [0, 7 << 10, 100 << 10, u64::MAX >> 33] {
            assert_eq!(
                memory_use(&frame(Some(5_000_000), 4_000_000), h),
                (true, 4_000_000)
            );
            let (oom, rss) = memory_use(&frame(Some(5_000_000), 8_000_000), h);
            assert!(!oom && (4_500_000..=5_000_000).contains(&rss), "{rss}");
        }
        assert_eq!(memory_use(&frame(None, 4_000_000), 3), (false, 0));
    }
}
