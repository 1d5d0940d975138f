//! The bulk recompute of Cuebot's resource tables (`layer_resource`, `folder_resource`,
//! `point`, `job_resource`, `subscription`) from `proc`, for the shows an instance holds.
//!
//! Only rows of scheduler-managed shows are touched, and only rows whose value changed are
//! written (no table-wide churn, no row-by-row loops over unchanged rows).
//!
//! **The cap rows never make a booking wait.** A booking holds the `folder_resource`,
//! `job_resource` and `subscription` rows of its batch FOR SHARE from its cap guard to its
//! commit ([`super::caps`]), and with several booking threads those share locks overlap almost
//! without a gap during a fill. A recompute that locked its rows in one statement, waiting,
//! would hold the first rows while it waited for the next — and every booking of those first
//! rows would queue behind it (a cold fill lost a sixth of its rate so). So the rows of these
//! three tables are found without locks, then locked `SKIP LOCKED` (a row a booking holds now
//! is left for a later round), and their usage is counted in a new statement after the lock —
//! when every booking that had charged them has committed, so the count is exact. What is
//! still held after a few rounds is waited for one row at a time under a short lock timeout,
//! holding nothing else (the statement's own timeout, not only the lock's: bookings that
//! overlap keep a row share-locked without a gap), and otherwise left for the next recompute.
//! `layer_resource` and `point` take the same path: no booking locks them, but Cuebot adds to
//! and takes from them in its proc transactions, and only a count taken after the lock
//! includes what such a transaction committed.
//!
//! Cuebot's verify triggers on `job_resource` and `subscription` fire only when the cap column
//! is unchanged and the usage grows, and raise when the usage is then over the cap; a
//! recomputed usage may legitimately exceed a cap (an operator lowered it), so where it would
//! raise the update moves the cap by one in the same statement — the trigger does not fire —
//! and a second statement of the same transaction moves it back. Other sessions never see
//! the moved cap. Rows within their caps are not moved: each moved row is written once more
//! to move it back (198,000 pages in 7 rounds at 10× the drain farm, issue 14). The benchmark
//! farms still move nearly every row: their uncapped jobs carry -1, which the trigger counts
//! as a cap of -1; Cuebot's own defaults (10,000 centicores, 100 GPUs) are real caps.

use std::{
    sync::LazyLock,
    thread,
    time::{Duration, Instant},
};

use postgres::{Client, error::SqlState};

use super::DbError;
use crate::ids::ShowId;

/// Rows written per table by one recompute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// `layer_resource` rows.
    pub layer_resource: u64,
    /// `job_resource` rows.
    pub job_resource: u64,
    /// `folder_resource` rows.
    pub folder_resource: u64,
    /// `point` rows.
    pub point: u64,
    /// `subscription` rows.
    pub subscription: u64,
    /// Stale rows of any table left as they were: still locked when the table's wait
    /// budget ran out (the next recompute takes them).
    pub left: u64,
}

impl Written {
    /// Adds `other`'s counts to these.
    fn add(&mut self, other: &Written) {
        self.layer_resource += other.layer_resource;
        self.job_resource += other.job_resource;
        self.folder_resource += other.folder_resource;
        self.point += other.point;
        self.subscription += other.subscription;
        self.left += other.left;
    }
}

/// Rebuilds `int_cores`/`int_gpus` of the five resource tables from `proc`, for `shows`
/// (`None`: every managed show).
///
/// Every table goes through `rewrite_shared`: lock first, count in a new statement. Layer and
/// point rows are never locked by a booking, but Cuebot changes them by relative updates in
/// its proc transactions; counted in the statement that waited for such a transaction, the
/// count came from the snapshot before it and undid its change.
pub fn recompute_tables(client: &mut Client, shows: Option<&[ShowId]>) -> Result<Written, DbError> {
    recompute(client, shows, false)
}

/// [`recompute_tables`] for shows just handed back to Cuebot, managed or not. Stagehand's
/// bookings never add to these counters (only the recompute writes them for managed shows),
/// and Cuebot takes each of its releases off them: at the hand-back they read low by what
/// stagehand booked since the last round, and Cuebot's dispatch and verify triggers, which
/// trust them, would book that much past a burst or a job's or folder's maximum. This recount
/// under the same locks makes them exact.
pub fn recount_handed_back(client: &mut Client, shows: &[ShowId]) -> Result<Written, DbError> {
    recompute(client, Some(shows), true)
}

