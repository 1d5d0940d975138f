//! The feed: one thread that keeps the cluster set, decides whose turn it is, and hands
//! clusters to the booking threads through a bounded crossbeam channel.
//!
//! Turn policy:
//! - a cluster's passes run one at a time, except that while a booking thread would otherwise
//!   wait, a cluster whose last pass ended on work rather than on room gets another pass
//!   beside the running one (see `cluster::turn`; the job claims keep them on different jobs);
//! - a cheap scan of waiting frames per (show, facility, tag) gates the set: clusters without
//!   waiting work get no turns at all, so a busy cluster never queues behind idle ones
//!   (OpenCue #2315, #2465); when the scan fails every cluster counts as awake;
//! - among awake clusters the least recently served goes first;
//! - after a pass: booked → straight back; no jobs → `empty_sleep`, woken early when the scan
//!   sees its waiting count grow; saturated → `saturated_sleep`, woken early when the host
//!   index reports freed capacity; error → `error_sleep`. A cluster asleep with no jobs or
//!   saturated also wakes when the scan finds a job newer than any its last pass could see:
//!   a new job may fit where the old ones did not (its own caps, smaller frames), and it
//!   must not wait out the sleep (issue 14: a new job books within 0.5 s).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::{
    BuildOptions, Cluster, build,
    turn::{Sleep, Turn},
};
use crate::{
    accounting::hungry::{HungryBoard, HungryShows},
    config::Config,
    db::{self, jobs::TagWork},
    ids::{FacilityId, ShowId},
    metrics,
    model::TagType,
};

/// How a cluster pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassResult {
    /// Frames were booked.
    Booked(usize),
    /// No pending job matched the cluster.
    NoJobs,
    /// Jobs were found but nothing could be booked (no host, caps).
    Saturated,
    /// The pass failed (database).
    Error,
    /// The pass was cut short by shutdown.
    Stopped,
    /// The pass found work only in jobs another booking thread of this process held: the
    /// cluster comes back after [`BUSY_RETRY`], not after a sleep.
    Busy,
}

/// How soon a cluster whose work another booking thread held gets its next turn: about a
/// batch's commit, so it neither spins on the job query nor waits out a sleep.
pub const BUSY_RETRY: Duration = Duration::from_millis(20);

/// A worker's report on one pass.
#[derive(Clone, Debug)]
pub struct PassOutcome {
    /// The cluster.
    pub key: String,
    /// How it ended.
    pub result: PassResult,
    /// The [`room_generation`] when the pass started.
    pub capacity_gen: u64,
    /// What its end says beyond its result.
    pub ending: Ending,
}

/// How a pass ended, beyond its [`PassResult`]: what the feed needs for side passes and for
/// fair share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ending {
    /// Nothing more to say (it stopped for room, or failed, or was cut short).
    #[default]
    Plain,
    /// It booked every frame of a full page of jobs, saw more jobs with work beyond it, and
    /// no layer stopped for want of room: a pass beside the next one would find work and
    /// room too.
    MoreWork,
    /// It found work and booked none, and none of it waited for room: every layer was held
    /// back by its own job's or folder's maximum, a layer limit, a start time or a license,
    /// or the show is at its burst on every allocation of the cluster. Such a show is not
    /// hungry for fair share: room another show gave way to would stay idle.
    HeldBack,
}

/// What `/status` shows of a cluster.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterStatus {
    /// The cluster key.
    pub key: String,
    /// Show name.
    pub show: String,
    /// Tag type.
    pub kind: &'static str,
    /// `ready`, `queued`, `booking`, `asleep (no jobs)`, `asleep (saturated)`, `asleep (error)`, `idle`.
    pub state: String,
    /// Waiting frames seen by the last scan (-1 unknown).
    pub waiting: i64,
    /// Milliseconds until its next turn (0 when ready).
    pub next_turn_ms: u64,
}

/// Moves whenever room may have grown, on hosts (the index) or under a cap (the ledger's
/// counters re-synced lower): a cluster that slept saturated since a smaller value is woken.
/// Both only grow, so their sum does.
pub fn room_generation(
    capacity: &crate::index::CapacityView,
    caps: &crate::accounting::CapsView,
) -> u64 {
    capacity.generation().wrapping_add(caps.generation())
}

