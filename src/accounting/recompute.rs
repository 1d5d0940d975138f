//! The recompute thread: on a timer, on its own database connection, it rebuilds Cuebot's
//! resource tables from `proc`, re-syncs the counters to `SUM(proc)` and, on a longer
//! interval, re-reads the caps. The first successful round seeds the ledger; until then every
//! charge is refused.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Instant,
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
    ledger.mark_seeded();
    metrics::RECOMPUTE_SECONDS.observe(started.elapsed().as_secs_f64());
    tables.map(|_| ())
}

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
/// show, when no lease keeper shares the shows out).
pub fn run(
    config: Arc<ArcSwap<Config>>,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
    held: impl Fn() -> Option<Vec<ShowId>>,
) {
    let mut session = crate::worker::Session::default();
    let mut next_caps = Instant::now();
    let mut gauge = SubscriptionGauge::default();
    crate::worker::periodic(
        &stop,
        || ledger.take_resync_request(),
        || {
            let cfg = config.load_full();
            let now = Instant::now();
            let conn = match session.get(&cfg.database) {
                Ok(c) => c,
                Err(e) => {
                    metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                    log::warn!("accounting: cannot connect to the database: {e}");
                    return cfg.accounting.recompute_interval;
                }
            };
            let read_caps = ledger.take_caps_request() || now >= next_caps;
            let started = Instant::now();
            match round_publishing(conn, &ledger, read_caps, held().as_deref(), &mut gauge) {
                Ok(()) if read_caps => next_caps = now + cfg.accounting.caps_interval,
                Ok(()) => {}
                Err(e) => {
                    metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                    log::warn!("accounting recompute failed: {e}");
                    session.after_error(&e);
                    return cfg.accounting.recompute_interval;
                }
            }
            if let Err(e) = publish_stranded(conn, &cfg) {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::warn!("reading the stranded resources failed: {e}");
                session.after_error(&e);
            }
            // The round reads every proc of the farm: paced by what it took.
            let took = started.elapsed();
            crate::worker::paced("recompute", cfg.accounting.recompute_interval, took)
        },
    );
}
