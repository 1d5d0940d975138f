//! The sequential job orders (`priority`, `fifo`, `balanced`) inside a pass: job after job,
//! each job's layers in order, and room that appears while the pass runs offered in that
//! order too.
//!
//! The host index gains room at any moment (a completion read from the database, an undone
//! launch, a reservation given back), also between the moment a layer stopped for want of
//! room and the moment a later job of the pass searches. Cuebot offers each host to the jobs
//! in order, so such a host goes to the first job that fits it; a pass that simply went on
//! gave it to whichever job it had reached — under strict `priority`, a priority-10 job took
//! a core a priority-90 job was waiting for (the stream scenario's rare lost frame). So the
//! layers that stopped for room stay on the pass's list, a later frame does not take a host
//! one of them fits (the check runs on the host the search offers, before its atomic
//! reservation), and the pass goes back to them first.

use super::{LayerPlan, Matcher, Stop, turns::Lane};
use crate::{
    db::{self, jobs::FrameWork},
    index::{HostView, Request},
    pipeline::waiting::Reason,
};

/// A layer that stopped for want of room earlier in the pass, at the frame it stopped on.
pub(super) struct Ahead<'p, 'l> {
    plan: &'p LayerPlan<'l>,
    frame: &'l FrameWork,
}

/// The layers ahead of a frame, ready for the test of each host its search offers.
pub(super) struct AheadCheck<'a, 'p, 'l> {
    ahead: &'a [Ahead<'p, 'l>],
    /// Per layer ahead: its search and its job's core headroom (`None`: uncapped).
    requests: Vec<(Request<'a>, Option<u32>)>,
}

impl<'a, 'p, 'l> AheadCheck<'a, 'p, 'l> {
    /// The check against `ahead`, with each layer's job headroom read now.
    pub(super) fn new(m: &Matcher<'_>, ahead: &'a [Ahead<'p, 'l>]) -> Self {
        let requests = ahead
            .iter()
            .map(|a| (a.plan.request(), m.job_remaining(&a.plan.job.id)))
            .collect();
        AheadCheck { ahead, requests }
    }

    /// True when a layer ahead would take `host` as it is now: the frame being placed must
    /// leave it to that layer.
    pub(super) fn wanted(&self, m: &Matcher<'_>, host: &HostView<'_>, now: f64) -> bool {
        self.ahead
            .iter()
            .zip(&self.requests)
            .any(|(a, (request, remaining))| {
                request.admits(host) && m.size_on(a.plan, a.frame, host, *remaining, now).is_ok()
            })
    }
}

impl Matcher<'_> {
    /// A job's core headroom under its caps now, as the host sizing takes it (`None`:
    /// uncapped).
    fn job_remaining(&self, job: &crate::ids::JobId) -> Option<u32> {
        super::core_room(self.shared.ledger.job_headroom(job))
    }

    /// Matches the lanes (jobs) in order, each job's layers in order; a job whose cap is full
    /// is left for the next pass. A frame that yields a host to a layer ahead sends the pass
    /// back to those layers first ([`Matcher::go_back`]), then on from the same frame.
    pub(super) fn match_in_order(&mut self, lanes: &[Lane<'_>]) -> Result<(), db::DbError> {
        let plans: Vec<(usize, &LayerPlan<'_>)> = lanes
            .iter()
            .enumerate()
            .flat_map(|(job, lane)| lane.plans.iter().map(move |plan| (job, plan)))
            .collect();
        let mut walk = Walk {
            next: vec![0; plans.len()],
            capped: vec![false; lanes.len()],
            stopped: Vec::new(),
        };
        let mut i = 0;
        while let Some(&(job, plan)) = plans.get(i) {
            if walk.capped[job] {
                i += 1;
                continue;
            }
            let ahead = walk.ahead(&plans);
            let mut next = walk.next[i];
            let stop = self.layer_from(plan, &mut next, &ahead)?;
            walk.next[i] = next;
            if matches!(stop, Some(Stop::Yield)) {
                self.go_back(&plans, &mut walk)?;
                continue;
            }
            walk.settle(i, job, self.stopped(plan, stop), stop);
            i += 1;
        }
        Ok(())
    }

    /// Matches the layers that stopped for room again, in order. One that places no frame
    /// leaves the list for the rest of the pass (what it fits by the test is not what its
    /// own search finds: a cap, a license); so each return here places a frame or shortens
    /// the list, and the pass ends.
    fn go_back(
        &mut self,
        plans: &[(usize, &LayerPlan<'_>)],
        walk: &mut Walk,
    ) -> Result<(), db::DbError> {
        for s in std::mem::take(&mut walk.stopped) {
            let (job, plan) = plans[s];
            if walk.capped[job] {
                continue;
            }
            self.clear_reason(plan);
            let ahead = walk.ahead(plans);
            let (before, mut next) = (walk.next[s], walk.next[s]);
            let stop = self.layer_from(plan, &mut next, &ahead)?;
            walk.next[s] = next;
            // A yield here (room appeared again, for a layer before it) stops it like room.
            let stop = match stop {
                Some(Stop::Yield) => Some(Stop::NoHost(Reason::NoHost)),
                stop => stop,
            };
            let job_stops = self.stopped(plan, stop);
            if next > before || job_stops {
                walk.settle(s, job, job_stops, stop);
            }
        }
        Ok(())
    }

    /// Matches `plan`'s frames from `*next` until one finds no host, a cap stops the job or
    /// the frame yields its host to a layer ahead; `*next` is left on that frame.
    fn layer_from(
        &mut self,
        plan: &LayerPlan<'_>,
        next: &mut usize,
        ahead: &[Ahead<'_, '_>],
    ) -> Result<Option<Stop>, db::DbError> {
        let request = plan.request();
        while let Some(frame) = plan.layer.frames.get(*next) {
            if let Some(stop) = self.frame(plan, &request, frame, ahead)? {
                return Ok(Some(stop));
            }
            *next += 1;
        }
        Ok(None)
    }

    /// Forgets why `plan`'s layer stopped: it is matched again.
    fn clear_reason(&mut self, plan: &LayerPlan<'_>) {
        if let Some(t) = self.tallies.get_mut(&plan.layer.id) {
            t.reason = None;
        }
    }
}

/// Where the in-order walk is: each layer's next frame, the jobs stopped by a cap, the
/// layers stopped for room (indexes into the pass's layers, in order).
struct Walk {
    next: Vec<usize>,
    capped: Vec<bool>,
    stopped: Vec<usize>,
}

impl Walk {
    /// The layers stopped for room, each at the frame it stopped on.
    fn ahead<'p, 'l>(&self, plans: &[(usize, &'p LayerPlan<'l>)]) -> Vec<Ahead<'p, 'l>> {
        self.stopped
            .iter()
            .filter_map(|&s| {
                let plan = plans.get(s)?.1;
                let frame = plan.layer.frames.get(*self.next.get(s)?)?;
                Some(Ahead { plan, frame })
            })
            .collect()
    }

    /// Records how layer `i` (of job `job`) ended: a full cap stops its job, a stop for room
    /// puts it on the list.
    fn settle(&mut self, i: usize, job: usize, job_stops: bool, stop: Option<Stop>) {
        if job_stops {
            self.capped[job] = true;
        } else if matches!(stop, Some(Stop::NoHost(reason)) if reason.is_room()) {
            self.stopped.push(i);
        }
    }
}