/// Shared pieces the feed needs.
pub struct FeedContext {
    /// Live configuration.
    pub config: Arc<ArcSwap<Config>>,
    /// Database pool.
    pub pool: db::Pool,
    /// The host index's capacity generation (read-only): it moves when free room grows.
    pub capacity: crate::index::CapacityView,
    /// The ledger's generation (read-only): it moves when room under a cap may have grown.
    pub caps: crate::accounting::CapsView,
    /// Set to stop the feed.
    pub stop: Arc<AtomicBool>,
    /// Latest cluster status, for `/status`.
    pub status: Arc<ArcSwap<Vec<ClusterStatus>>>,
    /// True once the first cluster load succeeded.
    pub loaded: Arc<AtomicBool>,
    /// Show leases: only shows this instance may book get turns (`None`: every show).
    pub leases: Option<Arc<crate::lease::Leases>>,
    /// Where the feed publishes which shows have waiting work where, for the ledger's fair
    /// share (`None`: nobody reads it). The feed is the board's only writer.
    pub hungry: Option<Arc<HungryBoard>>,
}

/// The feed's state; [`Feed::run`] is the body of the `cluster-feed` thread.
pub struct Feed {
    ctx: FeedContext,
    turns: HashMap<String, Turn>,
    work: Sender<Arc<Cluster>>,
    outcomes: Receiver<PassOutcome>,
    next_reload: Instant,
    next_scan: Instant,
    scan_ok: bool,
    last_status: Instant,
    /// The new-work probe: when it runs next and what it read last.
    next_probe: Instant,
    last_probe: Option<db::jobs::WorkProbe>,
    /// The connection the probe and the scan run on (see [`db::Kept`]).
    conn: db::Kept,
}

impl Feed {
    /// Creates the feed with its work channel (capacity = worker count) and outcome channel.
    pub fn new(
        ctx: FeedContext,
        workers: usize,
    ) -> (Feed, Receiver<Arc<Cluster>>, Sender<PassOutcome>) {
        let (work_tx, work_rx) = crossbeam_channel::bounded(workers.max(1));
        let (out_tx, out_rx) = crossbeam_channel::unbounded();
        let now = Instant::now();
        let feed = Feed {
            ctx,
            turns: HashMap::new(),
            work: work_tx,
            outcomes: out_rx,
            next_reload: now,
            next_scan: now,
            scan_ok: false,
            next_probe: now,
            last_probe: None,
            conn: db::Kept::default(),
            // Publish on the first iteration: /status should show clusters as soon as loaded.
            last_status: now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
        };
        (feed, work_rx, out_tx)
    }

    /// Runs until the stop flag is set; dropping the work sender on return tells the workers.
    pub fn run(mut self) {
        while !self.ctx.stop.load(Ordering::Acquire) {
            let config = self.ctx.config.load_full();
            let now = Instant::now();
            if now >= self.next_reload {
                let s = &config.scheduler;
                // A failed reload is tried again after `error_sleep`: at start, with the
                // database back, nothing books until the clusters are loaded.
                let next = if self.reload(&config) {
                    s.cluster_reload_interval
                } else {
                    s.error_sleep.min(s.cluster_reload_interval)
                };
                self.next_reload = Instant::now() + next;
            }
            self.probe(&config, now);
            if now >= self.next_scan {
                let took = self.scan();
                let every = config.scheduler.active_scan_interval;
                self.next_scan = Instant::now() + crate::worker::paced("active_scan", every, took);
            }
            while let Ok(outcome) = self.outcomes.try_recv() {
                self.settle(outcome, &config);
            }
            self.wake_on_capacity();
            self.dispatch();
            self.publish_status(false);
            // The loop also wakes saturated clusters when the index reports freed room,
            // which sends no outcome: look at least every 50 ms, so room a completion gave
            // back waits at most that long for its cluster's turn.
            let wait = self
                .next_event()
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            if let Ok(outcome) = self
                .outcomes
                .recv_timeout(wait.max(Duration::from_millis(1)))
            {
                self.settle(outcome, &config);
            }
        }
        self.publish_status(true);
    }

    /// Re-reads the cluster set; on failure the current set is kept. True when it was read.
    fn reload(&mut self, config: &Config) -> bool {
        let clusters = match self.load(config) {
            Ok(c) => c,
            Err(e) => {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::warn!("cluster reload failed, keeping the current set: {e}");
                return false;
            }
        };
        self.ctx.loaded.store(true, Ordering::Release);
        self.replace(clusters);
        self.count_clusters();
        true
    }

