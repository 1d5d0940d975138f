//! Launching committed bookings on RQD, in parallel across hosts, and undoing those RQD
//! refuses.
//!
//! Booking threads hand each committed frame to this pool and go on booking; the launcher
//! threads (`rqd-launch-N`) call RQD with a deadline. A failed launch may still have started
//! the frame (the reply timed out, the connection broke after the request went out), so it
//! is never simply undone: RQD is first told to kill the frame, and only once RQD answers —
//! it killed the frame or never knew it — is the booking compensated in the database (proc
//! deleted, host idle restored, frame back to WAITING with exit status 299, version-guarded)
//! and its cap charge and host reservation given back. While RQD does not answer, the proc
//! stays (its cores stay taken, the frame RUNNING) and the kill is tried again with back-off,
//! as Cuebot's own lost-proc handling does. RQD also answers "OK" to a kill of a frame it
//! does not know yet, and a launch that timed out may still sit in its request queue and
//! start after such a kill: unless RQD refused the launch outright, the kill is sent again
//! two RQD timeouts past the launch's deadline before the booking is undone. Shutdown drains
//! the queue: every committed frame is launched, or compensated once the grace period is
//! over, before the process exits.
//!
//! Every booking is also recorded as pending in the database (`stagehand.pending_launch`, in
//! the booking's own transaction) until RQD accepts it or it is undone, so a booking whose
//! instance died in between is not stranded: the instance that holds the show next sweeps
//! for such rows and resolves them the same way, kill first, undo once RQD answers.
//!
//! "Died" can only mean "stopped heartbeating": a frozen instance (SIGSTOP, a paused VM)
//! looks the same and wakes up with the same bookings in its queue. So a booking's row is
//! claimed for launching (V004) — written claimed by the booking transaction itself, and
//! claimed again by the launcher only when the task waited past the budget — and a sweeper
//! takes only rows with no recent claim; whichever comes second sees the other's mark and
//! backs off, so a frame the sweeper undid is not launched by the instance that woke up.
//! Writing the claim with the booking keeps a statement and a row update per frame off the
//! launch path (a cold fill books and launches some 15,000 frames). A claim is trusted for
//! `CLAIM_BUDGET` by this process's monotonic clock (which counts a freeze) and sweepers
//! wait that plus the RQD timeout; what is left is a freeze in the few instructions between
//! the budget check and the request leaving the socket — RQD takes no fencing token, so no
//! scheduler can close that window entirely.

use std::{
    collections::HashMap,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::Shared;

mod undo;

use crate::{
    accounting::Charge,
    config::Config,
    db::{
        self,
        booking::Placement,
        jobs::{FrameWork, LayerWork, PendingJob},
    },
    frameset::FrameSet,
    health::Health,
    ids::{ProcId, ShowId},
    metrics,
    model::{CoresGpus, Resources},
    rqd::{self, FrameLaunch},
};
use undo::{
    Unconfirmed, Unsure, confirm_kill, forget_pending, kill_on, kill_then_undo, quiet_by_grace,
    retry_kill,
};
pub(crate) use undo::{undo, undo_booking};

/// What a layer's frames share in the `RunFrame` RQD receives.
pub(crate) struct LayerLaunch<'a> {
    /// The job.
    pub job: &'a PendingJob,
    /// The layer.
    pub layer: &'a LayerWork,
    /// Its parsed frame range.
    pub frames: &'a FrameSet,
    /// `job_env` rows.
    pub job_env: &'a [(String, String)],
    /// `layer_env` rows (after the job's, so they win).
    pub layer_env: &'a [(String, String)],
}

