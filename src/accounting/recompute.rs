//! The recompute thread: on a timer, on its own database connection, it rebuilds Cuebot's
//! resource tables from `proc`, re-syncs the counters to `SUM(proc)` and, on a longer
//! interval, re-reads the caps. The first successful round seeds the ledger; until then every
//! charge is refused.

use std::{
    cell::Cell,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use super::{Caps, Ledger, Snapshot};
use crate::{
    config::Config,
    db,
    ids::{AllocId, ShowId},
    metrics,
};

/// The subscription gauge ([`metrics::SUBSCRIPTION_CORES`]), owned by the recompute thread:
/// sizes and bursts come with each caps read, booked cores with each re-sync, and the names
/// of the last caps read label both.
#[derive(Default)]
pub struct SubscriptionGauge {
    names: std::collections::HashMap<(ShowId, AllocId), (String, String)>,
}

impl SubscriptionGauge {
    /// Publishes the sizes and bursts of `caps`; subscriptions gone since the last read
    /// (deleted, or their show handed back to Cuebot) leave the gauge.
    pub fn caps(&mut self, caps: &Caps) {
        metrics::SUBSCRIPTION_CORES.reset();
        self.names = caps.names.clone();
        for (key, (show, alloc)) in &self.names {
            for (kind, map) in [("size", &caps.sizes), ("burst", &caps.bursts)] {
                let value = map.get(key).copied().unwrap_or(0);
                metrics::SUBSCRIPTION_CORES
                    .with_label_values(&[show, alloc, kind])
                    .set(value);
            }
        }
    }

    /// Publishes the booked cores of every known subscription from `snapshot` (0 where its
    /// show holds nothing on the allocation).
    pub fn booked(&self, snapshot: &Snapshot) {
        for (key, (show, alloc)) in &self.names {
            let booked = snapshot.subs.get(key).map_or(0, |b| b.cores);
            metrics::SUBSCRIPTION_CORES
                .with_label_values(&[show, alloc, "booked"])
                .set(booked);
        }
    }
}

/// One recompute round: tables (of `shows`, or every managed show), then counters, then
/// (when due or not yet seeded) caps.
pub fn round(
    client: &mut postgres::Client,
    ledger: &Ledger,
    read_caps: bool,
    shows: Option<&[ShowId]>,
) -> Result<(), db::DbError> {
    round_publishing(
        client,
        ledger,
        read_caps,
        shows,
        &mut SubscriptionGauge::default(),
    )
}

/// [`round`], publishing the subscriptions it reads to `gauge` (the `accounting` thread's).
fn round_publishing(
    client: &mut postgres::Client,
    ledger: &Ledger,
    read_caps: bool,
    shows: Option<&[ShowId]>,
    gauge: &mut SubscriptionGauge,
) -> Result<(), db::DbError> {
    let started = Instant::now();
    // The tables are for Cuebot and the UI; the counters are what caps lean on. A failed
    // table update (a lock timeout against Cuebot, say) must not also skip the re-sync:
    // its error is returned only after the counters are done.
    let tables = db::recompute::recompute_tables(client, shows);
    if let Ok(written) = &tables {
        for (table, n) in [
            ("layer_resource", written.layer_resource),
            ("job_resource", written.job_resource),
            ("folder_resource", written.folder_resource),
            ("point", written.point),
            ("subscription", written.subscription),
        ] {
            metrics::RECOMPUTE_ROWS
                .with_label_values(&[table])
                .inc_by(n);
        }
    }
    if read_caps || !ledger.is_seeded() {
        let caps = db::accounting::caps(client)?;
        ledger.set_caps(&caps);
        gauge.caps(&caps);
    }
    resync_counters(client, ledger, gauge)?;
    ledger.mark_seeded();
    metrics::RECOMPUTE_SECONDS.observe(started.elapsed().as_secs_f64());
    tables.map(|_| ())
}

/// Re-syncs the counters to `SUM(proc)`, tables and caps untouched: a round's last step, and
/// alone when a pass asked ([`Ledger::request_counters`]).
fn resync_counters(
    client: &mut postgres::Client,
    ledger: &Ledger,
    gauge: &SubscriptionGauge,
) -> Result<(), db::DbError> {
    // The epoch moves before the snapshot is read: commits from here on are carried forward
    // even if the snapshot already contains them (counted twice reads high: under-books only).
    let epoch = ledger.begin_resync();
    let snapshot = db::accounting::booked_snapshot(client)?;
    let drift = ledger.resync(epoch, &snapshot);
    gauge.booked(&snapshot);
    if ledger.is_seeded() {
        metrics::COUNTER_DRIFT
            .with_label_values(&["all"])
            .inc_by(drift.max(0) as u64);
    }
    Ok(())
}

/// The least wait between two re-syncs a pass asked for, stretched as the farm-wide reads
/// are ([`crate::worker::stretched`]): the read of every proc then takes at most a twentieth
/// of the thread's session. A completion reaches the counters within about this (plus the
/// host-changes read that woke the pass), not within `recompute_interval`.
const COUNTERS_GAP: Duration = Duration::from_millis(100);

/// Publishes the stranded-resources gauges ([`metrics::STRANDED_CORES`],
/// [`metrics::STRANDED_MEMORY`]) from the farm totals the status page shows
/// (`db::status::farm`): one aggregate over the eligible hosts per round.
fn publish_stranded(client: &mut postgres::Client, config: &Config) -> Result<(), db::DbError> {
    let farm = db::status::farm(client, &db::status::FarmFilter::of(config))?;
    metrics::STRANDED_CORES
        .with_label_values(&["memory"])
        .set(farm.stranded_cores);
    metrics::STRANDED_CORES
        .with_label_values(&["gpus"])
        .set(farm.stranded_cores_gpus);
    metrics::STRANDED_MEMORY.set(farm.stranded_mem_kb);
    Ok(())
}

/// The body of the `accounting` thread: runs [`round`] every `recompute_interval` (and at once
/// when asked) until `stop`, over the tables of the shows `held` names (`None`: every managed
/// show, when no lease keeper shares the shows out); between rounds, re-syncs the counters
/// alone when a pass asks, at most every 100 ms (`COUNTERS_GAP`, stretched).
pub fn run(
    config: Arc<ArcSwap<Config>>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    held: impl Fn() -> Option<Vec<ShowId>>,
) {
    let mut thread = Accounting {
        session: crate::worker::Session::default(),
        gauge: SubscriptionGauge::default(),
        next_caps: Instant::now(),
        next_round: Instant::now(),
    };
    // Requests, taken by the wake side and served by the step.
    let (round_wanted, counters_wanted) = (Cell::new(false), Cell::new(false));
    let next_counters = Cell::new(Instant::now());
    crate::worker::periodic(
        &stop,
        || {
            round_wanted.set(round_wanted.get() | ledger.take_resync_request());
            counters_wanted.set(counters_wanted.get() | ledger.take_counters_request());
            round_wanted.get() || (counters_wanted.get() && Instant::now() >= next_counters.get())
        },
        || {
            let cfg = config.load_full();
            let now = Instant::now();
            if round_wanted.take() || now >= thread.next_round || !ledger.is_seeded() {
                counters_wanted.set(false);
                thread.round(&cfg, &ledger, held().as_deref());
            } else if counters_wanted.take() {
                let took = thread.counters(&cfg, &ledger);
                next_counters.set(Instant::now() + crate::worker::stretched(COUNTERS_GAP, took));
            }
            thread.next_round.saturating_duration_since(Instant::now())
        },
    );
}

/// The `accounting` thread's own state.
struct Accounting {
    session: crate::worker::Session,
    gauge: SubscriptionGauge,
    next_caps: Instant,
    next_round: Instant,
}

impl Accounting {
    /// One whole round, then the stranded gauges; sets when the next is due.
    fn round(&mut self, cfg: &Config, ledger: &Ledger, held: Option<&[ShowId]>) {
        let now = Instant::now();
        let conn = match self.session.get(&cfg.database) {
            Ok(c) => c,
            Err(e) => {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::warn!("accounting: cannot connect to the database: {e}");
                self.next_round = now + cfg.accounting.recompute_interval;
                return;
            }
        };
        let read_caps = ledger.take_caps_request() || now >= self.next_caps;
        match round_publishing(conn, ledger, read_caps, held, &mut self.gauge) {
            Ok(()) if read_caps => self.next_caps = now + cfg.accounting.caps_interval,
            Ok(()) => {}
            Err(e) => {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::warn!("accounting recompute failed: {e}");
                self.session.after_error(&e);
                self.next_round = now + cfg.accounting.recompute_interval;
                return;
            }
        }
        if let Err(e) = publish_stranded(conn, cfg) {
            metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
            log::warn!("reading the stranded resources failed: {e}");
            self.session.after_error(&e);
        }
        // The round reads every proc of the farm: paced by what it took.
        let took = now.elapsed();
        self.next_round = Instant::now()
            + crate::worker::paced("recompute", cfg.accounting.recompute_interval, took);
    }

    /// The counters alone; returns what it took. A failure counts as a whole
    /// `recompute_interval`, so the next re-sync waits the longest stretch of `COUNTERS_GAP`
    /// (4×, 400 ms), and requests come at most once per capacity generation anyway.
    fn counters(&mut self, cfg: &Config, ledger: &Ledger) -> Duration {
        let started = Instant::now();
        let done = self
            .session
            .get(&cfg.database)
            .and_then(|conn| resync_counters(conn, ledger, &self.gauge));
        match done {
            Ok(()) => {
                metrics::COUNTER_RESYNCS.inc();
                started.elapsed()
            }
            Err(e) => {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::warn!("accounting: re-syncing the counters failed: {e}");
                self.session.after_error(&e);
                cfg.accounting.recompute_interval
            }
        }
    }
}
