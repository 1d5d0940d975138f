//! Wide frames never starve: host reservations and backfill around them (EASY backfilling).
//!
//! On a busy farm a frame wider than any host's free room waits for a host to drain, and
//! narrow frames take each core as it frees, so the wide frame can wait forever (OpenCue's
//! retired scheduler and Cuebot's booking both behave so). Once such a frame has waited
//! `[reservations] after`, it reserves the host expected to free enough soonest: its
//! *shadow time* is computed from the running frames' elapsed time and their layers' history
//! (`shadow_secs`). Until the wide frame books, another frame may take room on that host
//! only if it leaves the reserved resources idle or is expected to end before the shadow
//! time (`Hold::admits`); the wide frame books as soon as it fits.
//!
//! The reservations live in `stagehand.host_reservation`, so every instance honours them,
//! and every booking transaction re-checks the same rule under the host row lock
//! (`db::booking`): the snapshot here is only the fast hint the matcher uses to avoid
//! proposing bookings the database would refuse. A running frame whose layer has no history
//! counts as ending *now* (no backfill window), which can only make backfill rarer, never
//! delay the wide frame.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    ids::{FrameId, HostId, LayerId, ShowId},
    model::Resources,
};
use arc_swap::ArcSwap;
use serde::Serialize;

/// One host reserved for one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    /// The reserved host.
    pub host: HostId,
    /// Its name, for `/status`.
    pub host_name: String,
    /// The frame it is reserved for.
    pub frame: FrameId,
    /// That frame's layer.
    pub layer: LayerId,
    /// That frame's show.
    pub show: ShowId,
    /// What the frame needs on the host.
    pub need: Resources,
    /// When the host was expected to have `need` free (Unix seconds, database clock).
    pub shadow: f64,
    /// When the reservation lapses (Unix seconds).
    pub expires: f64,
}

impl Hold {
    /// May `frame`, expected to run `est_secs` (unknown: `None`), take `amount` of a host with
    /// `free` room at time `now`? Yes for the reserved frame itself, for a taking that leaves
    /// the reserved room free, and for a frame expected to end before the shadow time.
    pub(crate) fn admits(
        &self,
        frame: &FrameId,
        free: &Resources,
        amount: &Resources,
        est_secs: Option<f64>,
        now: f64,
    ) -> bool {
        if *frame == self.frame || now >= self.expires {
            return true;
        }
        if free.saturating_sub(amount).fits(&self.need) {
            return true;
        }
        est_secs.is_some_and(|est| now + est <= self.shadow)
    }
}

/// A reservation on `/status`.
#[derive(Clone, Debug, Serialize)]
pub struct HoldStatus {
    /// Host name.
    pub host: String,
    /// The frame it waits for.
    pub frame: FrameId,
    /// Its layer.
    pub layer: LayerId,
    /// Its show.
    pub show: ShowId,
    /// Cores reserved.
    pub cores: f64,
    /// Memory reserved, MB.
    pub mem_mb: u64,
    /// GPUs reserved.
    pub gpus: u32,
    /// Seconds to the shadow time (negative: past it, the host drains to the frame).
    pub shadow_in_secs: f64,
    /// Seconds until the reservation lapses.
    pub expires_in_secs: f64,
}

/// The reservations known at one moment.
#[derive(Debug, Default)]
pub struct HoldMap {
    /// At most one reservation per host…
    by_host: HashMap<HostId, Arc<Hold>>,
    /// …and per frame (its host), for the matcher's "is this frame waiting on a host" test.
    by_frame: HashMap<FrameId, HostId>,
}

impl HoldMap {
    /// The reservation on `host`, if any.
    pub(crate) fn on_host(&self, host: &HostId) -> Option<&Hold> {
        self.by_host.get(host).map(|h| h.as_ref())
    }

    /// True when `frame` holds a reservation.
    pub(crate) fn holds_frame(&self, frame: &FrameId) -> bool {
        self.by_frame.contains_key(frame)
    }

    /// Number of reservations.
    pub fn len(&self) -> usize {
        self.by_host.len()
    }

