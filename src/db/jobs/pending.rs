//! The pass's job query: a show's pending jobs with work for a cluster, in the pass's order
//! — the walk over the show's first jobs, the cluster's job hint, the read from the waiting
//! layers' side — skipping the jobs another booking thread holds.

use std::collections::HashSet;

use postgres::GenericClient;

use crate::{
    db::DbError,
    ids::{FacilityId, FolderId, JobId, ShowId},
};

/// The columns of a pending job, in [`PendingJob`]'s order, then the three sort keys
/// `o1`–`o3` its ordering fills in (`{keys}`).
const JOB_COLUMNS: &str =
    "j.pk_job, j.str_name, j.pk_show, j.pk_folder, j.pk_dept, jr.int_priority::int,
                j.str_show, j.str_shot, j.str_user, j.int_uid::bigint, coalesce(j.str_os, ''),
                j.str_log_dir, coalesce(j.str_loki_url, ''), jr.int_max_cores::bigint,
                jr.int_max_gpus::bigint, jr.int_min_cores::bigint,
                extract(epoch FROM (now() - j.ts_started))::float8, {keys}";

/// The show's pending jobs (`$1` show, `$2` facility) but those at their maximum cores or in
/// a folder at its maximum (`$5`, `$6`: by the counters, see [`JobQuery`]).
const PENDING_OF_SHOW: &str = "FROM job j JOIN job_resource jr ON jr.pk_job = j.pk_job
          WHERE j.pk_show = $1 AND j.pk_facility = $2 AND j.str_state = 'PENDING' AND NOT j.b_paused
            AND NOT (j.pk_job = ANY($5)) AND NOT (j.pk_folder = ANY($6))";

/// Whether the job `c` has a waiting layer the cluster's tags (`$3`) allow and whose start
/// time has come (a layer held by `ts_start_after` is no work yet). `OFFSET 0` keeps
/// it a per-job test (the job's layers by `pk_job`, stopping at the first match): without it
/// PostgreSQL may instead hash every waiting layer of the farm, splitting each one's tags,
/// once per call — the walk and the hint test took twice the time that way at K = 10 (issue
/// 14, `--scale 10 --top-statements`).
const HAS_WORK: &str = "EXISTS (
                SELECT 1 FROM layer l JOIN layer_stat ls ON ls.pk_layer = l.pk_layer
                 WHERE l.pk_job = c.pk_job AND ls.int_waiting_count > 0
                   AND string_to_array(replace(l.str_tags, ' ', ''), '|') && $3::text[]
                   AND (l.ts_start_after IS NULL OR l.ts_start_after <= now())
                 OFFSET 0)";

/// Step 1 of the pass's job query: the show's first `$4` pending jobs in order, each with
/// whether it has a waiting layer the cluster's tags (`$3`) allow. Only these pay for that
/// test, so a pass does not test every pending job of a big show (the cost that grew with
/// the farm, issue 14). The outer sort is on the inner query's own keys, which PostgreSQL
/// reads in the order the inner sort left them.
const PENDING_WALK: &str = "SELECT c.*, {has_work}
           FROM (SELECT {columns} {pending} ORDER BY o1 {d1}, o2 {d2}, o3 LIMIT $4) c
          ORDER BY c.o1 {d1}, c.o2 {d2}, c.o3";

/// Step 2, when the walk found too few: driven from the other side, the layers with waiting
/// frames the tags allow (the partial index `idx_layer_stat_waiting`), then their jobs of
/// the show in order, `$4` of them. It costs what the farm has waiting, so it runs only when
/// the show's first jobs are mostly booked out (late in a drain).
const PENDING_BY_LAYERS: &str = "WITH w AS MATERIALIZED (
                SELECT DISTINCT l.pk_job FROM layer_stat ls JOIN layer l ON l.pk_layer = ls.pk_layer
                 WHERE ls.int_waiting_count > 0
                   AND string_to_array(replace(l.str_tags, ' ', ''), '|') && $3::text[]
                   AND (l.ts_start_after IS NULL OR l.ts_start_after <= now()))
         SELECT {columns} {pending} AND j.pk_job IN (SELECT pk_job FROM w)
          ORDER BY o1 {d1}, o2 {d2}, o3 LIMIT $4";

/// Step 2, from the hint: the jobs of `$4` (found by the last step 3 of the same cluster) in
/// order, each with whether it still has a waiting layer the tags allow — the walk's test,
/// on a few named jobs instead of the farm's waiting layers.
const PENDING_OF_HINT: &str = "SELECT c.*, {has_work}
           FROM (SELECT {columns} {pending} AND j.pk_job = ANY($4)) c
          ORDER BY c.o1 {d1}, c.o2 {d2}, c.o3";

/// How many of the show's first jobs step 1 looks at, per job a pass takes.
const WALK_PER_JOB: i64 = 4;

