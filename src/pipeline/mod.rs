//! The booking pipeline: the worker loop that takes a cluster from the feed and runs one pass
//! — select jobs, layers and frames, match them to hosts, book them in guarded batches, hand
//! them to the launchers — and the threads beside it (host refresher, launchers).

mod batch;
pub mod hosts;
pub mod launch;
pub mod matcher;
mod resolve;
pub mod sized;
pub mod stats;
pub mod waiting;
pub mod wide;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::{
    accounting::{Ledger, hungry::HungryView},
    cluster::{
        Cluster,
        feed::{Ending, PassOutcome, PassResult, room_generation},
    },
    config::Config,
    db,
    ids::JobId,
    index::HostIndex,
    lease::LeaseView,
    metrics,
    rqd::RqdClients,
    worker::{Wake, WakeRequest},
};

/// The pipeline's handles on the threads beside it: read-only views of what they publish and
/// the asking side of their inboxes. Each thread owns the other side and is its only writer.
pub struct Beside {
    /// The lease keeper's fence and host share.
    lease: LeaseView,
    /// The cluster feed's hungry shows, for the ledger's fair share.
    hungry: HungryView,
    /// The host refresher's "refresh now" inbox.
    host_refresh: WakeRequest,
}

impl Beside {
    /// Views nobody writes: one instance without a lease keeper, no feed, no refresher
    /// (tests and tools that drive passes and refreshes themselves).
    pub fn alone() -> Beside {
        Beside {
            lease: LeaseView::unfenced(),
            hungry: HungryView::none(),
            host_refresh: WakeRequest::default(),
        }
    }

    /// Reads the lease keeper's board through `lease`.
    pub fn with_lease(self, lease: LeaseView) -> Beside {
        Beside { lease, ..self }
    }

    /// Reads the cluster feed's hungry shows through `hungry`.
    pub(crate) fn with_hungry(self, hungry: HungryView) -> Beside {
        Beside { hungry, ..self }
    }

    /// Sends refresh requests to the refresher that owns `wake`.
    pub(crate) fn with_host_refresh(self, wake: &Wake) -> Beside {
        Beside {
            host_refresh: wake.requester(),
            ..self
        }
    }
}

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
    /// Set when shutdown begins: no new passes start.
    pub stop: Arc<AtomicBool>,
    /// When shutdown stops launching (set when it begins, before the end of its grace):
    /// past it, what is still queued is undone instead, in the time left.
    pub grace_deadline: Mutex<Option<Instant>>,
    /// Asks the host refresher to run now (after a host lost its guard); the refresher
    /// owns the inbox, this handle can only ask.
    pub(crate) host_refresh: WakeRequest,
    /// What the lease keeper publishes (the fence, the host share); read-only here.
    pub lease: LeaseView,
    /// Jobs a booking thread is placing right now. A job's layers belong to several clusters
    /// (an ALLOC and a MANUAL tag); two threads planning the same job would only collide on
    /// its frames' guards and serialize on its `job_stat`/`layer_stat` rows. Shows have one
    /// owning instance, so this in-process claim is enough; the database guards still decide.
    pub busy_jobs: dashmap::DashSet<JobId>,
    /// Per cluster key, the jobs its last layer-side job read found beyond what that pass
    /// took (`db::jobs::JobHint`): a hint the next passes test first.
    pub(crate) job_hints: dashmap::DashMap<String, db::jobs::JobHint>,
    /// Booking transactions of this instance running now, at most its share of
    /// `batches_in_flight` when several instances share the database (see
    /// `batch::Committer::commit`); a pass splits its batch only while none runs.
    pub(crate) commit_gate: batch::CommitGate,
    /// Hosts reserved for wide frames (a snapshot of `stagehand.host_reservation`).
    pub holds: crate::backfill::Holds,
    /// Why waiting frames are not booked, per layer, as the passes saw it.
    pub waiting: waiting::WaitingReasons,
    /// Layers whose memory the passes book from history, and by how much.
    pub sized: sized::SizedLayers,
    /// The license seats as the `licenses` thread last published them (a hint).
    pub licenses: Arc<crate::licenses::LicenseBoard>,
}

