//! One cluster's turn in the feed: when it may go next, how many of its passes are out, and
//! what its last pass said.
//!
//! A cluster's passes run one at a time, with one exception: while a booking thread would
//! otherwise wait, a cluster whose last pass ended on work rather than on room (it booked
//! every frame of a full page of jobs, and saw more jobs with work beyond it) gets another
//! pass beside the running one. The job claims keep the two on different jobs; each pass
//! reads spare candidates, so passes that start together do not all claim the same page.
//! Without it, a drain whose other clusters had run dry left one cluster's passes going one
//! after another, and PostgreSQL idle between them (issue 14).
//!
//! With several passes out, the cluster's sleep is decided by the last one to return, and
//! it does not sleep if any of them booked.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    Cluster,
    feed::{BUSY_RETRY, Ending, PassOutcome, PassResult},
};
use crate::config::SchedulerConfig;

/// Why a cluster sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sleep {
    /// Its last pass found no pending job.
    NoJobs,
    /// Its last pass found jobs and booked nothing.
    Saturated,
    /// Its last pass failed.
    Error,
}

impl Sleep {
    /// The metric label.
    pub(super) fn label(self) -> &'static str {
        match self {
            Sleep::NoJobs => "no_jobs",
            Sleep::Saturated => "saturated",
            Sleep::Error => "error",
        }
    }
}

/// A cluster's place in the feed.
pub(super) struct Turn {
    pub(super) cluster: Arc<Cluster>,
    /// Not dispatched again (with no pass out) before this.
    pub(super) ready_at: Instant,
    /// Its passes queued or running.
    inflight: u32,
    /// Its last pass ended on work, not on room: another pass may run beside the next.
    wants_more: bool,
    /// Its last round booked nothing and found all its work held back by its own caps,
    /// limits, start times or licenses ([`Ending::HeldBack`]): not hungry for fair share.
    pub(super) held: bool,
    /// A pass booked since it was last dispatched with no pass out.
    round_booked: bool,
    /// Waiting frames in its tags at the last scan (-1 unknown), and when last dispatched.
    pub(super) waiting: i64,
    pub(super) waiting_at_pass: i64,
    /// The newest start of a job with waiting work in the cluster's tags, at the last scan
    /// and when the cluster was last dispatched (seconds since the epoch).
    pub(super) newest: f64,
    pub(super) newest_at_pass: f64,
    pub(super) last_turn: Option<Instant>,
    pub(super) sleep: Option<Sleep>,
    /// The host index's capacity generation when its last pass started.
    pub(super) capacity_gen: u64,
}

impl Turn {
    /// A new cluster: ready now, waiting unknown.
    pub(super) fn new(cluster: Arc<Cluster>, now: Instant) -> Turn {
        Turn {
            cluster,
            ready_at: now,
            inflight: 0,
            wants_more: false,
            held: false,
            round_booked: false,
            waiting: -1,
            waiting_at_pass: -1,
            newest: 0.0,
            newest_at_pass: 0.0,
            last_turn: None,
            sleep: None,
            capacity_gen: 0,
        }
    }

    /// True while none of its passes is queued or running.
    pub(super) fn idle(&self) -> bool {
        self.inflight == 0
    }

    /// Passes of it queued or running.
    pub(super) fn inflight(&self) -> u32 {
        self.inflight
    }

    /// True when a pass beside those out may help: one is out, and the last to return
    /// ended on work, not on room.
    pub(super) fn wants_another(&self) -> bool {
        self.inflight > 0 && self.wants_more
    }

    /// Records a pass handed to the workers at `now`.
    pub(super) fn dispatched(&mut self, now: Instant) {
        if self.inflight == 0 {
            self.round_booked = false;
        }
        self.inflight += 1;
        self.last_turn = Some(now);
        self.waiting_at_pass = self.waiting;
        self.newest_at_pass = self.newest;
        self.sleep = None;
    }

