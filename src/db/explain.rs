//! The SQL of `stagehand explain`: read-only lookups of one job's show, lease, caps, layers,
//! limits, frames, dependencies, the hosts its tags reach and the reservations on them.
//!
//! Everything is read live (sums over `proc`, counts over `frame`) rather than from the
//! recomputed resource tables, because an operator asking "why is it waiting" wants the state
//! of now, and an explanation runs rarely. Each statement is bounded by one job, one show or
//! the hosts carrying one layer's tags, never the whole frame table.

use postgres::GenericClient;

use super::{DbError, resources_at};
use crate::{
    model::{Resources, ThreadMode, split_tags},
    sizing::{LayerColumns, MemoryHistory},
};

/// A job, its show and its folder, with the caps and what its procs hold now.
#[derive(Clone, Debug)]
pub(crate) struct JobRow {
    /// `job.pk_job`.
    pub id: String,
    /// `job.str_name`.
    pub name: String,
    /// `job.str_state`.
    pub state: String,
    /// `job.b_paused`.
    pub paused: bool,
    /// `job.str_os` (empty: any).
    pub os: String,
    /// `job.pk_facility`.
    pub facility: String,
    /// `show.pk_show`.
    pub show: String,
    /// `show.str_name`.
    pub show_name: String,
    /// `show.b_scheduler_managed`.
    pub managed: bool,
    /// `show.b_active`.
    pub show_active: bool,
    /// `folder.str_name`.
    pub folder_name: String,
    /// `job_resource.int_max_cores`, `int_max_gpus` (≤ 0: no room, see `Limits::job`).
    pub max_cores: i64,
    /// See `max_cores`.
    pub max_gpus: i64,
    /// Centicores and GPUs the job's procs hold now.
    pub cores: i64,
    /// See `cores`.
    pub gpus: i64,
    /// `folder_resource.int_max_cores`, `int_max_gpus` (-1 unlimited, see `Limits::folder`).
    pub folder_max_cores: i64,
    /// See `folder_max_cores`.
    pub folder_max_gpus: i64,
    /// Centicores and GPUs the procs of the folder's jobs hold now.
    pub folder_cores: i64,
    /// See `folder_cores`.
    pub folder_gpus: i64,
}

/// The job `key` names: its `pk_job`, or its `str_name` (a pending job first, then the
/// newest, since Cuebot reuses the names of finished jobs).
pub(crate) fn job(conn: &mut impl GenericClient, key: &str) -> Result<Option<JobRow>, DbError> {
    let row = conn.query_opt(
        "SELECT j.pk_job, j.str_name, j.str_state, j.b_paused, coalesce(j.str_os, ''), j.pk_facility,
                s.pk_show, s.str_name, s.b_scheduler_managed, s.b_active, fo.str_name,
                coalesce(jr.int_max_cores, 0)::bigint, coalesce(jr.int_max_gpus, 0)::bigint,
                (SELECT coalesce(sum(p.int_cores_reserved), 0) FROM proc p WHERE p.pk_job = j.pk_job)::bigint,
                (SELECT coalesce(sum(p.int_gpus_reserved), 0) FROM proc p WHERE p.pk_job = j.pk_job)::bigint,
                coalesce(fr.int_max_cores, -1)::bigint, coalesce(fr.int_max_gpus, -1)::bigint,
                (SELECT coalesce(sum(p.int_cores_reserved), 0) FROM proc p JOIN job fj ON fj.pk_job = p.pk_job
                  WHERE fj.pk_folder = j.pk_folder)::bigint,
                (SELECT coalesce(sum(p.int_gpus_reserved), 0) FROM proc p JOIN job fj ON fj.pk_job = p.pk_job
                  WHERE fj.pk_folder = j.pk_folder)::bigint
           FROM job j
           JOIN show s ON s.pk_show = j.pk_show
           JOIN folder fo ON fo.pk_folder = j.pk_folder
           LEFT JOIN job_resource jr ON jr.pk_job = j.pk_job
           LEFT JOIN folder_resource fr ON fr.pk_folder = j.pk_folder
          WHERE j.pk_job = $1 OR j.str_name = $1
          ORDER BY (j.pk_job = $1) DESC, (j.str_state = 'PENDING') DESC, j.ts_started DESC
          LIMIT 1",
        &[&key],
    )?;
    Ok(row.map(|r| JobRow {
        id: r.get(0),
        name: r.get(1),
        state: r.get(2),
        paused: r.get(3),
        os: r.get(4),
        facility: r.get(5),
        show: r.get(6),
        show_name: r.get(7),
        managed: r.get(8),
        show_active: r.get(9),
        folder_name: r.get(10),
        max_cores: r.get(11),
        max_gpus: r.get(12),
        cores: r.get(13),
        gpus: r.get(14),
        folder_max_cores: r.get(15),
        folder_max_gpus: r.get(16),
        folder_cores: r.get(17),
        folder_gpus: r.get(18),
    }))
}