/// Pays the recounts owed to Cuebot (`show_lease.b_recount`, migration V007): the shows
/// handed back (not managed, or deactivated) that no instance holds are recounted one by one
/// as [`recount_handed_back`] does, and a show's debt is cleared if none of its rows was left
/// locked, none of its launches was unresolved before the recount began (an undo after it
/// would take a proc the count included) and no claim came since (its epoch unchanged). A
/// holder whose heartbeat is older than `lease_secs` lets go of such shows first: a dead
/// instance never would, and nobody claims a show that is not managed. Returns the shows
/// recounted and what was written (`None`: nothing owed).
pub fn recount_owed(
    client: &mut Client,
    lease_secs: f64,
) -> Result<Option<(Vec<ShowId>, Written)>, DbError> {
    // One instance at a time pays (the others find the lock taken and skip their turn): they
    // would only recount the same rows side by side. A session lock, so a process that dies
    // lets go with its connection.
    let mine: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&RECOUNT_LOCK])?
        .get(0);
    if !mine {
        return Ok(None);
    }
    let paid = pay_owed(client, lease_secs);
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&RECOUNT_LOCK]);
    let paid = paid?;
    unlocked?;
    Ok(paid)
}

/// The advisory lock key of [`recount_owed`] (an arbitrary constant of stagehand's own).
const RECOUNT_LOCK: i64 = 0x5354_4147_4548_0001;

/// The body of [`recount_owed`], under its lock.
fn pay_owed(
    client: &mut Client,
    lease_secs: f64,
) -> Result<Option<(Vec<ShowId>, Written)>, DbError> {
    client.execute(
        "UPDATE stagehand.show_lease l SET pk_instance = NULL
           FROM show s
          WHERE s.pk_show = l.pk_show AND NOT (s.b_scheduler_managed AND s.b_active)
            AND l.pk_instance IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM stagehand.instance i
                             WHERE i.pk_instance = l.pk_instance
                               AND i.ts_heartbeat > now() - make_interval(secs => $1))",
        &[&lease_secs],
    )?;
    let owed = client.query(
        "SELECT l.pk_show, l.int_epoch,
                NOT EXISTS (SELECT 1 FROM stagehand.pending_launch p WHERE p.pk_show = l.pk_show)
           FROM stagehand.show_lease l JOIN show s ON s.pk_show = l.pk_show
          WHERE l.b_recount AND l.pk_instance IS NULL AND NOT (s.b_scheduler_managed AND s.b_active)",
        &[],
    )?;
    if owed.is_empty() {
        return Ok(None);
    }
    // Show by show, so a row left locked keeps only its own show's debt.
    let mut total = Written::default();
    let mut shows = Vec::new();
    for r in &owed {
        let (show, epoch, settled): (ShowId, i64, bool) = (r.get(0), r.get(1), r.get(2));
        let written = recount_handed_back(client, std::slice::from_ref(&show))?;
        if written.left == 0 && settled {
            client.execute(
                "UPDATE stagehand.show_lease SET b_recount = false
                  WHERE pk_show = $1 AND int_epoch = $2 AND pk_instance IS NULL",
                &[&show, &epoch],
            )?;
        }
        total.add(&written);
        shows.push(show);
    }
    Ok(Some((shows, total)))
}

/// The keys of the shows `names`; an error names those that do not exist.
pub fn show_ids(client: &mut Client, names: &[String]) -> Result<Vec<ShowId>, DbError> {
    let rows = client.query(
        "SELECT str_name, pk_show FROM show WHERE str_name = ANY($1)",
        &[&names],
    )?;
    let found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let missing: Vec<&String> = names.iter().filter(|n| !found.contains(n)).collect();
    if !missing.is_empty() {
        return Err(DbError::Config(format!("no show named {missing:?}")));
    }
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(1).as_str().into())
        .collect())
}

