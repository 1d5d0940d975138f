//! The `proportional` job order inside a pass: priority as a rate. The pass's jobs take turns
//! frame by frame, each turn drawn with probability proportional to the job's priority among
//! the jobs that still have frames to try, so on a saturated farm (where a pass has room for
//! a few frames only) the room goes to the jobs in proportion to their priorities instead of
//! all of it to the first job. The draw is per frame, not per pass, so the shares are steady
//! after a few passes rather than after thousands.

use rand::Rng;

use super::{LayerPlan, Matcher};
use crate::db;

/// One job's layers as the pass matches them, and where it is in them.
pub(super) struct Lane<'l> {
    /// The job's priority: its weight in the draw.
    pub(super) priority: i32,
    pub(super) plans: Vec<LayerPlan<'l>>,
    /// The layer being matched (an index into `plans`) and its next frame.
    pub(super) layer: usize,
    pub(super) frame: usize,
}

impl Lane<'_> {
    /// The (layer, frame) to try next, skipping layers with no frame left; `None` when the
    /// job has none.
    fn next(&mut self) -> Option<(usize, usize)> {
        while let Some(plan) = self.plans.get(self.layer) {
            if self.frame < plan.layer.frames.len() {
                return Some((self.layer, self.frame));
            }
            (self.layer, self.frame) = (self.layer + 1, 0);
        }
        None
    }
}

impl Matcher<'_> {
    /// The `proportional` order: each turn goes to a job drawn by priority among those with
    /// frames left to try, and books (or stops at) that job's next frame.
    pub(super) fn match_in_turns(&mut self, mut lanes: Vec<Lane<'_>>) -> Result<(), db::DbError> {
        let mut lottery = Lottery::new(lanes.iter().map(|l| l.priority));
        let mut rng = rand::rng();
        while let Some(i) = lottery.draw(&mut rng) {
            let Some((p, f)) = lanes.get_mut(i).and_then(Lane::next) else {
                lottery.retire(i);
                continue;
            };
            let plan = &lanes[i].plans[p];
            let stop = self.frame(plan, &plan.request(), &plan.layer.frames[f], &[])?;
            let stopped = stop.is_some();
            if self.stopped(plan, stop) {
                lottery.retire(i);
            }
            let lane = &mut lanes[i];
            if stopped {
                (lane.layer, lane.frame) = (p + 1, 0);
            } else {
                lane.frame = f + 1;
            }
        }
        Ok(())
    }
}

/// A weighted draw among lanes (jobs) that are retired once they have nothing left to try.
#[derive(Clone, Debug)]
pub(crate) struct Lottery {
    weights: Vec<f64>,
    total: f64,
}

impl Lottery {
    /// One lane per priority; a priority below 1 counts as 1, so every job keeps a chance.
    pub(crate) fn new(priorities: impl IntoIterator<Item = i32>) -> Lottery {
        let weights: Vec<f64> = priorities
            .into_iter()
            .map(|p| f64::from(p.max(1)))
            .collect();
        let total = weights.iter().sum();
        Lottery { weights, total }
    }

    /// The lane whose turn it is, drawn by weight among the lanes not retired; `None` when
    /// every lane is retired.
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> Option<usize> {
        if self.total <= 0.0 {
            return None;
        }
        let mut ticket = rng.random::<f64>() * self.total;
        let mut last = None;
        for (i, w) in self.weights.iter().enumerate().filter(|(_, w)| **w > 0.0) {
            if ticket < *w {
                return Some(i);
            }
            ticket -= w;
            last = Some(i);
        }
        // Rounding left the ticket just past the last lane's end.
        last
    }

    /// Takes lane `lane` out of the draw for the rest of the pass.
    pub(crate) fn retire(&mut self, lane: usize) {
        if let Some(w) = self.weights.get_mut(lane) {
            self.total -= *w;
            *w = 0.0;
        }
        if self.weights.iter().all(|w| *w <= 0.0) {
            self.total = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::SmallRng};

    use super::*;

    #[test]
    fn draws_are_proportional_to_priority() {
        let lottery = Lottery::new([10, 20, 70]);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[lottery.draw(&mut rng).unwrap()] += 1;
        }
        let shares: Vec<f64> = counts.iter().map(|c| f64::from(*c) / 1e5).collect();
        for (share, want) in shares.iter().zip([0.1, 0.2, 0.7]) {
            assert!((share - want).abs() < 0.01, "{shares:?}");
        }
    }

    #[test]
    fn retired_lanes_are_never_drawn_and_zero_priorities_still_play() {
        let mut lottery = Lottery::new([0, -5, 50]);
        lottery.retire(2);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut seen = [false; 3];
        for _ in 0..1_000 {
            seen[lottery.draw(&mut rng).unwrap()] = true;
        }
        assert_eq!(seen, [true, true, false]);
        lottery.retire(0);
        lottery.retire(1);
        assert_eq!(lottery.draw(&mut rng), None);
        lottery.retire(1);
        assert_eq!(lottery.draw(&mut rng), None);
    }
}
