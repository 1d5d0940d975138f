//! Selection SQL: the cluster set, the active-work scan, pending jobs of a cluster and their
//! layers with WAITING frames.
//!
//! Cost per pass is O(jobs and frames returned): every query is bounded by the cluster's show,
//! facility and tags and by `LIMIT`s, never by the size of the farm or of the frame table.

use std::collections::{HashMap, HashSet};

use postgres::GenericClient;

use super::DbError;
use crate::{
    ids::{AllocId, FacilityId, FolderId, FrameId, JobId, LayerId, LimitId, ShowId},
    model::{TagType, split_tags},
};

/// One row of the cluster set: a tag a managed show can book in a facility.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTagRow {
    /// `alloc.pk_facility`.
    pub facility: FacilityId,
    /// `show.pk_show`.
    pub show: ShowId,
    /// `show.str_name`.
    pub show_name: String,
    /// The host tag.
    pub tag: String,
    /// Its type.
    pub tag_type: TagType,
    /// The allocation, for ALLOC tags.
    pub alloc: Option<AllocId>,
}

/// A subscription of a managed show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionRow {
    /// `subscription.pk_show`.
    pub show: ShowId,
    /// `subscription.pk_alloc`.
    pub alloc: AllocId,
    /// The allocation's facility.
    pub facility: FacilityId,
    /// `int_size` in centicores.
    pub size: i64,
    /// `int_burst` in centicores.
    pub burst: i64,
}

/// Resolves a facility name to its key.
pub(crate) fn facility_id(
    conn: &mut impl GenericClient,
    name: &str,
) -> Result<Option<FacilityId>, DbError> {
    Ok(conn
        .query_opt(
            "SELECT pk_facility FROM facility WHERE str_name = $1",
            &[&name],
        )?
        .map(|r| r.get(0)))
}

/// Every (facility, show, tag) a managed, active show can book: ALLOC tags of subscribed
/// allocations that some host carries, and the other tags of hosts in those allocations.
pub fn cluster_tags(
    conn: &mut impl GenericClient,
    facility: Option<&FacilityId>,
) -> Result<Vec<ClusterTagRow>, DbError> {
    let rows = conn.query(
        "SELECT DISTINCT a.pk_facility, sh.pk_show, sh.str_name, a.str_tag, 'ALLOC'::text, a.pk_alloc
           FROM alloc a
           JOIN subscription s ON s.pk_alloc = a.pk_alloc
           JOIN show sh ON sh.pk_show = s.pk_show
          WHERE sh.b_active AND sh.b_scheduler_managed AND a.str_tag IS NOT NULL
            AND ($1::text IS NULL OR a.pk_facility = $1)
            AND EXISTS (SELECT 1 FROM host_tag ht WHERE ht.str_tag = a.str_tag AND ht.str_tag_type = 'ALLOC')
         UNION
         SELECT DISTINCT a.pk_facility, sh.pk_show, sh.str_name, ht.str_tag, upper(ht.str_tag_type), NULL
           FROM host_tag ht
           JOIN host h ON h.pk_host = ht.pk_host
           JOIN alloc a ON a.pk_alloc = h.pk_alloc
           JOIN subscription s ON s.pk_alloc = a.pk_alloc
           JOIN show sh ON sh.pk_show = s.pk_show
          WHERE upper(ht.str_tag_type) <> 'ALLOC' AND sh.b_active AND sh.b_scheduler_managed
            AND ($1::text IS NULL OR a.pk_facility = $1)",
        &[&facility],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some(ClusterTagRow {
                facility: r.get(0),
                show: r.get(1),
                show_name: r.get(2),
                tag: r.get(3),
                tag_type: TagType::from_db(r.get::<_, &str>(4))?,
                alloc: r.get(5),
            })
        })
        .collect())
}

/// The subscriptions of managed, active shows.
pub fn subscriptions(conn: &mut impl GenericClient) -> Result<Vec<SubscriptionRow>, DbError> {
    let rows = conn.query(
        "SELECT s.pk_show, s.pk_alloc, a.pk_facility, s.int_size, s.int_burst
           FROM subscription s
           JOIN alloc a ON a.pk_alloc = s.pk_alloc
           JOIN show sh ON sh.pk_show = s.pk_show
          WHERE sh.b_scheduler_managed AND sh.b_active",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| SubscriptionRow {
            show: r.get(0),
            alloc: r.get(1),
            facility: r.get(2),
            size: r.get(3),
            burst: r.get(4),
        })
        .collect())
}

