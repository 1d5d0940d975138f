//! Launching committed bookings on RQD, in parallel across hosts, and undoing those RQD
//! refuses.
//!
//! Booking threads hand each committed frame to this pool and go on booking; the launcher
//! threads (`rqd-launch-N`) call RQD with a deadline and one retry. A failed launch is
//! compensated in the database (proc deleted, host idle restored, frame back to WAITING with
//! exit status 299, version-guarded), its cap charge and host reservation given back, and
//! a best-effort `KillRunningFrame` sent in case RQD did start it. Shutdown drains the queue:
//! every committed frame is launched or compensated before the process exits.

use std::{
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{Receiver, Sender};

use super::Shared;
use crate::{
    accounting::Charge,
    db::{
        self,
        booking::{Compensation, Placement},
        jobs::{FrameWork, LayerWork, PendingJob},
    },
    frameset::FrameSet,
    metrics,
    model::Resources,
    rqd::{self, FrameLaunch},
};

/// What a layer's frames share in the `RunFrame` RQD receives.
pub struct LayerLaunch<'a> {
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
    /// The launch of `frame`'s chunk as proc `proc` on a host running `host_os`, or `None`
    /// (logged and counted) when the chunk cannot be built from the layer's range.
    pub fn describe(
        &self,
        frame: &FrameWork,
        proc: &str,
        host_os: &str,
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
            proc: proc.to_owned(),
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
            host_os: host_os.to_owned(),
            threadable: layer.threadable,
            amount,
            mem_min_kb: layer.mem_min.max(0) as u64,
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
}

/// Starts `threads` launcher threads reading from a new queue; returns its sender.
pub fn start(
    shared: Arc<Shared>,
    threads: usize,
) -> std::io::Result<(Sender<LaunchTask>, Vec<JoinHandle<()>>)> {
    let (tx, rx) = crossbeam_channel::bounded::<LaunchTask>(100_000);
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let rx: Receiver<LaunchTask> = rx.clone();
        let shared = Arc::clone(&shared);
        handles.push(
            std::thread::Builder::new()
                .name(format!("rqd-launch-{i}"))
                .spawn(move || {
                    // Runs until every sender is gone and the queue is empty: a drain, not a drop.
                    for task in rx.iter() {
                        launch_one(&shared, task);
                    }
                })?,
        );
    }
    Ok((tx, handles))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn launch_one(shared: &Shared, task: LaunchTask) {
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
    let error = match result {
        Ok(()) => {
            metrics::RQD_LAUNCHES.with_label_values(&["ok"]).inc();
            return;
        }
        Err(e) => e,
    };
    metrics::RQD_LAUNCHES
        .with_label_values(&[&error.label()])
        .inc();
    shared.stats.launch_failed();
    log::warn!(
        "launch of frame {} on host {} failed ({error}); undoing the booking",
        task.placement.frame,
        task.placement.host_name
    );
    compensate(shared, &task, Duration::from_millis(250));
    // RQD may have started the frame before failing to answer: ask it to stop (best effort).
    if let Err(e) = shared.rqd.kill(
        &endpoint,
        &task.placement.frame,
        "Compensation: RQD launch failed after DB commit",
        config.rqd.timeout,
    ) {
        log::debug!(
            "best-effort kill of {} on {}: {e}",
            task.placement.frame,
            task.placement.host_name
        );
    }
}

/// Undoes a committed booking, retrying while the database is unreachable (a committed proc
/// must never be forgotten) until shutdown's grace runs out.
fn compensate(shared: &Shared, task: &LaunchTask, backoff: Duration) {
    let mut delay = backoff;
    loop {
        let result = shared
            .pool
            .get()
            .map_err(db::DbError::from)
            .and_then(|mut conn| db::booking::compensate(&mut conn, &task.placement, task.version));
        match result {
            Ok(outcome) => {
                let label = match outcome {
                    Compensation::Undone => "undone",
                    Compensation::AlreadyReleased => "already_released",
                };
                metrics::COMPENSATIONS.with_label_values(&[label]).inc();
                if outcome == Compensation::Undone {
                    shared.ledger.release(&task.charge);
                    if let Ok(id) = uuid::Uuid::parse_str(&task.placement.host) {
                        shared.index.credit(&id, task.placement.amount);
                    }
                    shared.capacity_freed();
                }
                return;
            }
            Err(e) => {
                metrics::COMPENSATIONS.with_label_values(&["error"]).inc();
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                if !e.retryable() || shared.past_grace() {
                    log::error!(
                        "could not undo the booking of frame {} on {}: {e}; the recompute and Cuebot's \
                         orphan checks will see a proc without a running frame",
                        task.placement.frame,
                        task.placement.host_name
                    );
                    return;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
