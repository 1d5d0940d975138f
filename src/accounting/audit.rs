//! The accounting audit: checks the database (and optionally a ledger) for every invariant
//! the scheduler promises. Used by the tests, the benchmarks and the demo's summary.

use std::collections::HashMap;

use postgres::Client;

use super::Ledger;
use crate::{
    db::{self, DbError},
    model::CoresGpus,
};

/// The checks of the database alone: (what is violated, a query returning one line of
/// detail per violation).
const CHECKS: [(&str, &str); 5] = [
    ("booked above burst", ABOVE_BURST),
    ("job above max cores", ABOVE_JOB_MAX),
    ("host ledger", HOST_LEDGER),
    ("running frames vs procs", RUNNING_VS_PROCS),
    ("job_stat waiting", JOB_STAT_WAITING),
];

/// A subscription whose procs hold more cores than its burst.
const ABOVE_BURST: &str = "SELECT sub.pk_show || '/' || sub.pk_alloc || ' booked ' || coalesce(sum(p.int_cores_reserved), 0) || ' > burst ' || sub.int_burst
           FROM subscription sub JOIN show s ON s.pk_show = sub.pk_show
           JOIN host h ON h.pk_alloc = sub.pk_alloc
           JOIN proc p ON p.pk_host = h.pk_host AND p.pk_show = sub.pk_show AND NOT p.b_local
          WHERE s.b_scheduler_managed
          GROUP BY sub.pk_show, sub.pk_alloc, sub.int_burst HAVING sum(p.int_cores_reserved) > sub.int_burst";

/// A job of a managed show whose procs hold more cores than its maximum (0 or less: none,
/// as Cuebot's dispatch reads it).
const ABOVE_JOB_MAX: &str =
    "SELECT jr.pk_job || ' booked ' || sum(p.int_cores_reserved) || ' > max ' || jr.int_max_cores
           FROM job_resource jr JOIN proc p ON p.pk_job = jr.pk_job
           JOIN job j ON j.pk_job = jr.pk_job JOIN show s ON s.pk_show = j.pk_show
          WHERE s.b_scheduler_managed
          GROUP BY jr.pk_job, jr.int_max_cores HAVING sum(p.int_cores_reserved) > greatest(jr.int_max_cores, 0)";

/// A host whose idle cores or memory are not its totals less what its procs hold, or whose
/// idle resources are negative.
const HOST_LEDGER: &str = "SELECT h.str_name || ' cores ' || h.int_cores || ' idle ' || h.int_cores_idle || ' procs ' || coalesce(sum(p.int_cores_reserved), 0)
           FROM host h LEFT JOIN proc p ON p.pk_host = h.pk_host
          GROUP BY h.pk_host
         HAVING h.int_cores - h.int_cores_idle <> coalesce(sum(p.int_cores_reserved), 0)
             OR h.int_cores_idle < 0 OR h.int_mem_idle < 0 OR h.int_gpus_idle < 0 OR h.int_gpu_mem_idle < 0
             OR h.int_mem - h.int_mem_idle <> coalesce(sum(p.int_mem_reserved), 0)";

/// A RUNNING frame without a proc, or a proc whose frame is not RUNNING.
const RUNNING_VS_PROCS: &str = "SELECT f.str_name || ' is RUNNING without a proc' FROM frame f
          WHERE f.str_state = 'RUNNING' AND NOT EXISTS (SELECT 1 FROM proc p WHERE p.pk_frame = f.pk_frame)
         UNION ALL
         SELECT coalesce(f.str_name, p.pk_frame) || ' has a proc but is ' || coalesce(f.str_state, 'gone') FROM proc p
           LEFT JOIN frame f ON f.pk_frame = p.pk_frame
          WHERE p.pk_frame IS NOT NULL AND (f.pk_frame IS NULL OR f.str_state <> 'RUNNING')";

/// A `job_stat` whose waiting count is not the number of its WAITING frames.
const JOB_STAT_WAITING: &str = "SELECT js.pk_job || ' waiting ' || js.int_waiting_count || ' <> ' || count(f.pk_frame) FILTER (WHERE f.str_state = 'WAITING')
           FROM job_stat js LEFT JOIN frame f ON f.pk_job = js.pk_job
          GROUP BY js.pk_job, js.int_waiting_count
         HAVING js.int_waiting_count <> count(f.pk_frame) FILTER (WHERE f.str_state = 'WAITING')";

/// Runs every check; returns one line per violation (empty = clean).
pub fn audit(client: &mut Client, ledger: Option<&Ledger>) -> Result<Vec<String>, DbError> {
    let mut violations = Vec::new();
    for (what, sql) in CHECKS {
        for r in client.query(sql, &[])? {
            let detail: String = r.get(0);
            violations.push(format!("{what}: {detail}"));
        }
    }
    if let Some(ledger) = ledger {
        compare_ledger(client, ledger, &mut violations)?;
    }
    Ok(violations)
}

/// The counters of `ledger` against `SUM(proc)` (only meaningful while nothing books).
fn compare_ledger(
    client: &mut Client,
    ledger: &Ledger,
    violations: &mut Vec<String>,
) -> Result<(), DbError> {
    let truth = db::accounting::booked_snapshot(client)?;
    let counters = ledger.booked();
    compare(
        "subscription counter",
        &counters.subs,
        &truth.subs,
        violations,
    );
    compare(
        "folder counter",
        &counters.folders,
        &truth.folders,
        violations,
    );
    compare("job counter", &counters.jobs, &truth.jobs, violations);
    Ok(())
}

/// Appends a line per key whose counter differs from the truth or is missing.
fn compare<K: std::hash::Hash + Eq + std::fmt::Debug>(
    what: &str,
    counters: &HashMap<K, CoresGpus>,
    truth: &HashMap<K, CoresGpus>,
    out: &mut Vec<String>,
) {
    for (k, v) in counters {
        let t = truth.get(k).copied().unwrap_or_default();
        if *v != t {
            out.push(format!("{what} {k:?} = {v:?}, SUM(proc) = {t:?}"));
        }
    }
    for (k, t) in truth {
        if !counters.contains_key(k) {
            out.push(format!("{what} {k:?} missing, SUM(proc) = {t:?}"));
        }
    }
}
