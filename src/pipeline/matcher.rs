//! One cluster pass: select pending jobs, their layers and WAITING frames; place each frame on
//! a host through the index (atomic reservation) and the ledger (atomic cap charge); commit
//! the placements in guarded batches; hand the committed frames to the launchers.
//!
//! Every path that does not commit gives its reservation and its charge back (both are RAII
//! values dropped on the way out), so nothing leaks on an error, a lost guard or a panic.

use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Instant,
};

use crossbeam_channel::Sender;
use uuid::Uuid;

use super::{
    Shared,
    launch::{LaunchTask, LayerLaunch},
    waiting::Reason,
    wide::{self, WideFrame},
};
use crate::{
    accounting::{Cap, Charge, Limits, Ticket},
    backfill::{self, HoldMap},
    cluster::{Cluster, feed::PassResult},
    config::Config,
    db::{
        self,
        booking::{BookOptions, Fence, GuardLoss, Placement},
        caps::InFlight,
        jobs::{LayerWork, PendingJob},
    },
    frameset::FrameSet,
    index::{Request, Reservation},
    metrics,
    model::Resources,
    reserve::{self, HostShape, LayerShape, Rules},
    rqd::FrameLaunch,
};

/// A frame placed and charged, waiting for its batch to commit.
struct Planned {
    placement: Placement,
    reservation: Reservation,
    ticket: Ticket,
    charge: Charge,
    launch: Option<FrameLaunch>,
    waited_secs: f64,
    show_name: String,
}

/// Why a layer stops being matched in this pass.
enum Stop {
    /// No host takes the next frame, for this reason.
    NoHost(Reason),
    /// A cap of the job (or its folder) is full: skip the job.
    JobCapped,
}

/// What a pass saw of one layer, for the waiting-frames gauge.
struct LayerTally {
    waiting: i64,
    booked: i64,
    reason: Option<Reason>,
}

/// Runs one pass over `cluster`.
pub fn pass(shared: &Shared, cluster: &Cluster, launches: &Sender<LaunchTask>) -> PassResult {
    match run(shared, cluster, launches) {
        Ok(result) => result,
        Err(e) => {
            metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
            log::warn!("pass over cluster {} failed: {e}", cluster.key);
            PassResult::Error
        }
    }
}