/// How many jobs step 3 returns per job a pass takes: the rest become the hint.
const HINT_PER_JOB: i64 = 4;

/// How long a hint is used: a job deeper in the order than the walk reaches that gains work
/// waits at most this long to be seen (a bound chosen, not measured: a few passes).
const HINT_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Jobs that the last layer-side read (step 3) of a cluster found beyond what its pass took,
/// for the next passes of that cluster to test first: late in a drain, when the show's first
/// jobs are booked out, this keeps the read of the farm's waiting layers to one pass in
/// several (issue 14: 11 s of a 30 s drain at 10× the farm). A hint only: every job in it is
/// tested for work again, and the read runs whenever the hint falls short or ages out.
#[derive(Debug, Default)]
pub(crate) struct JobHint {
    ids: Vec<JobId>,
    read_at: Option<std::time::Instant>,
}

impl JobHint {
    /// The hint's jobs, while it is fresh.
    fn fresh(&self) -> Option<&[JobId]> {
        let fresh = self.read_at.is_some_and(|t| t.elapsed() < HINT_TTL);
        (fresh && !self.ids.is_empty()).then_some(self.ids.as_slice())
    }

    /// True when it holds nothing worth keeping.
    pub(crate) fn is_empty(&self) -> bool {
        self.fresh().is_none()
    }
}

/// The sort keys `o1`–`o3` of `order` and whether `o1` and `o2` sort descending.
fn order_keys(order: crate::config::JobOrder) -> (String, bool, bool) {
    use crate::config::JobOrder;
    let (keys, d1, d2) = match order {
        JobOrder::Priority => ("jr.int_priority AS o1, j.ts_started AS o2", true, false),
        JobOrder::Fifo => ("j.ts_started AS o1, jr.int_priority AS o2", false, true),
        // The deficit term uses the recomputed job_resource.int_cores (at most one recompute
        // interval old), as Cuebot's own BALANCED mode does.
        JobOrder::Balanced => (
            "(jr.int_priority
              + CASE WHEN jr.int_min_cores > 0 AND jr.int_cores < jr.int_min_cores
                     THEN 100.0 * (1.0 - jr.int_cores::float8 / jr.int_min_cores) ELSE 0 END
              + extract(epoch FROM (now() - j.ts_started)) / 86400.0) AS o1, j.ts_started AS o2",
            true,
            false,
        ),
        // Efraimidis–Spirakis: ordering by u^(1/w) samples the pass's jobs without
        // replacement with probabilities proportional to their priorities. Drawn once per
        // job in the inner query, so both sorts see the same draw.
        JobOrder::Proportional => (
            "power(random(), 1.0 / greatest(jr.int_priority, 1)::float8) AS o1, j.pk_job AS o2",
            true,
            false,
        ),
    };
    (format!("{keys}, j.pk_job AS o3"), d1, d2)
}

/// `template` with the job columns, the show's pending jobs and the sort of `order`.
fn pending_sql(template: &str, order: crate::config::JobOrder) -> String {
    let (keys, d1, d2) = order_keys(order);
    let dir = |desc: bool| if desc { "DESC" } else { "ASC" };
    template
        .replace("{columns}", &JOB_COLUMNS.replace("{keys}", &keys))
        .replace("{pending}", PENDING_OF_SHOW)
        .replace("{has_work}", HAS_WORK)
        .replace("{d1}", dir(d1))
        .replace("{d2}", dir(d2))
}

/// A pending job of a cluster, with what the launch and the caps need.
#[derive(Clone, Debug)]
pub struct PendingJob {
    /// `job.pk_job`.
    pub id: JobId,
    /// `job.str_name`.
    pub name: String,
    /// `job.pk_show`.
    pub show: ShowId,
    /// `job.pk_folder`.
    pub folder: FolderId,
    /// `job.pk_dept`.
    pub dept: String,
    /// `job_resource.int_priority`.
    pub priority: i32,
    /// `job.str_show`.
    pub show_name: String,
    /// `job.str_shot`.
    pub shot: String,
    /// `job.str_user`.
    pub user: String,
    /// `job.int_uid`.
    pub uid: Option<i64>,
    /// `job.str_os`; empty means any OS.
    pub os: String,
    /// `job.str_log_dir`.
    pub log_dir: String,
    /// `job.str_loki_url`.
    pub loki_url: String,
    /// `job_resource.int_max_cores` (centicores; ≤ 0: no room, see `Limits::job`).
    pub max_cores: i64,
    /// `job_resource.int_max_gpus` (≤ 0: no GPU room).
    pub max_gpus: i64,
    /// `job_resource.int_min_cores` (centicores).
    pub min_cores: i64,
    /// Seconds since the job started, for aging.
    pub age_secs: f64,
}

