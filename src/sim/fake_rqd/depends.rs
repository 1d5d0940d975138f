//! Dependency satisfaction as Cuebot's completion does it (`FrameCompleteHandler`
//! `satisfyDependsAndCompleteLayerAndJob`, `DependManagerService.satisfyDepend`,
//! `DependDaoJdbc`): a depend on a frame is satisfied when that frame SUCCEEDED, on a layer
//! when every frame of it succeeded (or was eaten), on a job when it FINISHED. Satisfying sets
//! the `depend` row inactive (`b_active = false`, `ts_satisfied`, `str_signature = pk_depend`)
//! and takes one off `int_depend_count` of every frame it held — the depending frame, every
//! frame of the depending layer or of the depending job — that still counts any; Cuebot's
//! `update_frame_dep_to_wait` trigger makes a DEPEND frame WAITING when its count reaches 0.
//!
//! Cuebot runs this after the completion's transaction, on its dispatch threads; so does the
//! simulator, in a transaction of its own that locks the depending layers' and jobs'
//! `layer_stat`/`job_stat` rows first (the frames' state change counts there), in the
//! booking's lock order. It is decided from the state in the database, not from the
//! completions at hand, so a satisfaction that failed is made up by the next one on the same
//! jobs.

use postgres::Client;

use crate::db::DbError;

/// Satisfies every active depend on the jobs `on` (and their layers and frames) whose target
/// is done; returns how many depends it satisfied.
pub(crate) fn satisfy(client: &mut Client, on: &[String]) -> Result<u64, DbError> {
    if on.is_empty() {
        return Ok(0);
    }
    let mut tx = client.transaction()?;
    let done = tx.query(
        "UPDATE depend d SET b_active = false, ts_satisfied = now(), str_signature = d.pk_depend
          WHERE d.b_active AND NOT d.b_composite AND d.pk_job_depend_on = ANY($1)
            AND CASE
                  WHEN d.str_type IN ('FRAME_ON_FRAME', 'LAYER_ON_FRAME', 'JOB_ON_FRAME') THEN EXISTS (
                       SELECT 1 FROM frame f WHERE f.pk_frame = d.pk_frame_depend_on AND f.str_state = 'SUCCEEDED')
                  WHEN d.str_type IN ('FRAME_ON_LAYER', 'LAYER_ON_LAYER', 'JOB_ON_LAYER') THEN EXISTS (
                       SELECT 1 FROM layer_stat ls WHERE ls.pk_layer = d.pk_layer_depend_on
                          AND ls.int_total_count = ls.int_succeeded_count + ls.int_eaten_count)
                  WHEN d.str_type IN ('FRAME_ON_JOB', 'LAYER_ON_JOB', 'JOB_ON_JOB') THEN EXISTS (
                       SELECT 1 FROM job j WHERE j.pk_job = d.pk_job_depend_on AND j.str_state = 'FINISHED')
                  ELSE false END
      RETURNING split_part(d.str_type, '_', 1), d.pk_job_depend_er,
                coalesce(d.pk_layer_depend_er, ''), coalesce(d.pk_frame_depend_er, '')",
        &[&on],
    )?;
    if done.is_empty() {
        tx.commit()?;
        return Ok(0);
    }
    // (scope, job, layer, frame) of each satisfied depend: who waited on it.
    let scope: Vec<String> = done.iter().map(|r| r.get(0)).collect();
    let job: Vec<String> = done.iter().map(|r| r.get(1)).collect();
    let layer: Vec<String> = done.iter().map(|r| r.get(2)).collect();
    let frame: Vec<String> = done.iter().map(|r| r.get(3)).collect();
    lock_waiters(&mut tx, &job)?;
    tx.execute(
        "UPDATE frame f SET int_depend_count = greatest(f.int_depend_count - t.n, 0)
           FROM (SELECT w.pk_frame, count(*) AS n
                   FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS d(scope, job, layer, frame)
                   JOIN frame w ON (d.scope = 'FRAME' AND w.pk_frame = d.frame)
                                OR (d.scope = 'LAYER' AND w.pk_layer = d.layer)
                                OR (d.scope = 'JOB' AND w.pk_job = d.job)
                  WHERE w.int_depend_count > 0
                  GROUP BY w.pk_frame) t
          WHERE f.pk_frame = t.pk_frame",
        &[&scope, &job, &layer, &frame],
    )?;
    tx.commit()?;
    Ok(done.len() as u64)
}

/// Locks the `layer_stat` and `job_stat` rows of the jobs whose frames are about to leave
/// DEPEND, in the booking's order.
fn lock_waiters(tx: &mut postgres::Transaction<'_>, jobs: &[String]) -> Result<(), DbError> {
    let mut jobs: Vec<&str> = jobs.iter().map(String::as_str).collect();
    jobs.sort_unstable();
    jobs.dedup();
    let layers: Vec<String> = tx
        .query(
            "SELECT pk_layer FROM layer WHERE pk_job = ANY($1) ORDER BY pk_layer",
            &[&jobs],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let layers: Vec<&str> = layers.iter().map(String::as_str).collect();
    crate::db::booking::lock_stat_rows(tx, &layers, &jobs)?;
    Ok(())
}