    /// Reads the tags and subscriptions of the configured facility (every facility when
    /// none is set; nothing when the named one does not exist) and builds the clusters.
    fn load(&self, config: &Config) -> Result<Vec<Cluster>, db::DbError> {
        let mut conn = self.ctx.pool.get()?;
        let facility = if config.scheduler.facility.is_empty() {
            None
        } else {
            let Some(id) = db::jobs::facility_id(conn.client(), &config.scheduler.facility)? else {
                log::error!(
                    "facility {:?} does not exist; booking nothing",
                    config.scheduler.facility
                );
                return Ok(Vec::new());
            };
            Some(id)
        };
        let rows = db::jobs::cluster_tags(conn.client(), facility.as_ref())?;
        let subs = db::jobs::subscriptions(conn.client())?;
        let options = BuildOptions {
            ignore_tags: config.scheduler.ignore_tags.clone(),
            manual_chunk: config.scheduler.manual_tags_chunk_size,
            hostname_chunk: config.scheduler.hostname_tags_chunk_size,
        };
        Ok(build(&rows, &subs, &options))
    }

    /// Installs the new set: a cluster that stays keeps its turn (state, sleep, last
    /// outcome); a new one is ready now. Clusters that vanished but are still queued or
    /// booking are simply forgotten: their outcome will find no turn and be ignored.
    fn replace(&mut self, clusters: Vec<Cluster>) {
        let now = Instant::now();
        let mut next: HashMap<String, Turn> = HashMap::with_capacity(clusters.len());
        for cluster in clusters {
            let key = cluster.key.clone();
            let turn = match self.turns.remove(&key) {
                Some(mut turn) => {
                    turn.cluster = Arc::new(cluster);
                    turn
                }
                None => Turn::new(Arc::new(cluster), now),
            };
            next.insert(key, turn);
        }
        self.turns = next;
    }

    /// Publishes the number of clusters per kind.
    fn count_clusters(&self) {
        for kind in [
            TagType::Alloc,
            TagType::Manual,
            TagType::Hostname,
            TagType::Hardware,
        ] {
            let n = self
                .turns
                .values()
                .filter(|t| t.cluster.kind == kind)
                .count();
            metrics::CLUSTERS_TOTAL
                .with_label_values(&[kind.label()])
                .set(n as i64);
        }
    }

    /// Runs `read` on a pooled connection; returns its result and how long the read itself
    /// took — not the wait for a connection, which measures the booking's load, not what the
    /// read costs the database.
    fn timed<T>(
        &mut self,
        read: impl FnOnce(&mut db::session::Session) -> Result<T, db::DbError>,
    ) -> (Result<T, db::DbError>, Duration) {
        let mut started = Instant::now();
        let result = self.conn.run(&self.ctx.pool, |c| {
            started = Instant::now();
            read(c)
        });
        (result, started.elapsed())
    }

    /// The active-work scan; returns how long its read took.
    fn scan(&mut self) -> Duration {
        let (scanned, took) = self.timed(db::jobs::active_tags);
        metrics::ACTIVE_SCAN_SECONDS.observe(took.as_secs_f64());
        let active = match scanned {
            Ok(active) => active,
            Err(e) => {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::warn!("active-work scan failed, treating every cluster as awake: {e}");
                self.scan_ok = false;
                for turn in self.turns.values_mut() {
                    turn.waiting = -1;
                }
                return took;
            }
        };
        self.scan_ok = true;
        self.apply_scan(&active);
        self.publish_hungry();
        took
    }

    /// The new-work probe: between scans, a cheap read of the pending jobs; new work (see
    /// [`db::jobs::WorkProbe::has_new_work`]) brings the scan forward to now, so the
    /// clusters it concerns wake without waiting for `active_scan_interval`. A failed probe
    /// changes nothing: the scan still runs on its own interval.
    fn probe(&mut self, config: &Config, now: Instant) {
        let every = config.scheduler.new_work_probe_interval;
        if now < self.next_probe {
            return;
        }
        if every.is_zero() {
            // Off: look again at the scan's pace, in case a reload turns it on.
            self.next_probe = now + config.scheduler.active_scan_interval;
            self.last_probe = None;
            return;
        }
        // With leases, only the shows held here: new work of another instance's show is its
        // probe's to find, and a show nobody holds is claimed by a lease round. Several
        // instances so probe the farm once between them, not once each. A change of the
        // shows held changes the fingerprint, so it brings the scan forward too.
        let shows = self.ctx.leases.as_ref().map(|l| l.held_shows());
        let (read, took) = self.timed(|c| db::jobs::work_probe(c, shows.as_deref()));
        // The probe reads every pending job of those shows: paced by what it took.
        self.next_probe = now + crate::worker::paced("new_work_probe", every, took);
        match read {
            Ok(probe) => {
                if self
                    .last_probe
                    .is_some_and(|last| probe.has_new_work(&last))
                {
                    self.next_scan = now;
                }
                self.last_probe = Some(probe);
            }
            Err(e) => metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc(),
        }
    }

