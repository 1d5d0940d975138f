//! The status page at `/`: what an operator opens first. Server-rendered HTML (no JavaScript
//! framework; a few lines of plain script reload it every [`REFRESH_SECS`] and keep opened
//! `<details>` open across reloads) that fits a 1,280-pixel-wide window: tables have fixed
//! layouts and ellipsize long names (the full name is in the tooltip), and the many hostname
//! and manual-tag cluster chunks collapse to a count per show.
//!
//! Figures come from two places. The database (through the instance's pool, by
//! `crate::db::status`) gives what every instance shares: farm totals, subscriptions,
//! instances and their shows, reservations, the busiest and longest-waiting layers and the
//! latest launch failures. It is read at most once per [`CACHE_FOR`] per instance, so a storm
//! of refreshes cannot load the database, and when it fails the page still renders (never a
//! 500) with a "database unreachable" note and the in-memory figures. The instance itself
//! gives the booking rate and its sparkline, readiness, the waiting reasons its passes saw,
//! the host index totals and the cluster states.

mod render;
mod sections;

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, LazyLock, Weak},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use prometheus::core::Collector;

use crate::{
    db::status::{FarmFilter, StatusRows},
    metrics,
    pipeline::Shared,
    status::StatusHandle,
};

/// Seconds between two reloads of the page by the browser.
pub const REFRESH_SECS: u32 = 5;
/// How long one database read serves renders (longer than a second, shorter than a refresh).
pub const CACHE_FOR: Duration = Duration::from_secs(2);
/// Longest wait for a pooled connection: a page must not hang on a busy or absent database.
const CONNECTION_WAIT: Duration = Duration::from_millis(800);
/// The per-show rate is measured over at most this much history.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// A database read and when it was made; the error text when it failed.
#[derive(Clone)]
struct Cached {
    at: Instant,
    rows: Result<Arc<StatusRows>, String>,
}

/// One instance's cache.
type Entry = (Weak<Shared>, Cached);

/// Per instance (several run in one test process), keyed by its shared state: a `Weak` keeps
/// the allocation, so a new instance can never be mistaken for a dropped one.
static CACHE: LazyLock<Mutex<Vec<Entry>>> = LazyLock::new(Default::default);

/// When, and the dispatched counter by show then.
type Sample = (Instant, HashMap<String, u64>);

/// Samples of `scheduler_frames_dispatched_total` by show, oldest first, for frames/s per
/// show. The counter is process-wide, and so are the samples.
static SAMPLES: LazyLock<Mutex<VecDeque<Sample>>> = LazyLock::new(Default::default);

/// The page, given the instance's readiness (`http::readiness`, passed in so that this module
/// does not import the HTTP server that calls it).
pub fn render(status: &StatusHandle, ready: (bool, Vec<&'static str>)) -> String {
    let rows = database_rows(status);
    let rates = show_rates(status.shared.stats.uptime_secs() as f64);
    render::page(&render::Inputs {
        status,
        ready,
        rows: rows.as_deref().map_err(String::as_str),
        rates: &rates,
    })
}

/// The cached database read of this instance, read again once older than [`CACHE_FOR`].
fn database_rows(status: &StatusHandle) -> Result<Arc<StatusRows>, String> {
    let shared = &status.shared;
    {
        let mut cache = CACHE.lock();
        cache.retain(|(w, _)| w.strong_count() > 0);
        if let Some((_, c)) = cache
            .iter()
            .find(|(w, _)| std::ptr::eq(w.as_ptr(), Arc::as_ptr(shared)))
        {
            if c.at.elapsed() < CACHE_FOR {
                return c.rows.clone();
            }
        }
    }
    // Read without the lock: another instance's page need not wait for this database.
    let rows = read_database(shared).map(Arc::new);
    let mut cache = CACHE.lock();
    cache.retain(|(w, _)| !std::ptr::eq(w.as_ptr(), Arc::as_ptr(shared)));
    cache.push((
        Arc::downgrade(shared),
        Cached {
            at: Instant::now(),
            rows: rows.clone(),
        },
    ));
    rows
}

fn read_database(shared: &Shared) -> Result<StatusRows, String> {
    let config = shared.config.load();
    let filter = FarmFilter::of(&config);
    let mut conn = shared
        .pool
        .get_timeout(CONNECTION_WAIT)
        .map_err(|e| format!("no connection: {e}"))?;
    crate::db::status::read(conn.client(), &filter).map_err(|e| e.to_string())
}

/// Frames booked per second by show name over the samples of the last [`RATE_WINDOW`]; on the
/// page's first load (one sample) the mean since the instance started `uptime` seconds ago.
fn show_rates(uptime: f64) -> HashMap<String, f64> {
    let now = Instant::now();
    let mut samples = SAMPLES.lock();
    if samples
        .back()
        .is_none_or(|(t, _)| now.duration_since(*t) >= Duration::from_secs(1))
    {
        samples.push_back((now, dispatched_by_show()));
    }
    while samples.len() > 2 && now.duration_since(samples[1].0) >= RATE_WINDOW {
        samples.pop_front();
    }
    let (Some((t0, first)), Some((t1, last))) = (samples.front(), samples.back()) else {
        return HashMap::new();
    };
    let secs = t1.duration_since(*t0).as_secs_f64();
    if secs < 1.0 {
        return if uptime >= 1.0 {
            last.iter()
                .map(|(s, n)| (s.clone(), *n as f64 / uptime))
                .collect()
        } else {
            HashMap::new()
        };
    }
    last.iter()
        .map(|(show, n)| {
            let before = first.get(show).copied().unwrap_or(0);
            (show.clone(), n.saturating_sub(before) as f64 / secs)
        })
        .collect()
}

/// `scheduler_frames_dispatched_total` now, by its `show_name` label.
fn dispatched_by_show() -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for family in metrics::FRAMES_DISPATCHED.collect() {
        for m in family.get_metric() {
            let show = m
                .get_label()
                .iter()
                .find(|l| l.name() == "show_name")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            out.insert(show, m.get_counter().get_value() as u64);
        }
    }
    out
}