impl Shared {
    /// Runs `f` on a pooled connection: the pool's failure to hand one out and `f`'s own
    /// error come back as one `DbError`, which the launch and resolution paths count and
    /// retry alike.
    pub(crate) fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut db::Conn) -> Result<T, db::DbError>,
    ) -> Result<T, db::DbError> {
        let mut conn = self.pool.get().map_err(db::DbError::from)?;
        f(&mut conn)
    }

    /// Builds the shared state around an existing pool and configuration, reading what the
    /// threads beside the pipeline publish through `beside`.
    pub fn new(config: Arc<ArcSwap<Config>>, pool: db::Pool, beside: Beside) -> Shared {
        let Beside {
            lease,
            hungry,
            host_refresh,
        } = beside;
        Shared {
            config,
            pool,
            index: Arc::new(HostIndex::new()),
            ledger: Ledger::with_hungry(hungry),
            rqd: RqdClients::new(),
            stats: stats::DispatchStats::default(),
            stop: Arc::new(AtomicBool::new(false)),
            grace_deadline: Mutex::new(None),
            host_refresh,
            lease,
            busy_jobs: dashmap::DashSet::new(),
            job_hints: dashmap::DashMap::new(),
            commit_gate: Default::default(),
            holds: crate::backfill::Holds::default(),
            waiting: waiting::WaitingReasons::default(),
            sized: sized::SizedLayers::default(),
            licenses: Arc::default(),
        }
    }

    /// Claims a job for this pass; `None` when another booking thread has it.
    pub(crate) fn claim_job(&self, job: &JobId) -> Option<JobClaim<'_>> {
        self.busy_jobs.insert(job.clone()).then(|| JobClaim {
            shared: self,
            job: job.clone(),
        })
    }

    /// A subscription read full by its counter: the counters read high until a re-sync sees
    /// the cores completions gave back, so ask for one (once per capacity generation).
    pub(crate) fn ask_counters(&self) {
        self.ledger
            .request_counters(self.index.capacity().generation());
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
    job: JobId,
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
    // The connection this thread's passes run on, kept between them (see `db::Kept`).
    let mut kept = db::Kept::default();
    for cluster in work.iter() {
        if shared.stop.load(Ordering::Acquire) {
            let _ = outcomes.send(PassOutcome {
                key: cluster.key.clone(),
                result: PassResult::Stopped,
                capacity_gen: 0,
                ending: Ending::Plain,
            });
            break;
        }
        let capacity_gen = room_generation(&shared.index.capacity(), &shared.ledger.caps_view());
        // A panic in one pass must not take the thread (or the cluster) with it: it is
        // logged, counted, and the cluster sleeps as after an error.
        let (result, ending) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            matcher::pass_reporting(&shared, &cluster, &launches, &mut kept)
        }))
        .unwrap_or_else(|_| {
            // Whatever the pass left on its connection goes back to the pool with it.
            kept = db::Kept::default();
            metrics::WORKER_PANICS.inc();
            log::error!("booking pass of cluster {} panicked", cluster.key);
            (PassResult::Error, Ending::Plain)
        });
        let reason = match result {
            PassResult::Booked(_) => "booked",
            PassResult::NoJobs => "no_jobs",
            PassResult::Saturated => "saturated",
            PassResult::Error => "query_error",
            PassResult::Stopped => "stopped",
            PassResult::Busy => "busy",
        };
        metrics::PASS_REASON.with_label_values(&[reason]).inc();
        if outcomes
            .send(PassOutcome {
                key: cluster.key.clone(),
                result,
                capacity_gen,
                ending,
            })
            .is_err()
        {
            break;
        }
    }
}
