//! Taking a host reservation for a wide frame that fits nowhere (the policy is in
//! [`crate::backfill`]): among the hosts that could hold the frame when idle, reserve the one
//! expected to have room soonest.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use super::Shared;
use crate::{
    backfill::{self, Hold, HoldMap, Running},
    config::{Config, ReservationsConfig},
    db::{self, booking::Fence, reservations::NewHold},
    ids::{AllocId, FrameId, HostId, LayerId, ShowId},
    index::{Capable, Request},
    metrics,
};

/// The frame asking for a reservation.
pub(crate) struct WideFrame<'a> {
    /// The frame.
    pub frame: &'a FrameId,
    /// `frame.str_name`, for the log.
    pub name: &'a str,
    /// Its layer.
    pub layer: &'a LayerId,
    /// Its show.
    pub show: &'a ShowId,
    /// Seconds it has been waiting.
    pub waited_secs: f64,
}

/// Reserves a host for `wide` (whose host search `request` just found nothing) when the
/// policy allows: reservations on, waited long enough, not already holding one, under this
/// instance's reservation budget, and room is really what it lacks. Returns the reservation.
pub(crate) fn reserve(
    shared: &Shared,
    conn: &mut db::Conn,
    config: &Config,
    allocs: &HashSet<AllocId>,
    wide: &WideFrame<'_>,
    request: &Request<'_>,
) -> Result<Option<Hold>, db::DbError> {
    let cfg = &config.reservations;
    let holds = shared.holds.snapshot();
    let fence = shared.lease.fence();
    let instance = fence.as_ref().as_ref().map(|f| f.instance);
    if !may_reserve(shared, cfg, &holds, wide, fence.as_ref().as_ref()) {
        return Ok(None);
    }
    let need = request.floor;
    let Some(candidates) = candidates(shared, cfg, &holds, allocs, wide, request) else {
        return Ok(None);
    };
    let ids: Vec<HostId> = candidates.iter().map(|c| c.id.clone()).collect();
    let mut running: HashMap<HostId, Vec<Running>> = HashMap::new();
    for (host, r) in db::reservations::running_on(conn.client(), &ids, i64::from(cfg.min_history))?
    {
        running.entry(host).or_default().push(r);
    }
    let best = candidates
        .iter()
        .zip(&ids)
        .filter_map(|(c, id)| {
            let on = running.get(id).map(Vec::as_slice).unwrap_or(&[]);
            if !backfill::can_starve(&need, on) {
                return None;
            }
            backfill::shadow_secs(c.free, &need, on).map(|s| (s, c, id))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    let Some((shadow_in, host, host_id)) = best else {
        // Nothing narrower runs where it could go: the farm is full, not fragmented. Ask
        // again after another `after`, not every pass.
        shared.holds.decline(wide.layer, Instant::now() + cfg.after);
        return Ok(None);
    };
    let new = NewHold {
        host: host_id,
        frame: wide.frame,
        layer: wide.layer,
        show: wide.show,
        instance,
        need,
        shadow_in_secs: shadow_in,
        expires_in_secs: cfg.max_hold.as_secs_f64(),
    };
    take(shared, conn, &new, host, wide)
}

/// The policy before any search: reservations on, the frame waited long enough, holds no
/// reservation yet, its layer was not declined lately, and this instance is under its
/// budget — each reservation idles a host while it drains, so the budget counts the
/// reservations of the shows this instance holds.
fn may_reserve(
    shared: &Shared,
    cfg: &ReservationsConfig,
    holds: &HoldMap,
    wide: &WideFrame<'_>,
    fence: Option<&Fence>,
) -> bool {
    if !cfg.enabled
        || wide.waited_secs < cfg.after.as_secs_f64()
        || holds.holds_frame(wide.frame)
        || shared.holds.declined(wide.layer)
    {
        return false;
    }
    let ours = holds
        .iter()
        .filter(|h| fence.is_none_or(|f| f.epochs.contains_key(&h.show)))
        .count();
    ours < cfg.max_reservations
}

/// The hosts that could hold the frame when idle, in the cluster's allocations, not
/// reserved already and under the show's subscription headroom. `None` when there are none,
/// or when one has the room now: then something else holds the frame back (a cap, a
/// fair-share yield) and a reservation would only idle a host.
fn candidates(
    shared: &Shared,
    cfg: &ReservationsConfig,
    holds: &HoldMap,
    allocs: &HashSet<AllocId>,
    wide: &WideFrame<'_>,
    request: &Request<'_>,
) -> Option<Vec<Capable>> {
    let need = request.floor;
    let capable = shared.index.capable_hosts(request, cfg.candidates * 4);
    if capable.iter().any(|c| c.free.fits(&need)) {
        return None;
    }
    let candidates: Vec<Capable> = capable
        .into_iter()
        .filter(|c| {
            allocs.contains(&c.alloc)
                && holds.on_host(&c.id).is_none()
                && shared.ledger.sub_headroom(wide.show, &c.alloc) >= i64::from(need.cores)
        })
        .take(cfg.candidates)
        .collect();
    (!candidates.is_empty()).then_some(candidates)
}

/// Inserts the reservation (another instance may have reserved the host or the frame
/// first: then nothing) and publishes it to this instance's holds.
fn take(
    shared: &Shared,
    conn: &mut db::Conn,
    new: &NewHold<'_>,
    host: &Capable,
    wide: &WideFrame<'_>,
) -> Result<Option<Hold>, db::DbError> {
    let Some((shadow, expires)) = db::reservations::insert(conn.client(), new)? else {
        return Ok(None);
    };
    let need = new.need;
    let hold = Hold {
        host: host.id.clone(),
        host_name: host.name.clone(),
        frame: wide.frame.clone(),
        layer: wide.layer.clone(),
        show: wide.show.clone(),
        need,
        shadow,
        expires,
    };
    metrics::WIDE_RESERVATION_EVENTS
        .with_label_values(&["taken"])
        .inc();
    log::info!(
        "reserved host {} for frame {} ({} cores, {} MB) after {:.0}s waiting; expected free in {:.0}s",
        host.name,
        wide.name,
        f64::from(need.cores) / 100.0,
        need.mem_kb / 1024,
        wide.waited_secs,
        new.shadow_in_secs,
    );
    shared.holds.add(hold.clone());
    Ok(Some(hold))
}
