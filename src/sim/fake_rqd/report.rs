//! The fleet's reports to the database: each frame "runs" for its layer's runtime, then is
//! completed as Cuebot's completion path would (proc deleted, host idle restored, the frame's
//! memory use recorded, frame SUCCEEDED or back to WAITING/DEAD, a layer whose frame ran out
//! of memory raised (`memory`), job FINISHED when done, then what depended on them satisfied
//! (`depends`)), and every host's ping is kept fresh.

use std::{
    cmp::Reverse,
    collections::BTreeMap,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::{
    Completion, CompletionQueue, EXIT_FAILED, LICENSE_DENIED_EXIT, PING_INTERVAL, Record, depends,
    memory::{self, MEMORY_FAILURE_EXITS},
};

/// The completer's state: its connection (re-made when lost), when the hosts next ping, and
/// the jobs whose completed frames may have satisfied depends not yet satisfied.
struct Reporter<'a> {
    url: &'a str,
    client: Option<postgres::Client>,
    next_ping: Instant,
    depends_due: std::collections::BTreeSet<String>,
}

/// The completer thread: pings for the hosts, and completes each frame once it is due.
pub(super) fn complete_loop(
    url: &str,
    queue: &CompletionQueue,
    stop: &AtomicBool,
    completed: &AtomicU64,
    record: &Mutex<Record>,
) {
    let mut reporter = Reporter {
        url,
        client: None,
        next_ping: Instant::now(),
        depends_due: Default::default(),
    };
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if reporter.ping(now) {
            // Just connected: ping with the new connection first.
            continue;
        }
        if let Some(c) = reporter.client.as_mut().filter(|c| !c.is_closed()) {
            if let Err(e) = check_out_started(c, queue, record) {
                log::warn!("fake RQD: license checkouts failed, retrying: {e}");
                reporter.client = None;
            }
        }
        let due = take_due(queue, now);
        if due.is_empty() {
            // Depends a failed satisfaction left, with nothing else completing to retry them.
            reporter.satisfy_depends();
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let conn = match reporter.client.as_mut() {
            Some(c) if !c.is_closed() => c,
            _ => match connect_reporter(url) {
                Ok(c) => reporter.client.insert(c),
                Err(e) => {
                    log::warn!("fake RQD: database unreachable, retrying completions: {e}");
                    requeue(queue, due);
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        let outcome = report(conn, &due, record);
        match outcome {
            Ok(done) => {
                completed.fetch_add(done.procs.len() as u64, Ordering::Relaxed);
                {
                    let mut record = record.lock();
                    for c in due.iter().filter(|c| !done.procs.contains(&c.proc)) {
                        record.unknown.insert(c.proc.clone());
                    }
                }
                reporter.depends_due.extend(done.jobs);
                reporter.satisfy_depends();
            }
            Err(e) => {
                log::warn!(
                    "fake RQD: completing {} frames failed, retrying: {e}",
                    due.len()
                );
                reporter.client = None;
                requeue(queue, due);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Reporter<'_> {
    /// Satisfies what depended on the frames, layers and jobs completed so far; kept for the
    /// next round when the database fails (a connection lost is re-made there).
    fn satisfy_depends(&mut self) {
        if self.depends_due.is_empty() {
            return;
        }
        let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) else {
            return;
        };
        let jobs: Vec<String> = self.depends_due.iter().cloned().collect();
        match depends::satisfy(c, &jobs) {
            Ok(_) => self.depends_due.clear(),
            Err(e) => log::warn!("fake RQD: satisfying depends failed, retrying: {e}"),
        }
    }

    /// Every RQD reports in periodically and Cuebot stamps host_stat.ts_ping; without it the
    /// farm would go stale (`[hosts] ping_timeout`) in any run longer than that. True when
    /// it has just connected instead (the ping is still to do).
    fn ping(&mut self, now: Instant) -> bool {
        if now < self.next_ping {
            return false;
        }
        if let Some(c) = self.client.as_mut().filter(|c| !c.is_closed()) {
            if let Err(e) = c.execute("UPDATE host_stat SET ts_ping = now()", &[]) {
                log::warn!("fake RQD: host report failed: {e}");
            }
        } else if let Ok(c) = connect_reporter(self.url) {
            self.client = Some(c);
            return true;
        }
        self.next_ping = now + PING_INTERVAL;
        false
    }
}

/// How long a frame refused its license runs before it exits.
const DENIED_AFTER: Duration = Duration::from_millis(50);

/// The licensed frames that started check their seats out on their hosts (looked up from
/// their procs); each then completes when due, or at once as denied. A frame whose proc is
/// gone (undone) completes as it would have, finding nothing.
fn check_out_started(
    conn: &mut postgres::Client,
    queue: &CompletionQueue,
    record: &Mutex<Record>,
) -> Result<(), postgres::Error> {
    let (starts, seats) = {
        let mut r = record.lock();
        (std::mem::take(&mut r.starts), r.licenses.clone())
    };
    let Some(seats) = seats.filter(|_| !starts.is_empty()) else {
        return Ok(());
    };
    let procs: Vec<&str> = starts.iter().map(|(_, c, _)| c.proc.as_str()).collect();
    let hosts: std::collections::HashMap<String, String> = match conn.query(
        "SELECT p.pk_proc, h.str_name FROM proc p JOIN host h ON h.pk_host = p.pk_host
          WHERE p.pk_proc = ANY($1)",
        &[&procs],
    ) {
        Ok(rows) => rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        Err(e) => {
            record.lock().starts.extend(starts);
            return Err(e);
        }
    };
    let mut q = queue.lock();
    for (due, mut c, names) in starts {
        if let Some(host) = hosts.get(&c.proc) {
            if !seats.check_out(&c.proc, host, &names) {
                c.exit = LICENSE_DENIED_EXIT;
                q.push(Reverse((Instant::now() + DENIED_AFTER, c)));
                continue;
            }
        }
        q.push(Reverse((due, c)));
    }
    Ok(())
}

/// Takes every completion due by `now` off the queue.
fn take_due(queue: &CompletionQueue, now: Instant) -> Vec<Completion> {
    let mut due = Vec::new();
    let mut q = queue.lock();
    while q.peek().map(|Reverse((t, _))| *t <= now).unwrap_or(false) {
        if let Some(Reverse((_, c))) = q.pop() {
            due.push(c);
        }
    }
    due
}

/// Completes `due` in the database, with the record showing the report in flight.
fn report(
    conn: &mut postgres::Client,
    due: &[Completion],
    record: &Mutex<Record>,
) -> Result<Completed, crate::db::DbError> {
    {
        // The processes exit before RQD reports them (and whether or not Cuebot still
        // knows their procs): a frame the report makes WAITING again is no longer running.
        let mut record = record.lock();
        for c in due {
            record.stop(&c.frame, &c.proc);
        }
        record.reporting = due.iter().map(|c| c.proc.clone()).collect();
        record.reporting_since = Some(Instant::now());
    }
    let outcome = complete(conn, due);
    let mut record = record.lock();
    record.reporting.clear();
    record.reporting_since = None;
    outcome
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
/// (the chaos stand-in completes and fails the frames it booked with it), depends included;
/// returns the procs found.
pub(crate) fn complete_procs(
    client: &mut postgres::Client,
    procs: &[(String, String, bool)],
) -> Result<u64, crate::db::DbError> {
    let due: Vec<Completion> = procs
        .iter()
        .map(|(proc, frame, failed)| Completion {
            proc: proc.clone(),
            frame: frame.clone(),
            exit: if *failed { EXIT_FAILED } else { 0 },
            max_rss_kb: 0,
        })
        .collect();
    let done = complete(client, &due)?;
    depends::satisfy(client, &done.jobs)?;
    Ok(done.procs.len() as u64)
}

/// What a completion found: the procs it deleted and their jobs.
struct Completed {
    procs: Vec<String>,
    jobs: Vec<String>,
}

/// Cuebot's completion of a batch of frames, in one transaction, locking rows in the same
/// order as stagehand's booking (layer_stat, job_stat, hosts) so the two never deadlock.
fn complete(
    client: &mut postgres::Client,
    due: &[Completion],
) -> Result<Completed, crate::db::DbError> {
    let mut tx = client.transaction()?;
    let procs: Vec<&str> = due.iter().map(|c| c.proc.as_str()).collect();
    // Stats first (the booking's lock order), for the procs as they look now; then only what
    // this transaction really deletes is completed and given back, as Cuebot's
    // deleteVirtualProc does: a proc another writer released meanwhile is not returned twice.
    lock_stats_of(&mut tx, &procs)?;
    let rows = tx.query(
        "DELETE FROM proc p WHERE p.pk_proc = ANY($1)
         RETURNING p.pk_proc, p.pk_host, p.pk_frame, p.pk_layer, p.pk_job, p.int_cores_reserved,
                   p.int_mem_reserved, p.int_gpus_reserved, p.int_gpu_mem_reserved",
        &[&procs],
    )?;
    if rows.is_empty() {
        tx.commit()?;
        return Ok(Completed {
            procs: Vec::new(),
            jobs: Vec::new(),
        });
    }
    let released = Released::from_rows(&rows, due);
    memory::record_usage(&mut tx, &released.rss)?;
    finish_frames(&mut tx, &released.ok_frames, &released.failed)?;
    requeue_denied(&mut tx, &released.denied_frames)?;
    memory::raise_after_oom(&mut tx, &released.oom)?;
    give_back(&mut tx, &released.per_host)?;
    tx.execute(
        "UPDATE job j SET str_state = 'FINISHED', ts_stopped = now()
           FROM job_stat js
          WHERE js.pk_job = j.pk_job AND j.pk_job = ANY($1) AND j.str_state = 'PENDING'
            AND js.int_waiting_count = 0 AND js.int_running_count = 0 AND js.int_depend_count = 0
            AND js.int_dead_count = 0",
        &[&released.jobs],
    )?;
    tx.commit()?;
    Ok(Completed {
        procs: rows.iter().map(|r| r.get(0)).collect(),
        jobs: released.jobs,
    })
}

/// Locks the `layer_stat` and `job_stat` rows of `procs`, in the booking's order.
fn lock_stats_of(
    tx: &mut postgres::Transaction<'_>,
    procs: &[&str],
) -> Result<(), crate::db::DbError> {
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
    crate::db::booking::lock_stat_rows(tx, &layer_keys, &job_keys)?;
    Ok(())
}

/// What the deleted procs held: resources per host (cores, memory, GPUs, GPU memory), their
/// jobs, their frames split by outcome, each frame's max RSS, and the layers (with the
/// memory reserved) of frames that ran out of memory.
struct Released {
    per_host: BTreeMap<String, (i64, i64, i64, i64)>,
    jobs: Vec<String>,
    ok_frames: Vec<String>,
    /// (frame, exit status).
    failed: Vec<(String, i32)>,
    /// (frame, max RSS in KB).
    rss: Vec<(String, i64)>,
    /// (layer, KB its proc had reserved).
    oom: Vec<(String, i64)>,
    /// Frames whose license was refused: back to WAITING without a retry.
    denied_frames: Vec<String>,
}

impl Released {
    /// From the `DELETE … RETURNING` rows and the completions that reported them.
    fn from_rows(rows: &[postgres::Row], due: &[Completion]) -> Released {
        let by_proc: std::collections::HashMap<&str, &Completion> =
            due.iter().map(|c| (c.proc.as_str(), c)).collect();
        let mut out = Released {
            per_host: BTreeMap::new(),
            jobs: Vec::new(),
            ok_frames: Vec::new(),
            failed: Vec::new(),
            rss: Vec::new(),
            oom: Vec::new(),
            denied_frames: Vec::new(),
        };
        for r in rows {
            let e = out.per_host.entry(r.get(1)).or_default();
            e.0 += r.get::<_, i64>(5);
            e.1 += r.get::<_, i64>(6);
            e.2 += i64::from(r.get::<_, i32>(7));
            e.3 += r.get::<_, i64>(8);
            out.jobs.push(r.get(4));
            let frame: String = r.get(2);
            let (exit, rss) = by_proc
                .get(r.get::<_, &str>(0))
                .map_or((0, 0), |c| (c.exit, c.max_rss_kb));
            out.rss.push((frame.clone(), rss));
            if MEMORY_FAILURE_EXITS.contains(&exit) {
                out.oom.push((r.get(3), r.get(6)));
            }
            if exit == LICENSE_DENIED_EXIT {
                out.denied_frames.push(frame)
            } else if exit == 0 {
                out.ok_frames.push(frame)
            } else {
                out.failed.push((frame, exit))
            }
        }
        out.jobs.sort();
        out.jobs.dedup();
        out
    }
}

/// Records the successful frames' run times, then sets every frame's new state: a failed
/// frame retries until `job.int_max_retries`, then dies — except after running out of
/// memory, which Cuebot retries whatever the count (`determineFrameState`).
fn finish_frames(
    tx: &mut postgres::Transaction<'_>,
    ok_frames: &[String],
    failed: &[(String, i32)],
) -> Result<(), crate::db::DbError> {
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
    if !failed.is_empty() {
        let frames: Vec<&str> = failed.iter().map(|(f, _)| f.as_str()).collect();
        let exits: Vec<i32> = failed.iter().map(|(_, e)| *e).collect();
        tx.execute(
            "UPDATE frame f SET str_state = CASE WHEN f.int_retries >= j.int_max_retries AND NOT t.exit = ANY($3)
                                                 THEN 'DEAD' ELSE 'WAITING' END,
                    int_exit_status = t.exit, ts_stopped = now(), ts_updated = now(), int_version = f.int_version + 1
               FROM job j, unnest($1::text[], $2::int[]) AS t(id, exit)
              WHERE j.pk_job = f.pk_job AND f.pk_frame = t.id AND f.str_state = 'RUNNING'",
            &[&frames, &exits, &MEMORY_FAILURE_EXITS.as_slice()],
        )?;
    }
    Ok(())
}

/// Cuebot's completion of a frame whose exit status is a license denial (one of its
/// `dispatcher.layer_delay.rules`): back to WAITING whatever its retries, with the status
/// that makes its next booking spend no retry.
fn requeue_denied(
    tx: &mut postgres::Transaction<'_>,
    denied: &[String],
) -> Result<(), crate::db::DbError> {
    if !denied.is_empty() {
        tx.execute(
            "UPDATE frame SET str_state = 'WAITING', int_exit_status = $2, ts_stopped = now(),
                    ts_updated = now(), int_version = int_version + 1
              WHERE pk_frame = ANY($1) AND str_state = 'RUNNING'",
            &[&denied, &i64::from(super::LICENSE_DENIED_EXIT)],
        )?;
    }
    Ok(())
}

/// Gives the released resources back to their hosts' idle values (never above the totals),
/// the hosts locked in key order.
fn give_back(
    tx: &mut postgres::Transaction<'_>,
    per_host: &BTreeMap<String, (i64, i64, i64, i64)>,
) -> Result<(), crate::db::DbError> {
    let hosts: Vec<&String> = per_host.keys().collect();
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
    Ok(())
}
