//! Status page SQL: the few cheap reads the page at `/` renders from — farm totals with the
//! stranded cores, subscriptions by show and allocation name, instances and the shows they
//! hold, wide-frame reservations, the busiest and longest-waiting layers and the latest
//! launch failures.
//!
//! Everything is read through the instance's pool; the page caches the result (see
//! [`crate::page`]), so a refresh storm costs one read per cache period. The frame scans
//! (longest waiting, launch failures) only touch WAITING frames through
//! `i_frame_state_job`, as the booking passes themselves do.

use std::time::Duration;

use postgres::GenericClient;

use super::{DbError, resources_at};
use crate::model::Resources;

/// How many rows the layer and failure tables show.
pub(crate) const TOP: i64 = 10;

/// Capacity and use of the eligible hosts.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FarmRow {
    /// Eligible hosts.
    pub hosts: i64,
    /// Summed capacity.
    pub total: Resources,
    /// Summed idle resources.
    pub idle: Resources,
    /// Idle cores on hosts whose idle memory is below the stranded threshold (×100).
    pub stranded_cores: i64,
    /// Idle cores on GPU hosts with no idle GPU (and memory to spare), ×100: only CPU
    /// frames can use them, and only where their tags and GPU protection let them.
    pub stranded_cores_gpus: i64,
    /// Idle memory (KB) on hosts with less than one idle core: the reverse of the above.
    pub stranded_mem_kb: i64,
}

/// One subscription of an active show.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SubRow {
    /// `show.str_name`.
    pub show: String,
    /// `show.b_scheduler_managed`.
    pub managed: bool,
    /// `alloc.str_name`.
    pub alloc: String,
    /// Size, cores ×100.
    pub size: i64,
    /// Burst, cores ×100.
    pub burst: i64,
    /// Booked cores ×100 (`subscription.int_cores`).
    pub cores: i64,
}

/// A running stagehand instance.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct InstanceRow {
    /// `instance.str_name`.
    pub name: String,
    /// Host it runs on and its pid, `host:pid`.
    pub place: String,
    /// Seconds since its last heartbeat.
    pub heartbeat_age: f64,
    /// Names of the shows it holds, sorted.
    pub shows: Vec<String>,
}

/// A host reserved for a wide frame.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ReservationRow {
    /// Host name.
    pub host: String,
    /// `show/job/frame` it waits for.
    pub frame: String,
    /// What is reserved.
    pub need: Resources,
    /// Seconds to the shadow time (negative: the host drains for the frame).
    pub shadow_in: f64,
    /// Seconds until the reservation lapses.
    pub expires_in: f64,
}

/// A layer on the busiest or longest-waiting table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LayerRow {
    /// Show name.
    pub show: String,
    /// Job name.
    pub job: String,
    /// Layer name.
    pub layer: String,
    /// Running frames (busiest) or WAITING frames (longest waiting).
    pub frames: i64,
    /// Cores ×100 booked (busiest) or seconds waited by the oldest frame (longest waiting).
    pub measure: f64,
}

/// A waiting layer and its show, to group the passes' per-layer reasons by show.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WaitingLayer {
    /// `layer.pk_layer`.
    pub layer_id: String,
    /// Show name.
    pub show: String,
    /// WAITING frames (`layer_stat.int_waiting_count`).
    pub waiting: i64,
}

/// A launch that failed and was compensated (exit status 299), frame still WAITING.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FailureRow {
    /// `show/job/frame`.
    pub frame: String,
    /// Host the launch went to.
    pub host: String,
    /// Seconds ago.
    pub age: f64,
}

/// Everything the page reads from the database in one render.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StatusRows {
    /// Farm totals.
    pub farm: FarmRow,
    /// Subscriptions, by show then allocation name.
    pub subs: Vec<SubRow>,
    /// Instances, by name.
    pub instances: Vec<InstanceRow>,
    /// Reservations, by host name.
    pub reservations: Vec<ReservationRow>,
    /// Layers with the most running frames.
    pub busiest: Vec<LayerRow>,
    /// Layers whose oldest WAITING frame waited longest.
    pub longest: Vec<LayerRow>,
    /// Layers with WAITING frames of pending jobs.
    pub waiting: Vec<WaitingLayer>,
    /// Latest launch failures, newest first.
    pub failures: Vec<FailureRow>,
}

/// What the farm query needs from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct FarmFilter<'a> {
    /// `scheduler.facility` (empty: every facility).
    pub facility: &'a str,
    /// `hosts.ping_timeout`.
    pub ping_timeout: Duration,
    /// `scheduler.memory_stranded_threshold_kb`.
    pub stranded_kb: u64,
}

