//! Reservation SQL (`stagehand.host_reservation`): read and tidy the table, the running frames
//! of candidate hosts with their expected remaining time, and taking a reservation.
//!
//! The rule the booking transaction enforces with this table is in `db::host_guard`
//! (`HOLD_BLOCKS`); the policy around it is in [`crate::backfill`].

use postgres::GenericClient;
use uuid::Uuid;

use super::{DbError, resources_at};
use crate::{
    backfill::{Hold, Running, remaining},
    ids::{FrameId, HostId, LayerId, ShowId},
    model::Resources,
};

/// The expected run time in seconds of a frame of layer `l` (joined with its `layer_usage`
/// as `lu`): the mean of its successful frames once there are `$min_history` of them, else
/// the layer's timeout (`int_timeout`, minutes), else NULL (unknown). `$min` names the
/// statement parameter that carries `min_history`.
macro_rules! runtime_estimate {
    ($min:literal) => {
        concat!(
            "CASE WHEN lu.int_frame_success_count::bigint >= ",
            $min,
            "::bigint AND lu.int_frame_success_count > 0
                  THEN lu.int_clock_time_success::float8 / lu.int_frame_success_count
                  WHEN l.int_timeout > 0 THEN l.int_timeout * 60.0 END"
        )
    };
}
pub(crate) use runtime_estimate;

/// Whether a reservation blocks a host update `h` by the per-host batch row `b` (columns
/// `cores, mem, gpus, gpu_mem, est, exempt`): it is live, not for the frame being booked,
/// the update would eat into the reserved room, and the frames are not expected to end
/// before the shadow time (an unknown estimate never is).
pub(crate) const HOLD_BLOCKS: &str = "EXISTS (SELECT 1 FROM stagehand.host_reservation r
        WHERE r.pk_host = h.pk_host AND r.pk_frame IS DISTINCT FROM b.exempt AND r.ts_expires > now()
          AND (h.int_cores_idle - b.cores < r.int_cores OR h.int_mem_idle - b.mem < r.int_mem
               OR h.int_gpus_idle - b.gpus < r.int_gpus OR h.int_gpu_mem_idle - b.gpu_mem < r.int_gpu_mem)
          AND (b.est IS NULL OR now() + make_interval(secs => b.est) > r.ts_shadow))";

/// How long past its shadow time a reservation may keep a host that has the room it
/// reserved idle: its frame had that long to book there (passes come every few seconds), so
/// something else keeps it from booking.
const SHADOW_GRACE_SECS: f64 = 30.0;

/// Drops reservations that lapsed, whose frame is no longer WAITING or cannot take the host
/// when it drains, or whose frame left the room idle past the shadow time; then reads the
/// rest. Returns `(reservations, dropped)`.
pub fn load(conn: &mut impl GenericClient) -> Result<(Vec<Hold>, u64), DbError> {
    let dropped = conn.execute(
        "DELETE FROM stagehand.host_reservation r
          WHERE r.ts_expires <= now()
             OR NOT EXISTS (SELECT 1 FROM frame f WHERE f.pk_frame = r.pk_frame AND f.str_state = 'WAITING')
             -- A paused job, or one whose cap, folder, subscription or layer limit leaves no
             -- room for the frame, cannot take the host when it drains: holding it would only
             -- idle the host until max_hold. What runs on the host itself is left out of the
             -- usage (`freed`): it ends as the host drains, and that is the room the frame waits
             -- for (a show at its burst keeps a reservation on a host its own frames hold).
             OR EXISTS (SELECT 1 FROM frame f JOIN job j ON j.pk_job = f.pk_job
                          JOIN job_resource jr ON jr.pk_job = j.pk_job
                          LEFT JOIN folder_resource fr ON fr.pk_folder = j.pk_folder
                         CROSS JOIN LATERAL (
                               SELECT coalesce(sum(p.int_cores_reserved) FILTER (WHERE p.pk_job = j.pk_job), 0) AS job,
                                      coalesce(sum(p.int_cores_reserved) FILTER (WHERE pj.pk_folder = j.pk_folder), 0) AS folder,
                                      coalesce(sum(p.int_cores_reserved) FILTER (WHERE p.pk_show = j.pk_show), 0) AS show
                                 FROM proc p JOIN job pj ON pj.pk_job = p.pk_job
                                WHERE p.pk_host = r.pk_host) freed
                         WHERE f.pk_frame = r.pk_frame
                           AND (j.b_paused OR j.str_state <> 'PENDING'
                                OR jr.int_cores - freed.job + r.int_cores > greatest(jr.int_max_cores, 0)
                                OR (fr.int_max_cores <> -1
                                    AND fr.int_cores - freed.folder + r.int_cores > greatest(fr.int_max_cores, 0))
                                OR EXISTS (SELECT 1 FROM subscription s JOIN host h ON h.pk_alloc = s.pk_alloc
                                            WHERE h.pk_host = r.pk_host AND s.pk_show = j.pk_show
                                              AND s.int_cores - freed.show + r.int_cores > s.int_burst)
                                OR EXISTS (SELECT 1 FROM layer_limit ll
                                             JOIN limit_record lr ON lr.pk_limit_record = ll.pk_limit_record
                                            WHERE ll.pk_layer = f.pk_layer
                                              AND coalesce(lr.int_max_value, 0) <= coalesce(
                                                  (SELECT sum(ls.int_running_count) FROM layer_limit l2
                                                     JOIN layer_stat ls ON ls.pk_layer = l2.pk_layer
                                                    WHERE l2.pk_limit_record = lr.pk_limit_record), 0)
                                                - (SELECT count(*) FROM proc p JOIN layer_limit l3 ON l3.pk_layer = p.pk_layer
                                                    WHERE p.pk_host = r.pk_host
                                                      AND l3.pk_limit_record = lr.pk_limit_record))))
             -- Whatever else keeps it (fair share, a license, its job out of the passes'
             -- pages): the host has had the reserved room idle for its frame and it did not book.
             OR (r.ts_shadow < now() - make_interval(secs => $1)
                 AND EXISTS (SELECT 1 FROM host h WHERE h.pk_host = r.pk_host
                               AND h.int_cores_idle >= r.int_cores AND h.int_mem_idle >= r.int_mem
                               AND h.int_gpus_idle >= r.int_gpus AND h.int_gpu_mem_idle >= r.int_gpu_mem))",
        &[&SHADOW_GRACE_SECS],
    )?;
    let rows = conn.query(
        "SELECT r.pk_host, h.str_name, r.pk_frame, r.pk_layer, r.pk_show, r.int_cores, r.int_mem,
                r.int_gpus, r.int_gpu_mem, extract(epoch FROM r.ts_shadow)::float8,
                extract(epoch FROM r.ts_expires)::float8
           FROM stagehand.host_reservation r JOIN host h ON h.pk_host = r.pk_host",
        &[],
    )?;
    let holds = rows
        .iter()
        .map(|r| Hold {
            host: r.get(0),
            host_name: r.get(1),
            frame: r.get(2),
            layer: r.get(3),
            show: r.get(4),
            need: resources_at(r, 5),
            shadow: r.get(9),
            expires: r.get(10),
        })
        .collect();
    Ok((holds, dropped))
}