/// Waiting frames per (show, facility, tag) of managed shows: the awake gate. A superset of
/// what the per-cluster job query can return, so no cluster with work is ever left asleep.
pub(crate) fn active_tags(
    conn: &mut impl GenericClient,
) -> Result<HashMap<(ShowId, FacilityId, String), TagWork>, DbError> {
    let rows = conn.query(
        "SELECT j.pk_show, j.pk_facility, t.tag, SUM(ls.int_waiting_count)::bigint,
                extract(epoch FROM max(j.ts_started))::float8
           FROM layer_stat ls
           JOIN layer l ON l.pk_layer = ls.pk_layer
           JOIN job j ON j.pk_job = l.pk_job
           JOIN show sh ON sh.pk_show = j.pk_show
          CROSS JOIN LATERAL unnest(string_to_array(replace(l.str_tags, ' ', ''), '|')) AS t(tag)
          WHERE ls.int_waiting_count > 0 AND j.str_state = 'PENDING' AND NOT j.b_paused
            AND sh.b_active AND sh.b_scheduler_managed AND t.tag <> ''
          GROUP BY 1, 2, 3",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let work = TagWork {
                waiting: r.get(3),
                newest: r.get::<_, Option<f64>>(4).unwrap_or(0.0),
            };
            ((r.get(0), r.get(1), r.get(2)), work)
        })
        .collect())
}

/// The waiting work of one (show, facility, tag) as the active-work scan reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct TagWork {
    /// WAITING frames of layers asking for the tag.
    pub(crate) waiting: i64,
    /// The newest `job.ts_started` among those layers' jobs (seconds since the epoch): a
    /// job submitted since a cluster's pass shows as a newer start.
    pub(crate) newest: f64,
}

/// A cheap fingerprint of the managed shows' bookable work: pending unpaused jobs, their
/// waiting frames, the newest job's start. New work shows as a change in the job count or the
/// newest start, or a rise in the waiting count (see `cluster::feed`, the new-work probe).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct WorkProbe {
    /// Pending, unpaused jobs of active managed shows.
    pub(crate) jobs: i64,
    /// Their waiting frames (`job_stat.int_waiting_count`).
    pub(crate) waiting: i64,
    /// The newest `job.ts_started` (seconds since the epoch; 0 with no job).
    pub(crate) newest: f64,
}

impl WorkProbe {
    /// True when `self` (read after `before`) shows work `before` did not: a job arrived or
    /// was unpaused, or frames became waiting faster than they were booked.
    pub(crate) fn has_new_work(&self, before: &WorkProbe) -> bool {
        self.jobs != before.jobs || self.newest != before.newest || self.waiting > before.waiting
    }
}

/// Reads the [`WorkProbe`]: one index-driven aggregate over pending jobs, no frame rows.
pub(crate) fn work_probe(conn: &mut impl GenericClient) -> Result<WorkProbe, DbError> {
    let r = conn.query_one(
        "SELECT count(*)::bigint, coalesce(sum(js.int_waiting_count), 0)::bigint,
                coalesce(extract(epoch FROM max(j.ts_started)), 0)::float8
           FROM job j
           JOIN show sh ON sh.pk_show = j.pk_show
           JOIN job_stat js ON js.pk_job = j.pk_job
          WHERE j.str_state = 'PENDING' AND NOT j.b_paused AND sh.b_active AND sh.b_scheduler_managed",
        &[],
    )?;
    Ok(WorkProbe {
        jobs: r.get(0),
        waiting: r.get(1),
        newest: r.get(2),
    })
}

/// The columns of a pending job, in [`PendingJob`]'s order, then the three sort keys
/// `o1`–`o3` its ordering fills in (`{keys}`).
const JOB_COLUMNS: &str =
    "j.pk_job, j.str_name, j.pk_show, j.pk_folder, j.pk_dept, jr.int_priority::int,
                j.str_show, j.str_shot, j.str_user, j.int_uid::bigint, coalesce(j.str_os, ''),
                j.str_log_dir, coalesce(j.str_loki_url, ''), jr.int_max_cores::bigint,
                jr.int_max_gpus::bigint, jr.int_min_cores::bigint,
                extract(epoch FROM (now() - j.ts_started))::float8, {keys}";