    /// Sets each cluster's waiting count from the scan; new work for a cluster that found
    /// none, or a job newer than its last pass for a cluster asleep without jobs or
    /// saturated, brings its turn forward to now instead of after its sleep.
    fn apply_scan(&mut self, active: &HashMap<(ShowId, FacilityId, String), TagWork>) {
        let now = Instant::now();
        let mut awake = 0;
        for turn in self.turns.values_mut() {
            let c = &turn.cluster;
            let (waiting, newest) = c
                .tags
                .iter()
                .filter_map(|t| active.get(&(c.show.clone(), c.facility.clone(), t.clone())))
                .fold((0, 0.0f64), |(w, n), work| {
                    (w + work.waiting, n.max(work.newest))
                });
            turn.waiting = waiting;
            turn.newest = newest;
            if waiting > 0 {
                awake += 1;
            }
            let new_job = newest > turn.newest_at_pass;
            let wake = match turn.sleep {
                Some(Sleep::NoJobs) => waiting > turn.waiting_at_pass || new_job,
                Some(Sleep::Saturated) => new_job && waiting > 0,
                _ => false,
            };
            if wake {
                turn.wake(now);
            }
        }
        metrics::CLUSTERS_ACTIVE.set(awake);
    }

    /// Tells the ledger which shows have waiting work on each allocation that their last
    /// pass did not find held back (fair share yields only to a show that is hungry there).
    fn publish_hungry(&self) {
        let Some(board) = &self.ctx.hungry else {
            return;
        };
        let mut hungry: HungryShows = HashMap::new();
        for turn in self.turns.values().filter(|t| t.waiting > 0 && !t.held) {
            for alloc in &turn.cluster.allocs {
                let shows = hungry.entry(alloc.clone()).or_default();
                if !shows.contains(&turn.cluster.show) {
                    shows.push(turn.cluster.show.clone());
                }
            }
        }
        board.publish(hungry);
    }

    fn settle(&mut self, outcome: PassOutcome, config: &Config) {
        let Some(turn) = self.turns.get_mut(&outcome.key) else {
            return;
        };
        if let Some(sleep) = turn.settle(&outcome, &config.scheduler, Instant::now()) {
            metrics::CLUSTER_SLEEPS
                .with_label_values(&[sleep.label()])
                .inc();
        }
    }

    fn wake_on_capacity(&mut self) {
        let generation = room_generation(&self.ctx.capacity, &self.ctx.caps);
        let now = Instant::now();
        for turn in self.turns.values_mut() {
            if turn.sleep == Some(Sleep::Saturated) && generation > turn.capacity_gen {
                turn.wake(now);
            }
        }
    }

    fn awake(&self, turn: &Turn) -> bool {
        !self.scan_ok || turn.waiting != 0
    }

    fn owned(&self, turn: &Turn) -> bool {
        self.ctx
            .leases
            .as_ref()
            .map(|l| l.may_book(&turn.cluster.show))
            .unwrap_or(true)
    }

    fn dispatch(&mut self) {
        let now = Instant::now();
        let mut ready: Vec<(Option<Instant>, String)> = self
            .turns
            .iter()
            .filter(|(_, t)| t.idle() && t.ready_at <= now && self.awake(t) && self.owned(t))
            .map(|(k, t)| (t.last_turn, k.clone()))
            .collect();
        // Least recently served first; never-served clusters (None) sort before all others.
        ready.sort();
        if self.send(ready, now, false) {
            self.dispatch_beside(now);
        }
        metrics::QUEUE_DEPTH.set(self.work.len() as i64);
        let sleeping = self
            .turns
            .values()
            .filter(|t| t.sleep.is_some() && t.ready_at > now)
            .count();
        metrics::CLUSTERS_SLEEPING.set(sleeping as i64);
    }

