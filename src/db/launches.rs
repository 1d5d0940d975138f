//! Bookings not yet launched (`stagehand.pending_launch`, V003): recorded in the booking
//! transaction, forgotten once RQD took the frame or the booking was undone, and — for an
//! instance that died in between — found by the instance that holds the show now.

use postgres::GenericClient;
use uuid::Uuid;

use super::{DbError, booking::Placement, resources_at};
use crate::ids::{FrameId, ProcId, ShowId};

/// Records the booked procs as pending launch, in the booking's transaction, already claimed
/// for launching by the booking instance (`ts_launch` = the transaction's start): a launcher
/// that calls RQD within the claim budget of a moment taken before that transaction began
/// needs no claim statement of its own (see `pipeline::launch`).
pub(super) fn record(
    tx: &mut super::session::Tx<'_>,
    c: &super::booking::ProcColumns<'_>,
    versions: &[i32],
    owner: Option<Uuid>,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO stagehand.pending_launch (pk_proc, pk_frame, pk_show, int_version, pk_instance, ts_launch, pk_host)
         SELECT b.p, b.f, b.s, b.v, $5, now(), b.h
           FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $6::text[]) AS b(p, f, s, v, h)
         ON CONFLICT (pk_proc) DO NOTHING",
        &[&c.procs, &c.frames, &c.shows, &versions, &owner, &c.hosts],
    )?;
    Ok(())
}

/// Whether host `host` is there and UP by Cuebot's last report.
pub(crate) fn host_is_up(conn: &mut impl GenericClient, host: &str) -> Result<bool, DbError> {
    Ok(conn
        .query_opt(
            "SELECT 1 FROM host_stat WHERE pk_host = $1 AND str_state = 'UP'",
            &[&host],
        )?
        .is_some())
}

/// Forgets the pending launches of `procs` (launched, or undone).
pub(crate) fn forget(conn: &mut impl GenericClient, procs: &[&str]) -> Result<u64, DbError> {
    Ok(conn.execute(
        "DELETE FROM stagehand.pending_launch WHERE pk_proc = ANY($1)",
        &[&procs],
    )?)
}

