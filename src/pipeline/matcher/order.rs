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
//! layers that stopped for room stay on the pass's list; when a later frame's search is
//! offered a host one of them fits (tested before the atomic reservation), the search ends
//! there, the layers that want the host are matched again, and the frame after them.

use std::cell::RefCell;

use super::{LayerPlan, Matcher, Stop, turns::Lane};
use crate::{
    db::{self, jobs::FrameWork},
    ids::{FrameId, JobId},
    index::{HostView, Request},
    metrics,
};

/// A layer that stopped for want of room earlier in the pass, at the frame it stopped on.
pub(super) struct Ahead<'p, 'l> {
    /// Its index among the pass's layers.
    at: usize,
    plan: &'p LayerPlan<'l>,
    frame: &'l FrameWork,
}

/// The layers ahead of a frame, ready for the test of each host its search offers.
pub(super) struct AheadCheck<'a, 'p, 'l> {
    ahead: &'a [Ahead<'p, 'l>],
    /// Per layer ahead: its search and its job's core headroom (`None`: uncapped).
    requests: Vec<(Request<'a>, Option<u32>)>,
    /// The layers ahead that fit the first host found wanted (indexes among the pass's).
    wanting: RefCell<Vec<usize>>,
}

impl<'a, 'p, 'l> AheadCheck<'a, 'p, 'l> {
    /// The check against `ahead`, with each layer's job headroom read now.
    pub(super) fn new(m: &Matcher<'_>, ahead: &'a [Ahead<'p, 'l>]) -> Self {
        let requests = ahead
            .iter()
            .map(|a| (a.plan.request(), m.job_remaining(&a.plan.job.id)))
            .collect();
        AheadCheck {
            ahead,
            requests,
            wanting: RefCell::new(Vec::new()),
        }
    }

    /// True when a layer ahead would take `host` as it is now, so `frame` must leave it
    /// (unless the host is reserved for `frame` itself); records which layers want it.
    pub(super) fn wanted(
        &self,
        m: &Matcher<'_>,
        frame: &FrameId,
        host: &HostView<'_>,
        now: f64,
    ) -> bool {
        if self.ahead.is_empty() || m.holds.on_host(host.id).is_some_and(|h| h.frame == *frame) {
            return false;
        }
        let wanting: Vec<usize> = self
            .ahead
            .iter()
            .zip(&self.requests)
            .filter(|(a, (request, remaining))| {
                request.admits(host) && m.size_on(a.plan, a.frame, host, *remaining, now).is_ok()
            })
            .map(|(a, _)| a.at)
            .collect();
        let wanted = !wanting.is_empty();
        if wanted {
            *self.wanting.borrow_mut() = wanting;
        }
        wanted
    }

    /// True once a host was found wanted: the search offers nothing more.
    pub(super) fn yielded(&self) -> bool {
        !self.wanting.borrow().is_empty()
    }

    /// The layers that want the host found, in the pass's order.
    pub(super) fn into_wanting(self) -> Vec<usize> {
        self.wanting.into_inner()
    }
}