    /// True when nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.by_host.is_empty()
    }

    /// Every reservation as `/status` shows it, by host name.
    pub(crate) fn status(&self) -> Vec<HoldStatus> {
        let now = now_secs();
        self.list()
            .into_iter()
            .map(|h| HoldStatus {
                host: h.host_name,
                frame: h.frame,
                layer: h.layer,
                show: h.show,
                cores: f64::from(h.need.cores) / 100.0,
                mem_mb: h.need.mem_kb / 1024,
                gpus: h.need.gpus,
                shadow_in_secs: h.shadow - now,
                expires_in_secs: h.expires - now,
            })
            .collect()
    }

    /// Every reservation, in no order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Hold> {
        self.by_host.values().map(|h| h.as_ref())
    }

    /// Every reservation, by host name.
    pub(crate) fn list(&self) -> Vec<Hold> {
        let mut v: Vec<Hold> = self.iter().cloned().collect();
        v.sort_by(|a, b| a.host_name.cmp(&b.host_name));
        v
    }

    /// The map of `holds`; of two for the same host or frame, the later wins.
    fn from_holds(holds: impl IntoIterator<Item = Arc<Hold>>) -> HoldMap {
        let mut map = HoldMap::default();
        for h in holds {
            map.by_frame.insert(h.frame.clone(), h.host.clone());
            map.by_host.insert(h.host.clone(), h);
        }
        map
    }

    /// A copy keeping the reservations `keep` accepts (sharing them, not cloning them).
    fn keeping(&self, keep: impl Fn(&Hold) -> bool) -> Vec<Arc<Hold>> {
        self.by_host.values().filter(|h| keep(h)).cloned().collect()
    }
}

/// The live snapshot of reservations, replaced wholesale by the host refresher and amended
/// when this instance reserves a host or books a reserved frame. Readers take one lock-free
/// snapshot per pass.
#[derive(Default)]
pub struct Holds {
    /// Swapped whole, so readers never lock and a pass sees one consistent set.
    map: ArcSwap<HoldMap>,
    /// Layers found not to need a reservation, until when: their frames are no wider than
    /// what runs on the hosts, so each completion frees room for one (the farm is just full).
    declined: parking_lot::Mutex<HashMap<LayerId, Instant>>,
}

impl Holds {
    /// The current snapshot.
    pub(crate) fn snapshot(&self) -> Arc<HoldMap> {
        self.map.load_full()
    }

    /// Replaces everything with a fresh read of the table.
    pub(crate) fn replace(&self, holds: Vec<Hold>) {
        self.map.store(Arc::new(HoldMap::from_holds(
            holds.into_iter().map(Arc::new),
        )));
    }

    /// Adds one reservation just written to the table.
    pub(crate) fn add(&self, hold: Hold) {
        let hold = Arc::new(hold);
        self.map.rcu(|m| {
            let mut all = m.keeping(|h| h.host != hold.host && h.frame != hold.frame);
            all.push(Arc::clone(&hold));
            HoldMap::from_holds(all)
        });
    }

    /// Remembers until `until` that `layer` needs no reservation.
    pub(crate) fn decline(&self, layer: &LayerId, until: Instant) {
        let mut d = self.declined.lock();
        let now = Instant::now();
        d.retain(|_, t| *t > now);
        d.insert(layer.clone(), until);
    }

    /// True while `layer` is known to need no reservation.
    pub(crate) fn declined(&self, layer: &LayerId) -> bool {
        self.declined
            .lock()
            .get(layer)
            .is_some_and(|t| *t > Instant::now())
    }

    /// Forgets the reservation of `frame` (it booked).
    pub(crate) fn fulfilled(&self, frame: &FrameId) {
        self.map
            .rcu(|m| HoldMap::from_holds(m.keeping(|h| h.frame != *frame)));
    }
}

/// A frame running on a candidate host: what it holds and how long it is expected to run
/// on (`None`: no estimate).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Running {
    /// Resources it reserved.
    pub amount: Resources,
    /// Expected seconds left; `None` when its layer has no history.
    pub remaining_secs: Option<f64>,
}

/// True when a frame needing `need` can starve on a host running `running`: some running frame
/// is narrower than it in some dimension, so room can free in pieces too small for it that
/// narrow frames take. A host running only frames at least as wide frees enough with any one
/// completion, and a reservation would only idle it.
pub(crate) fn can_starve(need: &Resources, running: &[Running]) -> bool {
    running.iter().any(|r| !r.amount.fits(need))
}

/// Seconds from now until a host with `free` room and `running` frames has `need` free, if
/// it ever will (its capacity may be too small). Frames without an estimate count as ending
/// now: that shortens the shadow, which narrows backfill and never delays the wide frame.
pub(crate) fn shadow_secs(free: Resources, need: &Resources, running: &[Running]) -> Option<f64> {
    if free.fits(need) {
        return Some(0.0);
    }
    let mut ends: Vec<(f64, Resources)> = running
        .iter()
        .map(|r| (r.remaining_secs.unwrap_or(0.0).max(0.0), r.amount))
        .collect();
    ends.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut room = free;
    for (at, amount) in ends {
        room = room.saturating_add(&amount);
        if room.fits(need) {
            return Some(at);
        }
    }
    None
}

