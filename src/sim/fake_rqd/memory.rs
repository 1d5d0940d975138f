//! The memory side of Cuebot's frame completion, as the simulator plays it: the most a frame
//! used goes to `frame.int_mem_max_used` and up the chain to `layer_mem` and `job_mem`
//! (`DispatchSupportService.stopFrame`: `updateFrameStopped`, `updateLayerMaxRSS`,
//! `updateMaxRSS`), and a frame that ran out of memory disables its layer's memory optimizer
//! and raises the layer's `int_mem_min` to what its proc had reserved plus the service's
//! minimum increase (`FrameCompleteHandler.retryFrameWithRaisedMemory`: 2 GB by default,
//! `increaseLayerMinMemory` only ever raises). Cuebot raises it after the frame went back to
//! WAITING; the simulator does both in the completion's transaction, so a booking after the
//! frame is WAITING again can only see the raised value.

use std::collections::BTreeMap;

use postgres::Transaction;

use crate::db::DbError;

/// Cuebot's default memory increase after an out-of-memory failure (`CueUtil.GB2`, in KB):
/// the `service.int_min_memory_increase` of the default service.
pub(crate) const MEMORY_INCREASE_KB: i64 = 2 * 1024 * 1024;

/// Exit statuses Cuebot treats as out of memory (`Dispatcher.EXIT_STATUS_MEMORY_FAILURE`
/// and `DOCKER_EXIT_STATUS_MEMORY_FAILURE`).
pub(crate) const MEMORY_FAILURE_EXITS: [i32; 2] = [super::EXIT_MEMORY_FAILURE, 137];

/// Writes each stopping frame's max RSS (`(frame, KB)`, frames still RUNNING) and raises
/// its layer's and job's maxima to it. Runs before the frames leave RUNNING, so the
/// `frame_history` row the state change closes gets the value too.
pub(crate) fn record_usage(tx: &mut Transaction<'_>, rss: &[(String, i64)]) -> Result<(), DbError> {
    let used: Vec<&(String, i64)> = rss.iter().filter(|(_, kb)| *kb > 0).collect();
    if used.is_empty() {
        return Ok(());
    }
    let frames: Vec<&str> = used.iter().map(|(f, _)| f.as_str()).collect();
    let kb: Vec<i64> = used.iter().map(|(_, kb)| *kb).collect();
    tx.execute(
        "UPDATE frame f SET int_mem_max_used = t.kb
           FROM unnest($1::text[], $2::bigint[]) AS t(id, kb)
          WHERE f.pk_frame = t.id AND f.str_state = 'RUNNING'",
        &[&frames, &kb],
    )?;
    for (table, key) in [("layer_mem", "pk_layer"), ("job_mem", "pk_job")] {
        tx.execute(
            &format!(
                "UPDATE {table} m SET int_max_rss = t.kb
                   FROM (SELECT f.{key} AS k, max(u.kb) AS kb
                           FROM unnest($1::text[], $2::bigint[]) AS u(id, kb)
                           JOIN frame f ON f.pk_frame = u.id GROUP BY f.{key}) t
                  WHERE m.{key} = t.k AND m.int_max_rss < t.kb"
            ),
            &[&frames, &kb],
        )?;
    }
    Ok(())
}

/// After frames ran out of memory (`(layer, KB its proc had reserved)`): each layer's memory
/// optimizer off and `int_mem_min` raised to the reservation plus [`MEMORY_INCREASE_KB`],
/// never lowered.
pub(crate) fn raise_after_oom(
    tx: &mut Transaction<'_>,
    oom: &[(String, i64)],
) -> Result<(), DbError> {
    let mut per_layer: BTreeMap<&str, i64> = BTreeMap::new();
    for (layer, reserved) in oom {
        let e = per_layer.entry(layer.as_str()).or_default();
        *e = (*e).max(reserved + MEMORY_INCREASE_KB);
    }
    if per_layer.is_empty() {
        return Ok(());
    }
    let layers: Vec<&str> = per_layer.keys().copied().collect();
    let kb: Vec<i64> = per_layer.values().copied().collect();
    tx.execute(
        "UPDATE layer l SET b_optimize = false, int_mem_min = greatest(l.int_mem_min, t.kb)
           FROM unnest($1::text[], $2::bigint[]) AS t(id, kb)
          WHERE l.pk_layer = t.id",
        &[&layers, &kb],
    )?;
    Ok(())
}