impl Matcher<'_> {
    /// A job's core headroom under its caps now, as the host sizing takes it (`None`:
    /// uncapped).
    fn job_remaining(&self, job: &JobId) -> Option<u32> {
        super::core_room(self.shared.ledger.job_headroom(job))
    }

    /// Matches the lanes (jobs) in order, each job's layers in order; a job whose cap is full
    /// is left for the next pass. A frame that yields a host to layers ahead sends the pass
    /// back to those layers ([`Matcher::go_back`]), then on from the same frame.
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
            let stop = self.resume(&plans, &mut walk, i)?;
            if let Some(Stop::Yield(wanting)) = stop {
                metrics::ROOM_YIELDS.inc();
                self.go_back(&plans, &mut walk, wanting)?;
                continue;
            }
            let room = is_room(&stop);
            let job_stops = self.stopped(plan, stop);
            walk.settle(i, job, job_stops, room);
            i += 1;
        }
        Ok(())
    }

    /// Matches again, in order, the stopped layers that want a host a later frame was
    /// offered. One that places no frame leaves the list for the rest of the pass: what the
    /// test saw is not what its own search finds (a license, the search's scan limit). So
    /// each return here places a frame or shortens the list, and the pass ends.
    fn go_back(
        &mut self,
        plans: &[(usize, &LayerPlan<'_>)],
        walk: &mut Walk,
        wanting: Vec<usize>,
    ) -> Result<(), db::DbError> {
        for s in wanting {
            walk.stopped.retain(|&x| x != s);
            let Some(&(job, plan)) = plans.get(s) else {
                continue;
            };
            if walk.capped[job] {
                continue;
            }
            let before = walk.next[s];
            let stop = self.resume(plans, walk, s)?;
            // Yielding again (room appeared for a layer before it) stops it as for room.
            let room = matches!(stop, Some(Stop::Yield(_))) || is_room(&stop);
            let job_stops = self.stopped(plan, stop);
            if walk.next[s] > before || job_stops {
                walk.settle(s, job, job_stops, room);
            }
        }
        Ok(())
    }

    /// Matches layer `i`'s frames from its next one, with the layers stopped for room before
    /// it ahead, until a frame finds no host, a cap stops the job or the frame yields its
    /// host to layers ahead; the layer's next frame is left on that frame.
    fn resume(
        &mut self,
        plans: &[(usize, &LayerPlan<'_>)],
        walk: &mut Walk,
        i: usize,
    ) -> Result<Option<Stop>, db::DbError> {
        let plan = plans[i].1;
        let ahead = walk.ahead(plans, i);
        let request = plan.request();
        while let Some(frame) = plan.layer.frames.get(walk.next[i]) {
            if let Some(stop) = self.frame(plan, &request, frame, &ahead)? {
                return Ok(Some(stop));
            }
            walk.next[i] += 1;
        }
        Ok(None)
    }
}

/// True when `stop` is for want of room others could take as well.
fn is_room(stop: &Option<Stop>) -> bool {
    matches!(stop, Some(Stop::NoHost(reason)) if reason.is_room())
}

/// Where the in-order walk is: each layer's next frame, the jobs stopped by a cap, the
/// layers stopped for room (indexes among the pass's layers, ascending: the pass's order).
struct Walk {
    next: Vec<usize>,
    capped: Vec<bool>,
    stopped: Vec<usize>,
}

impl Walk {
    /// The layers before `before` stopped for room, of jobs no cap stopped, each at the frame
    /// it stopped on.
    fn ahead<'p, 'l>(
        &self,
        plans: &[(usize, &'p LayerPlan<'l>)],
        before: usize,
    ) -> Vec<Ahead<'p, 'l>> {
        self.stopped
            .iter()
            .take_while(|&&s| s < before)
            .filter_map(|&s| {
                let &(job, plan) = plans.get(s)?;
                if *self.capped.get(job)? {
                    return None;
                }
                let frame = plan.layer.frames.get(*self.next.get(s)?)?;
                Some(Ahead { at: s, plan, frame })
            })
            .collect()
    }

    /// Records how layer `i` (of job `job`) ended: a full cap stops its job, a stop for room
    /// puts it on the list, in order.
    fn settle(&mut self, i: usize, job: usize, job_stops: bool, room: bool) {
        if job_stops {
            self.capped[job] = true;
        } else if room {
            if let Err(at) = self.stopped.binary_search(&i) {
                self.stopped.insert(at, i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(layers: usize, jobs: usize) -> Walk {
        Walk {
            next: vec![0; layers],
            capped: vec![false; jobs],
            stopped: Vec::new(),
        }
    }

    #[test]
    fn stopped_layers_stay_in_the_passs_order() {
        let mut w = walk(5, 5);
        w.settle(3, 3, false, true);
        w.settle(1, 1, false, true);
        w.settle(4, 4, false, false);
        w.settle(1, 1, false, true);
        assert_eq!(w.stopped, [1, 3], "sorted, once each, only stops for room");
    }

    #[test]
    fn a_capped_job_stops_and_never_joins_the_list() {
        let mut w = walk(3, 2);
        w.settle(2, 1, true, true);
        assert!(w.capped[1]);
        assert!(w.stopped.is_empty());
    }
}