/// Expected seconds left of a frame that ran `elapsed` of an `estimate`; overdue frames are
/// expected to end at once.
pub(crate) fn remaining(estimate: Option<f64>, elapsed: f64) -> Option<f64> {
    estimate.map(|e| (e - elapsed).max(0.0))
}

/// Now, in Unix seconds.
pub(crate) fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    //! Unit tests of admission, shadow times and the snapshot.

    use super::*;

    fn cores(n: u32) -> Resources {
        Resources {
            cores: n * 100,
            mem_kb: u64::from(n) * 1024 * 1024,
            ..Resources::ZERO
        }
    }

    fn hold(need: u32, shadow: f64) -> Hold {
        Hold {
            host: "h-1".into(),
            host_name: "h".into(),
            frame: "wide".into(),
            layer: "l".into(),
            show: "s".into(),
            need: cores(need),
            shadow,
            expires: 1e12,
        }
    }

    #[test]
    fn the_reserved_frame_is_always_admitted() {
        assert!(hold(64, 100.0).admits(&"wide".into(), &cores(64), &cores(64), None, 0.0));
    }

    #[test]
    fn a_short_frame_backfills_and_a_long_or_unknown_one_does_not() {
        let h = hold(64, 100.0);
        assert!(h.admits(&"small".into(), &cores(8), &cores(1), Some(50.0), 0.0));
        assert!(h.admits(&"small".into(), &cores(8), &cores(1), Some(100.0), 0.0));
        assert!(!h.admits(&"small".into(), &cores(8), &cores(1), Some(101.0), 0.0));
        assert!(!h.admits(&"small".into(), &cores(8), &cores(1), None, 0.0));
        // Past the shadow time nothing backfills: the host drains to the wide frame.
        assert!(!h.admits(&"small".into(), &cores(8), &cores(1), Some(1.0), 100.0));
    }

    #[test]
    fn room_beyond_the_reservation_is_free_for_anyone() {
        let h = hold(8, 0.0);
        assert!(h.admits(&"small".into(), &cores(12), &cores(4), None, 10.0));
        assert!(!h.admits(&"small".into(), &cores(12), &cores(5), None, 10.0));
    }

    #[test]
    fn an_expired_reservation_admits_everything() {
        let mut h = hold(64, 0.0);
        h.expires = 5.0;
        assert!(h.admits(&"small".into(), &cores(1), &cores(1), None, 6.0));
    }

    #[test]
    fn the_shadow_is_when_enough_frames_have_ended() {
        let running = [
            Running {
                amount: cores(16),
                remaining_secs: Some(30.0),
            },
            Running {
                amount: cores(16),
                remaining_secs: Some(10.0),
            },
            Running {
                amount: cores(30),
                remaining_secs: Some(20.0),
            },
        ];
        // 2 free; +16 at 10 s = 18; +30 at 20 s = 48; +16 at 30 s = 64.
        assert_eq!(shadow_secs(cores(2), &cores(64), &running), Some(30.0));
        assert_eq!(shadow_secs(cores(2), &cores(40), &running), Some(20.0));
        assert_eq!(shadow_secs(cores(64), &cores(64), &running), Some(0.0));
        assert_eq!(shadow_secs(cores(2), &cores(65), &running), None);
    }

    #[test]
    fn only_frames_wider_than_what_runs_can_starve() {
        let ones = [Running {
            amount: cores(1),
            remaining_secs: Some(5.0),
        }];
        assert!(can_starve(&cores(16), &ones));
        assert!(!can_starve(&cores(1), &ones));
        let mut fat = cores(1);
        fat.mem_kb *= 32;
        assert!(can_starve(&fat, &ones), "wider in memory only");
        assert!(!can_starve(&cores(16), &[]));
    }

    #[test]
    fn frames_without_history_count_as_ending_now() {
        let running = [
            Running {
                amount: cores(32),
                remaining_secs: None,
            },
            Running {
                amount: cores(32),
                remaining_secs: Some(40.0),
            },
        ];
        assert_eq!(shadow_secs(cores(0), &cores(32), &running), Some(0.0));
        assert_eq!(shadow_secs(cores(0), &cores(64), &running), Some(40.0));
        assert_eq!(remaining(Some(10.0), 25.0), Some(0.0));
        assert_eq!(remaining(None, 25.0), None);
    }

    #[test]
    fn the_snapshot_adds_and_forgets_reservations() {
        let holds = Holds::default();
        holds.add(hold(64, 1.0));
        let snap = holds.snapshot();
        assert!(snap.holds_frame(&"wide".into()));
        assert!(snap.on_host(&"h-1".into()).is_some());
        holds.fulfilled(&"wide".into());
        assert!(holds.snapshot().is_empty());
        assert_eq!(snap.len(), 1, "an old snapshot stays as it was");
    }
}
