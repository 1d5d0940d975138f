//! The compensation of a booking whose launch failed: the proc deleted, the host given back
//! what the proc held, the frame back to WAITING, all guarded by the version the booking
//! produced, so an undo can never take a frame from whoever moved it on since.

use postgres::Client;

use super::{DbError, booking::Placement, resources_at};
use crate::model::Resources;

/// What undoing a failed launch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compensation {
    /// Proc deleted, host given what the proc held, frame back to WAITING; carries what the
    /// proc held at the end (Cuebot may have raised its memory since the booking).
    Undone(Resources),
    /// The proc was already gone (Cuebot released it); nothing to undo.
    AlreadyReleased,
    /// The frame is no longer the one booked (another writer moved it on): nothing undone,
    /// the proc is left to whoever owns the frame now.
    FrameMoved,
}

/// Undoes one committed booking whose launch failed: deletes the proc, gives the host back
/// what the proc holds now (never above its totals) and puts the frame back to WAITING with
/// exit status 299, guarded by the version the booking produced. If the frame moved on, the
/// whole undo rolls back: a RUNNING frame never loses its proc.
pub fn compensate(
    client: &mut Client,
    p: &Placement,
    booked_version: i32,
) -> Result<Compensation, DbError> {
    let mut tx = client.transaction()?;
    // The booking's lock order: stats (the frame trigger updates them), then hosts.
    super::booking::lock_stat_rows(&mut tx, &[p.layer.as_str()], &[p.job.as_str()])?;
    let Some(held) = tx.query_opt(
        "DELETE FROM proc WHERE pk_proc = $1
         RETURNING pk_host, int_cores_reserved::bigint, int_mem_reserved::bigint,
                   int_gpus_reserved::bigint, int_gpu_mem_reserved::bigint",
        &[&p.proc],
    )?
    else {
        super::launches::forget(&mut tx, &[p.proc.as_str()])?;
        tx.commit()?;
        return Ok(Compensation::AlreadyReleased);
    };
    let moved = tx.execute(
        "UPDATE frame SET str_state = 'WAITING', int_exit_status = 299, ts_stopped = now(), ts_updated = now(),
                int_version = int_version + 1
          WHERE pk_frame = $1 AND str_state = 'RUNNING' AND int_version = $2",
        &[&p.frame, &booked_version],
    )?;
    if moved == 0 {
        tx.rollback()?;
        // Whoever moved the frame owns its proc now: nothing of this booking is pending.
        super::launches::forget(client, &[p.proc.as_str()])?;
        return Ok(Compensation::FrameMoved);
    }
    let amount = resources_at(&held, 1);
    let host: String = held.get(0);
    tx.execute(
        "UPDATE host SET int_cores_idle = least(int_cores, int_cores_idle + $2),
                int_mem_idle = least(int_mem, int_mem_idle + $3),
                int_gpus_idle = least(int_gpus, int_gpus_idle + $4),
                int_gpu_mem_idle = least(int_gpu_mem, int_gpu_mem_idle + $5)
          WHERE pk_host = $1",
        &[
            &host,
            &i64::from(amount.cores),
            &(amount.mem_kb as i64),
            &i64::from(amount.gpus),
            &(amount.gpu_mem_kb as i64),
        ],
    )?;
    super::launches::forget(&mut tx, &[p.proc.as_str()])?;
    tx.commit()?;
    Ok(Compensation::Undone(amount))
}