/// The show's pending jobs (`$1` show, `$2` facility).
const PENDING_OF_SHOW: &str = "FROM job j JOIN job_resource jr ON jr.pk_job = j.pk_job
          WHERE j.pk_show = $1 AND j.pk_facility = $2 AND j.str_state = 'PENDING' AND NOT j.b_paused";

/// Whether the job `c` has a waiting layer the cluster's tags (`$3`) allow.
const HAS_WORK: &str = "EXISTS (
                SELECT 1 FROM layer l JOIN layer_stat ls ON ls.pk_layer = l.pk_layer
                 WHERE l.pk_job = c.pk_job AND ls.int_waiting_count > 0
                   AND string_to_array(replace(l.str_tags, ' ', ''), '|') && $3::text[])";

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
                   AND string_to_array(replace(l.str_tags, ' ', ''), '|') && $3::text[])
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
    /// `job_resource.int_max_cores` (centicores, ≤ 0 unlimited).
    pub max_cores: i64,
    /// `job_resource.int_max_gpus` (≤ 0 unlimited).
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
        Ok(conn.query(
            sql.as_str(),
            &[&self.show, &self.facility, &self.tags, fourth],
        )?)
    }
}

/// Pending jobs of the query's show with a waiting layer its tags allow, in its order; up to
/// `limit` of them that are not in `held` (jobs another booking thread is placing: they would
/// only be claimed in vain, and a pass that took its `limit` from them would starve while
/// later jobs wait). `hint` is the cluster's [`JobHint`], read and renewed here.
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
    let mut rows = split_held(walked.iter().cloned(), held, limit);
    // A lottery draws anew each pass: a hint would keep the last draw's order.
    let hinted = q.order != crate::config::JobOrder::Proportional;
    if capped && (rows.0.len() as i64) < limit && hinted {
        if let Some(more) = from_hint(conn, q, hint, &walked)? {
            rows = split_held(walked.iter().cloned().chain(more), held, limit);
        }
    }
    if capped && (rows.0.len() as i64) < limit {
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
        rows = split_held(found.into_iter(), held, limit);
    }
    let (rows, held_elsewhere) = rows;
    Ok(Pending {
        jobs: rows.iter().map(pending_job).collect(),
        held_elsewhere,
    })
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

/// The first `limit` rows whose job is not in `held`, and how many rows were held.
fn split_held(
    rows: impl Iterator<Item = postgres::Row>,
    held: &HashSet<JobId>,
    limit: i64,
) -> (Vec<postgres::Row>, usize) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let (mut free, mut skipped) = (Vec::new(), 0);
    for row in rows {
        if free.len() >= limit {
            break;
        }
        if held.contains(&row.get::<_, JobId>(0)) {
            skipped += 1;
        } else {
            free.push(row);
        }
    }
    (free, skipped)
}

/// A layer with waiting frames.
#[derive(Clone, Debug)]
pub struct LayerWork {
    /// `layer.pk_job`.
    pub job: JobId,
    /// `layer.pk_layer`.
    pub id: LayerId,
    /// `layer.str_name`.
    pub name: String,
    /// `layer.str_cmd`.
    pub command: String,
    /// `layer.str_range`.
    pub range: String,
    /// `layer.int_chunk_size`.
    pub chunk_size: i64,
    /// `layer.int_cores_min` (centicores; 0 whole host, < 0 all but N).
    pub cores_min: i64,
    /// `layer.int_cores_max` (centicores; ≤ 0 unlimited).
    pub cores_max: i64,
    /// `layer.int_mem_min` (KB).
    pub mem_min: i64,
    /// `layer.int_gpus_min`.
    pub gpus_min: i64,
    /// `layer.int_gpu_mem_min` (KB).
    pub gpu_mem_min: i64,
    /// `layer.b_threadable`.
    pub threadable: bool,
    /// `layer.str_tags`, split.
    pub tags: Vec<String>,
    /// `layer.str_services`, split on commas.
    pub services: Vec<String>,
    /// `layer_limit.pk_limit_record` of the layer.
    pub limits: Vec<LimitId>,
    /// Licenses named by its `CUE_LICENSES` environment, sorted (empty: none).
    pub licenses: Vec<String>,
    /// Expected run time of a frame in seconds (history or timeout; `None`: unknown).
    pub est_secs: Option<f64>,
    /// `layer_stat.int_waiting_count`: every WAITING frame, not only those fetched.
    pub waiting: i64,
    /// What the layer's finished frames used (`layer_mem`, `layer_usage`, `b_optimize`), for
    /// sizing memory from history.
    pub(crate) history: crate::sizing::MemoryHistory,
    /// WAITING frames in dispatch order.
    pub frames: Vec<FrameWork>,
}