impl LayerLaunch<'_> {
    /// The launch of `frame`'s chunk as proc `proc`, or `None`
    /// (logged and counted) when the chunk cannot be built from the layer's range.
    pub(crate) fn describe(
        &self,
        frame: &FrameWork,
        proc: &ProcId,
        amount: Resources,
    ) -> Option<FrameLaunch> {
        let (job, layer) = (self.job, self.layer);
        let chunk_size = layer.chunk_size.clamp(1, i64::from(u32::MAX)) as u32;
        let chunk = match self.frames.chunk(frame.number, chunk_size) {
            Ok(c) => c,
            Err(e) => {
                metrics::BAD_INPUT.with_label_values(&["frame_chunk"]).inc();
                log::warn!("frame {} of layer {}: {e}", frame.name, layer.name);
                return None;
            }
        };
        let mut env: Vec<(String, String)> = self.job_env.to_vec();
        env.extend(self.layer_env.iter().cloned());
        Some(FrameLaunch {
            proc: proc.clone(),
            job_id: job.id.clone(),
            job_name: job.name.clone(),
            frame_id: frame.id.clone(),
            frame_name: frame.name.clone(),
            layer_id: layer.id.clone(),
            layer_name: layer.name.clone(),
            command: layer.command.clone(),
            range: layer.range.clone(),
            chunk_size: layer.chunk_size,
            frame_number: chunk.start,
            chunk_end: chunk.end,
            frame_spec: chunk.spec,
            user: job.user.clone(),
            uid: job.uid,
            log_dir: job.log_dir.clone(),
            show: job.show_name.clone(),
            shot: job.shot.clone(),
            loki_url: job.loki_url.clone(),
            os: job.os.trim().to_owned(),
            threadable: layer.threadable,
            amount,
            env,
        })
    }
}

/// One committed booking to launch.
pub struct LaunchTask {
    /// What was booked.
    pub placement: Placement,
    /// The frame version the booking produced (guards the compensation).
    pub version: i32,
    /// The RunFrame inputs.
    pub launch: FrameLaunch,
    /// The cap charge to give back on failure.
    pub charge: Charge,
    /// When the booking's transaction had not begun yet (this process's monotonic clock): its
    /// pending row was written claimed, so the claim is at most this old.
    pub claimed_before: Instant,
    /// When the booking committed: what `stagehand_booking_to_launch_seconds` counts from.
    pub committed: Instant,
}

/// A launch whose pending row was claimed at `at` (this process's monotonic clock).
struct Claimed {
    task: LaunchTask,
    at: Instant,
}

/// What the launcher threads share besides the queue.
struct Launchers {
    /// Launches claimed together by one thread, for any thread to launch.
    claimed: (Sender<Claimed>, Receiver<Claimed>),
    unconfirmed: Unconfirmed,
    /// Launches RQD accepted, whose pending-launch rows are deleted in bulk (kept whole: one
    /// whose frame moved on meanwhile is killed, see [`flush_acked`]).
    acked: Mutex<Vec<LaunchTask>>,
    /// When the next sweep for dead instances' bookings is due.
    next_sweep: Mutex<Option<Instant>>,
}

/// Acknowledged launches are forgotten in the database in groups of this many (or on the
/// next idle tick): one statement per group, not per frame.
const ACK_BATCH: usize = 64;

/// How often the holder of a show looks for bookings its dead predecessor never launched.
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How often the first launcher thread, when idle, forgets acknowledged launches, retries
/// due kills and checks whether a sweep is due: the pool's periodic duties.
const DUTY_TICK: Duration = Duration::from_millis(100);

/// How often the other launcher threads wake when idle. They have no duty of their own: a
/// new task or a hand-over wakes them. With 64 threads a 100 ms tick was 640 wake-ups a
/// second on an idle instance; they still tick, slowly, so a duty is not left waiting on
/// the first thread while it sits in a slow RQD call.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// At most this many launches are claimed by one statement.
const CLAIM_BATCH: usize = 32;

/// A launch claim older than this (by this process's monotonic clock, which counts a
/// SIGSTOP too) is renewed before RQD is called; sweepers leave a row alone until its claim
/// is older than this plus the RQD timeout (see V004).
const CLAIM_BUDGET: Duration = Duration::from_secs(2);

/// Starts `threads` launcher threads reading from a new queue; returns its sender.
pub fn start(
    shared: Arc<Shared>,
    threads: usize,
) -> std::io::Result<(Sender<LaunchTask>, Vec<JoinHandle<()>>)> {
    start_with(shared, threads, None)
}

/// [`start`] with every launcher thread registered for `/healthz`: a launcher that panicked
/// (the first one also sweeps for dead instances' bookings) shows, and stops the watchdog.
pub(crate) fn start_watched(
    shared: Arc<Shared>,
    threads: usize,
    health: &Health,
) -> std::io::Result<(Sender<LaunchTask>, Vec<JoinHandle<()>>)> {
    start_with(shared, threads, Some(health))
}