/// What the pass's job query found: the jobs to place, and how many jobs with work for the
/// cluster it passed over because another booking thread of this process holds them.
pub(crate) struct Pending {
    /// Pending jobs with work for the cluster, not held elsewhere, in order.
    pub(crate) jobs: Vec<PendingJob>,
    /// Jobs with work for the cluster that were skipped as held by another thread.
    pub(crate) held_elsewhere: usize,
    /// Nothing was found, and the show has pending jobs left out as full.
    pub(crate) only_full: bool,
}

/// What a pass's job query is about: the show in a facility, the cluster's tags, the order.
pub(crate) struct JobQuery<'a> {
    /// `job.pk_show`.
    pub(crate) show: &'a ShowId,
    /// `job.pk_facility`.
    pub(crate) facility: &'a FacilityId,
    /// The cluster's host tags: a job has work when a waiting layer's tags overlap them.
    pub(crate) tags: &'a [String],
    /// The pass's job order.
    pub(crate) order: crate::config::JobOrder,
    /// Jobs left out: at their maximum cores by the counters. A page of such jobs at the
    /// head of the order would book nothing and hold back every job behind it.
    pub(crate) full_jobs: &'a [JobId],
    /// Folders whose jobs are left out: at their maximum cores by the counters.
    pub(crate) full_folders: &'a [FolderId],
}

impl JobQuery<'_> {
    /// Runs `template` (one of the `PENDING_*` statements) with `$4` = `fourth`.
    fn rows(
        &self,
        conn: &mut impl GenericClient,
        template: &str,
        fourth: &(dyn postgres::types::ToSql + Sync),
    ) -> Result<Vec<postgres::Row>, DbError> {
        let sql = pending_sql(template, self.order);
        // Sent as text, so planned for its parameters on every call: prepared, PostgreSQL
        // switched to generic plans after five calls (they cannot see `LIMIT $4` or the
        // arrays) that read 1.5 times the pages for the walk and 6.5 times for the
        // layer-side read at 10× the drain farm (issue 14).
        Ok(conn.query(
            sql.as_str(),
            &[
                &self.show,
                &self.facility,
                &self.tags,
                fourth,
                &self.full_jobs,
                &self.full_folders,
            ],
        )?)
    }

    /// True when the show has a pending job the query left out as full: a pass that found
    /// nothing else is saturated (room under a cap frees as frames end), not out of work.
    pub(crate) fn any_full(&self, conn: &mut impl GenericClient) -> Result<bool, DbError> {
        if self.full_jobs.is_empty() && self.full_folders.is_empty() {
            return Ok(false);
        }
        let row = conn.query_one(
            "SELECT EXISTS (SELECT 1 FROM job j
                             WHERE j.pk_show = $1 AND j.pk_facility = $2 AND j.str_state = 'PENDING'
                               AND NOT j.b_paused
                               AND (j.pk_job = ANY($3) OR j.pk_folder = ANY($4)))",
            &[
                &self.show,
                &self.facility,
                &self.full_jobs,
                &self.full_folders,
            ],
        )?;
        Ok(row.get(0))
    }
}

/// How many jobs the query returns per job a pass takes: passes of one cluster that start
/// together read the same first jobs, and the one that claims them first would leave the
/// others with nothing to claim (issue 14: side passes came back "busy"). The spares come
/// from rows the query read anyway.
const CANDIDATES_PER_JOB: i64 = WALK_PER_JOB;

/// Pending jobs of the query's show with a waiting layer its tags allow, in its order; up to
/// `limit` × [`CANDIDATES_PER_JOB`] of them that are not in `held` (jobs another booking
/// thread is placing: they would only be claimed in vain, and a pass that took its `limit`
/// from them would starve while later jobs wait), for the pass to claim its `limit` from in
/// order. `hint` is the cluster's [`JobHint`], read and renewed here.
pub(crate) fn pending_jobs(
    conn: &mut impl GenericClient,
    q: &JobQuery<'_>,
    limit: i64,
    held: &HashSet<JobId>,
    hint: &mut JobHint,
) -> Result<Pending, DbError> {
    // The held jobs may take slots of any step: ask for that many more (in the walk, rows:
    // a held job is one row of it, so they do not multiply its length).
    let held_n = held.len() as i64;
    let wanted = limit.saturating_add(held_n);
    let walk = limit.saturating_mul(WALK_PER_JOB).saturating_add(held_n);
    let walked = q.rows(conn, PENDING_WALK, &walk)?;
    // The walk reached its cap with fewer jobs than asked: later jobs may have work.
    let capped = walked.len() as i64 >= walk;
    let walked: Vec<postgres::Row> = walked.into_iter().filter(has_work).collect();
    let cap = limit.saturating_mul(CANDIDATES_PER_JOB);
    let mut rows = split_held(walked.iter().cloned(), row_job, held, cap);
    // A lottery draws anew each pass: a hint would keep the last draw's order.
    let hinted = q.order != crate::config::JobOrder::Proportional;
    if capped && (rows.free.len() as i64) < limit && hinted {
        if let Some(more) = from_hint(conn, q, hint, &walked)? {
            rows = split_held(walked.iter().cloned().chain(more), row_job, held, cap);
        }
    }
    if capped && (rows.free.len() as i64) < limit {
        let fetch = if hinted {
            wanted.saturating_mul(HINT_PER_JOB)
        } else {
            wanted
        };
        let found = q.rows(conn, PENDING_BY_LAYERS, &fetch)?;
        *hint = JobHint {
            ids: found.iter().map(|r| r.get(0)).collect(),
            read_at: Some(std::time::Instant::now()),
        };
        rows = split_held(found.into_iter(), row_job, held, cap);
    }
    let jobs: Vec<PendingJob> = rows.free.iter().map(pending_job).collect();
    let only_full = jobs.is_empty() && rows.held == 0 && q.any_full(conn)?;
    Ok(Pending {
        jobs,
        held_elsewhere: rows.held,
        only_full,
    })
}