    /// Records a pass's outcome at `now`; returns the sleep it starts, if any. While
    /// another pass of the cluster is out, nothing but the counts changes: that pass
    /// decides.
    pub(super) fn settle(
        &mut self,
        outcome: &PassOutcome,
        s: &SchedulerConfig,
        now: Instant,
    ) -> Option<Sleep> {
        self.inflight = self.inflight.saturating_sub(1);
        self.capacity_gen = outcome.capacity_gen;
        self.wants_more = outcome.ending == Ending::MoreWork;
        if matches!(outcome.result, PassResult::Booked(_)) {
            self.round_booked = true;
        }
        if self.inflight > 0 {
            return None;
        }
        self.held = !self.round_booked && outcome.ending == Ending::HeldBack;
        let result = if self.round_booked {
            PassResult::Booked(0)
        } else {
            outcome.result
        };
        let (sleep, duration) = match result {
            PassResult::Booked(_) | PassResult::Stopped => (None, Duration::ZERO),
            PassResult::Busy => (None, BUSY_RETRY),
            PassResult::NoJobs => (Some(Sleep::NoJobs), s.empty_sleep),
            PassResult::Saturated => (Some(Sleep::Saturated), s.saturated_sleep),
            PassResult::Error => (Some(Sleep::Error), s.error_sleep),
        };
        if result == PassResult::NoJobs {
            // The pass's job query has the scan's predicates, so "no job" means nothing of
            // this cluster was waiting when it ran: newer than the scan's count, which may
            // predate the pass's own bookings. With 0 as the baseline, whatever the next scan
            // counts is new work and wakes the cluster, instead of only work beyond a count
            // that was already booked (a job submitted then slept through `empty_sleep`).
            self.waiting = 0;
            self.waiting_at_pass = 0;
        }
        self.sleep = sleep;
        self.ready_at = now + duration;
        sleep
    }

    /// Ends its sleep now (new work, freed room); only while no pass of it is out.
    pub(super) fn wake(&mut self, now: Instant) {
        if self.idle() {
            self.ready_at = now;
            self.sleep = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, model::TagType};

    fn turn() -> Turn {
        let cluster = Cluster {
            key: "c".into(),
            facility: "f".into(),
            show: "s".into(),
            show_name: "s".into(),
            kind: TagType::Manual,
            tags: vec!["t".into()],
            allocs: Default::default(),
        };
        Turn::new(Arc::new(cluster), Instant::now())
    }

    fn outcome(result: PassResult, wants_more: bool) -> PassOutcome {
        PassOutcome {
            key: "c".into(),
            result,
            capacity_gen: 1,
            ending: if wants_more {
                Ending::MoreWork
            } else {
                Ending::Plain
            },
        }
    }

    #[test]
    fn a_pass_that_ended_on_work_asks_for_another_beside_the_next() {
        let s = Config::default().scheduler;
        let now = Instant::now();
        let mut t = turn();
        t.dispatched(now);
        assert!(!t.wants_another(), "nothing said yet");
        assert_eq!(
            t.settle(&outcome(PassResult::Booked(200), true), &s, now),
            None
        );
        assert!(
            t.idle() && !t.wants_another(),
            "no pass out: the usual turn"
        );
        t.dispatched(now);
        assert!(t.wants_another());
        t.dispatched(now);
        assert_eq!(t.inflight(), 2);
        // The second found only jobs the first held: no third.
        assert_eq!(t.settle(&outcome(PassResult::Busy, false), &s, now), None);
        assert!(!t.wants_another() && !t.idle());
    }

    #[test]
    fn the_last_pass_back_decides_the_sleep_and_a_booking_among_them_wins() {
        let s = Config::default().scheduler;
        let now = Instant::now();
        let mut t = turn();
        t.dispatched(now);
        t.dispatched(now);
        // The first back booked; the second found the room taken by the first.
        assert_eq!(
            t.settle(&outcome(PassResult::Booked(5), false), &s, now),
            None
        );
        assert_eq!(
            t.settle(&outcome(PassResult::Saturated, false), &s, now),
            None
        );
        assert!(
            t.idle() && t.ready_at <= now,
            "ready at once: it booked this round"
        );
        // A new round with nothing booked sleeps as its last pass says.
        t.dispatched(now);
        t.dispatched(now);
        assert_eq!(t.settle(&outcome(PassResult::Busy, false), &s, now), None);
        assert!(t.sleep.is_none() && !t.idle());
        let sleep = t.settle(&outcome(PassResult::Saturated, false), &s, now);
        assert_eq!(sleep, Some(Sleep::Saturated));
        assert_eq!(t.ready_at, now + s.saturated_sleep);
    }

    #[test]
    fn a_cluster_with_a_pass_out_is_not_woken() {
        let s = Config::default().scheduler;
        let now = Instant::now();
        let mut t = turn();
        t.dispatched(now);
        let (before, later) = (t.ready_at, now + Duration::from_secs(1));
        t.wake(later);
        assert_eq!(t.ready_at, before, "the pass out decides when it goes next");
        t.settle(&outcome(PassResult::NoJobs, false), &s, now);
        assert_eq!((t.waiting, t.sleep), (0, Some(Sleep::NoJobs)));
        t.wake(later);
        assert_eq!((t.ready_at, t.sleep), (later, None));
    }
}
