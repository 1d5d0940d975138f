//! What becomes of a launch that failed: RQD is told to kill the frame, and the booking is
//! undone only once RQD confirmed a kill sent late enough that the launch can no longer
//! start behind it (see the parent module). Until then the proc keeps its cores and the
//! kill is tried again with back-off.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{LaunchTask, Shared};
use crate::{
    accounting::Charge,
    db::{
        self,
        booking::{Compensation, Placement},
    },
    ids::FrameId,
    metrics,
};

/// A failed launch whose kill RQD has not confirmed yet, or confirmed too early: killed
/// (again) at `due`.
pub(super) struct Unsure {
    pub(super) task: LaunchTask,
    pub(super) due: Instant,
    /// The wait after the next unconfirmed kill.
    pub(super) backoff: Duration,
    /// Before this a launch that timed out may still sit in RQD's own request queue and
    /// start: RQD answers "OK" to a kill of a frame it does not know yet, so a kill confirmed
    /// earlier proves nothing and is sent again at this moment before the booking is undone.
    pub(super) quiet: Instant,
}

impl Unsure {
    /// Queues it again after its back-off, which doubles (up to 30 s).
    fn due_again(mut self, unconfirmed: &Unconfirmed) {
        self.due = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        unconfirmed.push(self);
    }
}

/// Failed launches waiting for RQD to confirm their kill, shared by the launcher threads.
#[derive(Default)]
pub(super) struct Unconfirmed(Mutex<Vec<Unsure>>);

impl Unconfirmed {
    pub(super) fn push(&self, unsure: Unsure) {
        self.0.lock().push(unsure);
        metrics::LAUNCHES_UNCONFIRMED.set(self.0.lock().len() as i64);
    }

    /// Takes the entries due now (all of them with `all`).
    pub(super) fn take_due(&self, all: bool) -> Vec<Unsure> {
        let now = Instant::now();
        let mut list = self.0.lock();
        let (due, rest): (Vec<Unsure>, Vec<Unsure>) =
            list.drain(..).partition(|u| all || u.due <= now);
        *list = rest;
        metrics::LAUNCHES_UNCONFIRMED.set(list.len() as i64);
        due
    }
}

/// Waits until `u`'s launch can no longer start late, but not past the shutdown grace's
/// launching share; true when that moment was reached.
pub(super) fn quiet_by_grace(shared: &Shared, u: &Unsure) -> bool {
    let until = match *shared.grace_deadline.lock() {
        Some(grace) => u.quiet.min(grace),
        None => u.quiet,
    };
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    Instant::now() >= u.quiet
}

/// Another kill of an unconfirmed launch (see [`kill_then_undo`]).
///
/// A proc Cuebot (or a completion) released leaves nothing of ours to undo, but the launch
/// may still run or start on its host (Cuebot's own kill may have come before it), so the
/// kill goes on until RQD confirms it; the pending row, which keeps the frame from being
/// booked again (V006), goes only then. Only once Cuebot no longer has the host UP (it gave
/// up on it: that is when it releases procs without a kill) does the row go without one: no
/// kill would ever be confirmed there, and a launch that host's RQD still starts is killed
/// by Cuebot at the host's next report (the proc no longer holds the frame).
pub(super) fn retry_kill(shared: &Shared, u: Unsure, unconfirmed: &Unconfirmed) {
    if !proc_exists(shared, &u.task.placement.proc) {
        if host_up(shared, &u.task.placement.host) {
            kill_then_undo(shared, u, unconfirmed);
        } else if forget_pending(shared, &u.task.placement.proc) {
            metrics::COMPENSATIONS
                .with_label_values(&["already_released"])
                .inc();
        } else {
            // Tried again at the next due time.
            u.due_again(unconfirmed);
        }
        return;
    }
    kill_then_undo(shared, u, unconfirmed);
}

/// Deletes the pending-launch row of `proc`; false when the database did not answer.
pub(super) fn forget_pending(shared: &Shared, proc: &str) -> bool {
    let forgot = shared.with_conn(|c| db::launches::forget(c.client(), &[proc]));
    if let Err(e) = &forgot {
        metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
    }
    forgot.is_ok()
}

/// Kills a failed launch's frame and undoes its booking once RQD confirmed a kill sent at or
/// after the launch's quiet moment; a kill sent earlier is sent again then, one RQD does not
/// confirm is tried again with back-off. Meanwhile the proc keeps its cores.
pub(super) fn kill_then_undo(shared: &Shared, mut u: Unsure, unconfirmed: &Unconfirmed) {
    let sent = Instant::now();
    if !confirm_kill(shared, &u.task.placement) {
        u.due_again(unconfirmed);
    } else if sent < u.quiet {
        u.due = u.quiet;
        unconfirmed.push(u);
    } else {
        undo(shared, &u.task);
    }
}

/// Asks RQD to kill the frame; true when RQD answered (it killed it, or did not run it).
pub(super) fn confirm_kill(shared: &Shared, placement: &Placement) -> bool {
    kill_on(shared, &placement.host_name, &placement.frame)
}

/// Asks the RQD of `host_name` to kill `frame`; true when RQD answered.
pub(super) fn kill_on(shared: &Shared, host_name: &str, frame: &FrameId) -> bool {
    let config = shared.config.load();
    let endpoint = config.rqd_endpoint(host_name);
    match shared.rqd.kill(
        &endpoint,
        frame,
        "Compensation: RQD launch failed after DB commit",
        config.rqd.timeout,
    ) {
        Ok(()) => true,
        Err(e) => {
            metrics::RQD_KILLS_UNCONFIRMED.inc();
            log::warn!(
                "kill of frame {frame} on {host_name} unconfirmed ({e}); tried again until RQD answers"
            );
            false
        }
    }
}

/// True unless the database says Cuebot no longer has `host` UP (an error counts as UP:
/// the caller keeps trying to kill rather than forget).
fn host_up(shared: &Shared, host: &str) -> bool {
    let up = shared.with_conn(|c| db::launches::host_is_up(c.client(), host));
    !matches!(up, Ok(false))
}

/// True unless the database says the proc is gone (an error counts as "still there").
fn proc_exists(shared: &Shared, proc: &str) -> bool {
    let found =
        shared.with_conn(|c| Ok(c.query_opt("SELECT 1 FROM proc WHERE pk_proc = $1", &[&proc])?));
    !matches!(found, Ok(None))
}

/// Undoes a committed booking, retrying while the database is unreachable (a committed proc
/// must never be forgotten) until shutdown's grace runs out.
pub(crate) fn undo(shared: &Shared, task: &LaunchTask) {
    undo_booking(shared, &task.placement, task.version, &task.charge);
}

/// [`undo`] for a booking that has no launch task (the launch queue refused it).
pub(crate) fn undo_booking(shared: &Shared, placement: &Placement, version: i32, charge: &Charge) {
    let mut delay = Duration::from_millis(250);
    let releasing = shared.ledger.begin_release(charge);
    loop {
        let result = shared.with_conn(|conn| db::booking::compensate(conn, placement, version));
        match result {
            Ok(outcome) => {
                let label = match outcome {
                    Compensation::Undone(_) => "undone",
                    Compensation::AlreadyReleased => "already_released",
                    Compensation::FrameMoved => "frame_moved",
                };
                metrics::COMPENSATIONS.with_label_values(&[label]).inc();
                if let Compensation::Undone(held) = outcome {
                    releasing.done();
                    // The index bumps its capacity generation: saturated clusters wake.
                    shared.index.credit(&placement.host, held);
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
                        placement.frame,
                        placement.host_name
                    );
                    return;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
