//! Bookings not yet launched (`stagehand.pending_launch`, V003): recorded in the booking
//! transaction, forgotten once RQD took the frame or the booking was undone, and — for an
//! instance that died in between — found by the instance that holds the show now.

use postgres::GenericClient;
use uuid::Uuid;

use super::{DbError, booking::Placement};
use crate::model::Resources;

/// Records the booked procs as pending launch, in the booking's transaction.
pub(super) fn record(
    tx: &mut impl GenericClient,
    procs: &[&str],
    frames: &[&str],
    shows: &[&str],
    versions: &[i32],
    owner: Option<Uuid>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO stagehand.pending_launch (pk_proc, pk_frame, pk_show, int_version, pk_instance)
         SELECT b.p, b.f, b.s, b.v, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::int[])
             AS b(p, f, s, v)
         ON CONFLICT (pk_proc) DO NOTHING",
        &[&procs, &frames, &shows, &versions, &owner],
    )?;
    Ok(())
}

/// Forgets the pending launches of `procs` (launched, or undone).
pub fn forget(conn: &mut impl GenericClient, procs: &[&str]) -> Result<u64, DbError> {
    Ok(conn.execute(
        "DELETE FROM stagehand.pending_launch WHERE pk_proc = ANY($1)",
        &[&procs],
    )?)
}

/// A booking whose instance died before launching or undoing it.
#[derive(Clone, Debug)]
pub struct Orphan {
    /// The booking, as the proc holds it now (`None`: the proc is gone, nothing to undo).
    pub placement: Option<Placement>,
    /// The proc's key.
    pub proc: String,
    /// The frame version the booking produced.
    pub version: i32,
}

/// Pending launches of `shows` older than `min_age_secs` whose instance has not heartbeat
/// within `lease_secs` (or had none): at most `limit` of them.
pub fn orphans(
    conn: &mut impl GenericClient,
    shows: &[String],
    min_age_secs: f64,
    lease_secs: f64,
    limit: i64,
) -> Result<Vec<Orphan>, DbError> {
    let rows = conn.query(
        "SELECT pl.pk_proc, pl.int_version, p.pk_frame, p.pk_layer, p.pk_job, p.pk_show, j.pk_folder,
                p.pk_host, h.str_name, h.pk_alloc, p.int_cores_reserved::bigint,
                p.int_mem_reserved::bigint, p.int_gpus_reserved::bigint, p.int_gpu_mem_reserved::bigint
           FROM stagehand.pending_launch pl
           LEFT JOIN proc p ON p.pk_proc = pl.pk_proc
           LEFT JOIN host h ON h.pk_host = p.pk_host
           LEFT JOIN job j ON j.pk_job = p.pk_job
          WHERE pl.pk_show = ANY($1) AND pl.ts_booked < now() - make_interval(secs => $2)
            AND NOT EXISTS (SELECT 1 FROM stagehand.instance i WHERE i.pk_instance = pl.pk_instance
                             AND i.ts_heartbeat > now() - make_interval(secs => $3))
          ORDER BY pl.ts_booked LIMIT $4",
        &[&shows, &min_age_secs, &lease_secs, &limit],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let n = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0).max(0);
            let placement = r.get::<_, Option<String>>(2).map(|frame| Placement {
                frame,
                version: r.get(1),
                layer: r.get(3),
                job: r.get(4),
                show: r.get(5),
                folder: r.get::<_, Option<String>>(6).unwrap_or_default(),
                host: r.get::<_, Option<String>>(7).unwrap_or_default(),
                host_name: r.get::<_, Option<String>>(8).unwrap_or_default(),
                alloc: r.get::<_, Option<String>>(9).unwrap_or_default(),
                proc: r.get(0),
                amount: Resources {
                    cores: n(10).min(i64::from(u32::MAX)) as u32,
                    mem_kb: n(11) as u64,
                    gpus: n(12).min(i64::from(u32::MAX)) as u32,
                    gpu_mem_kb: n(13) as u64,
                },
                limits: Vec::new(),
                est_secs: None,
                holds_reservation: false,
            });
            Orphan {
                placement,
                proc: r.get(0),
                version: r.get(1),
            }
        })
        .collect())
}
