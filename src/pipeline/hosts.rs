//! The host refresher: keeps the host index in step with the database on an interval, and
//! at once after a booking lost a host guard (another writer took the host).
//!
//! The refresh protocol (a ticket taken before the read) keeps in-flight reservations and
//! never lets a host show more free capacity than the database minus live reservations; see
//! [`crate::index`].

use std::{
    cell::Cell,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    db::{
        self,
        hosts::{ChangeMark, Changes, HostRow},
    },
    health::Health,
    ids::{FacilityId, ShowId},
    index::HostRecord,
    metrics,
    pipeline::Shared,
    worker::Wake,
};

/// One refresh: read the eligible hosts and apply them to the index. Returns the host count
/// and the mark a read of changes continues from.
pub fn refresh(shared: &Shared) -> Result<usize, db::DbError> {
    refresh_full(shared).map(|(n, _)| n)
}

/// A full read of the eligible hosts applied to the index; returns the host count and the
/// mark taken before the read, where the next read of changes starts.
fn refresh_full(shared: &Shared) -> Result<(usize, ChangeMark), db::DbError> {
    let config = shared.config.load();
    let mut conn = shared.pool.get()?;
    let facility = facility(&mut conn, &config.scheduler.facility)?;
    let ticket = shared.index.begin_refresh();
    let mark = db::hosts::change_mark(conn.client())?;
    let rows =
        db::hosts::eligible_hosts(conn.client(), facility.as_ref(), config.hosts.ping_timeout)?;
    drop(conn);
    let records: Vec<HostRecord> = rows.into_iter().filter_map(record).collect();
    let count = records.len();
    // The index bumps its capacity generation itself when a host gained room.
    shared.index.apply_refresh(ticket, records);
    Ok((count, mark))
}

/// A read of the hosts changed since `mark` applied to the index (room a completion gave
/// back, above all): the next mark, or `None` when only a full read is sound now.
fn refresh_changes(
    shared: &Shared,
    kept: &mut db::Kept,
    mark: ChangeMark,
) -> Result<Option<ChangeMark>, db::DbError> {
    let config = shared.config.load();
    let ticket = shared.index.begin_refresh();
    let changes = kept.run(&shared.pool, |conn| {
        let facility = facility(conn, &config.scheduler.facility)?;
        db::hosts::changed_hosts(conn, facility.as_ref(), config.hosts.ping_timeout, mark)
    })?;
    let Changes::Hosts(rows, next) = changes else {
        return Ok(None);
    };
    let changes: Vec<(HostRecord, bool)> = rows
        .into_iter()
        .filter_map(|(row, eligible)| Some((record(row)?, eligible)))
        .collect();
    shared.index.apply_changes(ticket, changes);
    Ok(Some(next))
}

/// The facility's key (`None`: every facility).
fn facility(conn: &mut postgres::Client, name: &str) -> Result<Option<FacilityId>, db::DbError> {
    if name.is_empty() {
        Ok(None)
    } else {
        db::jobs::facility_id(conn, name)
    }
}

/// The index's record of a host row; `None` (logged and counted) when its key is not a UUID,
/// since the index keys hosts by their UUID.
fn record(row: HostRow) -> Option<HostRecord> {
    if uuid::Uuid::parse_str(&row.id).is_err() {
        metrics::BAD_INPUT.with_label_values(&["host_key"]).inc();
        log::warn!(
            "host {} has a key that is not a UUID ({}); not booking it",
            row.name,
            row.id
        );
        return None;
    }
    Some(HostRecord {
        id: row.id,
        name: row.name,
        alloc: row.alloc,
        os: row.os,
        thread_mode: row.thread_mode,
        tags: row.tags,
        total: row.total,
        idle: row.idle,
    })
}