fn start_with(
    shared: Arc<Shared>,
    threads: usize,
    health: Option<&Health>,
) -> std::io::Result<(Sender<LaunchTask>, Vec<JoinHandle<()>>)> {
    let (tx, rx) = crossbeam_channel::bounded::<LaunchTask>(100_000);
    let pool = Arc::new(Launchers {
        claimed: crossbeam_channel::unbounded(),
        unconfirmed: Unconfirmed::default(),
        acked: Mutex::default(),
        next_sweep: Mutex::default(),
    });
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let rx: Receiver<LaunchTask> = rx.clone();
        let (shared, pool) = (Arc::clone(&shared), Arc::clone(&pool));
        let name = format!("rqd-launch-{i}");
        let alive = health.map(|h| h.register(&name));
        handles.push(std::thread::Builder::new().name(name).spawn(move || {
            let _alive = alive;
            launcher(&shared, &rx, &pool, i == 0);
        })?);
    }
    Ok((tx, handles))
}

/// The body of a launcher thread: runs until every sender is gone and the queue is empty (a
/// drain, not a drop), retrying unconfirmed kills in between; the first thread also sweeps
/// for bookings dead instances left behind.
fn launcher(shared: &Shared, rx: &Receiver<LaunchTask>, pool: &Launchers, sweeper: bool) {
    let unconfirmed = &pool.unconfirmed;
    let tick = if sweeper { DUTY_TICK } else { IDLE_TICK };
    loop {
        for u in unconfirmed.take_due(false) {
            retry_kill(shared, u, unconfirmed);
        }
        // Launches another thread claimed come first: their claims are ageing.
        if let Ok(claimed) = pool.claimed.1.try_recv() {
            launch_claimed(shared, pool, claimed);
            continue;
        }
        // An idle thread wakes for either queue: launches another thread claimed used to
        // wait for the next queued task or the tick, up to 100 ms (issue 14's launch tail).
        let mut closed = false;
        crossbeam_channel::select! {
            // The pool holds both ends of this one: it never disconnects.
            recv(pool.claimed.1) -> claimed => {
                if let Ok(claimed) = claimed {
                    launch_claimed(shared, pool, claimed);
                }
            }
            recv(rx) -> task => match task {
                // Past the shutdown grace there is no time to launch: undo instead, so no
                // frame is left RUNNING without a process.
                Ok(task) if shared.past_grace() => undo(shared, &task),
                Ok(task) => claim_queued(shared, pool, rx, task),
                Err(_) => closed = true,
            },
            default(tick) => {
                flush_acked(shared, pool);
                if sweeper && sweep_due(pool) {
                    sweep(shared);
                }
            }
        }
        if closed {
            while let Ok(claimed) = pool.claimed.1.try_recv() {
                launch_claimed(shared, pool, claimed);
            }
            break;
        }
    }
    flush_acked(shared, pool);
    // Shutdown: one last kill for each unconfirmed launch, once it can no longer start late;
    // what RQD still does not confirm keeps its proc (safe: its cores stay taken) and its
    // pending row, for the show's next holder to sweep.
    for u in unconfirmed.take_due(true) {
        if quiet_by_grace(shared, &u) && confirm_kill(shared, &u.task.placement) {
            undo(shared, &u.task);
        } else {
            log::error!(
                "shutting down with the launch of frame {} on {} unconfirmed; its proc stays",
                u.task.placement.frame,
                u.task.placement.host_name
            );
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Claims `first` and what else is queued (up to [`CLAIM_BATCH`]) in one statement, queues
/// the claimed ones for every launcher thread and launches one itself.
///
/// A task whose booking wrote its row claimed and is still within [`CLAIM_BUDGET`] of it
/// needs no statement: the common case, which keeps the claim off the booking's critical
/// path. Only tasks that waited longer (a long queue, a freeze) are claimed again here.
fn claim_queued(shared: &Shared, pool: &Launchers, rx: &Receiver<LaunchTask>, first: LaunchTask) {
    let mut tasks = vec![first];
    tasks.extend(rx.try_iter().take(CLAIM_BATCH - 1));
    let (fresh, stale): (Vec<LaunchTask>, Vec<LaunchTask>) = tasks
        .into_iter()
        .partition(|t| t.claimed_before.elapsed() <= CLAIM_BUDGET);
    let mut claimed: Vec<Claimed> = fresh
        .into_iter()
        .map(|task| Claimed {
            at: task.claimed_before,
            task,
        })
        .collect();
    if !stale.is_empty() {
        let (renewed, at) = claim(shared, stale);
        claimed.extend(renewed.into_iter().map(|task| Claimed { task, at }));
    }
    let mut claimed = claimed.into_iter();
    let mine = claimed.next();
    for c in claimed {
        // The channel lives as long as the pool: a send cannot fail.
        let _ = pool.claimed.0.send(c);
    }
    if let Some(c) = mine {
        launch_claimed(shared, pool, c);
    }
}

/// Launches a claimed task, renewing its claim first while it is older than
/// `CLAIM_BUDGET` (dropped if a sweeper took it meanwhile); past the shutdown grace the
/// booking is undone instead. A renewal is judged by when it was sent, like any claim: its
/// answer can come late (a freeze, a slow network), and a claim that aged past the budget
/// on the way may already be a sweeper's.
fn launch_claimed(shared: &Shared, pool: &Launchers, claimed: Claimed) {
    let mut claimed = claimed;
    loop {
        if shared.past_grace() {
            undo(shared, &claimed.task);
            return;
        }
        if claimed.at.elapsed() <= CLAIM_BUDGET {
            break;
        }
        let (mut renewed, at) = claim(shared, vec![claimed.task]);
        match renewed.pop() {
            Some(task) => claimed = Claimed { task, at },
            None => return,
        }
    }
    if let Some(task) = launch_one(shared, claimed.task, &pool.unconfirmed) {
        let full = {
            let mut acked = pool.acked.lock();
            acked.push(task);
            acked.len() >= ACK_BATCH
        };
        if full {
            flush_acked(shared, pool);
        }
    }
}

/// Claims the pending-launch rows of `tasks` right before launching them (V004) and returns
/// the tasks claimed. A task whose row a sweeper took (this instance looked dead to it: a
/// freeze longer than the lease) is not launched — the sweeper kills and undoes it — and
/// its charge stays counted until a re-sync sees the sweeper's undo (given back at once, it
/// left the counters low while the proc still stood). While the database does not answer nothing is launched (an
/// unclaimed launch could run a frame a sweeper already undid); past the grace the tasks
/// are undone. Also returns when the claim was made, by this process's clock, taken before
/// the statement went out: the claim can only be younger than that, so a freeze after the
/// statement counts against the budget instead of resetting it.
fn claim(shared: &Shared, tasks: Vec<LaunchTask>) -> (Vec<LaunchTask>, Instant) {
    let mut delay = Duration::from_millis(100);
    loop {
        let at = Instant::now();
        let keys: Vec<&str> = tasks.iter().map(|t| t.placement.proc.as_str()).collect();
        let found = shared.with_conn(|c| db::launches::claim(c.client(), &keys));
        match found {
            Ok(claimed) => {
                let claimed: HashMap<ProcId, bool> = claimed.into_iter().collect();
                let (mine, swept): (Vec<_>, Vec<_>) = tasks
                    .into_iter()
                    .partition(|t| claimed.contains_key(&t.placement.proc));
                let (mine, moved): (Vec<_>, Vec<_>) =
                    mine.into_iter().partition(|t| claimed[&t.placement.proc]);
                for task in moved {
                    log::warn!(
                        "frame {} on {} was stopped before its launch; not launching it",
                        task.placement.frame,
                        task.placement.host_name
                    );
                    // The undo finds the frame moved and only forgets the pending row
                    // (counted as `stagehand_compensations_total{result="frame_moved"}`).
                    undo(shared, &task);
                }
                for task in swept {
                    metrics::ORPHANED_LAUNCHES
                        .with_label_values(&["swept_before_launch"])
                        .inc();
                    log::warn!(
                        "frame {} on {} was taken over by another instance before its launch \
                         (this one looked dead); not launching it",
                        task.placement.frame,
                        task.placement.host_name
                    );
                }
                return (mine, at);
            }
            Err(e) => {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                if shared.past_grace() {
                    for task in &tasks {
                        undo(shared, task);
                    }
                    return (Vec::new(), at);
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Launches one booking; gives it back when RQD accepted it.
fn launch_one(shared: &Shared, task: LaunchTask, unconfirmed: &Unconfirmed) -> Option<LaunchTask> {
    let config = shared.config.load();
    let endpoint = config.rqd_endpoint(&task.placement.host_name);
    let frame = rqd::run_frame(
        &task.launch,
        config.rqd.memory_soft_limit,
        config.rqd.memory_hard_limit,
        now_ms(),
    );
    let started = Instant::now();
    let result = shared.rqd.launch(&endpoint, frame, config.rqd.timeout);
    metrics::RQD_LAUNCH_SECONDS.observe(started.elapsed().as_secs_f64());
    let rqd::LaunchFailed { error, attempts } = match result {
        Ok(()) => {
            metrics::RQD_LAUNCHES.with_label_values(&["ok"]).inc();
            metrics::BOOKING_TO_LAUNCH_SECONDS.observe(task.committed.elapsed().as_secs_f64());
            return Some(task);
        }
        Err(e) => e,
    };
    metrics::RQD_LAUNCHES
        .with_label_values(&[&error.label()])
        .inc();
    shared.stats.launch_failed();
    log::warn!(
        "launch of frame {} on host {} failed ({error}); killing it before undoing the booking",
        task.placement.frame,
        task.placement.host_name
    );
    // A refusal of the only request sent was RQD's answer to it; anything else, or a
    // refusal of a retry, may have left a request in RQD's queue, to start after a kill
    // that found nothing (see `rqd::quiet_after`).
    let quiet = match error {
        rqd::RqdError::Rejected { .. } if attempts == 1 => started,
        _ => started + rqd::quiet_after(config.rqd.timeout, attempts),
    };
    let unsure = Unsure {
        task,
        due: Instant::now(),
        backoff: Duration::from_secs(1),
        quiet,
    };
    kill_then_undo(shared, unsure, unconfirmed);
    None
}

/// Forgets the pending-launch rows of the launches RQD accepted (kept for the next try if
/// the database is away: a leftover row only costs a needless kill after a crash), except
/// those whose frame moved on since the booking ([`db::launches::forget_acked`]): Cuebot may
/// have stopped it with a kill that reached RQD before the launch and found nothing, so the
/// frame may now run without the database giving it to this proc. Such a launch is killed on
/// RQD and its booking's remains resolved the way a failed launch's are (the compensation
/// finds the frame moved and leaves it to its new owner); its row stays, so the frame is
/// not booked again, until RQD confirms the kill.
fn flush_acked(shared: &Shared, pool: &Launchers) {
    let tasks = std::mem::take(&mut *pool.acked.lock());
    if tasks.is_empty() {
        return;
    }
    let keys: Vec<&str> = tasks.iter().map(|t| t.placement.proc.as_str()).collect();
    let moved = shared.with_conn(|c| db::launches::forget_acked(c.client(), &keys));
    let moved: std::collections::HashSet<ProcId> = match moved {
        Ok(moved) => moved.into_iter().collect(),
        Err(e) => {
            metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
            pool.acked.lock().extend(tasks);
            return;
        }
    };
    for task in tasks {
        if !moved.contains(&task.placement.proc) {
            continue;
        }
        metrics::LAUNCHES_MOVED.inc();
        log::warn!(
            "frame {} was stopped after its booking on {} committed, and RQD accepted the \
             launch since; killing it there",
            task.placement.frame,
            task.placement.host_name
        );
        let now = Instant::now();
        let unsure = Unsure {
            task,
            due: now,
            backoff: Duration::from_secs(1),
            // RQD had started it when it answered: a kill now finds it.
            quiet: now,
        };
        kill_then_undo(shared, unsure, &pool.unconfirmed);
    }
}

/// How `me` sweeps. A row is taken only once its claim is older than any launch sent under
/// it could still start in RQD: a launcher sends within [`CLAIM_BUDGET`] of its claim, and
/// RQD may start that launch up to [`rqd::quiet_after`] later. Taken sooner (the claim
/// budget and one timeout), a launch a frozen instance had sent to a loaded RQD could start
/// after the sweeper's kill found nothing and its undo freed the frame to run elsewhere.
fn sweep_rule(cfg: &Config, me: uuid::Uuid) -> db::launches::SweepRule {
    let quiet = rqd::quiet_after(cfg.rqd.timeout, rqd::LAUNCH_ATTEMPTS);
    db::launches::SweepRule {
        me: Some(me),
        min_age_secs: cfg.rqd.timeout.as_secs_f64() * 2.0 + 1.0,
        claim_age_secs: (CLAIM_BUDGET + quiet).as_secs_f64() + 2.0,
        lease_secs: cfg.cluster.lease_duration.as_secs_f64(),
        limit: 200,
    }
}

fn sweep_due(pool: &Launchers) -> bool {
    let mut next = pool.next_sweep.lock();
    let now = Instant::now();
    match *next {
        Some(t) if t > now => false,
        _ => {
            *next = Some(now + SWEEP_INTERVAL);
            true
        }
    }
}

/// Resolves the bookings a dead instance committed and never launched or undone, of the
/// shows this instance holds or of shows handed back to Cuebot (see
/// [`db::launches::sweep`]): RQD is told to kill the frame and, once it answers, the booking
/// is undone; a row whose proc is already gone is just dropped.
fn sweep(shared: &Shared) {
    let fence = shared.lease.fence();
    let Some(fence) = fence.as_ref() else {
        return;
    };
    // Even holding no show: this instance's own unresolved rows, and a dead instance's rows
    // of shows handed back to Cuebot, are still to resolve.
    let shows: Vec<ShowId> = fence.epochs.keys().cloned().collect();
    let rule = sweep_rule(&shared.config.load(), fence.instance);
    let found = shared.with_conn(|c| db::launches::sweep(c.client(), &shows, &rule));
    match found {
        Ok(orphans) => orphans.into_iter().for_each(|o| resolve_orphan(shared, o)),
        Err(e) => metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc(),
    }
}

/// One booking taken over from a dead instance: killed on RQD and undone once RQD answers
/// (left for the next sweep while it does not). When Cuebot released its proc there is
/// nothing to undo, but the launch may run all the same: the row, which keeps the frame from
/// being booked again, goes once RQD confirmed the kill, or at once when the host is no
/// longer UP (see `undo::retry_kill`).
fn resolve_orphan(shared: &Shared, orphan: db::launches::Orphan) {
    let Some(placement) = orphan.placement else {
        if let Some(host) = &orphan.live_host
            && !kill_on(shared, host, &orphan.frame)
        {
            metrics::ORPHANED_LAUNCHES
                .with_label_values(&["unconfirmed"])
                .inc();
            return;
        }
        if forget_pending(shared, &orphan.proc) {
            metrics::ORPHANED_LAUNCHES
                .with_label_values(&["gone"])
                .inc();
        }
        return;
    };
    if !confirm_kill(shared, &placement) {
        metrics::ORPHANED_LAUNCHES
            .with_label_values(&["unconfirmed"])
            .inc();
        return;
    }
    log::warn!(
        "frame {} on {} was booked by an instance that died before launching it; undoing",
        placement.frame,
        placement.host_name
    );
    let charge = Charge {
        show: placement.show.clone(),
        alloc: placement.alloc.clone(),
        folder: placement.folder.clone(),
        job: placement.job.clone(),
        amount: CoresGpus::of(&placement.amount),
    };
    undo_booking(shared, &placement, orphan.version, &charge);
    metrics::ORPHANED_LAUNCHES
        .with_label_values(&["undone"])
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweeper takes a dead instance's row only once any launch sent under its claim is
    /// past starting: taken at the claim budget plus one timeout, a launch a loaded RQD
    /// queued could start after the sweeper's kill found nothing and its undo let the frame
    /// be booked elsewhere.
    #[test]
    fn a_sweep_waits_out_every_launch_sent_under_a_claim() {
        let cfg = Config::default();
        let rule = sweep_rule(&cfg, uuid::Uuid::nil());
        let latest_start = CLAIM_BUDGET + rqd::quiet_after(cfg.rqd.timeout, rqd::LAUNCH_ATTEMPTS);
        assert!(rule.claim_age_secs > latest_start.as_secs_f64());
        assert!(latest_start >= CLAIM_BUDGET + cfg.rqd.timeout * 4);
    }
}