/// The recompute of `shows`; `any` also takes the shows no longer managed (`$2`).
fn recompute(client: &mut Client, shows: Option<&[ShowId]>, any: bool) -> Result<Written, DbError> {
    let mut left = 0;
    let mut table = |t: &SharedTable| -> Result<u64, DbError> {
        let (written, not) = rewrite_shared(client, t, shows, any)?;
        left += not;
        Ok(written)
    };
    let layer_resource = table(&LAYER)?;
    let folder_resource = table(&FOLDER)?;
    let point = table(&POINT)?;
    let job_resource = table(&JOB)?;
    let subscription = table(&SUBSCRIPTION)?;
    Ok(Written {
        layer_resource,
        job_resource,
        folder_resource,
        point,
        subscription,
        left,
    })
}

/// A resource table rewritten lock first, count after (see the module doc).
struct SharedTable {
    /// The key column.
    key: &'static str,
    /// The table.
    table: &'static str,
    /// Unlocked: the keys of the rows of the shows `$1` whose usage differs from `proc`.
    stale: LazyLock<String>,
    /// `$1` the keys locked: rewrites their usage from `proc`, the cap nudged where the usage
    /// grows past it; `RETURNING key, nudged`.
    update: &'static str,
    /// `$1` the keys nudged: moves their cap back (`None`: the table has no verify trigger).
    restore: Option<&'static str>,
    /// Whether `update` runs with nested loops off (see [`SUBSCRIPTION`]).
    hash_join: bool,
}

/// Rounds of `SKIP LOCKED` before the rows still held are waited for one by one.
const SKIP_ROUNDS: usize = 3;
/// Pause between those rounds: about one booking batch.
const ROUND_PAUSE: Duration = Duration::from_millis(20);
/// What the one-by-one waits of one table may take in all; the rest waits for the next
/// recompute.
const WAIT_BUDGET: Duration = Duration::from_millis(250);

/// Rewrites the stale rows of `t` without ever holding one row while waiting for another;
/// returns the rows written and the stale rows left (still locked when the budget ran out).
fn rewrite_shared(
    client: &mut Client,
    t: &SharedTable,
    shows: Option<&[ShowId]>,
    any: bool,
) -> Result<(u64, u64), DbError> {
    let mut pending: Vec<String> = client
        .query(t.stale.as_str(), &[&shows, &any])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut written = 0;
    let skip_locked = lock_sql(t, "SKIP LOCKED");
    for round in 0..SKIP_ROUNDS {
        if pending.is_empty() {
            return Ok((written, 0));
        }
        if round > 0 {
            thread::sleep(ROUND_PAUSE);
        }
        let (locked, n) = lock_and_rewrite(client, t, &skip_locked, &pending, None)?;
        written += n;
        pending.retain(|k| !locked.contains(k));
    }
    let waiting = lock_sql(t, "");
    let deadline = Instant::now() + WAIT_BUDGET;
    let mut left = 0;
    for key in pending {
        let time_left = deadline.saturating_duration_since(Instant::now());
        if time_left.is_zero() {
            left += 1;
            continue;
        }
        let keys = [key];
        let (locked, n) = lock_and_rewrite(client, t, &waiting, &keys, Some(time_left))?;
        written += n;
        left += u64::from(locked.is_empty());
    }
    Ok((written, left))
}

/// The statement that locks the rows `$1` of `t` for the update, in key order.
fn lock_sql(t: &SharedTable, wait: &str) -> String {
    format!(
        "SELECT {key} FROM {table} WHERE {key} = ANY($1) ORDER BY {key} FOR NO KEY UPDATE {wait}",
        key = t.key,
        table = t.table,
    )
}