/// The job of a row of the `PENDING_*` statements.
fn row_job(row: &postgres::Row) -> JobId {
    row.get(0)
}

/// Whether a row of the walk or the hint's test (its last column) has work for the cluster.
fn has_work(row: &postgres::Row) -> bool {
    row.get::<_, bool>(row.len() - 1)
}

/// The hint's jobs that still have work and are not among `walked`, in order (`None`: no
/// fresh hint). A job found without work leaves the hint, so the next test is smaller.
fn from_hint(
    conn: &mut impl GenericClient,
    q: &JobQuery<'_>,
    hint: &mut JobHint,
    walked: &[postgres::Row],
) -> Result<Option<Vec<postgres::Row>>, DbError> {
    let Some(ids) = hint.fresh() else {
        return Ok(None);
    };
    let seen: HashSet<JobId> = walked.iter().map(|r| r.get(0)).collect();
    let more: Vec<postgres::Row> = q
        .rows(conn, PENDING_OF_HINT, &ids)?
        .into_iter()
        .filter(|r| has_work(r) && !seen.contains(&r.get::<_, JobId>(0)))
        .collect();
    hint.ids = more.iter().map(|r| r.get(0)).collect();
    Ok(Some(more))
}

/// A row of the `PENDING_*` statements as a [`PendingJob`] (columns in `JOB_COLUMNS` order).
fn pending_job(r: &postgres::Row) -> PendingJob {
    PendingJob {
        id: r.get(0),
        name: r.get(1),
        show: r.get(2),
        folder: r.get(3),
        dept: r.get(4),
        priority: r.get(5),
        show_name: r.get(6),
        shot: r.get(7),
        user: r.get(8),
        uid: r.get(9),
        os: r.get(10),
        log_dir: r.get(11),
        loki_url: r.get(12),
        max_cores: r.get(13),
        max_gpus: r.get(14),
        min_cores: r.get(15),
        age_secs: r.get(16),
    }
}

/// Rows of the job query split by the jobs other booking threads hold.
struct Split<T> {
    /// The first `cap` rows whose job is not held.
    free: Vec<T>,
    /// Rows passed over as held before those filled.
    held: usize,
}

/// The first `cap` rows whose job (`job` of the row) is not in `held`, and how many held
/// rows came before them.
fn split_held<T>(
    rows: impl Iterator<Item = T>,
    job: impl Fn(&T) -> JobId,
    held: &HashSet<JobId>,
    cap: i64,
) -> Split<T> {
    let cap = usize::try_from(cap).unwrap_or(0);
    let mut split = Split {
        free: Vec::new(),
        held: 0,
    };
    for row in rows {
        if split.free.len() >= cap {
            break;
        }
        if held.contains(&job(&row)) {
            split.held += 1;
        } else {
            split.free.push(row);
        }
    }
    split
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> HashSet<JobId> {
        v.iter().map(|s| JobId::from(*s)).collect()
    }

    #[test]
    fn a_split_skips_held_jobs_up_to_its_cap() {
        let rows = ["a", "b", "c", "d", "e"];
        let split = split_held(rows.into_iter(), |r| JobId::from(*r), &ids(&["b", "e"]), 3);
        assert_eq!(split.free, ["a", "c", "d"]);
        assert_eq!(split.held, 1, "e comes after the cap");
    }

    #[test]
    fn a_short_split_counts_every_held_job() {
        let rows = ["a", "b"];
        let split = split_held(rows.into_iter(), |r| JobId::from(*r), &ids(&["a"]), 3);
        assert_eq!(split.free, ["b"]);
        assert_eq!(split.held, 1);
    }
}
