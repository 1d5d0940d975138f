//! What a run cost beside its booking rate, measured so the harness's own work is left out:
//! the rows PostgreSQL read (`pg_stat_database`, less the harness's progress polls), the
//! backends that are the harness's (left out of PostgreSQL's CPU), stagehand's own CPU (its
//! process in `/proc`) and the time from start to the first booking.
//!
//! `pg_stat_database` counts every backend of the database, the harness's included, and a
//! backend publishes its counts only when idle (at most once a second) or when it exits. So
//! the counters are read before the instances start and after they stopped, and the
//! harness's polls — the same scans every time — are measured once beforehand and
//! subtracted.

use super::rates::process_cpu_secs;
use crate::sim::{SimError, farm::progress, instances::Instance};

/// Rows PostgreSQL read in this database so far: `tup_returned` (rows scans returned) plus
/// `tup_fetched` (rows index scans fetched), after publishing this backend's own counts.
/// `None` where the statistics are unavailable.
pub(super) fn rows_read(client: &mut postgres::Client) -> Option<i64> {
    // PostgreSQL 15+: publish this backend's pending counts when it next goes idle, which it
    // does between the two statements.
    let _ = client.execute("SELECT pg_stat_force_next_flush()", &[]);
    client
        .query_one(
            "SELECT (tup_returned + tup_fetched)::bigint FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .ok()
        .map(|r| r.get(0))
}

/// Rows one progress poll of the harness reads (the mean of `POLLS` polls), measured while
/// nothing else runs.
pub(super) fn rows_per_poll(client: &mut postgres::Client) -> Result<Option<f64>, SimError> {
    const POLLS: i64 = 10;
    let Some(before) = rows_read(client) else {
        return Ok(None);
    };
    for _ in 0..POLLS {
        progress(client)?;
    }
    Ok(rows_read(client).map(|after| (after - before).max(0) as f64 / POLLS as f64))
}

/// The database's clock now, as text (for [`secs_to_first_booking`]).
pub(super) fn db_now(client: &mut postgres::Client) -> Result<String, SimError> {
    Ok(client
        .query_one("SELECT clock_timestamp()::text", &[])?
        .get(0))
}

/// Seconds from `start` (a [`db_now`] reading) to the first booking (the earliest
/// `frame.ts_started`, which the booking sets to its transaction's start; frames keep it
/// after their procs complete).
pub(super) fn secs_to_first_booking(
    client: &mut postgres::Client,
    start: &str,
) -> Result<Option<f64>, SimError> {
    Ok(client
        .query_one(
            "SELECT extract(epoch FROM min(ts_started) - $1::text::timestamptz)::float8 FROM frame",
            &[&start],
        )?
        .get(0))
}

/// Backends of the harness (every client backend not logged in as stagehand's role: the
/// harness's own connection, the fake RQD's reporter), whose CPU is not the booking's.
pub(super) fn harness_backends(client: &mut postgres::Client) -> Result<Vec<u32>, SimError> {
    Ok(client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND usename <> 'stagehand'",
            &[],
        )?
        .iter()
        .map(|r| r.get::<_, i32>(0) as u32)
        .collect())
}

/// CPU seconds every instance has used so far, summed (`None` without `/proc`).
pub(super) fn instances_cpu_secs(instances: &[Instance]) -> Option<f64> {
    instances
        .iter()
        .map(|i| process_cpu_secs(i.pid()))
        .sum::<Option<f64>>()
}
