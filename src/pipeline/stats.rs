//! Dispatch statistics for `/status`, the status page's sparkline and the heartbeat log line:
//! frames booked per second over the last ten minutes, without touching the hot path beyond
//! one atomic add.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;

const WINDOW: usize = 600;

/// Frames booked and refused, with a per-second history.
pub struct DispatchStats {
    started: Instant,
    booked: AtomicU64,
    rejected: AtomicU64,
    launch_failures: AtomicU64,
    history: Mutex<History>,
}

struct History {
    /// Unix second of `slots[head]`.
    head_sec: u64,
    head: usize,
    slots: [u32; WINDOW],
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for DispatchStats {
    fn default() -> Self {
        DispatchStats {
            started: Instant::now(),
            booked: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            launch_failures: AtomicU64::new(0),
            history: Mutex::new(History {
                head_sec: unix_now(),
                head: 0,
                slots: [0; WINDOW],
            }),
        }
    }
}

impl History {
    fn advance(&mut self, now: u64) {
        let steps = now.saturating_sub(self.head_sec).min(WINDOW as u64);
        for _ in 0..steps {
            self.head = (self.head + 1) % WINDOW;
            self.slots[self.head] = 0;
        }
        self.head_sec = self.head_sec.max(now);
    }
}

impl DispatchStats {
    /// Records `n` frames booked now.
    pub fn booked(&self, n: u64) {
        self.booked.fetch_add(n, Ordering::Relaxed);
        let mut h = self.history.lock();
        h.advance(unix_now());
        let head = h.head;
        h.slots[head] = h.slots[head].saturating_add(n as u32);
    }

    /// Records a refusal by a cap or a lost guard.
    pub fn rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a failed launch.
    pub(crate) fn launch_failed(&self) {
        self.launch_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Totals: (booked, rejected, launch failures).
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.booked.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.launch_failures.load(Ordering::Relaxed),
        )
    }

    /// Frames booked per second for the last `seconds` complete seconds, oldest first.
    pub(crate) fn per_second(&self, seconds: usize) -> Vec<u32> {
        let seconds = seconds.min(WINDOW - 1);
        let mut h = self.history.lock();
        h.advance(unix_now());
        (1..=seconds)
            .rev()
            .map(|back| h.slots[(h.head + WINDOW - back) % WINDOW])
            .collect()
    }

    /// Average frames per second over the last `seconds`.
    pub fn rate(&self, seconds: usize) -> f64 {
        let window = self.per_second(seconds);
        if window.is_empty() {
            return 0.0;
        }
        window.iter().map(|&n| f64::from(n)).sum::<f64>() / window.len() as f64
    }

    /// Seconds since start.
    pub(crate) fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_history() {
        let s = DispatchStats::default();
        s.booked(5);
        s.rejected(2);
        assert_eq!(s.totals(), (5, 2, 0));
        assert_eq!(s.per_second(10).len(), 10);
    }
}
