//! Liveness of the named long-running threads and the readiness inputs they report, for
//! `/healthz` and `/readyz`. A leaf module: threads report here without importing the
//! service that started them.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

/// Liveness of the named long-running threads, for `/healthz`.
#[derive(Default)]
pub struct Health {
    threads: parking_lot::Mutex<Vec<(String, Arc<AtomicBool>)>>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    pub stopping: AtomicBool,
    /// Cleared when a database round trip fails, set when one succeeds.
    pub db_ok: AtomicBool,
    /// True once the first host refresh succeeded.
    pub hosts_loaded: AtomicBool,
    /// True once the first cluster load succeeded.
    pub clusters_loaded: Arc<AtomicBool>,
}

impl Health {
    /// Registers a thread by name; the returned flag clears when the thread ends.
    pub(crate) fn register(&self, name: &str) -> Alive {
        let flag = Arc::new(AtomicBool::new(true));
        self.threads
            .lock()
            .push((name.to_owned(), Arc::clone(&flag)));
        Alive(flag)
    }

    /// Names of registered threads that are no longer running.
    pub(crate) fn dead_threads(&self) -> Vec<String> {
        self.threads
            .lock()
            .iter()
            .filter(|(_, a)| !a.load(Ordering::Acquire))
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Cleared when its thread ends, normally or by panic.
pub(crate) struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