impl<'a> FarmFilter<'a> {
    /// The filter of `config`: the hosts the index would hold, and its stranded threshold.
    pub(crate) fn of(config: &'a crate::config::Config) -> FarmFilter<'a> {
        FarmFilter {
            facility: &config.scheduler.facility,
            ping_timeout: config.hosts.ping_timeout,
            stranded_kb: config.scheduler.memory_stranded_threshold_kb,
        }
    }
}

/// Reads everything the page shows.
pub(crate) fn read(
    conn: &mut impl GenericClient,
    filter: &FarmFilter<'_>,
) -> Result<StatusRows, DbError> {
    Ok(StatusRows {
        farm: farm(conn, filter)?,
        subs: subscriptions(conn)?,
        instances: instances(conn)?,
        reservations: reservations(conn)?,
        busiest: busiest(conn)?,
        longest: longest_waiting(conn)?,
        waiting: waiting_layers(conn)?,
        failures: failures(conn)?,
    })
}

/// Totals over the hosts the index would hold (same eligibility as `db::hosts`), with the
/// stranded resources: the page shows them and the recompute thread exports them.
pub(crate) fn farm(conn: &mut impl GenericClient, f: &FarmFilter<'_>) -> Result<FarmRow, DbError> {
    let facility = if f.facility.is_empty() {
        None
    } else {
        super::jobs::facility_id(conn, f.facility)?
    };
    let stranded_kb = i64::try_from(f.stranded_kb).unwrap_or(i64::MAX);
    let r = conn.query_one(
        "WITH e AS (
           SELECT h.int_cores, h.int_mem, h.int_gpus, h.int_gpu_mem, h.int_cores_idle,
                  least(h.int_mem_idle, hs.int_mem_free) AS mem_idle, h.int_gpus_idle,
                  least(h.int_gpu_mem_idle, hs.int_gpu_mem_free) AS gpu_mem_idle
             FROM host h JOIN host_stat hs ON hs.pk_host = h.pk_host
             JOIN alloc a ON a.pk_alloc = h.pk_alloc
            WHERE h.str_lock_state = 'OPEN' AND hs.str_state = 'UP'
              AND hs.ts_ping > now() - make_interval(secs => $1)
              AND ($2::text IS NULL OR a.pk_facility = $2))
         SELECT count(*)::bigint, sum(int_cores)::bigint, sum(int_mem)::bigint, sum(int_gpus)::bigint,
                sum(int_gpu_mem)::bigint, sum(int_cores_idle)::bigint, sum(mem_idle)::bigint,
                sum(int_gpus_idle)::bigint, sum(gpu_mem_idle)::bigint,
                coalesce(sum(int_cores_idle) FILTER (WHERE mem_idle < $3), 0)::bigint,
                coalesce(sum(int_cores_idle) FILTER (WHERE mem_idle >= $3 AND int_gpus > 0
                                                       AND int_gpus_idle = 0), 0)::bigint,
                coalesce(sum(mem_idle) FILTER (WHERE int_cores_idle < 100), 0)::bigint
           FROM e",
        &[&f.ping_timeout.as_secs_f64(), &facility, &stranded_kb],
    )?;
    Ok(FarmRow {
        hosts: r.get(0),
        total: resources_at(&r, 1),
        idle: resources_at(&r, 5),
        stranded_cores: r.get(9),
        stranded_cores_gpus: r.get(10),
        stranded_mem_kb: r.get(11),
    })
}

fn subscriptions(conn: &mut impl GenericClient) -> Result<Vec<SubRow>, DbError> {
    let rows = conn.query(
        "SELECT s.str_name, s.b_scheduler_managed, a.str_name, sub.int_size::bigint,
                sub.int_burst::bigint, sub.int_cores::bigint
           FROM subscription sub JOIN show s ON s.pk_show = sub.pk_show
           JOIN alloc a ON a.pk_alloc = sub.pk_alloc
          WHERE s.b_active
          ORDER BY s.str_name, a.str_name",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| SubRow {
            show: r.get(0),
            managed: r.get(1),
            alloc: r.get(2),
            size: r.get(3),
            burst: r.get(4),
            cores: r.get(5),
        })
        .collect())
}

fn instances(conn: &mut impl GenericClient) -> Result<Vec<InstanceRow>, DbError> {
    let rows = conn.query(
        "SELECT i.str_name, i.str_host || ':' || i.int_pid,
                extract(epoch FROM now() - i.ts_heartbeat)::float8,
                ARRAY(SELECT s.str_name::text FROM stagehand.show_lease sl
                        JOIN show s ON s.pk_show = sl.pk_show
                       WHERE sl.pk_instance = i.pk_instance ORDER BY 1)
           FROM stagehand.instance i ORDER BY i.str_name",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| InstanceRow {
            name: r.get(0),
            place: r.get(1),
            heartbeat_age: r.get(2),
            shows: r.get(3),
        })
        .collect())
}

