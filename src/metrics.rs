//! Prometheus metrics in a private registry.
//!
//! Where OpenCue's scheduler had a metric with the same meaning, the name and labels are its
//! (`scheduler_*`), so existing dashboards keep working; metrics it never had are
//! `stagehand_*`. [`init`] registers everything at start-up so every series is exported from
//! the first scrape, not only after the first event.

use std::sync::LazyLock;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The registry `/metrics` serves.
pub static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

fn register<C: prometheus::core::Collector + Clone + 'static>(c: C) -> C {
    // Registration fails only for duplicate names, a programming error caught by the tests;
    // the metric still works unregistered, so never panic over it.
    if let Err(e) = REGISTRY.register(Box::new(c.clone())) {
        log::error!("metric registration failed: {e}");
    }
    c
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("static metric definition"))
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("static metric definition"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"))
}

fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(GaugeVec::new(Opts::new(name, help), labels).expect("static metric definition"))
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("static metric definition"),
    )
}

fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    register(
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
            .expect("static metric definition"),
    )
}

fn seconds_buckets() -> Vec<f64> {
    vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
}

macro_rules! metrics {
    ($($(#[$doc:meta])* $name:ident: $ty:ty = $init:expr;)*) => {
        $($(#[$doc])* pub static $name: LazyLock<$ty> = LazyLock::new(|| $init);)*
        /// Registers every metric so each is exported from the first scrape.
        pub fn init() {
            $(LazyLock::force(&$name);)*
            register_process_collector();
        }
    };
}

metrics! {
    // ---- OpenCue scheduler names ----
    /// Jobs returned by the pending-job query.
    JOBS_QUERIED: IntCounter = counter("scheduler_jobs_queried_total", "Jobs returned by the pending-job query");
    /// Jobs whose layers were matched, by show.
    JOBS_PROCESSED: IntCounterVec = counter_vec("scheduler_jobs_processed_total", "Jobs processed", &["show_name"]);
    /// Layers for which no host fitted.
    NO_CANDIDATE: IntCounter = counter("scheduler_no_candidate_iterations_total", "Layers for which no host fitted");
    /// Hosts that freed during a pass and were handed back to layers earlier in its order
    /// (stopped for room) instead of the frame whose search found them.
    ROOM_YIELDS: IntCounter = counter(
        "scheduler_room_yields_total",
        "Hosts freed during a pass handed to a layer earlier in its order"
    );
    /// Frames booked (committed), by show.
    FRAMES_DISPATCHED: IntCounterVec =
        counter_vec("scheduler_frames_dispatched_total", "Frames booked and committed", &["show_name"]);
    /// Time from a frame's last update (eligibility) to its booking.
    TIME_TO_BOOK: Histogram = histogram(
        "scheduler_time_to_book_seconds",
        "Seconds from frame.ts_updated to booking",
        vec![0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0],
    );
    /// Bookings refused by a cap, by cap table.
    LIMIT_EXCEEDED: IntCounterVec = counter_vec(
        "scheduler_accounting_limit_exceeded_total",
        "Bookings refused by a cap",
        &["table"],
    );
    /// Duration of the pending-job query.
    JOB_QUERY_SECONDS: Histogram =
        histogram("scheduler_job_query_duration_seconds", "Pending-job query duration", seconds_buckets());
    /// Duration of one accounting recompute.
    RECOMPUTE_SECONDS: Histogram =
        histogram("scheduler_recompute_cycle_duration_seconds", "Accounting recompute duration", seconds_buckets());
    /// Time between two turns of the same cluster.
    CLUSTER_ROUND_TRIP: HistogramVec = histogram_vec(
        "scheduler_cluster_round_trip_seconds",
        "Seconds between two turns of a cluster",
        &["cluster_type"],
        vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0],
    );
    /// Clusters known, by type.
    CLUSTERS_TOTAL: IntGaugeVec = gauge_vec("scheduler_clusters_total", "Clusters known", &["cluster_type"]);
    /// Clusters with waiting work (awake).
    CLUSTERS_ACTIVE: IntGauge = gauge("scheduler_clusters_active", "Clusters with waiting work");
    /// Clusters currently sleeping.
    CLUSTERS_SLEEPING: IntGauge = gauge("scheduler_clusters_sleeping", "Clusters sleeping");
    /// Duration of the active-work scan.
    ACTIVE_SCAN_SECONDS: Histogram =
        histogram("scheduler_active_scan_duration_seconds", "Active-work scan duration", seconds_buckets());
    /// Frames booked per cluster pass.
    FRAMES_PER_PASS: HistogramVec = histogram_vec(
        "scheduler_frames_dispatched_per_pass",
        "Frames booked per cluster pass",
        &["cluster_type"],
        vec![0.0, 1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
    );
    /// Why cluster passes ended.
    PASS_REASON: IntCounterVec =
        counter_vec("scheduler_pass_terminated_reason_total", "Why cluster passes ended", &["reason"]);
    /// Outcome of host searches.
    CHECKOUT_OUTCOME: IntCounterVec =
        counter_vec("scheduler_checkout_outcome_total", "Outcome of host searches", &["outcome"]);

    // ---- stagehand ----
    /// Parts a pass's batch was split into to commit side by side (`batches_in_flight`).
    BATCH_PARTS: Histogram = histogram(
        "stagehand_booking_batch_parts",
        "Parts a batch was split into, committed side by side on spare connections",
        vec![2.0, 3.0, 4.0, 6.0, 8.0, 16.0],
    );
    /// Frames per booking transaction.
    BATCH_SIZE: Histogram = histogram(
        "stagehand_booking_batch_size",
        "Frames per booking transaction",
        vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0],
    );
    /// Booking transaction duration.
    BATCH_SECONDS: Histogram =
        histogram("stagehand_booking_transaction_seconds", "Booking transaction duration", seconds_buckets());
    /// Booking transactions by result.
    BATCHES: IntCounterVec = counter_vec("stagehand_booking_transactions_total", "Booking transactions", &["result"]);
    /// Frames that lost a guard inside the booking transaction, by guard.
    GUARD_LOSSES: IntCounterVec =
        counter_vec("stagehand_guard_losses_total", "Frames dropped from a batch by a guard", &["kind"]);
    /// RQD launches by result (ok, or the gRPC status code).
    RQD_LAUNCHES: IntCounterVec = counter_vec("stagehand_rqd_launches_total", "RQD LaunchFrame calls", &["result"]);
    /// From a booking's commit to RQD accepting its launch (queueing, claim and the call).
    BOOKING_TO_LAUNCH_SECONDS: Histogram = histogram(
        "stagehand_booking_to_launch_seconds",
        "From a booking's commit to RQD accepting the launch",
        vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0],
    );
    /// RQD launch duration.
    RQD_LAUNCH_SECONDS: Histogram =
        histogram("stagehand_rqd_launch_seconds", "RQD LaunchFrame duration", seconds_buckets());
    /// Compensations of failed launches, by result.
    COMPENSATIONS: IntCounterVec =
        counter_vec("stagehand_compensations_total", "Bookings undone after a failed launch", &["result"]);
    /// Failed launches whose kill RQD has not confirmed yet (their procs stay booked).
    LAUNCHES_UNCONFIRMED: IntGauge =
        gauge("stagehand_launches_unconfirmed", "Failed launches waiting for RQD to confirm their kill");
    /// Kills of failed launches that RQD did not answer (tried again with back-off).
    RQD_KILLS_UNCONFIRMED: IntCounter =
        counter("stagehand_rqd_kills_unconfirmed_total", "Kills of failed launches RQD did not confirm");
    /// Booking transactions whose COMMIT lost its answer, by how the outcome was resolved.
    COMMITS_UNKNOWN: IntCounterVec = counter_vec(
        "stagehand_commit_outcome_unknown_total",
        "Booking commits whose answer was lost, by resolved outcome",
        &["outcome"],
    );
    /// Launches RQD accepted for frames that had moved on since their booking committed
    /// (Cuebot stopped them, or they ended): killed on RQD before their pending rows go.
    LAUNCHES_MOVED: IntCounter = counter(
        "stagehand_launches_of_moved_frames_total",
        "Launches RQD accepted for frames stopped since their booking (killed on RQD)",
    );
    /// Bookings of instances that died before launching them, resolved by the show's new
    /// holder: `undone` (RQD confirmed the kill), `gone` (Cuebot had released the proc),
    /// `unconfirmed` (RQD did not answer; tried again later).
    ORPHANED_LAUNCHES: IntCounterVec = counter_vec(
        "stagehand_orphaned_launches_total",
        "Bookings of instances taken for dead: resolved by the show's holder (undone, gone, unconfirmed) or found taken by their own launcher (swept_before_launch)",
        &["result"],
    );
    /// Hosts in the index.
    INDEX_HOSTS: IntGauge = gauge("stagehand_host_index_hosts", "Hosts in the host index");
    /// Live (uncommitted) reservations in the index.
    INDEX_RESERVATIONS: IntGauge = gauge("stagehand_host_index_reservations", "Live reservations in the host index");
    /// Free cores in the index, in centicores.
    INDEX_FREE_CORES: IntGauge = gauge("stagehand_host_index_free_centicores", "Free centicores in the host index");
    /// Hosts reserved for wide frames (`stagehand.host_reservation`, every instance's).
    WIDE_RESERVATIONS: IntGauge =
        gauge("stagehand_wide_frame_reservations", "Hosts reserved for wide frames");
    /// Reservation events: taken, fulfilled (the frame booked), dropped (lapsed or frame gone).
    WIDE_RESERVATION_EVENTS: IntCounterVec = counter_vec(
        "stagehand_wide_frame_reservation_events_total",
        "Host reservations taken, fulfilled and dropped",
        &["event"],
    );
    /// Seats of each live license a booking may spend (available − headroom − the farm's
    /// starts since the sample); -1 while the sample is stale.
    LICENSE_FREE: IntGaugeVec = gauge_vec(
        "stagehand_license_free_seats",
        "Seats of each license stagehand may spend now (-1: no fresh sample)",
        &["license"],
    );
    /// License provider polls by outcome (`ok`, `error`).
    LICENSE_POLLS: IntCounterVec = counter_vec(
        "stagehand_license_polls_total",
        "License provider polls by outcome",
        &["outcome"],
    );
    /// Waiting frames by why they are not booked, as last seen by a booking pass.
    WAITING_FRAMES: IntGaugeVec = gauge_vec(
        "stagehand_waiting_frames",
        "Waiting frames of managed shows by why they are not booked",
        &["reason"],
    );
    /// Layers whose memory the passes book from history (`[memory] from_history`), in KB:
    /// `kind` is `asked` (`layer.int_mem_min`) or `booked` (what its frames book instead).
    MEMORY_FROM_HISTORY: IntGaugeVec = gauge_vec(
        "stagehand_memory_from_history_kb",
        "Layers whose memory is booked from history: asked and booked, in KB",
        &["job", "layer", "kind"],
    );
    /// How many layers the passes book from history now.
    MEMORY_HISTORY_LAYERS: IntGauge =
        gauge("stagehand_memory_history_layers", "Layers whose memory is booked from history");
    /// Each managed show's subscriptions as the recompute last read them, in centicores:
    /// `kind` is `booked` (what its procs hold on the allocation), `size` or `burst`. Every
    /// instance exports every managed show (the figures come from the database), so a
    /// dashboard takes `max by (show, alloc, kind)`.
    SUBSCRIPTION_CORES: IntGaugeVec = gauge_vec(
        "stagehand_subscription_centicores",
        "Managed shows' subscriptions: booked, size and burst, in centicores",
        &["show", "alloc", "kind"],
    );
    /// Frames booked, by how warm their host was for them (`layer`: it runs or just ran
    /// their layer; `job`: another layer of their job; `cold`): the locality's hit rate.
    LOCALITY_BOOKINGS: IntCounterVec = counter_vec(
        "stagehand_locality_bookings_total",
        "Frames booked, by whether their host ran their layer (layer), their job (job) or neither (cold) lately",
        &["warm"],
    );
    /// Idle cores no frame can use where they are, in centicores, from the eligible hosts in
    /// the database: `binding="memory"` on hosts whose idle memory is below
    /// `memory_stranded_threshold_kb`, `binding="gpus"` on GPU hosts with no idle GPU (the
    /// rest). Every instance exports the farm's figure: a dashboard takes `max`.
    STRANDED_CORES: IntGaugeVec = gauge_vec(
        "stagehand_stranded_centicores",
        "Idle centicores on hosts whose memory (binding=memory) or GPUs (binding=gpus) are used up",
        &["binding"],
    );
    /// The reverse: idle memory (KB) on eligible hosts with less than one idle core.
    STRANDED_MEMORY: IntGauge = gauge(
        "stagehand_stranded_memory_kb",
        "Idle memory (KB) on hosts with less than one idle core",
    );
    /// Host refreshes by result.
    HOST_REFRESHES: IntCounterVec = counter_vec("stagehand_host_refreshes_total", "Host index refreshes", &["result"]);
    /// The wait after each periodic read of the whole farm, as its cost paced it
    /// (`worker::paced`): its configured interval on a small farm, up to four times that on
    /// a big one.
    PERIODIC_READ_WAIT: GaugeVec = float_gauge_vec(
        "stagehand_periodic_read_wait_seconds",
        "Wait after a periodic farm-wide read, paced by its cost",
        &["read"],
    );
    /// Clusters waiting in the work queue.
    QUEUE_DEPTH: IntGauge = gauge("stagehand_queue_depth", "Clusters waiting in the work queue");
    /// Cluster sleeps, by reason.
    CLUSTER_SLEEPS: IntCounterVec = counter_vec("stagehand_cluster_sleeps_total", "Cluster sleeps", &["reason"]);
    /// Passes handed out beside a running pass of the same cluster (its last pass ended on
    /// work, not on room, and a booking thread was free).
    CLUSTER_SIDE_PASSES: IntCounter = counter("stagehand_cluster_side_passes_total", "Passes run beside a running pass of the same cluster");
    /// Pool connections, by state.
    DB_POOL: IntGaugeVec = gauge_vec("stagehand_db_pool_connections", "Database pool connections", &["state"]);
    /// Database errors, by kind.
    DB_ERRORS: IntCounterVec = counter_vec("stagehand_db_errors_total", "Database errors", &["kind"]);
    /// Failed connection attempts.
    DB_CONNECT_ERRORS: IntCounter = counter("stagehand_db_connect_errors_total", "Failed database connection attempts");
    /// Configuration reloads by result.
    CONFIG_RELOADS: IntCounterVec = counter_vec("stagehand_config_reloads_total", "Configuration reloads", &["result"]);
    /// Frames booked since start.
    FRAMES_BOOKED: IntCounter = counter("stagehand_frames_booked_total", "Frames booked since start");
    /// Frame ranges or specs that could not be parsed.
    BAD_INPUT: IntCounterVec = counter_vec("stagehand_bad_input_total", "Rows skipped for bad data", &["kind"]);
    /// Rows written by the accounting recompute, by table.
    RECOMPUTE_ROWS: IntCounterVec =
        counter_vec("stagehand_recompute_rows_written_total", "Rows written by the recompute", &["table"]);
    /// Counter drift found by the recompute (centicores, absolute).
    COUNTER_DRIFT: IntCounterVec =
        counter_vec("stagehand_counter_drift_total", "Counter drift corrected by the recompute", &["vertex"]);
    /// Re-syncs of the counters alone, between rounds, asked by a pass that found a
    /// subscription full by its counter.
    COUNTER_RESYNCS: IntCounter =
        counter("stagehand_counter_resyncs_total", "Re-syncs of the counters alone, asked by a pass that found a subscription full");
    /// Shows whose lease this instance holds.
    LEASES_HELD: IntGauge = gauge("stagehand_leases_held", "Show leases held by this instance");
    /// Lease events (claimed, renewed, shed, lost).
    LEASE_EVENTS: IntCounterVec = counter_vec("stagehand_lease_events_total", "Show lease events", &["event"]);
    /// Booking batches rejected because the show's lease moved.
    FENCE_REJECTIONS: IntCounter =
        counter("stagehand_fencing_rejections_total", "Batches rejected by the lease fence");
    /// Worker panics caught.
    WORKER_PANICS: IntCounter = counter("stagehand_worker_panics_total", "Worker panics caught");
}

fn register_process_collector() {
    #[cfg(target_os = "linux")]
    {
        use std::sync::Once;
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let _ = REGISTRY.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ));
        });
    }
}

/// The registry in Prometheus text format.
pub fn render() -> String {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&REGISTRY.gather(), &mut buffer) {
        log::warn!("encoding metrics failed: {e}");
    }
    String::from_utf8(buffer).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_metric_registers_once() {
        super::init();
        super::init();
        let text = super::render();
        assert!(text.contains("scheduler_jobs_queried_total"));
        assert!(text.contains("stagehand_frames_booked_total"));
    }
}
