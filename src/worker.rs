//! The shape every timer-driven background thread shares: run a step, sleep until the step
//! says the next one is due (or until someone asks for one early), stop promptly when told,
//! and keep one database session that is re-opened after a connection error.
//!
//! The threads keep their own policy (what a step does, how soon it runs again after an
//! error); this module only owns the loop, so stop flags, wake requests and reconnects
//! behave the same in each of them, and the pacing of the reads whose cost grows with the
//! farm ([`paced`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{config::DatabaseConfig, db};

/// How long a sleeping worker goes without looking at its stop flag and wake request.
const SLICE: Duration = Duration::from_millis(20);

/// Runs `step` until `stop` is set. `step` returns how long to wait before it runs again;
/// `wake` is polled while waiting and runs the next step at once when it returns true.
pub(crate) fn periodic(
    stop: &AtomicBool,
    mut wake: impl FnMut() -> bool,
    mut step: impl FnMut() -> Duration,
) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        // Asked every time, so a request made while a step was due is taken by that step.
        let woken = wake();
        if now < next && !woken {
            std::thread::sleep((next - now).min(SLICE));
            continue;
        }
        next = Instant::now() + step();
    }
}

/// A periodic read of the whole farm keeps its session busy at most 1 / `READ_SHARE` of the
/// time: one that takes longer than its interval allows waits longer before the next.
const READ_SHARE: u32 = 20;

/// A paced read never waits more than this many times its configured interval, so what it
/// keeps fresh has a bound an operator can read off the configuration.
const MAX_STRETCH: u32 = 4;

/// How long to wait after a periodic read of the whole farm (the host changes, the new-work
/// probe, the active-work scan, the accounting recompute) that took `took`, configured to
/// run every `interval`: the interval, or more when the read took over 1 / `READ_SHARE` of
/// it, up to `MAX_STRETCH` times the interval. Those reads scan tables that grow with the
/// farm; at ten times the drain farm they ran as often as on the small one and took a
/// growing share of the database from the booking (issue 14). On a small farm nothing
/// changes. The chosen wait is published as `stagehand_periodic_read_wait_seconds{read}`.
pub(crate) fn paced(read: &str, interval: Duration, took: Duration) -> Duration {
    let wait = stretched(interval, took);
    crate::metrics::PERIODIC_READ_WAIT
        .with_label_values(&[read])
        .set(wait.as_secs_f64());
    wait
}

/// The wait of [`paced`] without publishing it: `interval`, or `READ_SHARE − 1` times `took`
/// when that is longer, at most `MAX_STRETCH` intervals.
pub(crate) fn stretched(interval: Duration, took: Duration) -> Duration {
    took.saturating_mul(READ_SHARE - 1)
        .clamp(interval, interval.saturating_mul(MAX_STRETCH))
}

/// A periodic worker's inbox of "run a step now" requests. The worker owns it and takes the
/// requests ([`Wake::take`], its `wake` of [`periodic`]); whoever may ask holds a
/// [`WakeRequest`], which can only ask.
#[derive(Default)]
pub(crate) struct Wake(Arc<AtomicBool>);

impl Wake {
    /// A handle that can only ask for a step.
    pub(crate) fn requester(&self) -> WakeRequest {
        WakeRequest(Arc::clone(&self.0))
    }

    /// Takes a pending request.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// The asking side of a [`Wake`].
#[derive(Clone, Default)]
pub(crate) struct WakeRequest(Arc<AtomicBool>);

impl WakeRequest {
    /// Asks the worker for a step as soon as possible (requests made before it runs merge).
    pub(crate) fn request(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A worker's own database session (outside the pool), opened on first use and re-opened
/// after an error that may have broken it.
#[derive(Default)]
pub(crate) struct Session {
    client: Option<postgres::Client>,
}

impl Session {
    /// The open session, connecting first if there is none (or it was closed).
    pub(crate) fn get(
        &mut self,
        config: &DatabaseConfig,
    ) -> Result<&mut postgres::Client, db::DbError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(db::connect(config)?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| db::DbError::Config("no session".into()))
    }

    /// Drops the session after `error` if it may have broken it (the next step reconnects).
    pub(crate) fn after_error(&mut self, error: &db::DbError) {
        if error.retryable() {
            self.client = None;
        }
    }

    /// Drops the session unconditionally (e.g. it could not be set up).
    pub(crate) fn reset(&mut self) {
        self.client = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn periodic_runs_steps_until_stopped_and_wakes_early_on_request() {
        let stop = AtomicBool::new(false);
        let steps = AtomicUsize::new(0);
        let wakes = AtomicUsize::new(0);
        periodic(
            &stop,
            || wakes.fetch_add(1, Ordering::Relaxed) % 2 == 0,
            || {
                if steps.fetch_add(1, Ordering::Relaxed) == 3 {
                    stop.store(true, Ordering::Release);
                }
                // A day: only the wake requests can bring the next steps.
                Duration::from_secs(86_400)
            },
        );
        assert_eq!(steps.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_read_is_paced_by_its_cost_within_a_bounded_stretch() {
        let ms = Duration::from_millis;
        // Cheap against its interval: the interval.
        assert_eq!(paced("t", ms(100), ms(2)), ms(100));
        // 10 ms a read: 190 ms between reads keeps it at 1/20 of the time.
        assert_eq!(paced("t", ms(100), ms(10)), ms(190));
        // Never past four intervals, however slow the read.
        assert_eq!(paced("t", ms(100), ms(1_000)), ms(400));
        // An interval of zero stays zero (the caller's "off" or "at once").
        assert_eq!(paced("t", ms(0), ms(5)), ms(0));
    }

    #[test]
    fn wake_requests_merge_and_are_taken_once() {
        let wake = Wake::default();
        let asker = wake.requester();
        assert!(!wake.take());
        asker.request();
        asker.request();
        assert!(wake.take());
        assert!(!wake.take());
    }
}
