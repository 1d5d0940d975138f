//! The row guards of a batch that run before anything is written (steps 0a–2b of
//! [`super::book_batch`]): the show still managed, the lease still ours at the planned epoch,
//! the stat rows locked, layer limits, licenses and caps with room. Each locks its rows in key order,
//! in the batch's one lock order, and counts only after its lock (a new statement).

use std::collections::{BTreeSet, HashMap};

use crate::db::session::Tx;

use super::{Batch, Fence, GuardLoss, Placement};
use crate::db::{
    DbError,
    caps::InFlight,
    licenses::{self, LicenseRules},
};

/// Step 0a, managed: a show handed back to Cuebot is Cuebot's from that commit on. Its row
/// is locked FOR SHARE, so the flip waits for this batch (or this batch sees the flip) and
/// the two never both book; first, because nothing else of a show that is not ours matters.
pub(super) fn guard_managed(tx: &mut Tx<'_>, batch: &mut Batch<'_>) -> Result<(), DbError> {
    let unmanaged = unmanaged_shows(tx, batch.placements)?;
    batch.mark(
        |p| unmanaged.contains(p.show.as_str()),
        GuardLoss::Unmanaged,
    );
    Ok(())
}

/// Step 0b, fence: every show of the batch must still be ours at the planned epoch, or a
/// takeover by another instance would book beside us on counters that miss our bookings.
/// The lease rows are locked FOR SHARE, which keeps a takeover from committing between this
/// check and our commit; taken right after the show rows, before any row a booking changes.
pub(super) fn guard_fence(
    tx: &mut Tx<'_>,
    batch: &mut Batch<'_>,
    fence: &Fence,
) -> Result<(), DbError> {
    let lost = fenced_out_shows(tx, batch.placements, fence)?;
    batch.mark(|p| lost.contains(p.show.as_str()), GuardLoss::Fence);
    Ok(())
}

/// Step 1: the `layer_stat` and `job_stat` rows the frame trigger of step 3 will update,
/// locked in key order before it runs, so two batches (or Cuebot) touching the same layers
/// cannot deadlock in the trigger. Stats before hosts is also the order of Cuebot's own
/// booking and completion; and the `job_stat` lock serializes the bookings of one job, which
/// the job cap of step 2b relies on.
pub(super) fn lock_batch_stats(tx: &mut Tx<'_>, batch: &Batch<'_>) -> Result<(), DbError> {
    if batch.live().is_empty() {
        return Ok(());
    }
    let layers = batch.live_keys(|p| &p.layer);
    let jobs = batch.live_keys(|p| &p.job);
    tx.execute(LOCK_STAT_ROWS, &[&layers, &jobs])?;
    Ok(())
}

/// Step 2, layer limits: every limit of a frame must have room against the live running
/// counts, or a limit shared with other layers (a license count) is exceeded. The layers'
/// limits are read here, not taken from the pass: a limit an operator put on a layer after
/// the pass read it binds this batch. The limit rows are locked after the stats and counted
/// after the lock ([`limit_room`]); rooms are consumed in batch order ([`take_limit_room`]).
pub(super) fn guard_limits(tx: &mut Tx<'_>, batch: &mut Batch<'_>) -> Result<(), DbError> {
    let layers = batch.live_keys(|p| &p.layer);
    if layers.is_empty() {
        return Ok(());
    }
    let limits = layer_limits(tx, &layers)?;
    let ids: BTreeSet<&str> = limits.values().flatten().map(String::as_str).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = ids.into_iter().collect();
    let mut room = limit_room(tx, &ids)?;
    let idx = batch.live();
    for i in take_limit_room(&mut room, batch.placements, &idx, &limits) {
        batch.drop_out(i, GuardLoss::Limit);
    }
    Ok(())
}

/// The limit records of each of `layers` that has any (`layer_limit`).
fn layer_limits(tx: &mut Tx<'_>, layers: &[&str]) -> Result<HashMap<String, Vec<String>>, DbError> {
    let rows = tx.query(
        "SELECT pk_layer, pk_limit_record FROM layer_limit WHERE pk_layer = ANY($1)",
        &[&layers],
    )?;
    let mut limits: HashMap<String, Vec<String>> = HashMap::new();
    for r in &rows {
        limits.entry(r.get(0)).or_default().push(r.get(1));
    }
    Ok(limits)
}

/// The placements of `idx` (in order) that do not fit the limit rooms left by those before
/// them; each that fits takes one from every room of its layer's `limits`. A limit without
/// a row has no room entry and never refuses (Cuebot books such frames too).
pub(super) fn take_limit_room(
    room: &mut HashMap<String, i64>,
    placements: &[Placement],
    idx: &[usize],
    limits: &HashMap<String, Vec<String>>,
) -> Vec<usize> {
    let mut refused = Vec::new();
    for &i in idx {
        let Some(of_layer) = limits.get(placements[i].layer.as_str()) else {
            continue;
        };
        let fits = of_layer
            .iter()
            .all(|l| room.get(l.as_str()).copied().unwrap_or(1) > 0);
        if fits {
            for l in of_layer {
                if let Some(r) = room.get_mut(l.as_str()) {
                    *r -= 1;
                }
            }
        } else {
            refused.push(i);
        }
    }
    refused
}

