//! The host refresher: keeps the host index in step with the database on an interval, and
//! at once after a booking lost a host guard (another writer took the host).
//!
//! The refresh protocol (a ticket taken before the read) keeps in-flight reservations and
//! never lets a host show more free capacity than the database minus live reservations; see
//! [`crate::index`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    db, health::Health, ids::ShowId, index::HostRecord, metrics, pipeline::Shared, worker::Wake,
};

/// One refresh: read the eligible hosts and apply them to the index. Returns the host count.
pub fn refresh(shared: &Shared) -> Result<usize, db::DbError> {
    let config = shared.config.load();
    let mut conn = shared.pool.get()?;
    let facility = if config.scheduler.facility.is_empty() {
        None
    } else {
        db::jobs::facility_id(&mut *conn, &config.scheduler.facility)?
    };
    let ticket = shared.index.begin_refresh();
    let rows = db::hosts::eligible_hosts(&mut *conn, facility.as_ref(), config.hosts.ping_timeout)?;
    drop(conn);
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        // The index keys hosts by their UUID; a key that is not one cannot be indexed.
        if uuid::Uuid::parse_str(&row.id).is_err() {
            metrics::BAD_INPUT.with_label_values(&["host_key"]).inc();
            log::warn!(
                "host {} has a key that is not a UUID ({}); not booking it",
                row.name,
                row.id
            );
            continue;
        }
        records.push(HostRecord {
            id: row.id,
            name: row.name,
            alloc: row.alloc,
            os: row.os,
            thread_mode: row.thread_mode,
            tags: row.tags,
            total: row.total,
            idle: row.idle,
        });
    }
    let count = records.len();
    // The index bumps its capacity generation itself when a host gained room.
    shared.index.apply_refresh(ticket, records);
    Ok(count)
}

/// Re-reads the host reservations (dropping lapsed ones and those whose frame is no longer
/// WAITING) and the frames held back by start-after times. Runs beside every host refresh.
pub fn refresh_reservations(shared: &Shared) -> Result<(), db::DbError> {
    let mut conn = shared.pool.get()?;
    let (holds, dropped) = db::reservations::load(&mut *conn)?;
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
    let held_back = db::jobs::start_after_waiting(&mut *conn, shows.as_deref())?;
    shared.waiting.set_start_after(held_back);
    Ok(())
}

/// The body of the `host-refresh` thread: every `refresh_interval`, and at once when a
/// booking found a host stale. The thread owns `wake`, the inbox of those requests; the
/// pipeline holds its asking side ([`Shared::host_refresh`]).
pub(crate) fn run(shared: Arc<Shared>, wake: Wake, health: Arc<Health>, stop: Arc<AtomicBool>) {
    crate::worker::periodic(
        &stop,
        || wake.take(),
        || match refresh(&shared).and_then(|n| refresh_reservations(&shared).map(|_| n)) {
            Ok(n) => {
                metrics::HOST_REFRESHES.with_label_values(&["ok"]).inc();
                metrics::INDEX_HOSTS.set(n as i64);
                health.hosts_loaded.store(true, Ordering::Release);
                health.db_ok.store(true, Ordering::Release);
                shared.config.load().hosts.refresh_interval
            }
            Err(e) => {
                metrics::HOST_REFRESHES.with_label_values(&["error"]).inc();
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                health.db_ok.store(false, Ordering::Release);
                log::warn!("host refresh failed: {e}");
                // Retry sooner than a full interval while the database is away.
                Duration::from_millis(500)
            }
        },
    );
}