    /// While fewer passes are out than there are booking threads (one would wait), a pass
    /// beside the running one for each cluster that wants another (see [`super::turn`]).
    /// Only then: a cluster waiting for its turn always goes before a second pass of another.
    fn dispatch_beside(&mut self, now: Instant) {
        let workers = self.work.capacity().unwrap_or(1);
        let out: usize = self.turns.values().map(|t| t.inflight() as usize).sum();
        if out >= workers {
            return;
        }
        let mut wanting: Vec<(Option<Instant>, String)> = self
            .turns
            .iter()
            .filter(|(_, t)| t.wants_another() && self.awake(t) && self.owned(t))
            .map(|(k, t)| (t.last_turn, k.clone()))
            .collect();
        wanting.sort();
        wanting.truncate(workers - out);
        self.send(wanting, now, true);
    }

    /// Hands the clusters of `keys` to the workers in that order; false once the channel is
    /// full.
    fn send(&mut self, keys: Vec<(Option<Instant>, String)>, now: Instant, beside: bool) -> bool {
        for (_, key) in keys {
            let Some(turn) = self.turns.get_mut(&key) else {
                continue;
            };
            if self.work.try_send(Arc::clone(&turn.cluster)).is_err() {
                return false;
            }
            if beside {
                metrics::CLUSTER_SIDE_PASSES.inc();
            } else if let Some(last) = turn.last_turn {
                metrics::CLUSTER_ROUND_TRIP
                    .with_label_values(&[turn.cluster.kind.label()])
                    .observe(now.duration_since(last).as_secs_f64());
            }
            turn.dispatched(now);
        }
        true
    }

    /// When the loop has something to do next: a reload, a scan, a probe, or the turn of an
    /// awake cluster it could hand out then. A cluster of a show another instance holds is
    /// no event, nor is any cluster while the work channel is full: neither can be handed out
    /// before something else happens (a lease round, a pass's outcome), which wakes the loop
    /// or is seen within its 50 ms look. Counting them made the loop wake every millisecond
    /// for nothing — with several instances, whenever another one's show had work — and each
    /// wait spun and yielded the CPU the database needed (issue 14).
    fn next_event(&self) -> Instant {
        let now = Instant::now();
        let next = self.next_reload.min(self.next_scan).min(self.next_probe);
        if self.work.is_full() {
            return next;
        }
        self.turns
            .values()
            .filter(|t| t.idle() && self.awake(t) && self.owned(t))
            .map(|t| t.ready_at.max(now))
            .fold(next, Instant::min)
    }

    fn publish_status(&mut self, force: bool) {
        let now = Instant::now();
        if !force && now.duration_since(self.last_status) < Duration::from_millis(500) {
            return;
        }
        self.last_status = now;
        let queued = self.work.len();
        let mut status: Vec<ClusterStatus> = self
            .turns
            .values()
            .map(|t| {
                let state = match (t.idle(), t.sleep) {
                    (false, _) if queued == 0 => "booking".to_owned(),
                    (false, _) => "queued".to_owned(),
                    (true, Some(Sleep::NoJobs)) if t.ready_at > now => {
                        "asleep (no jobs)".to_owned()
                    }
                    (true, Some(Sleep::Saturated)) if t.ready_at > now => {
                        "asleep (saturated)".to_owned()
                    }
                    (true, Some(Sleep::Error)) if t.ready_at > now => "asleep (error)".to_owned(),
                    (true, _) if !self.owned(t) => "not leased here".to_owned(),
                    (true, _) if !self.awake(t) => "idle".to_owned(),
                    (true, _) => "ready".to_owned(),
                };
                ClusterStatus {
                    key: t.cluster.key.clone(),
                    show: t.cluster.show_name.clone(),
                    kind: t.cluster.kind.label(),
                    state,
                    waiting: t.waiting,
                    next_turn_ms: t.ready_at.saturating_duration_since(now).as_millis() as u64,
                }
            })
            .collect();
        status.sort_by(|a, b| b.waiting.cmp(&a.waiting).then_with(|| a.key.cmp(&b.key)));
        self.ctx.status.store(Arc::new(status));
    }
}

#[cfg(test)]
mod tests;