fn reservations(conn: &mut impl GenericClient) -> Result<Vec<ReservationRow>, DbError> {
    let rows = conn.query(
        "SELECT h.str_name, s.str_name || '/' || j.str_name || '/' || f.str_name,
                r.int_cores, r.int_mem, r.int_gpus, r.int_gpu_mem,
                extract(epoch FROM r.ts_shadow - now())::float8,
                extract(epoch FROM r.ts_expires - now())::float8
           FROM stagehand.host_reservation r JOIN host h ON h.pk_host = r.pk_host
           JOIN frame f ON f.pk_frame = r.pk_frame JOIN job j ON j.pk_job = f.pk_job
           JOIN show s ON s.pk_show = j.pk_show
          ORDER BY h.str_name",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| ReservationRow {
            host: r.get(0),
            frame: r.get(1),
            need: resources_at(r, 2),
            shadow_in: r.get(6),
            expires_in: r.get(7),
        })
        .collect())
}

/// A [`LayerRow`] from columns show, job, layer, frames, measure.
fn layer_row(r: &postgres::Row) -> LayerRow {
    LayerRow {
        show: r.get(0),
        job: r.get(1),
        layer: r.get(2),
        frames: r.get(3),
        measure: r.get(4),
    }
}

/// Layers by cores booked (`layer_resource.int_cores`, which the recompute keeps current).
fn busiest(conn: &mut impl GenericClient) -> Result<Vec<LayerRow>, DbError> {
    let rows = conn.query(
        "SELECT s.str_name, j.str_name, l.str_name, ls.int_running_count::bigint,
                lr.int_cores::float8
           FROM layer_stat ls JOIN layer_resource lr ON lr.pk_layer = ls.pk_layer
           JOIN layer l ON l.pk_layer = ls.pk_layer JOIN job j ON j.pk_job = ls.pk_job
           JOIN show s ON s.pk_show = j.pk_show
          WHERE ls.int_running_count > 0
          ORDER BY lr.int_cores DESC, ls.int_running_count DESC, j.str_name, l.str_name
          LIMIT $1",
        &[&TOP],
    )?;
    Ok(rows.iter().map(layer_row).collect())
}

/// Layers of managed shows' pending jobs by how long their oldest WAITING frame has waited:
/// since it became eligible (`frame.ts_eligible`), else since its last update.
fn longest_waiting(conn: &mut impl GenericClient) -> Result<Vec<LayerRow>, DbError> {
    let rows = conn.query(
        "SELECT s.str_name, j.str_name, l.str_name, count(*)::bigint,
                extract(epoch FROM now() - min(coalesce(f.ts_eligible, f.ts_updated, j.ts_started)))::float8 AS waited
           FROM frame f JOIN job j ON j.pk_job = f.pk_job JOIN layer l ON l.pk_layer = f.pk_layer
           JOIN show s ON s.pk_show = j.pk_show
          WHERE f.str_state = 'WAITING' AND j.str_state = 'PENDING' AND s.b_scheduler_managed
          GROUP BY s.str_name, j.str_name, l.str_name
          ORDER BY waited DESC NULLS LAST, j.str_name, l.str_name
          LIMIT $1",
        &[&TOP],
    )?;
    Ok(rows.iter().map(layer_row).collect())
}

fn waiting_layers(conn: &mut impl GenericClient) -> Result<Vec<WaitingLayer>, DbError> {
    let rows = conn.query(
        "SELECT ls.pk_layer, s.str_name, ls.int_waiting_count::bigint
           FROM layer_stat ls JOIN job j ON j.pk_job = ls.pk_job JOIN show s ON s.pk_show = j.pk_show
          WHERE ls.int_waiting_count > 0 AND j.str_state = 'PENDING'",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| WaitingLayer {
            layer_id: r.get(0),
            show: r.get(1),
            waiting: r.get(2),
        })
        .collect())
}

/// Compensated launches (`db::compensation` puts the frame back to WAITING with exit status
/// 299); a frame booked again since leaves the list.
fn failures(conn: &mut impl GenericClient) -> Result<Vec<FailureRow>, DbError> {
    let rows = conn.query(
        "SELECT s.str_name || '/' || j.str_name || '/' || f.str_name, coalesce(f.str_host, ''),
                extract(epoch FROM now() - f.ts_stopped)::float8
           FROM frame f JOIN job j ON j.pk_job = f.pk_job JOIN show s ON s.pk_show = j.pk_show
          WHERE f.str_state = 'WAITING' AND f.int_exit_status = 299 AND f.ts_stopped IS NOT NULL
          ORDER BY f.ts_stopped DESC
          LIMIT $1",
        &[&TOP],
    )?;
    Ok(rows
        .iter()
        .map(|r| FailureRow {
            frame: r.get(0),
            host: r.get(1),
            age: r.get(2),
        })
        .collect())
}