/// The `(pk_job, pk_layer)` of the layer with key `id`.
pub(crate) fn layer_by_id(
    conn: &mut impl GenericClient,
    id: &str,
) -> Result<Option<(String, String)>, DbError> {
    Ok(conn
        .query_opt(
            "SELECT pk_job, pk_layer FROM layer WHERE pk_layer = $1",
            &[&id],
        )?
        .map(|r| (r.get(0), r.get(1))))
}

/// The `pk_layer` of the layer `name` of job `job`.
pub(crate) fn layer_by_name(
    conn: &mut impl GenericClient,
    job: &str,
    name: &str,
) -> Result<Option<String>, DbError> {
    Ok(conn
        .query_opt(
            "SELECT pk_layer FROM layer WHERE pk_job = $1 AND str_name = $2",
            &[&job, &name],
        )?
        .map(|r| r.get(0)))
}

/// The `(pk_job, pk_layer, pk_frame)` of the frame with key `id`, or (with `job`) of the
/// frame named `id` (`NNNN-layer`) in that job.
pub(crate) fn frame(
    conn: &mut impl GenericClient,
    job: Option<&str>,
    id: &str,
) -> Result<Option<(String, String, String)>, DbError> {
    let row = match job {
        None => conn.query_opt(
            "SELECT pk_job, pk_layer, pk_frame FROM frame WHERE pk_frame = $1",
            &[&id],
        )?,
        Some(job) => conn.query_opt(
            "SELECT pk_job, pk_layer, pk_frame FROM frame WHERE pk_job = $1 AND str_name = $2",
            &[&job, &id],
        )?,
    };
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// A layer as explaining it needs: what its frames ask of a host and how many are in each
/// state.
#[derive(Clone, Debug)]
pub(crate) struct LayerRow {
    /// `layer.pk_layer`.
    pub id: String,
    /// `layer.str_name`.
    pub name: String,
    /// `layer.str_tags`, split.
    pub tags: Vec<String>,
    /// `layer.str_services`, as stored.
    pub services: String,
    /// What its frames ask of a host.
    pub columns: LayerColumns,
    /// Seconds until `layer.ts_start_after` (`None`: not set).
    pub start_after_in_secs: Option<f64>,
    /// `layer.ts_start_after` as text (UTC).
    pub start_after: Option<String>,
    /// `layer.str_start_after_reason`.
    pub start_after_reason: Option<String>,
    /// Expected run time of a frame (history or timeout; `None`: unknown).
    pub est_secs: Option<f64>,
    /// Frames per state, counted now.
    pub states: Vec<(String, i64)>,
    /// What its finished frames used, for sizing memory from history.
    pub history: MemoryHistory,
}

/// The layers of `job` (only `only` when given), in dispatch order.
pub(crate) fn layers(
    conn: &mut impl GenericClient,
    job: &str,
    only: Option<&str>,
    min_history: i64,
) -> Result<Vec<LayerRow>, DbError> {
    let rows = conn.query(LAYERS, &[&job, &only, &min_history])?;
    Ok(rows
        .iter()
        .map(|r| LayerRow {
            id: r.get(0),
            name: r.get(1),
            tags: split_tags(r.get::<_, &str>(2)).collect(),
            services: r.get(3),
            columns: LayerColumns {
                cores: (r.get(4), r.get(5)),
                mem_min: r.get(6),
                gpus: (r.get(7), r.get(8)),
                threadable: r.get(9),
            },
            start_after_in_secs: r.get(10),
            start_after: r.get(11),
            start_after_reason: r.get(12),
            est_secs: r.get(13),
            states: r
                .get::<_, Vec<String>>(14)
                .into_iter()
                .zip(r.get::<_, Vec<i64>>(15))
                .collect(),
            history: MemoryHistory {
                max_rss_kb: r.get::<_, i64>(16).max(0) as u64,
                successes: r.get::<_, i64>(17).max(0) as u64,
                optimize: r.get(18),
            },
        })
        .collect())
}

/// The statement of [`layers`]: `$1` the job, `$2` one layer or NULL, `$3` the history an
/// estimate needs.
const LAYERS: &str = concat!(
    "SELECT l.pk_layer, l.str_name, l.str_tags, l.str_services, l.int_cores_min::bigint,
            l.int_cores_max::bigint, l.int_mem_min::bigint, l.int_gpus_min::bigint,
            l.int_gpu_mem_min::bigint, l.b_threadable,
            extract(epoch FROM (l.ts_start_after - now()))::float8,
            to_char(l.ts_start_after AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'),
            l.str_start_after_reason, ",
    super::reservations::runtime_estimate!("$3"),
    ",
            coalesce(st.states, ARRAY[]::text[]), coalesce(st.counts, ARRAY[]::bigint[]),
            coalesce(lm.int_max_rss, 0)::bigint, coalesce(lu.int_frame_success_count, 0)::bigint,
            l.b_optimize
       FROM layer l
       LEFT JOIN layer_usage lu ON lu.pk_layer = l.pk_layer
       LEFT JOIN layer_mem lm ON lm.pk_layer = l.pk_layer
       LEFT JOIN LATERAL (
            SELECT array_agg(s.str_state::text ORDER BY s.str_state) AS states,
                   array_agg(s.n ORDER BY s.str_state) AS counts
              FROM (SELECT f.str_state, count(*)::bigint AS n FROM frame f
                     WHERE f.pk_layer = l.pk_layer GROUP BY f.str_state) s) st ON true
      WHERE l.pk_job = $1 AND ($2::text IS NULL OR l.pk_layer = $2)
      ORDER BY l.int_dispatch_order, l.pk_layer"
);

/// A limit of a layer and how full it is now.
#[derive(Clone, Debug)]
pub(crate) struct LimitRow {
    /// `layer_limit.pk_layer`.
    pub layer: String,
    /// `limit_record.str_name`.
    pub name: String,
    /// `limit_record.int_max_value`.
    pub max: i64,
    /// Frames running in every layer under the limit.
    pub running: i64,
}

/// The limits of `layers`, counted as the booking guard counts them.
pub(crate) fn limits(
    conn: &mut impl GenericClient,
    layers: &[String],
) -> Result<Vec<LimitRow>, DbError> {
    let rows = conn.query(
        "SELECT ll.pk_layer, lr.str_name, coalesce(lr.int_max_value, 0)::bigint,
                coalesce((SELECT sum(ls.int_running_count) FROM layer_limit l2
                           JOIN layer_stat ls ON ls.pk_layer = l2.pk_layer
                          WHERE l2.pk_limit_record = lr.pk_limit_record), 0)::bigint
           FROM layer_limit ll
           JOIN limit_record lr ON lr.pk_limit_record = ll.pk_limit_record
          WHERE ll.pk_layer = ANY($1)
          ORDER BY lr.str_name",
        &[&layers],
    )?;
    Ok(rows
        .iter()
        .map(|r| LimitRow {
            layer: r.get(0),
            name: r.get(1),
            max: r.get(2),
            running: r.get(3),
        })
        .collect())
}

/// A frame of a layer.
#[derive(Clone, Debug)]
pub(crate) struct FrameRow {
    /// `frame.pk_frame`.
    pub id: String,
    /// `frame.str_name`.
    pub name: String,
    /// `frame.str_state`.
    pub state: String,
    /// `frame.str_host` (where it runs or ran).
    pub host: Option<String>,
}

/// Up to `limit` frames of `layer` in `states` (every state when empty) in dispatch order;
/// only `only` when given.
pub(crate) fn frames(
    conn: &mut impl GenericClient,
    layer: &str,
    only: Option<&str>,
    states: &[&str],
    limit: i64,
) -> Result<Vec<FrameRow>, DbError> {
    let rows = conn.query(
        "SELECT pk_frame, str_name, str_state, str_host FROM frame
          WHERE pk_layer = $1 AND ($2::text IS NULL OR pk_frame = $2)
            AND (cardinality($3::text[]) = 0 OR str_state = ANY($3))
          ORDER BY int_dispatch_order, int_layer_order LIMIT $4",
        &[&layer, &only, &states, &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| FrameRow {
            id: r.get(0),
            name: r.get(1),
            state: r.get(2),
            host: r.get(3),
        })
        .collect())
}

/// An unsatisfied dependency.
#[derive(Clone, Debug)]
pub(crate) struct DependRow {
    /// `depend.str_type` (`JOB_ON_JOB`, `FRAME_ON_FRAME`, …).
    pub kind: String,
    /// What it waits on: `job`, `job/layer` or `job/frame`.
    pub on: String,
}

/// The active dependencies that hold back frames of `layer` (of `frame` only, when given):
/// on the frame, on the layer or on the whole job.
pub(crate) fn depends(
    conn: &mut impl GenericClient,
    layer: &str,
    frame: Option<&str>,
) -> Result<Vec<DependRow>, DbError> {
    let rows = conn.query(
        "SELECT DISTINCT d.str_type, oj.str_name || coalesce('/' || ol.str_name, '')
                || coalesce('/' || ofr.str_name, '')
           FROM depend d
           JOIN layer l ON l.pk_layer = $1
           LEFT JOIN job oj ON oj.pk_job = d.pk_job_depend_on
           LEFT JOIN layer ol ON ol.pk_layer = d.pk_layer_depend_on
           LEFT JOIN frame ofr ON ofr.pk_frame = d.pk_frame_depend_on
          WHERE d.b_active
            AND (d.pk_layer_depend_er = l.pk_layer
                 OR (d.pk_frame_depend_er IS NOT NULL AND d.pk_frame_depend_er IN
                     (SELECT f.pk_frame FROM frame f
                       WHERE f.pk_layer = l.pk_layer AND ($2::text IS NULL OR f.pk_frame = $2)))
                 OR (d.pk_job_depend_er = l.pk_job AND d.pk_layer_depend_er IS NULL
                     AND d.pk_frame_depend_er IS NULL))
          ORDER BY 1, 2 LIMIT 20",
        &[&layer, &frame],
    )?;
    Ok(rows
        .iter()
        .map(|r| DependRow {
            kind: r.get(0),
            on: r.get::<_, Option<String>>(1).unwrap_or_default(),
        })
        .collect())
}

/// A subscription of the show and what the show's procs hold on its allocation now.
#[derive(Clone, Debug)]
pub(crate) struct SubRow {
    /// `alloc.pk_alloc`.
    pub alloc: String,
    /// `alloc.str_name`.
    pub alloc_name: String,
    /// `subscription.int_size`, `int_burst` (centicores).
    pub size: i64,
    /// See `size`.
    pub burst: i64,
    /// Centicores the show's procs hold on hosts of the allocation.
    pub booked: i64,
}

/// The subscriptions of `show`.
pub(crate) fn subscriptions(
    conn: &mut impl GenericClient,
    show: &str,
) -> Result<Vec<SubRow>, DbError> {
    let rows = conn.query(
        "SELECT a.pk_alloc, a.str_name, s.int_size::bigint, s.int_burst::bigint,
                (SELECT coalesce(sum(p.int_cores_reserved), 0) FROM proc p JOIN host h ON h.pk_host = p.pk_host
                  WHERE p.pk_show = s.pk_show AND h.pk_alloc = a.pk_alloc)::bigint
           FROM subscription s JOIN alloc a ON a.pk_alloc = s.pk_alloc
          WHERE s.pk_show = $1 ORDER BY a.str_name",
        &[&show],
    )?;
    Ok(rows
        .iter()
        .map(|r| SubRow {
            alloc: r.get(0),
            alloc_name: r.get(1),
            size: r.get(2),
            burst: r.get(3),
            booked: r.get(4),
        })
        .collect())
}

/// Another managed show with waiting work on an allocation: what the fair-share rule
/// compares against.
#[derive(Clone, Debug)]
pub(crate) struct RivalRow {
    /// `alloc.pk_alloc`.
    pub alloc: String,
    /// `show.str_name`.
    pub show_name: String,
    /// Its `subscription.int_size` (centicores).
    pub size: i64,
    /// Centicores its procs hold on the allocation.
    pub booked: i64,
}

/// The managed shows other than `show` subscribed to `allocs` with WAITING frames in a
/// pending, unpaused job.
pub(crate) fn rivals(
    conn: &mut impl GenericClient,
    show: &str,
    allocs: &[String],
) -> Result<Vec<RivalRow>, DbError> {
    let rows = conn.query(
        "SELECT s.pk_alloc, sh.str_name, s.int_size::bigint,
                (SELECT coalesce(sum(p.int_cores_reserved), 0) FROM proc p JOIN host h ON h.pk_host = p.pk_host
                  WHERE p.pk_show = s.pk_show AND h.pk_alloc = s.pk_alloc)::bigint
           FROM subscription s JOIN show sh ON sh.pk_show = s.pk_show
          WHERE s.pk_alloc = ANY($2) AND s.pk_show <> $1 AND sh.b_scheduler_managed AND sh.b_active
            AND EXISTS (SELECT 1 FROM job j JOIN job_stat js ON js.pk_job = j.pk_job
                         WHERE j.pk_show = s.pk_show AND j.str_state = 'PENDING' AND NOT j.b_paused
                           AND js.int_waiting_count > 0)
          ORDER BY sh.str_name",
        &[&show, &allocs],
    )?;
    Ok(rows
        .iter()
        .map(|r| RivalRow {
            alloc: r.get(0),
            show_name: r.get(1),
            size: r.get(2),
            booked: r.get(3),
        })
        .collect())
}

/// A host carrying one of a layer's tags, eligible or not.
#[derive(Clone, Debug)]
pub(crate) struct HostRow {
    /// `host.pk_host`.
    pub id: String,
    /// `host.str_name`.
    pub name: String,
    /// `host.pk_alloc`.
    pub alloc: String,
    /// `alloc.pk_facility`.
    pub facility: String,
    /// `host.str_lock_state`.
    pub lock_state: String,
    /// `host_stat.str_state` (`None`: no `host_stat` row).
    pub state: Option<String>,
    /// Seconds since `host_stat.ts_ping`.
    pub ping_age_secs: f64,
    /// `host_stat.str_os` (a comma list on hosts that run several).
    pub os: String,
    /// `host.int_thread_mode`.
    pub thread_mode: ThreadMode,
    /// Capacity.
    pub total: Resources,
    /// Idle now (memory: the smaller of Cuebot's idle and RQD's free, as the index has it).
    pub idle: Resources,
}

/// The hosts carrying any of `tags`, at most `limit`, those with the most idle cores first.
pub(crate) fn hosts_with_tags(
    conn: &mut impl GenericClient,
    tags: &[String],
    limit: i64,
) -> Result<(i64, Vec<HostRow>), DbError> {
    let count: i64 = conn
        .query_one(
            "SELECT count(DISTINCT pk_host) FROM host_tag WHERE str_tag = ANY($1)",
            &[&tags],
        )?
        .get(0);
    let rows = conn.query(
        "SELECT h.pk_host, h.str_name, h.pk_alloc, a.pk_facility, h.str_lock_state, hs.str_state,
                coalesce(extract(epoch FROM now() - hs.ts_ping), 1e9)::float8, coalesce(hs.str_os, ''),
                h.int_thread_mode::int,
                h.int_cores::bigint, h.int_mem::bigint, h.int_gpus::bigint, h.int_gpu_mem::bigint,
                h.int_cores_idle::bigint, least(h.int_mem_idle, coalesce(hs.int_mem_free, h.int_mem_idle))::bigint,
                h.int_gpus_idle::bigint,
                least(h.int_gpu_mem_idle, coalesce(hs.int_gpu_mem_free, h.int_gpu_mem_idle))::bigint
           FROM host h
           JOIN alloc a ON a.pk_alloc = h.pk_alloc
           LEFT JOIN host_stat hs ON hs.pk_host = h.pk_host
          WHERE EXISTS (SELECT 1 FROM host_tag ht WHERE ht.pk_host = h.pk_host AND ht.str_tag = ANY($1))
          ORDER BY h.int_cores_idle DESC, h.str_name LIMIT $2",
        &[&tags, &limit],
    )?;
    let hosts = rows
        .iter()
        .map(|r| HostRow {
            id: r.get(0),
            name: r.get(1),
            alloc: r.get(2),
            facility: r.get(3),
            lock_state: r.get(4),
            state: r.get(5),
            ping_age_secs: r.get(6),
            os: r.get(7),
            thread_mode: ThreadMode::from_db(r.get(8)),
            total: resources_at(r, 9),
            idle: resources_at(r, 13),
        })
        .collect();
    Ok((count, hosts))
}

/// A live wide-frame reservation.
#[derive(Clone, Debug)]
pub(crate) struct ReservationRow {
    /// `host_reservation.pk_host` and the host's name.
    pub host: String,
    /// See `host`.
    pub host_name: String,
    /// The frame it is for (`pk_frame`) and its name as `job/frame`.
    pub frame: String,
    /// See `frame`.
    pub frame_name: String,
    /// The room reserved.
    pub need: Resources,
    /// Seconds until the host was expected to have the room (negative: past).
    pub shadow_in_secs: f64,
    /// Seconds until it lapses.
    pub expires_in_secs: f64,
    /// The two times, as text (UTC).
    pub shadow: String,
    /// See `shadow`.
    pub expires: String,
}

/// The live reservations on `hosts` or for frames of `layer`.
pub(crate) fn reservations(
    conn: &mut impl GenericClient,
    hosts: &[String],
    layer: &str,
) -> Result<Vec<ReservationRow>, DbError> {
    let rows = conn.query(
        "SELECT r.pk_host, h.str_name, r.pk_frame, coalesce(j.str_name || '/' || f.str_name, r.pk_frame),
                r.int_cores, r.int_mem, r.int_gpus, r.int_gpu_mem,
                extract(epoch FROM r.ts_shadow - now())::float8, extract(epoch FROM r.ts_expires - now())::float8,
                to_char(r.ts_shadow AT TIME ZONE 'UTC', 'HH24:MI:SS \"UTC\"'),
                to_char(r.ts_expires AT TIME ZONE 'UTC', 'HH24:MI:SS \"UTC\"')
           FROM stagehand.host_reservation r
           JOIN host h ON h.pk_host = r.pk_host
           LEFT JOIN frame f ON f.pk_frame = r.pk_frame
           LEFT JOIN job j ON j.pk_job = f.pk_job
          WHERE r.ts_expires > now() AND (r.pk_host = ANY($1) OR r.pk_layer = $2)
          ORDER BY h.str_name",
        &[&hosts, &layer],
    )?;
    Ok(rows
        .iter()
        .map(|r| ReservationRow {
            host: r.get(0),
            host_name: r.get(1),
            frame: r.get(2),
            frame_name: r.get(3),
            need: resources_at(r, 4),
            shadow_in_secs: r.get(8),
            expires_in_secs: r.get(9),
            shadow: r.get(10),
            expires: r.get(11),
        })
        .collect())
}

/// Who holds a show's lease.
#[derive(Clone, Debug)]
pub(crate) struct LeaseRow {
    /// `instance.str_name`, `str_host`, `int_pid` (`None`: no instance holds it).
    pub instance: Option<String>,
    /// See `instance`.
    pub host: Option<String>,
    /// See `instance`.
    pub pid: Option<i32>,
    /// Seconds since the holder's heartbeat.
    pub heartbeat_age_secs: Option<f64>,
    /// `show_lease.int_epoch`.
    pub epoch: i64,
}

/// The lease of `show`, if it ever had one, and how many instances heartbeat within
/// `live_secs`.
pub(crate) fn lease(
    conn: &mut impl GenericClient,
    show: &str,
    live_secs: f64,
) -> Result<(Option<LeaseRow>, i64), DbError> {
    let lease = conn
        .query_opt(
            "SELECT i.str_name, i.str_host, i.int_pid,
                    extract(epoch FROM now() - i.ts_heartbeat)::float8, l.int_epoch
               FROM stagehand.show_lease l
               LEFT JOIN stagehand.instance i ON i.pk_instance = l.pk_instance
              WHERE l.pk_show = $1",
            &[&show],
        )?
        .map(|r| LeaseRow {
            instance: r.get(0),
            host: r.get(1),
            pid: r.get(2),
            heartbeat_age_secs: r.get(3),
            epoch: r.get(4),
        });
    let live: i64 = conn
        .query_one(
            "SELECT count(*) FROM stagehand.instance
              WHERE ts_heartbeat > now() - make_interval(secs => $1)",
            &[&live_secs],
        )?
        .get(0);
    Ok((lease, live))
}

/// The WAITING frames that have waited longest, one per layer, at most `limit`, as
/// `job/frame`, those of managed shows first: the frames an operator would ask about first.
pub(crate) fn longest_waiting(
    conn: &mut impl GenericClient,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    let rows = conn.query(
        "SELECT name FROM (
             SELECT DISTINCT ON (f.pk_layer) j.str_name || '/' || f.str_name AS name,
                    s.b_scheduler_managed AS managed, f.ts_updated
               FROM frame f JOIN job j ON j.pk_job = f.pk_job JOIN show s ON s.pk_show = j.pk_show
              WHERE f.str_state = 'WAITING' AND j.str_state = 'PENDING'
              ORDER BY f.pk_layer, f.ts_updated) w
          ORDER BY managed DESC, ts_updated, name LIMIT $1",
        &[&limit],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
