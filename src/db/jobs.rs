//! Selection SQL: the cluster set, the active-work scan, pending jobs of a cluster and their
//! layers with WAITING frames.
//!
//! Cost per pass is O(jobs and frames returned): every query is bounded by the cluster's show,
//! facility and tags and by `LIMIT`s, never by the size of the farm or of the frame table.

use std::collections::HashMap;

use postgres::GenericClient;

mod pending;

pub use pending::PendingJob;
pub(crate) use pending::{JobHint, JobQuery, Pending, pending_jobs};

use super::{DbError, session::Session};
use crate::{
    ids::{AllocId, FacilityId, FrameId, JobId, LayerId, LimitId, ShowId},
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
/// The hosts' tags are made distinct per allocation before they meet the subscriptions:
/// joined first, every tag came once per host and subscribing show (14,000 rows to sort at
/// 1,200 hosts for 3,600 kept; 17–28 ms a call against 10–16 ms).
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
         SELECT a.pk_facility, sh.pk_show, sh.str_name, t.str_tag, t.kind, NULL
           FROM (SELECT DISTINCT ht.str_tag, upper(ht.str_tag_type) AS kind, h.pk_alloc
                   FROM host_tag ht JOIN host h ON h.pk_host = ht.pk_host
                  WHERE upper(ht.str_tag_type) <> 'ALLOC') t
           JOIN alloc a ON a.pk_alloc = t.pk_alloc
           JOIN subscription s ON s.pk_alloc = a.pk_alloc
           JOIN show sh ON sh.pk_show = s.pk_show
          WHERE sh.b_active AND sh.b_scheduler_managed
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
/// what the per-cluster job query can return, so no cluster with work is ever left asleep;
/// and, like that query, without layers whose start time has not come: counted, they made
/// their show hungry for fair share for hours with nothing it could book, and when their
/// time comes the count rises and wakes the cluster.
pub fn active_tags(
    conn: &mut Session,
) -> Result<HashMap<(ShowId, FacilityId, String), TagWork>, DbError> {
    // Summed per tag string first and split after: layers share a handful of tag strings,
    // so the split and the text grouping run on those few rows, not on every waiting layer
    // (half the scan's time on the drain farm at 3×, the same rows).
    let rows = conn.cached().query(
        "WITH w AS (
             SELECT j.pk_show, j.pk_facility, l.str_tags, sum(ls.int_waiting_count) AS waiting,
                    max(j.ts_started) AS newest
               FROM layer_stat ls
               JOIN layer l ON l.pk_layer = ls.pk_layer
               JOIN job j ON j.pk_job = l.pk_job
               JOIN show sh ON sh.pk_show = j.pk_show
              WHERE ls.int_waiting_count > 0 AND j.str_state = 'PENDING' AND NOT j.b_paused
                AND sh.b_active AND sh.b_scheduler_managed
                AND (l.ts_start_after IS NULL OR l.ts_start_after <= now())
              GROUP BY 1, 2, 3)
         SELECT w.pk_show, w.pk_facility, t.tag, sum(w.waiting)::bigint,
                extract(epoch FROM max(w.newest))::float8
           FROM w CROSS JOIN LATERAL unnest(string_to_array(replace(w.str_tags, ' ', ''), '|')) AS t(tag)
          WHERE t.tag <> ''
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
pub struct TagWork {
    /// WAITING frames of layers asking for the tag.
    pub waiting: i64,
    /// The newest `job.ts_started` among those layers' jobs (seconds since the epoch): a
    /// job submitted since a cluster's pass shows as a newer start.
    pub newest: f64,
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

/// The new-work probe's statement over every managed show ([`work_probe`] appends the
/// filter on the shows held when there is one).
const WORK_PROBE: &str = "SELECT count(*)::bigint, coalesce(sum(js.int_waiting_count), 0)::bigint,
                coalesce(extract(epoch FROM max(j.ts_started)), 0)::float8
           FROM job j
           JOIN show sh ON sh.pk_show = j.pk_show
           JOIN job_stat js ON js.pk_job = j.pk_job
          WHERE j.str_state = 'PENDING' AND NOT j.b_paused AND sh.b_active AND sh.b_scheduler_managed";

/// Reads the [`WorkProbe`] of `shows` (`None`: every managed show): one index-driven
/// aggregate over pending jobs, no frame rows.
pub(crate) fn work_probe(
    conn: &mut Session,
    shows: Option<&[ShowId]>,
) -> Result<WorkProbe, DbError> {
    // Two statements, not one with `$1 IS NULL OR …`, which was planned on every call (its
    // generic plan never won the plan cache's comparison): alone, the probe has no
    // parameter and is planned once per connection. With a list of shows the plan cache
    // still plans each call (the list's length changes the estimate), 0.4 ms a call.
    static SOME: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("{WORK_PROBE} AND j.pk_show = ANY($1)"));
    let r = match shows {
        Some(shows) => conn.cached().query_one(&SOME, &[&shows])?,
        None => conn.cached().query_one(WORK_PROBE, &[])?,
    };
    Ok(WorkProbe {
        jobs: r.get(0),
        waiting: r.get(1),
        newest: r.get(2),
    })
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
    conn: &mut Session,
    jobs: &[JobId],
    tags: &[String],
    frames_per_layer: i64,
    min_history: i64,
) -> Result<Vec<LayerWork>, DbError> {
    let rows = conn.cached().query(
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

/// Room left under each limit of `$1` (`limit_record`): its maximum less the running frames
/// of every layer under it. Read unlocked by a pass ([`limit_rooms`], a hint that stops a
/// layer whose limit is full before it takes hosts in the pass) and after the limit rows'
/// lock by the booking guard, which decides.
pub(crate) const LIMIT_ROOMS: &str =
    "SELECT lr.pk_limit_record::text, coalesce(lr.int_max_value, 0)::bigint,
                coalesce((SELECT sum(ls.int_running_count) FROM layer_limit ll
                           JOIN layer_stat ls ON ls.pk_layer = ll.pk_layer
                          WHERE ll.pk_limit_record = lr.pk_limit_record), 0)::bigint
           FROM limit_record lr WHERE lr.pk_limit_record = ANY($1)";

/// The rooms of [`LIMIT_ROOMS`] rows, by limit.
pub(crate) fn rooms_of(rows: &[postgres::Row]) -> HashMap<String, i64> {
    rows.iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) - r.get::<_, i64>(2)))
        .collect()
}

/// The room left under each of `limits` now, unlocked: a pass's hint (see [`LIMIT_ROOMS`]).
pub(crate) fn limit_rooms(
    conn: &mut Session,
    limits: &[&str],
) -> Result<HashMap<String, i64>, DbError> {
    if limits.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(rooms_of(&conn.cached().query(LIMIT_ROOMS, &[&limits])?))
}

/// The statement of [`layers_with_frames`]: a layer's columns (0–14, 20–25) repeated on
/// each of its frames' rows (15–19). `$1` jobs, `$2` tags, `$3` frames per layer, `$4` the
/// minimum history for an estimate. A frame with depends left (`int_depend_count`) is never
/// read, whatever its state says (Cuebot's triggers keep such a frame DEPEND), nor one
/// whose earlier launch is unresolved (the booking would refuse it, V006).
///
/// The layer's `layer_stat`, `layer_usage` and `layer_mem` rows are looked up by key, one
/// layer at a time (`OFFSET 0` keeps each a subquery of its own). Joined plainly, a pass of
/// many jobs got a plan that hashed all three tables whole, a cost that grows with the farm:
/// at 10× the drain farm, 150 jobs' layers took 25.7 ms that way against 18.1 ms by key, 25
/// jobs' 7.6 against 2.9 ms (EXPLAIN ANALYZE, issue 14). The layer's limits are read the same
/// way, once per layer rather than once per frame row.
const LAYERS_WITH_FRAMES: &str = concat!(
        "SELECT l.pk_job, l.pk_layer, l.str_name, l.str_cmd, l.str_range, l.int_chunk_size::bigint,
                l.int_cores_min::bigint, l.int_cores_max::bigint, l.int_mem_min::bigint,
                l.int_gpus_min::bigint, l.int_gpu_mem_min::bigint, l.b_threadable, l.str_tags,
                l.str_services,
                lim.ids,
                f.pk_frame, f.str_name, f.int_number::int, coalesce(f.int_version, 0)::int,
                coalesce(extract(epoch FROM (now() - f.ts_updated)), 0)::float8,
                ls.int_waiting_count::bigint, ",
        super::reservations::runtime_estimate!("$4"),
        ", coalesce(lm.int_max_rss, 0)::bigint, coalesce(lu.int_frame_success_count, 0)::bigint,
                l.b_optimize, lic.names
           FROM layer l
          CROSS JOIN LATERAL (
                SELECT ls.int_waiting_count FROM layer_stat ls
                 WHERE ls.pk_layer = l.pk_layer AND ls.int_waiting_count > 0 OFFSET 0) ls
           LEFT JOIN LATERAL (
                SELECT lu.int_frame_success_count, lu.int_clock_time_success FROM layer_usage lu
                 WHERE lu.pk_layer = l.pk_layer OFFSET 0) lu ON true
           LEFT JOIN LATERAL (
                SELECT lm.int_max_rss FROM layer_mem lm WHERE lm.pk_layer = l.pk_layer OFFSET 0) lm ON true
          CROSS JOIN LATERAL (
                SELECT ARRAY(SELECT ll.pk_limit_record::text FROM layer_limit ll
                              WHERE ll.pk_layer = l.pk_layer) AS ids OFFSET 0) lim
          CROSS JOIN LATERAL (
                SELECT string_agg(le.str_value, ',') AS names FROM layer_env le
                 WHERE le.pk_layer = l.pk_layer AND le.str_key = 'CUE_LICENSES') lic
          CROSS JOIN LATERAL (
                SELECT f.pk_frame, f.str_name, f.int_number, f.int_version, f.ts_updated,
                       f.int_dispatch_order, f.int_layer_order
                  FROM frame f
                 WHERE f.pk_layer = l.pk_layer AND f.str_state = 'WAITING' AND f.int_depend_count = 0
                   AND NOT EXISTS (SELECT 1 FROM stagehand.pending_launch pl
                                    WHERE pl.pk_frame = f.pk_frame)
                 ORDER BY f.int_dispatch_order, f.int_layer_order
                 LIMIT $3) f
          WHERE l.pk_job = ANY($1)
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