/// One transaction: locks what `lock` gets of `keys` (waiting at most `timeout` in all, if
/// given), rewrites those rows, moves back the caps it nudged, commits. Returns the keys
/// locked and the rows written; a lock or statement timeout is not an error (nothing locked,
/// nothing written).
fn lock_and_rewrite(
    client: &mut Client,
    t: &SharedTable,
    lock: &str,
    keys: &[String],
    timeout: Option<Duration>,
) -> Result<(Vec<String>, u64), DbError> {
    let mut tx = client.transaction()?;
    if let Some(timeout) = timeout {
        // `lock_timeout` bounds one wait; bookings that overlap on a row (each joins its share
        // lock before the last commits) make one wait follow another for as long as they
        // last, so the statement's own timeout bounds them all. Both are undone below.
        let ms = timeout.as_millis().max(1);
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = {ms}; SET LOCAL statement_timeout = {ms}"
        ))?;
    }
    let locked: Vec<String> = match tx.query(lock, &[&keys]) {
        Ok(rows) => rows.iter().map(|r| r.get(0)).collect(),
        Err(e)
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                || e.code() == Some(&SqlState::QUERY_CANCELED) =>
        {
            tx.rollback()?;
            return Ok((Vec::new(), 0));
        }
        Err(e) => return Err(e.into()),
    };
    if timeout.is_some() {
        // Back to the session's own limits (`[database]`) for the rewrite.
        tx.batch_execute(
            "SET LOCAL lock_timeout TO DEFAULT; SET LOCAL statement_timeout TO DEFAULT",
        )?;
    }
    if locked.is_empty() {
        tx.rollback()?;
        return Ok((locked, 0));
    }
    if t.hash_join {
        tx.batch_execute("SET LOCAL enable_nestloop = off")?;
    }
    // A new statement after the lock: its snapshot has every booking that charged these rows.
    let rows = tx.query(t.update, &[&locked])?;
    let nudged: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    if let (Some(restore), false) = (t.restore, nudged.is_empty()) {
        tx.execute(restore, &[&nudged])?;
    }
    tx.commit()?;
    Ok((locked, rows.len() as u64))
}

/// The procs of jobs of the managed shows a recompute covers (`$1`, see [`HELD`]; `$2`: the
/// shows of `$1` whether managed or not), as a `FROM … WHERE` fragment a caller may extend
/// with `AND …`.
const MANAGED_PROCS: &str =
    "proc p JOIN job j ON j.pk_job = p.pk_job JOIN show s ON s.pk_show = j.pk_show
                             WHERE (s.b_scheduler_managed OR $2) AND ($1::text[] IS NULL OR s.pk_show = ANY($1))";

/// The shows a recompute covers (`$1`, NULL for all managed shows): with several instances
/// each rewrites only the rows of the shows it holds, so two never race on the same rows.
const HELD: &str = "($1::text[] IS NULL OR s.pk_show = ANY($1))";

/// `layer_resource` of unfinished jobs.
static LAYER: SharedTable = SharedTable {
    key: "pk_layer_resource",
    table: "layer_resource",
    stale: LazyLock::new(|| {
        format!(
            "WITH live AS (SELECT p.pk_layer, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} GROUP BY p.pk_layer)
             SELECT lr.pk_layer_resource FROM layer_resource lr
               JOIN job j ON j.pk_job = lr.pk_job
               JOIN show s ON s.pk_show = j.pk_show
               LEFT JOIN live ON live.pk_layer = lr.pk_layer
              WHERE (s.b_scheduler_managed OR $2) AND j.str_state <> 'FINISHED' AND {HELD}
                AND (lr.int_cores <> coalesce(live.cores, 0) OR lr.int_gpus <> coalesce(live.gpus, 0))"
        )
    }),
    update: "WITH live AS (SELECT lr.pk_layer_resource AS pk,
                                  coalesce(sum(p.int_cores_reserved), 0)::bigint AS cores,
                                  coalesce(sum(p.int_gpus_reserved), 0)::bigint AS gpus
                             FROM layer_resource lr LEFT JOIN proc p ON p.pk_layer = lr.pk_layer
                            WHERE lr.pk_layer_resource = ANY($1) GROUP BY lr.pk_layer_resource)
             UPDATE layer_resource lr SET int_cores = l.cores, int_gpus = l.gpus
               FROM live l WHERE lr.pk_layer_resource = l.pk
                AND (lr.int_cores <> l.cores OR lr.int_gpus <> l.gpus)
           RETURNING lr.pk_layer_resource, false",
    restore: None,
    hash_join: false,
};

