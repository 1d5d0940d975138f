//! Start-up, signals, reload and shutdown: the threads of a running stagehand and their order.
//!
//! Threads (all named, all joined): `cluster-feed`, `booking-N`, `rqd-launch-N`,
//! `host-refresh`, `accounting`, `leases`, `http`, `signals`. Shutdown stops intake first
//! (the feed), lets the booking threads finish their pass (each statement and RPC has a
//! deadline, so they do), drains the launch queue (every committed frame is launched or
//! compensated), then stops the timers and the HTTP server — all within
//! `[service] shutdown_grace`; a second SIGTERM/SIGINT exits at once.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, select, tick};
use log::LevelFilter;

use crate::{
    accounting::{self, hungry::HungryBoard},
    cluster::feed::{ClusterStatus, Feed, FeedContext},
    config::{Config, ConfigError},
    db,
    health::Health,
    http, lease, metrics,
    pipeline::{self, Beside, Shared},
    status::StatusHandle,
    worker::Wake,
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A thread could not be spawned, or the HTTP address could not be bound.
    #[error("{what}: {source}")]
    Io {
        /// What was being started.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The database configuration is unusable.
    #[error(transparent)]
    Db(#[from] db::DbError),
}

/// Installs env_logger: `RUST_LOG` wins; otherwise `level`. The logger is built at the most
/// verbose level so a reload or SIGUSR1 can raise the level later with `log::set_max_level`.
pub fn init_logging(level: LevelFilter) {
    let from_env = std::env::var("RUST_LOG")
        .map(|v| !v.trim().is_empty())
        .unwrap_or(false);
    let mut builder = env_logger::Builder::new();
    if from_env {
        builder.parse_default_env();
    } else {
        builder.filter_level(LevelFilter::Trace);
    }
    builder.format_timestamp_millis();
    if builder.try_init().is_ok() && !from_env {
        log::set_max_level(level);
    }
}

/// A running stagehand.
pub struct Service {
    shared: Arc<Shared>,
    health: Arc<Health>,
    cluster_status: Arc<ArcSwap<Vec<ClusterStatus>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    workers: Vec<JoinHandle<()>>,
    launchers: Vec<JoinHandle<()>>,
    background: Vec<JoinHandle<()>>,
    http: Option<http::HttpServer>,
    lease: Option<Arc<lease::Leases>>,
    /// The cluster feed's board of hungry shows (the feed writes it, the ledger reads it).
    hungry: Arc<HungryBoard>,
    /// The host refresher's inbox, until its thread starts and takes it.
    host_wake: Option<Wake>,
    feed_stop: Arc<AtomicBool>,
    timers_stop: Arc<AtomicBool>,
}

fn spawn(
    name: &str,
    health: &Health,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ServiceError> {
    let alive = health.register(name);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _alive = alive;
            f();
        })
        .map_err(|source| ServiceError::Io {
            what: format!("spawning thread {name}"),
            source,
        })
}

impl Service {
    /// Starts every thread. Does not wait for the database: until it answers, the service
    /// runs, reports not ready, and books nothing. When a step fails (a thread cannot be
    /// spawned, the HTTP address is taken), everything already started is stopped and joined
    /// (within `[service] shutdown_grace`) before the error is returned: a failed start leaves
    /// no thread behind.
    pub fn start(config: Config) -> Result<Service, ServiceError> {
        metrics::init();
        let grace = config.service.shutdown_grace;
        let mut service = Service::idle(config)?;
        match service.start_threads() {
            Ok(()) => Ok(service),
            Err(e) => {
                service.shutdown(grace);
                Err(e)
            }
        }
    }

    /// The service's state with no thread running yet.
    fn idle(config: Config) -> Result<Service, ServiceError> {
        let config = Arc::new(ArcSwap::from_pointee(config));
        let pool = db::pool(&config.load().database)?;
        let board = lease::LeaseBoard::new();
        let hungry = HungryBoard::new();
        let host_wake = Wake::default();
        let beside = Beside::alone()
            .with_lease(board.view())
            .with_hungry(hungry.view())
            .with_host_refresh(&host_wake);
        let shared = Arc::new(Shared::new(Arc::clone(&config), pool, beside));
        let leases = lease::Leases::new(config, Arc::clone(&shared.ledger), board);
        Ok(Service {
            lease: Some(leases),
            hungry,
            host_wake: Some(host_wake),
            shared,
            health: Arc::new(Health::default()),
            cluster_status: Arc::new(ArcSwap::from_pointee(Vec::new())),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(1)),
            workers: Vec::new(),
            launchers: Vec::new(),
            background: Vec::new(),
            http: None,
            feed_stop: Arc::new(AtomicBool::new(false)),
            timers_stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Starts the threads in order, keeping each handle in `self` as soon as it exists, so
    /// that [`Service::shutdown`] can stop whatever a failure part-way left running.
    fn start_threads(&mut self) -> Result<(), ServiceError> {
        self.start_timers()?;
        self.start_pipeline()?;
        let cfg = self.shared.config.load_full();
        let http = http::HttpServer::start(&cfg.http.listen, self.status()).map_err(|source| {
            ServiceError::Io {
                what: format!("listening on {}", cfg.http.listen),
                source,
            }
        })?;
        log::info!(
            "stagehand started: {} booking threads, {} launchers, http on {}{}",
            cfg.scheduler.worker_threads,
            cfg.rqd.launch_threads,
            http.address(),
            if cfg.rqd.dry_run {
                ", dry run (no RQD calls)"
            } else {
                ""
            }
        );
        self.http = Some(http);
        Ok(())
    }

    /// The periodic threads: leases, accounting, licenses, host refresh.
    fn start_timers(&mut self) -> Result<(), ServiceError> {
        let shared = &self.shared;
        // Leases first: with multi-instance coordination on, nothing books before a lease.
        if let Some(leases) = self.lease.clone() {
            let stop = Arc::clone(&self.timers_stop);
            let thread = spawn("leases", &self.health, move || leases.run(stop))?;
            self.background.push(thread);
        }
        let (config, ledger, stop, view) = (
            Arc::clone(&shared.config),
            Arc::clone(&shared.ledger),
            Arc::clone(&self.timers_stop),
            shared.lease.clone(),
        );
        // Only the shows this instance holds (none before its first lease round).
        let held = move || {
            let fence = view.fence();
            Some(
                fence
                    .as_ref()
                    .as_ref()
                    .map_or_else(Vec::new, |f| f.epochs.keys().cloned().collect()),
            )
        };
        self.background
            .push(spawn("accounting", &self.health, move || {
                accounting::recompute::run(config, ledger, stop, held)
            })?);
        let (shared, health, stop) = (
            Arc::clone(shared),
            Arc::clone(&self.health),
            Arc::clone(&self.timers_stop),
        );
        // Idle (publishing nothing) while no provider is configured; a reload may set one.
        let (config, board, licenses_stop) = (
            Arc::clone(&shared.config),
            Arc::clone(&shared.licenses),
            Arc::clone(&self.timers_stop),
        );
        self.background
            .push(spawn("licenses", &self.health, move || {
                crate::licenses::poller::run(config, board, licenses_stop)
            })?);
        let wake = self.host_wake.take().unwrap_or_default();
        self.background
            .push(spawn("host-refresh", &self.health, move || {
                pipeline::hosts::run(shared, wake, health, stop)
            })?);
        Ok(())
    }

    /// The booking pipeline: launchers, the cluster feed, the booking threads. The channel
    /// ends held here are dropped on return, so on failure the threads see them close.
    fn start_pipeline(&mut self) -> Result<(), ServiceError> {
        let (shared, cfg) = (&self.shared, self.shared.config.load_full());
        let (launch_tx, launchers) = pipeline::launch::start_watched(
            Arc::clone(shared),
            cfg.rqd.launch_threads,
            &self.health,
        )
        .map_err(|source| ServiceError::Io {
            what: "spawning launcher threads".into(),
            source,
        })?;
        self.launchers = launchers;
        let feed_ctx = FeedContext {
            config: Arc::clone(&shared.config),
            pool: shared.pool.clone(),
            capacity: shared.index.capacity(),
            caps: shared.ledger.caps_view(),
            stop: Arc::clone(&self.feed_stop),
            status: Arc::clone(&self.cluster_status),
            loaded: Arc::clone(&self.health.clusters_loaded),
            leases: self.lease.clone(),
            hungry: Some(Arc::clone(&self.hungry)),
        };
        let (feed, work_rx, outcome_tx) = Feed::new(feed_ctx, cfg.scheduler.worker_threads);
        self.background
            .push(spawn("cluster-feed", &self.health, move || feed.run())?);
        for i in 0..cfg.scheduler.worker_threads {
            let (shared, work, outcomes, launches) = (
                Arc::clone(shared),
                work_rx.clone(),
                outcome_tx.clone(),
                launch_tx.clone(),
            );
            self.workers
                .push(spawn(&format!("booking-{i}"), &self.health, move || {
                    pipeline::worker(shared, work, outcomes, launches)
                })?);
        }
        Ok(())
    }

    /// The address the HTTP server listens on.
    pub fn http_address(&self) -> String {
        self.http.as_ref().map(|h| h.address()).unwrap_or_default()
    }

    /// What the status endpoints read.
    pub fn status(&self) -> StatusHandle {
        StatusHandle {
            shared: Arc::clone(&self.shared),
            health: Arc::clone(&self.health),
            clusters: Arc::clone(&self.cluster_status),
            generation: Arc::clone(&self.generation),
            leases: self.lease.clone(),
        }
    }

    /// The pipeline's shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Applies a new configuration: hot keys at once, cold keys kept (and named). What would
    /// run — `new` with the running cold keys — must pass [`Config::validate`], since a rule
    /// may tie a cold key to a hot one (`database.transaction_idle_timeout` below
    /// `cluster.lease_duration`, which fencing relies on); if it does not, nothing changes.
    /// Either way the outcome is logged in one line and counted in
    /// `stagehand_config_reloads_total`.
    pub fn reload(&self, new: Config) -> Result<Vec<&'static str>, ConfigError> {
        let current = self.shared.config.load_full();
        let cold = current.cold_changes(&new);
        let applied = current.with_cold_keys_of(new);
        if let Err(e) = applied.validate() {
            metrics::CONFIG_RELOADS.with_label_values(&["error"]).inc();
            log::error!(
                "configuration reload rejected, keeping the running configuration: with the running values of the cold keys, {e}"
            );
            return Err(e);
        }
        if std::env::var("RUST_LOG")
            .map(|v| v.trim().is_empty())
            .unwrap_or(true)
        {
            log::set_max_level(applied.service.log_level);
        }
        self.shared.config.store(Arc::new(applied));
        self.generation.fetch_add(1, Ordering::AcqRel);
        metrics::CONFIG_RELOADS.with_label_values(&["ok"]).inc();
        if cold.is_empty() {
            log::info!("configuration reloaded");
        } else {
            log::warn!(
                "configuration reloaded; these keys need a restart and keep their running value: {}",
                cold.join(", ")
            );
        }
        Ok(cold)
    }

    /// Stops in order; returns true when everything finished within `grace`.
    pub fn shutdown(mut self, grace: Duration) -> bool {
        let started = Instant::now();
        let deadline = started + grace;
        // Launching stops before the end: the launchers then undo what is still queued, and
        // need time to (stopping at the deadline itself left that undone, RUNNING with procs).
        *self.shared.grace_deadline.lock() = Some(started + grace.mul_f64(LAUNCH_SHARE));
        self.health.stopping.store(true, Ordering::Release);
        // 1. Stop intake: the feed stops handing out clusters and closes the work channel.
        self.feed_stop.store(true, Ordering::Release);
        self.shared.stop.store(true, Ordering::Release);
        let mut clean = true;
        // 2. Booking threads finish their current pass; their launch senders go with them.
        clean &= join_all(std::mem::take(&mut self.workers), deadline);
        // 3. Launchers drain what was committed.
        clean &= join_all(std::mem::take(&mut self.launchers), deadline);
        // 4. Hand shows over at once (not left to expire), then stop the timers.
        if let Some(leases) = self.lease.take() {
            leases.release_all(deadline);
        }
        self.timers_stop.store(true, Ordering::Release);
        clean &= join_all(std::mem::take(&mut self.background), deadline);
        if let Some(http) = self.http.take() {
            http.stop();
        }
        clean
    }
}

/// The share of the shutdown grace spent launching; the rest undoes what was not launched.
const LAUNCH_SHARE: f64 = 0.75;

fn join_all(handles: Vec<JoinHandle<()>>, deadline: Instant) -> bool {
    let mut clean = true;
    for h in handles {
        let name = h.thread().name().unwrap_or("?").to_owned();
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished() {
            if h.join().is_err() {
                log::error!("thread {name} panicked");
                clean = false;
            }
        } else {
            log::warn!("thread {name} still busy after the shutdown grace; leaving it");
            clean = false;
        }
    }
    clean
}

/// How `run` ended.
pub struct RunOutcome {
    /// True when shutdown finished within its grace period.
    pub clean: bool,
}

enum Event {
    Reload,
    Shutdown,
    ToggleDebug,
}

fn signal_events() -> Result<(Receiver<Event>, signal_hook::iterator::Handle), ServiceError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let io = |source| ServiceError::Io {
        what: "installing signal handlers".into(),
        source,
    };
    // A second SIGTERM/SIGINT while shutting down exits at once (status 1).
    let terminating = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&terminating))
            .map_err(io)?;
        signal_hook::flag::register(sig, Arc::clone(&terminating)).map_err(io)?;
    }
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1]).map_err(io)?;
    let handle = signals.handle();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let event = match sig {
                    SIGHUP => Event::Reload,
                    SIGUSR1 => Event::ToggleDebug,
                    _ => Event::Shutdown,
                };
                if tx.send(event).is_err() {
                    break;
                }
            }
        })
        .map_err(io)?;
    Ok((rx, handle))
}