/// Forgets the pending launches of `procs`, which RQD accepted, whose frames are still the
/// bookings' (the version each booking produced); returns the procs whose frames moved on
/// meanwhile, rows kept. Such a frame was stopped — by its own end, or by Cuebot (a retry,
/// an eat, a job kill) whose kill may have reached RQD before this launch did and found
/// nothing — so the launch may run a frame the database no longer gives it: the caller kills
/// it on RQD and forgets the row only then, and until then the frame is not booked again
/// (V006). A row already gone (a lost answer to an earlier try) is neither.
pub(crate) fn forget_acked(
    conn: &mut impl GenericClient,
    procs: &[&str],
) -> Result<Vec<ProcId>, DbError> {
    let rows = conn.query(
        "WITH ours AS (
            DELETE FROM stagehand.pending_launch pl
             WHERE pl.pk_proc = ANY($1)
               AND EXISTS (SELECT 1 FROM frame f WHERE f.pk_frame = pl.pk_frame
                              AND coalesce(f.int_version, 0) = pl.int_version)
            RETURNING pl.pk_proc)
         SELECT pl.pk_proc FROM stagehand.pending_launch pl
          WHERE pl.pk_proc = ANY($1) AND NOT pl.b_swept
            AND NOT EXISTS (SELECT 1 FROM ours WHERE ours.pk_proc = pl.pk_proc)",
        &[&procs],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A booking whose instance died before launching or undoing it.
#[derive(Clone, Debug)]
pub struct Orphan {
    /// The booking, as the proc holds it now (`None`: the proc is gone, nothing to undo).
    pub placement: Option<Placement>,
    /// The proc's key.
    pub proc: ProcId,
    /// The frame version the booking produced.
    pub version: i32,
    /// The booked frame.
    pub frame: FrameId,
    /// The name of the host it was booked on, while that host is indexed by Cuebot as UP
    /// (`None`: gone or down, or a row older than V006): where a launch could still run.
    pub live_host: Option<String>,
}

/// Claims the pending-launch rows of `procs` for launching, right before RQD is called:
/// returns the procs claimed, each with whether its frame is still the booking's (its
/// version unchanged). A proc missing from the answer was taken by a sweeper (its instance
/// looked dead): it must not be launched, the sweeper kills and undoes it. A claimed proc
/// whose frame moved (Cuebot stopped it while the launch waited: a freeze, a long queue)
/// must not be launched either: of a show handed back, Cuebot may run that frame already.
pub fn claim(
    conn: &mut impl GenericClient,
    procs: &[&str],
) -> Result<Vec<(ProcId, bool)>, DbError> {
    let rows = conn.query(
        "UPDATE stagehand.pending_launch pl SET ts_launch = now()
          WHERE pk_proc = ANY($1) AND NOT b_swept
         RETURNING pk_proc, EXISTS (SELECT 1 FROM frame f
                                     WHERE f.pk_frame = pl.pk_frame AND f.int_version = pl.int_version)",
        &[&procs],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// How [`sweep`] picks the rows it takes.
#[derive(Clone, Copy, Debug)]
pub struct SweepRule {
    /// The sweeping instance (it takes the rows over, so they outlive its own death).
    pub me: Option<Uuid>,
    /// A row must be this old before it counts (its booking may still be committing).
    pub min_age_secs: f64,
    /// A launcher claim younger than this may still be calling RQD: such rows are left.
    pub claim_age_secs: f64,
    /// An instance that has not heartbeat within this is taken for dead.
    pub lease_secs: f64,
    /// At most this many rows per sweep.
    pub limit: i64,
}

/// Takes over the pending launches of `shows` whose instance is dead (no heartbeat within
/// the lease, or none at all) and that no launcher may be sending right now, plus the rows
/// this instance took before and has not resolved yet (whatever shows it holds now: a show
/// it handed on is not its successor's to resolve while it lives), plus a dead instance's
/// rows of shows handed back to Cuebot (no instance holds those). The take is one UPDATE
/// whose conditions PostgreSQL re-checks after a lock wait, so it and a launcher's [`claim`]
/// never both win.
pub fn sweep(
    conn: &mut impl GenericClient,
    shows: &[ShowId],
    rule: &SweepRule,
) -> Result<Vec<Orphan>, DbError> {
    let rows = conn.query(
        SWEEP,
        &[
            &shows,
            &rule.me,
            &rule.min_age_secs,
            &rule.claim_age_secs,
            &rule.lease_secs,
            &rule.limit,
        ],
    )?;
    Ok(rows.iter().map(orphan_of).collect())
}

/// The statement of [`sweep`]: `$1` shows, `$2` the sweeping instance, `$3` the minimum age,
/// `$4` the claim age, `$5` the lease, `$6` the row limit. A sweeper that looks dead itself
/// (woken from a freeze before its heartbeat) takes nothing. `cand` picks without locks; the
/// UPDATE of `taken` re-checks, on the row version it locks, that no launcher or sweeper
/// claimed the row recently (a take stamps `ts_launch` like a claim) and that its owner is
/// still a dead one, so a claim or another sweeper's take committed in between wins: a take
/// that left the claim's age as it was let two sweepers queued on one row both take it. A
/// show handed back or deactivated is no instance's: any live one sweeps its rows.
const SWEEP: &str = "WITH cand AS (
            SELECT pl.pk_proc FROM stagehand.pending_launch pl
             WHERE EXISTS (SELECT 1 FROM stagehand.instance me
                            WHERE me.pk_instance = $2 AND me.ts_heartbeat > now() - make_interval(secs => $5))
               AND ((pl.b_swept AND pl.pk_instance IS NOT DISTINCT FROM $2)
                OR ((pl.pk_show = ANY($1)
                     OR NOT EXISTS (SELECT 1 FROM show s
                                     WHERE s.pk_show = pl.pk_show AND s.b_scheduler_managed AND s.b_active))
                    AND pl.ts_booked < now() - make_interval(secs => $3)
                    AND NOT EXISTS (SELECT 1 FROM stagehand.instance i
                                     WHERE i.pk_instance = pl.pk_instance
                                       AND i.ts_heartbeat > now() - make_interval(secs => $5))))
             ORDER BY pl.b_swept, pl.ts_booked LIMIT $6
         ), taken AS (
            UPDATE stagehand.pending_launch pl SET b_swept = true, pk_instance = $2, ts_launch = now()
              FROM cand
             WHERE pl.pk_proc = cand.pk_proc
               AND ((pl.b_swept AND pl.pk_instance IS NOT DISTINCT FROM $2)
                    OR ((pl.ts_launch IS NULL OR pl.ts_launch < now() - make_interval(secs => $4))
                        AND NOT EXISTS (SELECT 1 FROM stagehand.instance i
                                         WHERE i.pk_instance = pl.pk_instance
                                           AND i.ts_heartbeat > now() - make_interval(secs => $5))))
            RETURNING pl.pk_proc, pl.int_version, pl.pk_frame, pl.pk_host
         )
         SELECT t.pk_proc, t.int_version, p.pk_frame, p.pk_layer, p.pk_job, p.pk_show, j.pk_folder,
                p.pk_host, h.str_name, h.pk_alloc, p.int_cores_reserved::bigint,
                p.int_mem_reserved::bigint, p.int_gpus_reserved::bigint, p.int_gpu_mem_reserved::bigint,
                t.pk_frame,
                (SELECT bh.str_name FROM host bh JOIN host_stat bs ON bs.pk_host = bh.pk_host
                  WHERE bh.pk_host = t.pk_host AND bs.str_state = 'UP')
           FROM taken t
           LEFT JOIN proc p ON p.pk_proc = t.pk_proc
           LEFT JOIN host h ON h.pk_host = p.pk_host
           LEFT JOIN job j ON j.pk_job = p.pk_job";

/// The orphan of a [`SWEEP`] row; a proc Cuebot already released leaves only the key and
/// version (the outer joins found nothing).
fn orphan_of(r: &postgres::Row) -> Orphan {
    let placement = r.get::<_, Option<FrameId>>(2).map(|frame| Placement {
        frame,
        version: r.get(1),
        layer: r.get(3),
        job: r.get(4),
        show: r.get(5),
        folder: r.get::<_, Option<String>>(6).unwrap_or_default().into(),
        host: r.get::<_, Option<String>>(7).unwrap_or_default().into(),
        host_name: r.get::<_, Option<String>>(8).unwrap_or_default(),
        alloc: r.get::<_, Option<String>>(9).unwrap_or_default().into(),
        proc: r.get(0),
        amount: resources_at(r, 10),
        est_secs: None,
        holds_reservation: false,
    });
    Orphan {
        placement,
        proc: r.get(0),
        version: r.get(1),
        frame: r.get(14),
        live_host: r.get(15),
    }
}