fn run(
    shared: &Shared,
    cluster: &Cluster,
    launches: &Sender<LaunchTask>,
) -> Result<PassResult, db::DbError> {
    let config = shared.config.load_full();
    let s = &config.scheduler;
    // The fence is captured now, with the may-book check: every batch of this pass commits
    // only under the lease epoch its counters were planned under.
    let fence = match shared.lease.fence().as_ref() {
        None => None,
        Some(f) => match f.for_pass(&cluster.show, shared.ledger.resyncs()) {
            Some(f) => Some(f),
            None => return Ok(PassResult::Saturated),
        },
    };
    // Nothing to book if every allocation of the cluster is at its burst (or unknown).
    if cluster
        .allocs
        .iter()
        .all(|a| shared.ledger.sub_headroom(&cluster.show, a) <= 0)
    {
        metrics::LIMIT_EXCEEDED
            .with_label_values(&[Cap::Subscription.label()])
            .inc();
        return Ok(PassResult::Saturated);
    }
    let mut conn = shared.pool.get()?;
    let started = Instant::now();
    let jobs = db::jobs::pending_jobs(
        &mut *conn,
        &cluster.show,
        &cluster.facility,
        &cluster.tags,
        i64::from(s.max_jobs_per_pass),
        s.job_order,
    )?;
    metrics::JOB_QUERY_SECONDS.observe(started.elapsed().as_secs_f64());
    metrics::JOBS_QUERIED.inc_by(jobs.len() as u64);
    if jobs.is_empty() {
        return Ok(PassResult::NoJobs);
    }
    // Claim the jobs before reading their frames: whoever held a job committed before letting
    // go of it, so the frames read below are current.
    let mut claims = Vec::new();
    let jobs: Vec<PendingJob> = jobs
        .into_iter()
        .filter(|j| match shared.claim_job(&j.id) {
            Some(c) => {
                claims.push(c);
                true
            }
            None => false,
        })
        .collect();
    if jobs.is_empty() {
        return Ok(PassResult::Saturated);
    }
    let job_ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let folders: Vec<String> = {
        let set: HashSet<&String> = jobs.iter().map(|j| &j.folder).collect();
        set.into_iter().cloned().collect()
    };
    // Job and folder caps are read with the pass, so a new job or folder is never unbounded;
    // the pins keep the job caps through any re-sync until the pass has committed.
    let cap_pins: Vec<_> = jobs
        .iter()
        .map(|job| {
            shared
                .ledger
                .set_job_limits(&job.id, Limits::from_db(job.max_cores, job.max_gpus))
        })
        .collect();
    for (folder, limits) in db::accounting::folder_limits(&mut *conn, &folders)? {
        shared.ledger.set_folder_limits(&folder, limits);
    }
    let layers = db::jobs::layers_with_frames(
        &mut *conn,
        &job_ids,
        &cluster.tags,
        i64::from(s.frames_per_layer),
        i64::from(config.reservations.min_history),
    )?;
    let (job_env, layer_env) = if config.rqd.dry_run {
        Default::default()
    } else {
        db::jobs::envs(&mut *conn, &job_ids)?
    };

    let mut by_job: HashMap<&str, Vec<&LayerWork>> = HashMap::new();
    for layer in &layers {
        by_job.entry(layer.job.as_str()).or_default().push(layer);
    }
    let allocs: HashSet<Uuid> = cluster
        .allocs
        .iter()
        .filter_map(|a| Uuid::parse_str(a).ok())
        .collect();
    let mut m = Matcher {
        shared,
        config: &config,
        cluster,
        allocs,
        full_allocs: HashSet::new(),
        fence,
        holds: shared.holds.snapshot(),
        tallies: HashMap::new(),
        batch: Vec::new(),
        booked: 0,
        launches,
        conn: &mut conn,
    };
    for job in &jobs {
        metrics::JOBS_PROCESSED
            .with_label_values(&[&cluster.show_name])
            .inc();
        let Some(job_layers) = by_job.get(job.id.as_str()) else {
            continue;
        };
        let no_env = Vec::new();
        let jenv = job_env.get(&job.id).unwrap_or(&no_env);
        for layer in job_layers {
            let lenv = layer_env.get(&layer.id).unwrap_or(&no_env);
            // Before matching: a batch may commit inside `layer` and count this layer's frames.
            m.tallies.entry(layer.id.clone()).or_insert(LayerTally {
                waiting: layer.waiting,
                booked: 0,
                reason: None,
            });
            let stop = m.layer(job, layer, jenv, lenv)?;
            let reason = match stop {
                None => None,
                Some(Stop::NoHost(reason)) => Some(reason),
                Some(Stop::JobCapped) => Some(Reason::JobCap),
            };
            if let (Some(reason), Some(t)) = (reason, m.tallies.get_mut(&layer.id)) {
                t.reason = Some(reason);
            }
            if matches!(stop, Some(Stop::JobCapped)) {
                break;
            }
        }
    }
    m.flush()?;
    // The claims and pins go only now, after the last batch committed.
    drop(claims);
    drop(cap_pins);
    for (layer, t) in &m.tallies {
        match t.reason {
            Some(reason) => shared.waiting.record(layer, reason, t.waiting - t.booked),
            None => shared.waiting.clear(layer),
        }
    }
    Ok(if m.booked > 0 {
        PassResult::Booked(m.booked)
    } else {
        PassResult::Saturated
    })
}

struct Matcher<'a> {
    shared: &'a Shared,
    config: &'a Config,
    cluster: &'a Cluster,
    allocs: HashSet<Uuid>,
    /// Allocations whose subscription refused a charge this pass.
    full_allocs: HashSet<Uuid>,
    /// The lease fence captured at the start of the pass (`None`: single instance).
    fence: Option<Fence>,
    /// Hosts reserved for wide frames, as of the start of the pass.
    holds: Arc<HoldMap>,
    /// Per layer: waiting frames, frames booked, why the rest waits.
    tallies: HashMap<String, LayerTally>,
    batch: Vec<Planned>,
    booked: usize,
    launches: &'a Sender<LaunchTask>,
    conn: &'a mut db::Conn,
}

