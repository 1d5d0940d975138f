//! Why is it waiting? Every booking pass records, per layer it looked at, why the layer's
//! remaining WAITING frames were not booked; the host refresher publishes the sums as the
//! gauge `stagehand_waiting_frames{reason}` and `/status` shows them.
//!
//! A layer's entry is replaced by each pass that reaches it and dropped when a pass books
//! all its frames or when no pass reached it for `STALE_AFTER` (its job finished, was
//! paused, or its show moved to another instance). Layers held back by their start-after time
//! never reach a pass: the publisher counts them from the database.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, Instant},
};

use dashmap::DashMap;
use serde::Serialize;

use crate::ids::LayerId;

/// An entry not refreshed for this long no longer counts.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(120);

/// Why a layer's frames are not booked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No host has the room the frame needs (cores, memory, GPUs, tags, OS).
    NoHost,
    /// The show's subscription is at its burst, or the show yields to a hungrier one.
    Subscription,
    /// The job's or its folder's max cores / GPUs is reached.
    JobCap,
    /// A layer limit (`limit_record`) is full.
    Limit,
    /// The layer's start-after time has not come.
    StartAfter,
    /// The hosts it fits are reserved for a wide frame it would delay.
    Reserved,
    /// It holds a reservation: its host is draining for it.
    Draining,
    /// A license it needs (`CUE_LICENSES`) has no free seat, or no fresh sample.
    NoLicense,
}

impl Reason {
    /// Every reason, in label order.
    pub const ALL: [Reason; 8] = [
        Reason::NoHost,
        Reason::Subscription,
        Reason::JobCap,
        Reason::Limit,
        Reason::StartAfter,
        Reason::Reserved,
        Reason::Draining,
        Reason::NoLicense,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::NoHost => "no_host",
            Reason::Subscription => "subscription",
            Reason::JobCap => "job_cap",
            Reason::Limit => "limit",
            Reason::StartAfter => "start_after",
            Reason::Reserved => "reserved",
            Reason::Draining => "draining",
            Reason::NoLicense => "no_license",
        }
    }

    /// True when the frames wait for room others could take as well — a host, subscription
    /// room, hosts kept for a reservation — rather than on their own job or layer (its caps,
    /// limits, start time, licenses). A pass that stopped for room gets no pass of its
    /// cluster beside the next one (`matcher::pass_reporting`): side by side, later jobs
    /// would race earlier ones for the last of it.
    pub fn is_room(self) -> bool {
        matches!(
            self,
            Reason::NoHost | Reason::Subscription | Reason::Reserved | Reason::Draining
        )
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    reason: Reason,
    frames: i64,
    seen: Instant,
}

/// The per-layer reasons of this instance's passes.
#[derive(Default)]
pub struct WaitingReasons {
    layers: DashMap<LayerId, Entry>,
    start_after: AtomicI64,
}

impl WaitingReasons {
    /// Records that `frames` WAITING frames of `layer` were left for `reason`.
    pub(crate) fn record(&self, layer: &LayerId, reason: Reason, frames: i64) {
        if frames <= 0 {
            self.layers.remove(layer);
            return;
        }
        self.layers.insert(
            layer.clone(),
            Entry {
                reason,
                frames,
                seen: Instant::now(),
            },
        );
    }

    /// Records that a pass booked everything it could see of `layer`.
    pub(crate) fn clear(&self, layer: &LayerId) {
        self.layers.remove(layer);
    }

    /// Sets the WAITING frames of this instance's shows held back by start-after times.
    pub(crate) fn set_start_after(&self, frames: i64) {
        self.start_after.store(frames, Ordering::Relaxed);
    }

    /// What the last pass that left frames of `layer` waiting recorded: the reason, the
    /// frames and how long ago (`None` when none did within `STALE_AFTER`).
    pub fn layer(&self, layer: &str) -> Option<(Reason, i64, Duration)> {
        let e = self.layers.get(layer)?;
        let age = e.seen.elapsed();
        (age < STALE_AFTER).then_some((e.reason, e.frames, age))
    }

    /// Frames per reason (every reason present, zero when none), dropping stale entries.
    pub fn totals(&self) -> BTreeMap<Reason, i64> {
        self.layers.retain(|_, e| e.seen.elapsed() < STALE_AFTER);
        let mut totals: BTreeMap<Reason, i64> = Reason::ALL.iter().map(|r| (*r, 0)).collect();
        totals.insert(Reason::StartAfter, self.start_after.load(Ordering::Relaxed));
        for e in self.layers.iter() {
            *totals.entry(e.reason).or_default() += e.frames;
        }
        totals
    }

    /// Frames per layer and reason, fresh entries only (the status page groups them by show).
    pub fn by_layer(&self) -> Vec<(LayerId, Reason, i64)> {
        self.layers
            .iter()
            .filter(|e| e.seen.elapsed() < STALE_AFTER)
            .map(|e| (e.key().clone(), e.reason, e.frames))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_reason_of_a_layer_counts_once() {
        let w = WaitingReasons::default();
        w.record(&"a".into(), Reason::NoHost, 10);
        w.record(&"a".into(), Reason::Subscription, 7);
        w.record(&"b".into(), Reason::Subscription, 3);
        w.set_start_after(4);
        let t = w.totals();
        assert_eq!(t[&Reason::StartAfter], 4);
        w.set_start_after(0);
        assert_eq!(t[&Reason::Subscription], 10);
        assert_eq!(t[&Reason::NoHost], 0);
        w.clear(&"a".into());
        w.record(&"b".into(), Reason::Limit, 0);
        assert!(w.totals().values().all(|v| *v == 0));
    }

    #[test]
    fn room_is_what_other_jobs_would_take_too() {
        let room: Vec<Reason> = Reason::ALL.into_iter().filter(|r| r.is_room()).collect();
        assert_eq!(
            room,
            [
                Reason::NoHost,
                Reason::Subscription,
                Reason::Reserved,
                Reason::Draining
            ]
        );
    }
}