/// Re-reads the host reservations (dropping lapsed ones and those whose frame is no longer
/// WAITING) and the frames held back by start-after times. Runs beside every host refresh.
pub fn refresh_reservations(shared: &Shared) -> Result<(), db::DbError> {
    let mut conn = shared.pool.get()?;
    let (holds, dropped) = db::reservations::load(conn.client())?;
    if dropped > 0 {
        metrics::WIDE_RESERVATION_EVENTS
            .with_label_values(&["dropped"])
            .inc_by(dropped);
    }
    metrics::WIDE_RESERVATIONS.set(holds.len() as i64);
    shared.holds.replace(holds);
    // With several instances each counts only the shows it holds, so the gauges add up.
    let fence = shared.lease.fence();
    let shows: Option<Vec<ShowId>> = fence
        .as_ref()
        .as_ref()
        .map(|f| f.epochs.keys().cloned().collect());
    let held_back = db::jobs::start_after_waiting(conn.client(), shows.as_deref())?;
    shared.waiting.set_start_after(held_back);
    Ok(())
}

/// The body of the `host-refresh` thread: a full read every `refresh_interval` and at once
/// when a booking found a host stale, and between full reads, every `changes_interval`, a
/// read of the hosts that changed. The thread owns `wake`, the inbox of those requests; the
/// pipeline holds its asking side ([`Shared::host_refresh`]).
pub(crate) fn run(shared: Arc<Shared>, wake: Wake, health: Arc<Health>, stop: Arc<AtomicBool>) {
    let asked = Cell::new(false);
    let mut refresher = Refresher {
        mark: None,
        next_full: Instant::now(),
        kept: db::Kept::default(),
    };
    crate::worker::periodic(
        &stop,
        || {
            let woken = wake.take();
            asked.set(asked.get() || woken);
            woken
        },
        || refresher.step(&shared, &health, asked.replace(false)),
    );
}

/// The refresher's state between its steps.
struct Refresher {
    /// Where the next read of changes starts; `None` until a full read succeeded (and after
    /// an error or a wrap of transaction ids), so the next step reads in full.
    mark: Option<ChangeMark>,
    /// When the next full read is due.
    next_full: Instant,
    /// The connection the reads of changes run on (see [`db::Kept`]).
    kept: db::Kept,
}

impl Refresher {
    /// One step: a full read when one is due (its interval passed, a booking asked for one,
    /// reads of changes are off, or there is no mark), else a read of changes. Returns how
    /// long to wait before the next step.
    fn step(&mut self, shared: &Shared, health: &Health, asked: bool) -> Duration {
        let hosts = shared.config.load().hosts.clone();
        let changes_off = hosts.changes_interval.is_zero();
        let mark = self
            .mark
            .filter(|_| !asked && !changes_off && Instant::now() < self.next_full);
        let started = Instant::now();
        let outcome = match mark {
            Some(mark) => refresh_changes(shared, &mut self.kept, mark).map(|next| (None, next)),
            None => refresh_full(shared)
                .and_then(|(n, mark)| refresh_reservations(shared).map(|_| (Some(n), Some(mark)))),
        };
        match outcome {
            Ok((full, next)) => {
                let result = match full {
                    Some(n) => {
                        metrics::INDEX_HOSTS.set(n as i64);
                        health.hosts_loaded.store(true, Ordering::Release);
                        self.next_full = Instant::now() + hosts.refresh_interval;
                        "ok"
                    }
                    None => "changes",
                };
                metrics::HOST_REFRESHES.with_label_values(&[result]).inc();
                health.db_ok.store(true, Ordering::Release);
                self.mark = next;
                if changes_off {
                    hosts.refresh_interval
                } else {
                    // No mark (the ids wrapped): the next step reads in full. Both reads
                    // scan the farm's hosts: paced by what this one took.
                    let until_full = self.next_full.saturating_duration_since(Instant::now());
                    let took = started.elapsed();
                    crate::worker::paced("host_changes", hosts.changes_interval, took)
                        .min(until_full)
                }
            }
            Err(e) => {
                metrics::HOST_REFRESHES.with_label_values(&["error"]).inc();
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                health.db_ok.store(false, Ordering::Release);
                log::warn!("host refresh failed: {e}");
                self.mark = None;
                // Retry sooner than a full interval while the database is away.
                Duration::from_millis(500)
            }
        }
    }
}