/// A WAITING frame and the version its booking must find unchanged.
#[derive(Clone, Debug)]
pub struct FrameWork {
    /// `frame.pk_frame`.
    pub id: FrameId,
    /// `frame.str_name` (`NNNN-layer`).
    pub name: String,
    /// `frame.int_number`.
    pub number: i32,
    /// `frame.int_version` as read.
    pub version: i32,
    /// Seconds since `frame.ts_updated` (how long it has been eligible).
    pub waited_secs: f64,
}

/// Layers of `jobs` with waiting frames whose tags overlap `tags` and whose start-after time
/// has passed, with up to `frames_per_layer` WAITING frames each, in layer dispatch order
/// then frame dispatch order.
pub(crate) fn layers_with_frames(
    conn: &mut impl GenericClient,
    jobs: &[JobId],
    tags: &[String],
    frames_per_layer: i64,
    min_history: i64,
) -> Result<Vec<LayerWork>, DbError> {
    let rows = conn.query(
        LAYERS_WITH_FRAMES,
        &[&jobs, &tags, &frames_per_layer, &min_history],
    )?;
    let mut layers: Vec<LayerWork> = Vec::new();
    for r in &rows {
        // One row per frame, a layer's frames adjacent: a new layer starts a new entry.
        let layer_id: &str = r.get(1);
        if layers.last().is_none_or(|l| l.id != layer_id) {
            layers.push(layer_of(r));
        }
        if let Some(layer) = layers.last_mut() {
            layer.frames.push(frame_of(r));
        }
    }
    Ok(layers)
}