/// `point` (department per show).
static POINT: SharedTable = SharedTable {
    key: "pk_point",
    table: "point",
    stale: LazyLock::new(|| {
        format!(
            "WITH live AS (SELECT j.pk_dept, j.pk_show, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} GROUP BY j.pk_dept, j.pk_show)
             SELECT pt.pk_point FROM point pt
               JOIN show s ON s.pk_show = pt.pk_show
               LEFT JOIN live ON live.pk_dept = pt.pk_dept AND live.pk_show = pt.pk_show
              WHERE (s.b_scheduler_managed OR $2) AND {HELD}
                AND (pt.int_cores <> coalesce(live.cores, 0) OR pt.int_gpus <> coalesce(live.gpus, 0))"
        )
    }),
    update: "WITH live AS (SELECT pt.pk_point AS pk,
                                  coalesce(sum(p.int_cores_reserved), 0)::bigint AS cores,
                                  coalesce(sum(p.int_gpus_reserved), 0)::bigint AS gpus
                             FROM point pt
                             LEFT JOIN (proc p JOIN job j ON j.pk_job = p.pk_job)
                               ON j.pk_dept = pt.pk_dept AND j.pk_show = pt.pk_show
                            WHERE pt.pk_point = ANY($1) GROUP BY pt.pk_point)
             UPDATE point pt SET int_cores = l.cores, int_gpus = l.gpus
               FROM live l WHERE pt.pk_point = l.pk
                AND (pt.int_cores <> l.cores OR pt.int_gpus <> l.gpus)
           RETURNING pt.pk_point, false",
    restore: None,
    hash_join: false,
};

/// `folder_resource`, counting every proc of the folder's jobs, finished or not: Cuebot takes
/// each proc it releases off the folder whatever its job's state, and the booking's folder
/// guard counts them all. Left out, the procs of a job killed but not yet stopped on RQD were
/// taken off twice once Cuebot released them (a show handed back read low for good).
static FOLDER: SharedTable = SharedTable {
    key: "pk_folder_resource",
    table: "folder_resource",
    stale: LazyLock::new(|| {
        format!(
            "WITH live AS (SELECT j.pk_folder, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} GROUP BY j.pk_folder)
             SELECT fr.pk_folder_resource FROM folder_resource fr
               JOIN folder f ON f.pk_folder = fr.pk_folder
               JOIN show s ON s.pk_show = f.pk_show
               LEFT JOIN live ON live.pk_folder = fr.pk_folder
              WHERE (s.b_scheduler_managed OR $2) AND {HELD}
                AND (fr.int_cores <> coalesce(live.cores, 0) OR fr.int_gpus <> coalesce(live.gpus, 0))"
        )
    }),
    update: "WITH live AS (SELECT fr.pk_folder_resource AS pk,
                                  coalesce(sum(p.int_cores_reserved), 0)::bigint AS cores,
                                  coalesce(sum(p.int_gpus_reserved), 0)::bigint AS gpus
                             FROM folder_resource fr
                             LEFT JOIN job j ON j.pk_folder = fr.pk_folder
                             LEFT JOIN proc p ON p.pk_job = j.pk_job
                            WHERE fr.pk_folder_resource = ANY($1) GROUP BY fr.pk_folder_resource)
             UPDATE folder_resource fr SET int_cores = l.cores, int_gpus = l.gpus
               FROM live l WHERE fr.pk_folder_resource = l.pk
                AND (fr.int_cores <> l.cores OR fr.int_gpus <> l.gpus)
           RETURNING fr.pk_folder_resource, false",
    restore: None,
    hash_join: false,
};

/// `job_resource` of unfinished jobs, the maxima nudged where the usage grows past them.
static JOB: SharedTable = SharedTable {
    key: "pk_job_resource",
    table: "job_resource",
    stale: LazyLock::new(|| {
        format!(
            "WITH live AS (SELECT p.pk_job, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} GROUP BY p.pk_job)
             SELECT jr.pk_job_resource FROM job_resource jr
               JOIN job j ON j.pk_job = jr.pk_job
               JOIN show s ON s.pk_show = j.pk_show
               LEFT JOIN live ON live.pk_job = jr.pk_job
              WHERE (s.b_scheduler_managed OR $2) AND j.str_state <> 'FINISHED' AND {HELD}
                AND (jr.int_cores <> coalesce(live.cores, 0) OR jr.int_gpus <> coalesce(live.gpus, 0))"
        )
    }),
    // `nudge` compares with the values before this statement (the row is ours, locked): the
    // trigger fires where the usage grows, and raises only where it is then over a cap.
    update: "WITH live AS (SELECT jr.pk_job_resource AS pk,
                                  coalesce(sum(p.int_cores_reserved), 0)::bigint AS cores,
                                  coalesce(sum(p.int_gpus_reserved), 0)::bigint AS gpus,
                                  jr.int_cores AS was_cores, jr.int_gpus AS was_gpus,
                                  jr.int_max_cores AS max_cores, jr.int_max_gpus AS max_gpus
                             FROM job_resource jr LEFT JOIN proc p ON p.pk_job = jr.pk_job
                            WHERE jr.pk_job_resource = ANY($1)
                            GROUP BY jr.pk_job_resource, jr.int_cores, jr.int_gpus,
                                     jr.int_max_cores, jr.int_max_gpus),
                  t AS (SELECT pk, cores, gpus,
                               (cores > was_cores OR gpus > was_gpus)
                               AND (cores > max_cores OR gpus > max_gpus) AS nudge FROM live)
             UPDATE job_resource jr
                SET int_cores = t.cores, int_gpus = t.gpus,
                    int_max_cores = CASE WHEN t.nudge THEN jr.int_max_cores + 1 ELSE jr.int_max_cores END,
                    int_max_gpus = CASE WHEN t.nudge THEN jr.int_max_gpus + 1 ELSE jr.int_max_gpus END
               FROM t WHERE jr.pk_job_resource = t.pk
                AND (jr.int_cores <> t.cores OR jr.int_gpus <> t.gpus)
           RETURNING jr.pk_job_resource, t.nudge",
    restore: Some(
        "UPDATE job_resource SET int_max_cores = int_max_cores - 1, int_max_gpus = int_max_gpus - 1
          WHERE pk_job_resource = ANY($1)",
    ),
    hash_join: false,
};