/// The frames running on `hosts` with their expected remaining time, per host.
pub(crate) fn running_on(
    conn: &mut impl GenericClient,
    hosts: &[HostId],
    min_history: i64,
) -> Result<Vec<(HostId, Running)>, DbError> {
    let rows = conn.query(
        concat!(
            "SELECT p.pk_host, p.int_cores_reserved::bigint, p.int_mem_reserved::bigint,
                    p.int_gpus_reserved::bigint, p.int_gpu_mem_reserved::bigint,
                    coalesce(extract(epoch FROM now() - f.ts_started), 0)::float8, ",
            runtime_estimate!("$2"),
            " FROM proc p
               JOIN frame f ON f.pk_frame = p.pk_frame
               JOIN layer l ON l.pk_layer = p.pk_layer
               LEFT JOIN layer_usage lu ON lu.pk_layer = p.pk_layer
              WHERE p.pk_host = ANY($1)"
        ),
        &[&hosts, &min_history],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let estimate: Option<f64> = r.get(6);
            (
                r.get(0),
                Running {
                    amount: resources_at(r, 1),
                    remaining_secs: remaining(estimate, r.get(5)),
                },
            )
        })
        .collect())
}

/// What a new reservation asks for.
#[derive(Clone, Debug)]
pub struct NewHold<'a> {
    /// The host.
    pub host: &'a HostId,
    /// The frame, its layer and show.
    pub frame: &'a FrameId,
    /// The frame's layer.
    pub layer: &'a LayerId,
    /// The frame's show.
    pub show: &'a ShowId,
    /// The reserving instance.
    pub instance: Option<Uuid>,
    /// What the frame needs.
    pub need: Resources,
    /// Seconds from now to the shadow time.
    pub shadow_in_secs: f64,
    /// Seconds from now to expiry.
    pub expires_in_secs: f64,
}

/// Takes a reservation unless the host or the frame already has one (another instance may
/// have been quicker); returns `(shadow, expires)` in Unix seconds when taken.
pub fn insert(
    conn: &mut impl GenericClient,
    h: &NewHold<'_>,
) -> Result<Option<(f64, f64)>, DbError> {
    let row = conn.query_opt(
        "INSERT INTO stagehand.host_reservation
                (pk_host, pk_frame, pk_layer, pk_show, pk_instance, int_cores, int_mem, int_gpus,
                 int_gpu_mem, ts_shadow, ts_expires)
         SELECT $1::text, $2::text, $3::text, $4::text, $5, $6, $7, $8, $9,
                now() + make_interval(secs => $10), now() + make_interval(secs => $11)
          WHERE EXISTS (SELECT 1 FROM frame f WHERE f.pk_frame = $2::text AND f.str_state = 'WAITING')
         ON CONFLICT DO NOTHING
         RETURNING extract(epoch FROM ts_shadow)::float8, extract(epoch FROM ts_expires)::float8",
        &[
            &h.host,
            &h.frame,
            &h.layer,
            &h.show,
            &h.instance,
            &i64::from(h.need.cores),
            &(h.need.mem_kb as i64),
            &i64::from(h.need.gpus),
            &(h.need.gpu_mem_kb as i64),
            &h.shadow_in_secs,
            &h.expires_in_secs,
        ],
    )?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// Drops the reservations of frames that just booked (inside their booking transaction).
pub(crate) fn fulfil(conn: &mut impl GenericClient, frames: &[&str]) -> Result<u64, DbError> {
    if frames.is_empty() {
        return Ok(0);
    }
    Ok(conn.execute(
        "DELETE FROM stagehand.host_reservation WHERE pk_frame = ANY($1)",
        &[&frames],
    )?)
}