/// The statement of [`layers_with_frames`]: a layer's columns (0–14, 20–25) repeated on
/// each of its frames' rows (15–19). `$1` jobs, `$2` tags, `$3` frames per layer, `$4` the
/// minimum history for an estimate. A frame with depends left (`int_depend_count`) is never
/// read, whatever its state says (Cuebot's triggers keep such a frame DEPEND).
const LAYERS_WITH_FRAMES: &str = concat!(
        "SELECT l.pk_job, l.pk_layer, l.str_name, l.str_cmd, l.str_range, l.int_chunk_size::bigint,
                l.int_cores_min::bigint, l.int_cores_max::bigint, l.int_mem_min::bigint,
                l.int_gpus_min::bigint, l.int_gpu_mem_min::bigint, l.b_threadable, l.str_tags,
                l.str_services,
                ARRAY(SELECT ll.pk_limit_record::text FROM layer_limit ll WHERE ll.pk_layer = l.pk_layer),
                f.pk_frame, f.str_name, f.int_number::int, coalesce(f.int_version, 0)::int,
                coalesce(extract(epoch FROM (now() - f.ts_updated)), 0)::float8,
                ls.int_waiting_count::bigint, ",
        super::reservations::runtime_estimate!("$4"),
        ", coalesce(lm.int_max_rss, 0)::bigint, coalesce(lu.int_frame_success_count, 0)::bigint,
                l.b_optimize, lic.names
           FROM layer l
           JOIN layer_stat ls ON ls.pk_layer = l.pk_layer
           LEFT JOIN layer_usage lu ON lu.pk_layer = l.pk_layer
           LEFT JOIN layer_mem lm ON lm.pk_layer = l.pk_layer
          CROSS JOIN LATERAL (
                SELECT string_agg(le.str_value, ',') AS names FROM layer_env le
                 WHERE le.pk_layer = l.pk_layer AND le.str_key = 'CUE_LICENSES') lic
          CROSS JOIN LATERAL (
                SELECT f.pk_frame, f.str_name, f.int_number, f.int_version, f.ts_updated,
                       f.int_dispatch_order, f.int_layer_order
                  FROM frame f
                 WHERE f.pk_layer = l.pk_layer AND f.str_state = 'WAITING' AND f.int_depend_count = 0
                 ORDER BY f.int_dispatch_order, f.int_layer_order
                 LIMIT $3) f
          WHERE l.pk_job = ANY($1) AND ls.int_waiting_count > 0
            AND string_to_array(replace(l.str_tags, ' ', ''), '|') && $2::text[]
            AND (l.ts_start_after IS NULL OR l.ts_start_after <= now())
          ORDER BY l.pk_job, l.int_dispatch_order, l.pk_layer, f.int_dispatch_order, f.int_layer_order");

/// The layer of a [`LAYERS_WITH_FRAMES`] row, without its frames.
fn layer_of(r: &postgres::Row) -> LayerWork {
    LayerWork {
        job: r.get(0),
        id: r.get(1),
        name: r.get(2),
        command: r.get(3),
        range: r.get(4),
        chunk_size: r.get(5),
        cores_min: r.get(6),
        cores_max: r.get(7),
        mem_min: r.get(8),
        gpus_min: r.get(9),
        gpu_mem_min: r.get(10),
        threadable: r.get(11),
        tags: split_tags(r.get::<_, &str>(12)).collect(),
        services: split_services(r.get(13)),
        limits: r.get(14),
        licenses: r
            .get::<_, Option<&str>>(25)
            .map(super::licenses::parse_list)
            .unwrap_or_default(),
        waiting: r.get(20),
        est_secs: r.get(21),
        history: crate::sizing::MemoryHistory {
            max_rss_kb: r.get::<_, i64>(22).max(0) as u64,
            successes: r.get::<_, i64>(23).max(0) as u64,
            optimize: r.get(24),
        },
        frames: Vec::new(),
    }
}

/// The frame of a [`LAYERS_WITH_FRAMES`] row.
fn frame_of(r: &postgres::Row) -> FrameWork {
    FrameWork {
        id: r.get(15),
        name: r.get(16),
        number: r.get(17),
        version: r.get(18),
        waited_secs: r.get(19),
    }
}

/// `layer.str_services` split on commas, blanks dropped.
fn split_services(services: &str) -> Vec<String> {
    services
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// WAITING frames of pending jobs of managed shows (of `shows` when given) whose layer's
/// start-after time has not come.
pub(crate) fn start_after_waiting(
    conn: &mut impl GenericClient,
    shows: Option<&[ShowId]>,
) -> Result<i64, DbError> {
    Ok(conn
        .query_one(
            "SELECT coalesce(sum(ls.int_waiting_count), 0)::bigint
               FROM layer_stat ls
               JOIN layer l ON l.pk_layer = ls.pk_layer
               JOIN job j ON j.pk_job = l.pk_job
               JOIN show sh ON sh.pk_show = j.pk_show
              WHERE ls.int_waiting_count > 0 AND l.ts_start_after > now() AND j.str_state = 'PENDING'
                AND sh.b_active AND sh.b_scheduler_managed
                AND ($1::text[] IS NULL OR j.pk_show = ANY($1))",
            &[&shows],
        )?
        .get(0))
}

/// Environment of jobs and layers: `(job_env by job, layer_env by layer)`.
pub(crate) type Envs = (
    HashMap<JobId, Vec<(String, String)>>,
    HashMap<LayerId, Vec<(String, String)>>,
);

/// Reads `job_env` and `layer_env` for the given jobs (only what a launch needs). Cuebot's
/// env columns are nullable: rows without a key are skipped, a missing value reads as empty.
pub(crate) fn envs(conn: &mut impl GenericClient, jobs: &[JobId]) -> Result<Envs, DbError> {
    let job_env = env_by_key(
        conn,
        "SELECT pk_job, str_key, coalesce(str_value, '') FROM job_env
          WHERE pk_job = ANY($1) AND str_key IS NOT NULL ORDER BY pk_job_env",
        jobs,
    )?;
    let layer_env = env_by_key(
        conn,
        "SELECT pk_layer, str_key, coalesce(str_value, '') FROM layer_env
          WHERE pk_job = ANY($1) AND pk_layer IS NOT NULL AND str_key IS NOT NULL ORDER BY pk_layer_env",
        jobs,
    )?;
    Ok((job_env, layer_env))
}

/// The `(owner, key, value)` rows of `sql` (`$1` the jobs) grouped by owner, in row order.
fn env_by_key<K: Eq + std::hash::Hash + for<'a> postgres::types::FromSql<'a>>(
    conn: &mut impl GenericClient,
    sql: &str,
    jobs: &[JobId],
) -> Result<HashMap<K, Vec<(String, String)>>, DbError> {
    let mut env: HashMap<K, Vec<(String, String)>> = HashMap::new();
    for r in conn.query(sql, &[&jobs])? {
        env.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    Ok(env)
}