/// `subscription` (procs on hosts of its allocation, not local), the burst nudged where the
/// cores grow past it.
///
/// Its recount joins every proc of the show to its host. Statistics lag a fill (PostgreSQL
/// had 16 procs of a show where there were 20,200), and with them the planner looked each
/// host up by key: 61,000 buffer pages per subscription at 10× the drain farm, 1.46 of the
/// 1.74 million pages of the recompute (issue 14, auto_explain). With nested loops off it
/// hashes the hosts once instead.
static SUBSCRIPTION: SharedTable = SharedTable {
    key: "pk_subscription",
    table: "subscription",
    stale: LazyLock::new(|| {
        format!(
            "WITH live AS (SELECT j.pk_show, h.pk_alloc, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM proc p JOIN host h ON h.pk_host = p.pk_host JOIN job j ON j.pk_job = p.pk_job
                             JOIN show s ON s.pk_show = j.pk_show
                            WHERE (s.b_scheduler_managed OR $2) AND NOT p.b_local AND {HELD}
                            GROUP BY j.pk_show, h.pk_alloc)
             SELECT sub.pk_subscription FROM subscription sub
               JOIN show s ON s.pk_show = sub.pk_show
               LEFT JOIN live ON live.pk_show = sub.pk_show AND live.pk_alloc = sub.pk_alloc
              WHERE (s.b_scheduler_managed OR $2) AND {HELD}
                AND (sub.int_cores <> coalesce(live.cores, 0) OR sub.int_gpus <> coalesce(live.gpus, 0))"
        )
    }),
    update: "WITH live AS (SELECT sub.pk_subscription AS pk,
                                  coalesce(sum(p.int_cores_reserved), 0)::bigint AS cores,
                                  coalesce(sum(p.int_gpus_reserved), 0)::bigint AS gpus,
                                  sub.int_cores AS was_cores, sub.int_burst AS burst
                             FROM subscription sub
                             LEFT JOIN (proc p JOIN host h ON h.pk_host = p.pk_host AND NOT p.b_local)
                               ON p.pk_show = sub.pk_show AND h.pk_alloc = sub.pk_alloc
                            WHERE sub.pk_subscription = ANY($1)
                            GROUP BY sub.pk_subscription, sub.int_cores, sub.int_burst),
                  t AS (SELECT pk, cores, gpus, cores > was_cores AND cores > burst AS nudge FROM live)
             UPDATE subscription sub
                SET int_cores = t.cores, int_gpus = t.gpus,
                    int_burst = CASE WHEN t.nudge THEN sub.int_burst + 1 ELSE sub.int_burst END
               FROM t WHERE sub.pk_subscription = t.pk
                AND (sub.int_cores <> t.cores OR sub.int_gpus <> t.gpus)
           RETURNING sub.pk_subscription, t.nudge",
    restore: Some(
        "UPDATE subscription SET int_burst = int_burst - 1 WHERE pk_subscription = ANY($1)",
    ),
    hash_join: true,
};