/// Runs the service until SIGTERM/SIGINT: reloads on SIGHUP, toggles debug logging on
/// SIGUSR1, logs a heartbeat, and talks to systemd (ready, reloading, stopping, watchdog).
pub fn run(path: PathBuf, config: Config) -> Result<RunOutcome, ServiceError> {
    // Signal handlers go in before any other thread starts.
    let (events, signals) = signal_events()?;
    let mut heartbeat_every = config.service.heartbeat_interval;
    let service = Service::start(config)?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = if let Some(period) = sd_notify::watchdog_enabled().filter(|d| !d.is_zero()) {
        tick(period / 2)
    } else {
        crossbeam_channel::never()
    };
    let mut heartbeat = tick(heartbeat_every);
    let mut last_totals = (0, 0, 0);
    let mut last_beat = Instant::now();
    let mut debug = false;
    loop {
        select! {
            recv(events) -> event => match event.unwrap_or(Event::Shutdown) {
                Event::Reload => {
                    reload_from(&path, &service);
                    // SIGUSR1's debug logging outlives a reload of the configured level.
                    if debug {
                        log::set_max_level(LevelFilter::Debug);
                    }
                }
                Event::ToggleDebug => {
                    debug = !debug;
                    let level = if debug { LevelFilter::Debug } else { service.shared.config.load().service.log_level };
                    log::set_max_level(level);
                    log::warn!("log level now {level}");
                }
                Event::Shutdown => break,
            },
            recv(watchdog) -> _ => {
                // Only a live pipeline feeds the watchdog: a dead thread lets systemd restart us.
                if service.health.dead_threads().is_empty() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            },
            recv(heartbeat) -> _ => {
                let totals = service.shared.stats.totals();
                let secs = last_beat.elapsed().as_secs_f64().max(0.001);
                log::info!(
                    "heartbeat: booked {} frames in the last {:.0}s ({:.1}/s), {} rejected, {} failed launches; {} hosts indexed",
                    totals.0 - last_totals.0, secs, (totals.0 - last_totals.0) as f64 / secs,
                    totals.1 - last_totals.1, totals.2 - last_totals.2, service.shared.index.len()
                );
                last_totals = totals;
                last_beat = Instant::now();
            },
        }
        // A reload may change the period: the ticker follows.
        let every = service.shared.config.load().service.heartbeat_interval;
        if every != heartbeat_every {
            heartbeat_every = every;
            heartbeat = tick(every);
        }
    }
    let grace = service.shared.config.load().service.shutdown_grace;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    log::info!(
        "shutting down (grace {})",
        humantime::format_duration(grace)
    );
    let clean = service.shutdown(grace);
    signals.close();
    log::info!(
        "stopped{}",
        if clean { "" } else { " (grace period ran out)" }
    );
    Ok(RunOutcome { clean })
}

fn reload_from(path: &std::path::Path, service: &Service) {
    let now = sd_notify::NotifyState::monotonic_usec_now();
    let mut states = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = now {
        states.push(now);
    }
    let _ = sd_notify::notify(&states);
    match Config::load(path) {
        // `reload` validates what it would apply, and logs and counts the outcome.
        Ok(new) => {
            let _ = service.reload(new);
        }
        Err(e) => {
            metrics::CONFIG_RELOADS.with_label_values(&["error"]).inc();
            log::error!("configuration reload rejected, keeping the running configuration: {e}");
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
}
