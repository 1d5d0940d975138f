//! The booking pipeline: the worker loop that takes a cluster from the feed and runs one pass
//! — select jobs, layers and frames, match them to hosts, book them in guarded batches, hand
//! them to the launchers — and the threads beside it (host refresher, launchers).

mod batch;
pub mod hosts;
pub mod launch;
pub mod matcher;
mod resolve;
pub mod stats;
pub mod waiting;
pub mod wide;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::{
    accounting::Ledger,
    cluster::{
        Cluster,
        feed::{PassOutcome, PassResult},
    },
    config::Config,
    db,
    index::HostIndex,
    lease::LeaseView,
    metrics,
    rqd::RqdClients,
};

/// What every pipeline thread shares.
pub struct Shared {
    /// Live configuration (hot keys change on reload).
    pub config: Arc<ArcSwap<Config>>,
    /// Database pool.
    pub pool: db::Pool,
    /// The host index.
    pub index: Arc<HostIndex>,
    /// Cap counters.
    pub ledger: Arc<Ledger>,
    /// RQD clients.
    pub rqd: RqdClients,
    /// Dispatch statistics.
    pub stats: stats::DispatchStats,
    /// Bumped whenever free host capacity grows; wakes saturated clusters.
    pub capacity_gen: Arc<AtomicU64>,
    /// Set when shutdown begins: no new passes start.
    pub stop: Arc<AtomicBool>,
    /// When shutdown must be finished (set when it begins).
    pub grace_deadline: Mutex<Option<Instant>>,
    /// Ask the host refresher to run now (after a host lost its guard).
    pub refresh_hosts: AtomicBool,
    /// What the lease keeper publishes (the fence, the host share); read-only here.
    pub lease: LeaseView,
    /// Jobs a booking thread is placing right now. A job's layers belong to several clusters
    /// (an ALLOC and a MANUAL tag); two threads planning the same job would only collide on
    /// its frames' guards and serialize on its `job_stat`/`layer_stat` rows. Shows have one
    /// owning instance, so this in-process claim is enough; the database guards still decide.
    pub busy_jobs: dashmap::DashSet<String>,
    /// Hosts reserved for wide frames (a snapshot of `stagehand.host_reservation`).
    pub holds: crate::backfill::Holds,
    /// Why waiting frames are not booked, per layer, as the passes saw it.
    pub waiting: waiting::WaitingReasons,
}

impl Shared {
    /// Builds the shared state around an existing pool and configuration; `lease` is the
    /// lease keeper's board ([`LeaseView::unfenced`] for a single instance).
    pub fn new(config: Arc<ArcSwap<Config>>, pool: db::Pool, lease: LeaseView) -> Shared {
        Shared {
            config,
            pool,
            index: Arc::new(HostIndex::new()),
            ledger: Ledger::new(),
            rqd: RqdClients::new(),
            stats: stats::DispatchStats::default(),
            capacity_gen: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            grace_deadline: Mutex::new(None),
            refresh_hosts: AtomicBool::new(false),
            lease,
            busy_jobs: dashmap::DashSet::new(),
            holds: crate::backfill::Holds::default(),
            waiting: waiting::WaitingReasons::default(),
        }
    }

    /// Records that free capacity grew (a release, a refresh that found more idle).
    pub(crate) fn capacity_freed(&self) {
        self.capacity_gen.fetch_add(1, Ordering::AcqRel);
    }

    /// Claims a job for this pass; `None` when another booking thread has it.
    pub(crate) fn claim_job(&self, job: &str) -> Option<JobClaim<'_>> {
        self.busy_jobs.insert(job.to_owned()).then(|| JobClaim {
            shared: self,
            job: job.to_owned(),
        })
    }

    /// True once shutdown began and its grace period is over.
    pub(crate) fn past_grace(&self) -> bool {
        self.grace_deadline
            .lock()
            .map(|d| Instant::now() >= d)
            .unwrap_or(false)
    }
}

/// A job claimed by one booking thread; released on drop.
pub(crate) struct JobClaim<'a> {
    shared: &'a Shared,
    job: String,
}

impl Drop for JobClaim<'_> {
    fn drop(&mut self) {
        self.shared.busy_jobs.remove(&self.job);
    }
}

/// The body of a `booking-N` thread: take clusters until the feed closes the channel or
/// shutdown begins, run a pass on each and report how it went.
pub fn worker(
    shared: Arc<Shared>,
    work: Receiver<Arc<Cluster>>,
    outcomes: Sender<PassOutcome>,
    launches: Sender<launch::LaunchTask>,
) {
    for cluster in work.iter() {
        if shared.stop.load(Ordering::Acquire) {
            let _ = outcomes.send(PassOutcome {
                key: cluster.key.clone(),
                result: PassResult::Stopped,
                capacity_gen: 0,
            });
            break;
        }
        let capacity_gen = shared.capacity_gen.load(Ordering::Acquire);
        // A panic in one pass must not take the thread (or the cluster) with it: it is
        // logged, counted, and the cluster sleeps as after an error.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            matcher::pass(&shared, &cluster, &launches)
        }))
        .unwrap_or_else(|_| {
            metrics::WORKER_PANICS.inc();
            log::error!("booking pass of cluster {} panicked", cluster.key);
            PassResult::Error
        });
        let reason = match result {
            PassResult::Booked(_) => "booked",
            PassResult::NoJobs => "no_jobs",
            PassResult::Saturated => "saturated",
            PassResult::Error => "query_error",
            PassResult::Stopped => "stopped",
        };
        metrics::PASS_REASON.with_label_values(&[reason]).inc();
        if outcomes
            .send(PassOutcome {
                key: cluster.key.clone(),
                result,
                capacity_gen,
            })
            .is_err()
        {
            break;
        }
    }
}