impl Matcher<'_> {
    fn layer(
        &mut self,
        job: &PendingJob,
        layer: &LayerWork,
        job_env: &[(String, String)],
        layer_env: &[(String, String)],
    ) -> Result<Option<Stop>, db::DbError> {
        let s = &self.config.scheduler;
        let launching = !self.config.rqd.dry_run;
        // The frame set is needed to build the chunk RQD runs; a malformed range loses
        // nothing: the layer's frames stay WAITING and the problem is logged and counted.
        let frame_set = if launching {
            match FrameSet::parse(&layer.range) {
                Ok(set) => Some(set),
                Err(e) => {
                    metrics::BAD_INPUT.with_label_values(&["frame_range"]).inc();
                    log::warn!(
                        "layer {} of job {}: bad frame range {:?}: {e}; skipping it",
                        layer.name,
                        job.name,
                        layer.range
                    );
                    return Ok(None);
                }
            }
        } else {
            None
        };
        let shape = LayerShape {
            cores_min: layer
                .cores_min
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            cores_max: layer
                .cores_max
                .clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            mem_min_kb: layer.mem_min.max(0) as u64,
            gpus_min: layer.gpus_min.clamp(0, i64::from(u32::MAX)) as u32,
            gpu_mem_min_kb: layer.gpu_mem_min.max(0) as u64,
            threadable: layer.threadable,
            selfish: layer
                .services
                .iter()
                .any(|svc| s.selfish_services.contains(svc)),
        };
        let rules = Rules {
            memory_stranded_threshold_kb: s.memory_stranded_threshold_kb,
        };
        let gpu_room = Resources {
            cores: s.gpu_host_cores_per_gpu.saturating_mul(crate::model::CORE),
            mem_kb: s.gpu_host_mem_per_gpu_kb,
            ..Resources::ZERO
        };
        let tags: Vec<String> = layer
            .tags
            .iter()
            .filter(|t| self.cluster.tags.contains(t))
            .cloned()
            .collect();
        if tags.is_empty() {
            return Ok(None);
        }
        let os = job.os.trim();
        let request = Request {
            tags: &tags,
            floor: reserve::floor(&shape),
            os: if os.is_empty() { None } else { Some(os) },
            threadable: shape.threadable,
            share: self.shared.lease.host_share(),
        };
        let est_secs = layer.est_secs;
        let now = backfill::now_secs();
        for frame in &layer.frames {
            let job_remaining = self
                .shared
                .ledger
                .job_headroom(&job.id)
                .map(|c| c.clamp(0, i64::from(u32::MAX)) as u32);
            let (allocs, full, ledger, show, holds) = (
                &self.allocs,
                &self.full_allocs,
                &self.shared.ledger,
                &job.show,
                &self.holds,
            );
            // The last reason a candidate host was refused, should none be taken.
            let veto: Cell<Option<Reason>> = Cell::new(None);
            let reservation = self.shared.index.place(&request, &s.placement, |host| {
                if !allocs.contains(&host.alloc) {
                    return None;
                }
                if full.contains(&host.alloc) {
                    veto.set(Some(Reason::Subscription));
                    return None;
                }
                let amount = reserve::amount_for(
                    &shape,
                    &HostShape {
                        thread_mode: host.thread_mode,
                        total: host.total,
                        free: host.free,
                    },
                    job_remaining,
                    &rules,
                )
                .ok()?;
                if !reserve::leaves_gpu_room(&host.free, &amount, &gpu_room) {
                    return None;
                }
                if let Some(hold) = holds.on_host(&host.id) {
                    if !hold.admits(&frame.id, &host.free, &amount, est_secs, now) {
                        veto.set(Some(Reason::Reserved));
                        return None;
                    }
                }
                let alloc = host.alloc.to_string();
                let cores = i64::from(amount.cores);
                if ledger.sub_headroom(show, &alloc) < cores
                    || ledger.should_yield(show, &alloc, cores)
                {
                    veto.set(Some(Reason::Subscription));
                    return None;
                }
                Some(amount)
            });
            let Some(reservation) = reservation else {
                metrics::NO_CANDIDATE.inc();
                metrics::CHECKOUT_OUTCOME
                    .with_label_values(&["no_match"])
                    .inc();
                if self.holds.holds_frame(&frame.id) {
                    return Ok(Some(Stop::NoHost(Reason::Draining)));
                }
                let reason = veto.get().unwrap_or(Reason::NoHost);
                if reason == Reason::NoHost {
                    let wide = WideFrame {
                        frame: &frame.id,
                        name: &frame.name,
                        layer: &layer.id,
                        show: &job.show,
                        waited_secs: frame.waited_secs,
                    };
                    // A reservation that cannot be taken now is tried again next pass; it
                    // must not cost the pass the frames it can still book.
                    let taken = wide::reserve(
                        self.shared,
                        self.conn,
                        self.config,
                        &self.allocs,
                        &wide,
                        &request,
                    )
                    .unwrap_or_else(|e| {
                        metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                        log::warn!("could not reserve a host for frame {}: {e}", frame.name);
                        None
                    });
                    if let Some(hold) = taken {
                        self.holds = self.shared.holds.snapshot();
                        debug_assert!(self.holds.holds_frame(&hold.frame));
                        return Ok(Some(Stop::NoHost(Reason::Draining)));
                    }
                }
                return Ok(Some(Stop::NoHost(reason)));
            };
            let amount = reservation.amount();
            let host_alloc = reservation.alloc();
            let charge = Charge {
                show: job.show.clone(),
                alloc: host_alloc.to_string(),
                folder: job.folder.clone(),
                job: job.id.clone(),
                cores: i64::from(amount.cores),
                gpus: i64::from(amount.gpus),
            };
            let ticket = match self.shared.ledger.charge(&charge) {
                Ok(t) => t,
                Err(rejection) => {
                    self.shared.stats.rejected(1);
                    log::debug!(
                        "frame {} refused by {} cap ({} + {} > {})",
                        frame.name,
                        rejection.cap.label(),
                        rejection.current,
                        charge.cores,
                        rejection.limit
                    );
                    drop(reservation);
                    if rejection.cap == Cap::Subscription {
                        self.full_allocs.insert(host_alloc);
                        continue;
                    }
                    return Ok(Some(Stop::JobCapped));
                }
            };
            metrics::CHECKOUT_OUTCOME
                .with_label_values(&["booked"])
                .inc();
            let proc = Uuid::new_v4().to_string();
            let launch = frame_set.as_ref().and_then(|frames| {
                LayerLaunch {
                    job,
                    layer,
                    frames,
                    job_env,
                    layer_env,
                }
                .describe(frame, &proc, amount)
            });
            if launching && launch.is_none() {
                // A frame we cannot describe to RQD is not booked; it stays WAITING.
                continue;
            }
            self.batch.push(Planned {
                placement: Placement {
                    frame: frame.id.clone(),
                    version: frame.version,
                    layer: layer.id.clone(),
                    job: job.id.clone(),
                    show: job.show.clone(),
                    folder: job.folder.clone(),
                    host: reservation.host_id().to_string(),
                    host_name: reservation.host_name().to_owned(),
                    alloc: host_alloc.to_string(),
                    proc,
                    amount,
                    limits: layer.limits.clone(),
                    est_secs,
                    holds_reservation: self.holds.holds_frame(&frame.id),
                },
                reservation,
                ticket,
                charge,
                launch,
                waited_secs: frame.waited_secs,
                show_name: self.cluster.show_name.clone(),
            });
            if self.batch.len() >= s.batch_size {
                self.flush()?;
            }
        }
        Ok(None)
    }

    /// What this instance has charged and not committed under the batch's shared caps, read
    /// before the batch's transaction counts what is committed (see [`db::caps`]).
    fn inflight(&self, placements: &[Placement]) -> InFlight {
        let ledger = &self.shared.ledger;
        let mut inflight = InFlight::default();
        for p in placements {
            inflight
                .subs
                .entry((p.show.clone(), p.alloc.clone()))
                .or_insert_with(|| ledger.inflight_sub(&p.show, &p.alloc));
            inflight
                .folders
                .entry(p.folder.clone())
                .or_insert_with(|| ledger.inflight_folder(&p.folder));
        }
        inflight
    }

    /// Commits the batch; placements that lose a guard drop out (and give back what they took).
    fn flush(&mut self) -> Result<(), db::DbError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let placements: Vec<Placement> = batch.iter().map(|p| p.placement.clone()).collect();
        let options = BookOptions {
            mem_reserved_min_kb: self.config.scheduler.mem_reserved_min_kb as i64,
            ping_timeout_secs: self.config.hosts.ping_timeout.as_secs_f64(),
            no_retry_exit_statuses: self.config.scheduler.no_retry_exit_statuses.clone(),
            record_launches: (!self.config.rqd.dry_run)
                .then(|| self.fence.as_ref().map(|f| f.instance)),
        };
        let inflight = self.inflight(&placements);
        let ticket = self.shared.index.begin_refresh();
        let started = Instant::now();
        let fence = self.fence.as_ref();
        let outcome =
            match db::booking::book_batch(self.conn, &placements, &options, fence, &inflight) {
                Ok(o) => o,
                Err(db::DbError::CommitUnknown { outcome, source }) => {
                    match super::resolve::commit(self.shared, &placements, &outcome) {
                        Some(true) => *outcome,
                        resolved => {
                            metrics::BATCHES.with_label_values(&["error"]).inc();
                            if resolved.is_none() {
                                // Shutting down with the database gone: keep the charges and
                                // holds (over-counting is safe; the re-sync corrects it).
                                for planned in batch {
                                    planned.reservation.commit();
                                    planned.ticket.commit();
                                }
                            }
                            return Err(db::DbError::Postgres(source));
                        }
                    }
                }
                Err(e) => {
                    metrics::BATCHES.with_label_values(&["error"]).inc();
                    return Err(e); // `batch` drops here: every reservation and charge is released.
                }
            };
        metrics::BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::BATCH_SIZE.observe(placements.len() as f64);
        metrics::BATCHES.with_label_values(&["ok"]).inc();
        // Another writer took hosts we counted on: correct just those from the transaction's
        // own read (no farm-wide refresh; the CAS/guard protocol keeps this conservative).
        for (host, idle) in &outcome.stale_hosts {
            if let Ok(id) = Uuid::parse_str(host) {
                self.shared.index.refresh_host(ticket, &id, *idle);
            }
        }
        let mut booked = 0;
        for (planned, result) in batch.into_iter().zip(outcome.results) {
            match result {
                Ok(version) => {
                    booked += 1;
                    let Planned {
                        placement,
                        reservation,
                        ticket,
                        charge,
                        launch,
                        waited_secs,
                        show_name,
                    } = planned;
                    reservation.commit();
                    ticket.commit();
                    if let Some(t) = self.tallies.get_mut(&placement.layer) {
                        t.booked += 1;
                    }
                    if placement.holds_reservation {
                        self.shared.holds.fulfilled(&placement.frame);
                        metrics::WIDE_RESERVATION_EVENTS
                            .with_label_values(&["fulfilled"])
                            .inc();
                    }
                    metrics::FRAMES_DISPATCHED
                        .with_label_values(&[&show_name])
                        .inc();
                    metrics::TIME_TO_BOOK.observe(waited_secs);
                    if let Some(launch) = launch {
                        let task = LaunchTask {
                            placement,
                            version,
                            launch,
                            charge,
                        };
                        if let Err(refused) = self.launches.send(task) {
                            // No launcher will take it: undo it here, never leave a committed
                            // frame RUNNING without a process.
                            log::warn!("launch queue closed; undoing a committed booking");
                            super::launch::undo(self.shared, &refused.0);
                        }
                    }
                }
                Err(loss) => {
                    metrics::GUARD_LOSSES
                        .with_label_values(&[loss.label()])
                        .inc();
                    self.shared.stats.rejected(1);
                    let reason = match loss {
                        GuardLoss::HostCapacity => {
                            self.shared
                                .refresh_hosts
                                .store(true, std::sync::atomic::Ordering::Release);
                            None
                        }
                        // A reservation this instance did not know yet: re-read them.
                        GuardLoss::Reserved => {
                            self.shared
                                .refresh_hosts
                                .store(true, std::sync::atomic::Ordering::Release);
                            Some(Reason::Reserved)
                        }
                        GuardLoss::Fence => {
                            metrics::FENCE_REJECTIONS.inc();
                            None
                        }
                        GuardLoss::Limit => Some(Reason::Limit),
                        GuardLoss::Unmanaged => None,
                        GuardLoss::Cap => {
                            self.shared.ledger.request_caps();
                            Some(Reason::Subscription)
                        }
                        GuardLoss::Frame => None,
                    };
                    if let (Some(reason), Some(t)) =
                        (reason, self.tallies.get_mut(&planned.placement.layer))
                    {
                        t.reason = Some(reason);
                    }
                }
            }
        }
        metrics::FRAMES_BOOKED.inc_by(booked as u64);
        metrics::FRAMES_PER_PASS
            .with_label_values(&[self.cluster.kind.label()])
            .observe(booked as f64);
        self.shared.stats.booked(booked as u64);
        self.booked += booked;
        Ok(())
    }
}