/// Step 2a, licenses: every license a frame's layer names must have a fresh sample and a
/// free seat (a host-based one on a host already seated costs none). The license rows are
/// locked after the limit rows and counted after the lock ([`licenses::lock_rooms`]); seats
/// are taken in batch order. A layer naming a license the provider does not report holds.
pub(super) fn guard_licenses(
    tx: &mut Tx<'_>,
    batch: &mut Batch<'_>,
    rules: &LicenseRules,
) -> Result<(), DbError> {
    let layers = batch.live_keys(|p| &p.layer);
    if layers.is_empty() {
        return Ok(());
    }
    let needs = licenses::layer_licenses(tx.inner(), &layers)?;
    if needs.is_empty() {
        return Ok(());
    }
    let names: BTreeSet<&str> = needs.values().flatten().map(String::as_str).collect();
    let names: Vec<&str> = names.into_iter().collect();
    let mut rooms = licenses::lock_rooms(tx.inner(), &names, rules)?;
    for i in batch.live() {
        let p = &batch.placements[i];
        let Some(need) = needs.get(p.layer.as_str()) else {
            continue;
        };
        if !licenses::take_seats(&mut rooms, need, &p.host_name) {
            batch.drop_out(i, GuardLoss::License);
        }
    }
    Ok(())
}

/// Step 2b, caps: subscription bursts and job and folder maxima as the database has them
/// now, so a cap an operator just lowered binds before the counters re-read it. The cap rows
/// come after the limit rows and before frames and hosts, the order the recompute locks them
/// in too ([`crate::db::caps`]).
pub(super) fn guard_caps(
    tx: &mut Tx<'_>,
    batch: &mut Batch<'_>,
    inflight: &InFlight,
) -> Result<(), DbError> {
    let idx = batch.live();
    for i in super::super::caps::refused(tx, batch.placements, &idx, inflight)? {
        batch.drop_out(i, GuardLoss::Cap);
    }
    Ok(())
}

/// Room left under each limit of `ids`, with the limit rows locked until commit.
///
/// Lock first, then count in a new statement: in READ COMMITTED a count in the locking
/// statement (a subquery in its select list) is evaluated on that statement's snapshot, taken
/// before the lock wait, so batches queued behind one another would all count the running
/// frames as they were before the first of them committed.
pub(super) fn limit_room(tx: &mut Tx<'_>, ids: &[&str]) -> Result<HashMap<String, i64>, DbError> {
    tx.execute(
        "SELECT 1 FROM limit_record WHERE pk_limit_record = ANY($1)
          ORDER BY pk_limit_record FOR UPDATE",
        &[&ids],
    )?;
    let rows = tx.query(crate::db::jobs::LIMIT_ROOMS, &[&ids])?;
    Ok(crate::db::jobs::rooms_of(&rows))
}

/// Locks the `layer_stat` and `job_stat` rows Cuebot's frame trigger will update, in key
/// order, before any frame changes state. Every writer of frame states that shares hosts with
/// stagehand should take them this way (stats, then hosts) so none of them can deadlock.
pub(crate) fn lock_stat_rows<C: postgres::GenericClient>(
    tx: &mut C,
    layers: &[&str],
    jobs: &[&str],
) -> Result<(), DbError> {
    tx.execute(LOCK_STAT_ROWS, &[&layers, &jobs])?;
    Ok(())
}

/// [`lock_stat_rows`]'s statement. One statement: the scalar subqueries of its one row run in
/// order, layers then jobs.
const LOCK_STAT_ROWS: &str =
    "WITH l AS (SELECT 1 FROM layer_stat WHERE pk_layer = ANY($1) ORDER BY pk_layer FOR UPDATE),
          j AS (SELECT 1 FROM job_stat WHERE pk_job = ANY($2) ORDER BY pk_job FOR UPDATE)
     SELECT (SELECT count(*) FROM l), (SELECT count(*) FROM j)";

/// The shows of the batch no longer managed by stagehand, their rows locked FOR
/// SHARE so a flip waits for this transaction.
pub(super) fn unmanaged_shows(
    tx: &mut Tx<'_>,
    placements: &[Placement],
) -> Result<BTreeSet<String>, DbError> {
    let shows = batch_shows(placements);
    let managed: BTreeSet<String> = tx
        .query(
            "SELECT pk_show FROM show WHERE pk_show = ANY($1) AND b_scheduler_managed
              ORDER BY pk_show FOR SHARE",
            &[&shows],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(shows
        .into_iter()
        .filter(|s| !managed.contains(*s))
        .map(str::to_owned)
        .collect())
}

/// The shows whose lease is not held by `fence.instance` at the planned epoch.
pub(super) fn fenced_out_shows(
    tx: &mut Tx<'_>,
    placements: &[Placement],
    fence: &Fence,
) -> Result<BTreeSet<String>, DbError> {
    let shows = batch_shows(placements);
    let mut held: HashMap<String, i64> = HashMap::new();
    for r in tx.query(
        "SELECT l.pk_show, l.int_epoch FROM stagehand.show_lease l
           JOIN stagehand.instance i ON i.pk_instance = l.pk_instance
          WHERE l.pk_show = ANY($1) AND l.pk_instance = $2
            AND i.ts_heartbeat > now() - make_interval(secs => $3)
          ORDER BY l.pk_show FOR SHARE OF l",
        &[&shows, &fence.instance, &fence.lease_secs],
    )? {
        held.insert(r.get(0), r.get(1));
    }
    Ok(shows
        .into_iter()
        .filter(|s| !held.contains_key(*s) || held.get(*s) != fence.epochs.get(*s))
        .map(str::to_owned)
        .collect())
}

/// The distinct shows of a batch, sorted: the order their rows are locked in.
pub(super) fn batch_shows(placements: &[Placement]) -> Vec<&str> {
    let shows: BTreeSet<&str> = placements.iter().map(|p| p.show.as_str()).collect();
    shows.into_iter().collect()
}
