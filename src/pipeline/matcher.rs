//! One cluster pass: select pending jobs, their layers and WAITING frames; place each frame on
//! a host through the index (atomic earmark) and the ledger (atomic cap charge); commit
//! the placements in guarded batches (`pipeline::batch`); hand the committed frames to the
//! launchers.
//!
//! Every path that does not commit gives its earmark and its charge back (both are RAII
//! values dropped on the way out), so nothing leaks on an error, a lost guard or a panic.

mod input;
mod order;
mod turns;
mod veto;

use input::{PassInput, read_pass};
use order::{Ahead, AheadCheck};
use turns::Lane;

use std::{
    cell::Cell,
    collections::{HashMap, HashSet},
    sync::Arc,
};

use crossbeam_channel::Sender;

use super::{
    Shared,
    batch::{Committer, FrameResult, Planned},
    launch::{LaunchTask, LayerLaunch},
    sized::SizedLayer,
    waiting::Reason,
};
use crate::{
    accounting::{Cap, Charge, Ticket},
    backfill::{self, HoldMap},
    cluster::{
        Cluster,
        feed::{Ending, PassResult},
    },
    config::{Config, JobOrder},
    db::{
        self,
        booking::{Fence, Placement},
        jobs::{FrameWork, LayerWork, PendingJob},
    },
    frameset::FrameSet,
    ids::{AllocId, JobId, LayerId, ProcId},
    index::{Affinity, Earmark, Prefer, Request},
    metrics,
    model::{CoresGpus, Resources},
    sizing::{self, LayerColumns, LayerShape, Rules},
};

/// Runs one pass over `cluster`.
pub fn pass(shared: &Shared, cluster: &Cluster, launches: &Sender<LaunchTask>) -> PassResult {
    pass_reporting(shared, cluster, launches, &mut db::Kept::default()).0
}

/// Runs one pass over `cluster`, and says how it ended: [`Ending::MoreWork`] when it booked
/// and took a full page of jobs and no layer of it stopped for room ([`Reason::is_room`]):
/// then the cluster has more jobs than a pass takes and room for them, and the feed may run
/// a second pass of it beside the next one (issue 14: the last half of a drain was one
/// cluster's passes, one at a time, with PostgreSQL a quarter idle between them);
/// [`Ending::HeldBack`] when it booked nothing and none of its work waited for room.
/// The pass runs on `kept`, the booking thread's connection between its passes.
pub(crate) fn pass_reporting(
    shared: &Shared,
    cluster: &Cluster,
    launches: &Sender<LaunchTask>,
    kept: &mut db::Kept,
) -> (PassResult, Ending) {
    match run(shared, cluster, launches, kept) {
        Ok(report) => report,
        Err(e) => {
            metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
            log::warn!("pass over cluster {} failed: {e}", cluster.key);
            (PassResult::Error, Ending::Plain)
        }
    }
}

fn run(
    shared: &Shared,
    cluster: &Cluster,
    launches: &Sender<LaunchTask>,
    kept: &mut db::Kept,
) -> Result<(PassResult, Ending), db::DbError> {
    let fence = match pass_fence(shared, cluster) {
        Ok(fence) => fence,
        Err(ending) => return Ok((PassResult::Saturated, ending)),
    };
    kept.run(&shared.pool, |conn| {
        run_on(shared, cluster, launches, fence, conn)
    })
}

/// The pass itself, on `conn`: read, match, commit in batches.
fn run_on(
    shared: &Shared,
    cluster: &Cluster,
    launches: &Sender<LaunchTask>,
    fence: Option<Fence>,
    conn: &mut db::Conn,
) -> Result<(PassResult, Ending), db::DbError> {
    let config = shared.config.load_full();
    let mut input = match read_pass(shared, conn, cluster, &config)? {
        Ok(input) => input,
        // Saturated before matching: every job with work was at its maximum.
        Err(PassResult::Saturated) => return Ok((PassResult::Saturated, Ending::HeldBack)),
        Err(result) => return Ok((result, Ending::Plain)),
    };
    let full_page = input.full_page;
    let limit_rooms = std::mem::take(&mut input.limit_rooms);
    let mut m = Matcher {
        shared,
        config: &config,
        cluster,
        allocs: cluster.allocs.iter().cloned().collect(),
        full_allocs: HashSet::new(),
        holds: shared.holds.snapshot(),
        tallies: HashMap::new(),
        batch: Vec::new(),
        booked: 0,
        seats: shared.licenses.pass(),
        limit_rooms,
        committer: Committer {
            shared,
            config: &config,
            fence,
            launches,
        },
        conn,
    };
    m.match_jobs(&input)?;
    m.flush()?;
    // The claims and pins go only now, after the last batch committed.
    drop(input);
    m.record_tallies();
    // A pass that had jobs of its own and booked none is saturated even when other jobs were
    // held elsewhere: retrying it every `BUSY_RETRY` would spin on a full farm.
    let for_room = m
        .tallies
        .values()
        .any(|t| t.reason.is_some_and(Reason::is_room));
    if m.booked == 0 {
        let ending = if for_room {
            Ending::Plain
        } else {
            Ending::HeldBack
        };
        return Ok((PassResult::Saturated, ending));
    }
    let ending = if full_page && !for_room {
        Ending::MoreWork
    } else {
        Ending::Plain
    };
    Ok((PassResult::Booked(m.booked), ending))
}

/// The fence this pass books under, captured now with the may-book check, so every batch
/// commits only under the lease epoch its counters were planned under. `Err` when the pass
/// must not run: the show is not bookable yet ([`Ending::Plain`]), or every allocation of the
/// cluster is at its burst ([`Ending::HeldBack`]); `Ok(None)` books unfenced (a single
/// instance).
fn pass_fence(shared: &Shared, cluster: &Cluster) -> Result<Option<Fence>, Ending> {
    let fence = match shared.lease.fence().as_ref() {
        None => None,
        Some(f) => Some(
            f.for_pass(&cluster.show, shared.ledger.resyncs())
                .ok_or(Ending::Plain)?,
        ),
    };
    if cluster
        .allocs
        .iter()
        .all(|a| shared.ledger.sub_headroom(&cluster.show, a) <= 0)
    {
        metrics::LIMIT_EXCEEDED
            .with_label_values(&[Cap::Subscription.label()])
            .inc();
        shared.ask_counters();
        return Err(Ending::HeldBack);
    }
    Ok(fence)
}

/// Why a layer stops being matched in this pass.
enum Stop {
    /// No host takes the next frame, for this reason.
    NoHost(Reason),
    /// A cap of the job (or its folder) is full: skip the job.
    JobCapped,
    /// A host the next frame was offered fits these layers earlier in the pass's order,
    /// stopped for room (indexes among its layers): the pass goes back to them first (see
    /// [`order`]).
    Yield(Vec<usize>),
}

/// Why no host took a frame.
enum Miss {
    /// The last reason a candidate was refused (`None`: nothing but room was missing).
    Veto(Option<Reason>),
    /// A host would have taken it, but these layers earlier in the pass's order (indexes
    /// among its layers) fit that host too.
    Yield(Vec<usize>),
}

/// A job's core headroom under its caps (`None`: uncapped) as the host sizing takes it.
fn core_room(headroom: Option<i64>) -> Option<u32> {
    headroom.map(|c| c.clamp(0, i64::from(u32::MAX)) as u32)
}

/// What a pass saw of one layer, for the waiting-frames gauge.
struct LayerTally {
    waiting: i64,
    booked: i64,
    reason: Option<Reason>,
}

struct Matcher<'a> {
    shared: &'a Shared,
    config: &'a Config,
    cluster: &'a Cluster,
    /// The cluster's allocations: the only ones its candidate hosts may be in.
    allocs: HashSet<AllocId>,
    /// Allocations whose subscription refused a charge this pass.
    full_allocs: HashSet<AllocId>,
    /// Hosts reserved for wide frames, as of the start of the pass.
    holds: Arc<HoldMap>,
    /// Per layer: waiting frames, frames booked, why the rest waits.
    tallies: HashMap<LayerId, LayerTally>,
    batch: Vec<Planned>,
    booked: usize,
    /// License seats this pass may still plan on (a hint; the batch re-checks).
    seats: crate::licenses::PassSeats<'a>,
    /// Room under each layer limit of the pass's layers, less what the pass planned (a hint;
    /// the batch re-checks under the limit rows' lock).
    limit_rooms: HashMap<String, i64>,
    committer: Committer<'a>,
    conn: &'a mut db::Conn,
}

/// What every frame of one layer shares while it is matched.
struct LayerPlan<'l> {
    job: &'l PendingJob,
    layer: &'l LayerWork,
    /// The parsed range, to build the chunk RQD runs (`None` in a dry run).
    frame_set: Option<FrameSet>,
    shape: LayerShape,
    rules: Rules,
    /// What a GPU host keeps free per GPU for GPU frames.
    gpu_room: Resources,
    /// The layer's tags that this cluster covers.
    tags: Vec<String>,
    share: Option<(u32, u32)>,
    /// Locality: the layer and job, and how strongly warm hosts are preferred.
    prefer: Prefer,
    job_env: &'l [(String, String)],
    layer_env: &'l [(String, String)],
    /// The licenses its frames need (empty with `[licenses]` off).
    licenses: &'l [String],
}

impl LayerPlan<'_> {
    /// The index search for this layer's frames.
    fn request(&self) -> Request<'_> {
        let os = self.job.os.trim();
        Request {
            tags: &self.tags,
            floor: sizing::floor(&self.shape),
            os: if os.is_empty() { None } else { Some(os) },
            threadable: self.shape.threadable,
            share: self.share,
            prefer: Some(self.prefer),
        }
    }
}

impl Matcher<'_> {
    /// Matches the pass's jobs: job after job, each job's layers in order (a job whose cap is
    /// full is left for the next), or under the `proportional` order frame by frame in
    /// turns drawn by priority ([`turns`]).
    fn match_jobs(&mut self, input: &PassInput<'_>) -> Result<(), db::DbError> {
        let mut by_job: HashMap<&JobId, Vec<&LayerWork>> = HashMap::new();
        for layer in &input.layers {
            by_job.entry(&layer.job).or_default().push(layer);
        }
        let no_env = Vec::new();
        let mut lanes = Vec::new();
        for job in &input.jobs {
            metrics::JOBS_PROCESSED
                .with_label_values(&[&self.cluster.show_name])
                .inc();
            let Some(job_layers) = by_job.get(&job.id) else {
                continue;
            };
            let jenv = input.job_env.get(&job.id).unwrap_or(&no_env);
            let mut plans = Vec::new();
            for layer in job_layers {
                let lenv = input.layer_env.get(&layer.id).unwrap_or(&no_env);
                // Before matching: a batch may commit inside `layer` and count its frames.
                self.tallies.entry(layer.id.clone()).or_insert(LayerTally {
                    waiting: layer.waiting,
                    booked: 0,
                    reason: None,
                });
                plans.extend(self.plan_layer(job, layer, jenv, lenv));
            }
            lanes.push(Lane {
                priority: job.priority,
                plans,
                layer: 0,
                frame: 0,
            });
        }
        if self.config.scheduler.job_order == JobOrder::Proportional {
            return self.match_in_turns(lanes);
        }
        self.match_in_order(&lanes)
    }

    /// Records why `plan`'s layer stopped, if it did; true when its whole job stops (a cap of
    /// the job or its folder is full).
    fn stopped(&mut self, plan: &LayerPlan<'_>, stop: Option<Stop>) -> bool {
        let (reason, job_stops) = match stop {
            None | Some(Stop::Yield(_)) => return false,
            Some(Stop::NoHost(reason)) => (reason, false),
            Some(Stop::JobCapped) => (Reason::JobCap, true),
        };
        if let Some(t) = self.tallies.get_mut(&plan.layer.id) {
            t.reason = Some(reason);
        }
        job_stops
    }

    /// Publishes why each layer's remaining frames wait, as this pass saw it.
    fn record_tallies(&self) {
        for (layer, t) in &self.tallies {
            match t.reason {
                Some(reason) => self
                    .shared
                    .waiting
                    .record(layer, reason, t.waiting - t.booked),
                None => self.shared.waiting.clear(layer),
            }
        }
    }

    /// What the layer's frames share; `None` when the layer cannot be matched in this
    /// cluster (no tag of it here), or its range is malformed — that loses nothing: its
    /// frames stay WAITING and the problem is logged and counted.
    fn plan_layer<'l>(
        &self,
        job: &'l PendingJob,
        layer: &'l LayerWork,
        job_env: &'l [(String, String)],
        layer_env: &'l [(String, String)],
    ) -> Option<LayerPlan<'l>> {
        let s = &self.config.scheduler;
        let frame_set = if self.config.rqd.dry_run {
            None
        } else {
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
                    return None;
                }
            }
        };
        let tags: Vec<String> = layer
            .tags
            .iter()
            .filter(|t| self.cluster.tags.contains(t))
            .cloned()
            .collect();
        if tags.is_empty() {
            return None;
        }
        let columns = LayerColumns {
            cores: (layer.cores_min, layer.cores_max),
            mem_min: self.memory_to_book(job, layer),
            gpus: (layer.gpus_min, layer.gpu_mem_min),
            threadable: layer.threadable,
        };
        let selfish = layer
            .services
            .iter()
            .any(|svc| s.selfish_services.contains(svc));
        let shape = LayerShape::from_columns(&columns, selfish);
        Some(LayerPlan {
            job,
            layer,
            frame_set,
            shape,
            rules: Rules {
                memory_stranded_threshold_kb: s.memory_stranded_threshold_kb,
            },
            gpu_room: Resources {
                cores: s.gpu_host_cores_per_gpu.saturating_mul(crate::model::CORE),
                mem_kb: s.gpu_host_mem_per_gpu_kb,
                ..Resources::ZERO
            },
            tags,
            share: self.shared.lease.host_share(),
            prefer: Prefer {
                affinity: Affinity::of(&layer.id, &job.id),
                locality: s.locality,
            },
            job_env,
            layer_env,
            licenses: if self.config.licenses.provider().is_some() {
                &layer.licenses
            } else {
                &[]
            },
        })
    }

    /// The memory (KB) the layer's frames book: from its history when `[memory]` says so
    /// (published on the sized-layers board), else what it asks. The booking re-checks it
    /// against the layer row (see `db::booking`), so a raise committed since this read wins.
    fn memory_to_book(&self, job: &PendingJob, layer: &LayerWork) -> i64 {
        let asked = layer.mem_min.max(0) as u64;
        let booked = sizing::booked_memory(asked, &layer.history, &self.config.memory);
        match booked {
            Some(booked_kb) => {
                self.shared.sized.record(
                    &layer.id,
                    SizedLayer {
                        job: job.name.clone(),
                        layer: layer.name.clone(),
                        asked_kb: asked,
                        booked_kb,
                    },
                );
                booked_kb as i64
            }
            None => {
                self.shared.sized.clear(&layer.id);
                layer.mem_min
            }
        }
    }

    /// Whether every limit of `layer` has room left in this pass; a limit without a row
    /// never refuses (as the batch's guard).
    fn limit_room_left(&self, layer: &LayerWork) -> bool {
        layer.limits.iter().all(|l| {
            self.limit_rooms
                .get(l.as_str())
                .is_none_or(|&room| room > 0)
        })
    }

    /// Takes one from the room of every limit of `layer`.
    fn take_limit_room(&mut self, layer: &LayerWork) {
        for l in &layer.limits {
            if let Some(room) = self.limit_rooms.get_mut(l.as_str()) {
                *room -= 1;
            }
        }
    }

    /// Places, charges and batches one frame, leaving to the layers `ahead` (stopped for
    /// room earlier in the pass) every host one of them fits; `Some` when its layer (or job)
    /// stops here.
    fn frame(
        &mut self,
        plan: &LayerPlan<'_>,
        request: &Request<'_>,
        frame: &FrameWork,
        ahead: &[Ahead<'_, '_>],
    ) -> Result<Option<Stop>, db::DbError> {
        // A job with less than a core left under its cap fits no host: say so without a
        // search (or a wide-frame reservation it could not use).
        let headroom = self.shared.ledger.job_headroom(&plan.job.id);
        if headroom.is_some_and(|c| c < i64::from(crate::model::CORE)) {
            return Ok(Some(Stop::JobCapped));
        }
        // A layer whose limit is full would only take hosts the rest of the pass could use
        // and lose them at the batch's limit guard, pass after pass.
        if !self.limit_room_left(plan.layer) {
            return Ok(Some(Stop::NoHost(Reason::Limit)));
        }
        let no_license = Ok(Some(Stop::NoHost(Reason::NoLicense)));
        if !plan.licenses.is_empty() && !self.seats.may_admit(plan.licenses) {
            return no_license;
        }
        let earmark = match self.place(plan, request, frame, headroom, ahead) {
            Ok(r) => r,
            Err(Miss::Yield(wanting)) => return Ok(Some(Stop::Yield(wanting))),
            Err(Miss::Veto(veto)) => return self.no_host(plan, request, frame, veto).map(Some),
        };
        // The earmark is given back as it drops.
        if !plan.licenses.is_empty() && !self.seats.take(plan.licenses, earmark.host_name()) {
            return no_license;
        }
        // A refused charge drops the earmark with it.
        let (ticket, charge) = match self.charge(plan, frame, &earmark) {
            Ok(charged) => charged,
            Err(Cap::Subscription) => return Ok(None),
            Err(_) => return Ok(Some(Stop::JobCapped)),
        };
        metrics::CHECKOUT_OUTCOME
            .with_label_values(&["booked"])
            .inc();
        self.take_limit_room(plan.layer);
        // A frame we cannot describe to RQD is not booked; it stays WAITING.
        if self.plan_frame(plan, frame, earmark, ticket, charge)
            && self.batch.len() >= self.config.scheduler.batch_size
        {
            self.flush()?;
        }
        Ok(None)
    }

    /// Finds and atomically reserves a host for `frame` within the job's core `headroom`
    /// (`None`: uncapped); `Err` carries the last reason a candidate was refused (`None`:
    /// nothing but room was missing).
    fn place(
        &self,
        plan: &LayerPlan<'_>,
        request: &Request<'_>,
        frame: &FrameWork,
        headroom: Option<i64>,
        ahead: &[Ahead<'_, '_>],
    ) -> Result<Earmark, Miss> {
        let job_remaining = core_room(headroom);
        let now = backfill::now_secs();
        let veto: Cell<Option<Reason>> = Cell::new(None);
        let ahead = AheadCheck::new(self, ahead);
        let strategy = &self.config.scheduler.placement;
        let placed = self.shared.index.place(request, strategy, |host| {
            if ahead.yielded() {
                return None;
            }
            match self.size_on(plan, frame, host, job_remaining, now) {
                Ok(_) if ahead.wanted(self, &frame.id, host, now) => None,
                Ok(amount) => Some(amount),
                Err(reason) => {
                    if reason.is_some() {
                        veto.set(reason);
                    }
                    None
                }
            }
        });
        // A host a layer ahead wants goes to it first, even when a scored search had
        // already gathered another (its earmark is given back as it drops).
        match placed {
            _ if ahead.yielded() => Err(Miss::Yield(ahead.into_wanting())),
            Some(earmark) => Ok(earmark),
            None => Err(Miss::Veto(veto.get())),
        }
    }

    /// Charges the frame's amount against the caps; `Err` names the cap that refused it. A
    /// full subscription marks the allocation full for the pass (other allocations may still
    /// take the layer); any other cap stops the job.
    fn charge(
        &mut self,
        plan: &LayerPlan<'_>,
        frame: &FrameWork,
        earmark: &Earmark,
    ) -> Result<(Ticket, Charge), Cap> {
        let charge = Charge {
            show: plan.job.show.clone(),
            alloc: earmark.alloc().clone(),
            folder: plan.job.folder.clone(),
            job: plan.job.id.clone(),
            amount: CoresGpus::of(&earmark.amount()),
        };
        match self.shared.ledger.charge(&charge) {
            Ok(ticket) => Ok((ticket, charge)),
            Err(rejection) => {
                self.shared.stats.rejected(1);
                log::debug!(
                    "frame {} refused by {} cap ({} + {} > {})",
                    frame.name,
                    rejection.cap.label(),
                    rejection.current,
                    charge.amount.cores,
                    rejection.limit
                );
                if rejection.cap == Cap::Subscription
                    && self.full_allocs.insert(earmark.alloc().clone())
                {
                    self.shared.ask_counters();
                }
                Err(rejection.cap)
            }
        }
    }

    /// Adds the placed and charged frame to the batch; false (and nothing added) when it
    /// is to be launched but its chunk cannot be described to RQD.
    fn plan_frame(
        &mut self,
        plan: &LayerPlan<'_>,
        frame: &FrameWork,
        earmark: Earmark,
        ticket: Ticket,
        charge: Charge,
    ) -> bool {
        let (job, layer) = (plan.job, plan.layer);
        let amount = earmark.amount();
        let proc = ProcId::fresh();
        let launch = plan.frame_set.as_ref().and_then(|frames| {
            LayerLaunch {
                job,
                layer,
                frames,
                job_env: plan.job_env,
                layer_env: plan.layer_env,
            }
            .describe(frame, &proc, amount)
        });
        if !self.config.rqd.dry_run && launch.is_none() {
            return false;
        }
        let placement = Placement {
            frame: frame.id.clone(),
            version: frame.version,
            layer: layer.id.clone(),
            job: job.id.clone(),
            show: job.show.clone(),
            folder: job.folder.clone(),
            host: earmark.host_id().clone(),
            host_name: earmark.host_name().to_owned(),
            alloc: earmark.alloc().clone(),
            proc,
            amount,
            est_secs: layer.est_secs,
            holds_reservation: self.holds.holds_frame(&frame.id),
        };
        self.batch.push(Planned {
            placement,
            earmark,
            ticket,
            charge,
            launch,
            waited_secs: frame.waited_secs,
            show_name: self.cluster.show_name.clone(),
        });
        true
    }

    /// Commits the batch and tallies each frame's result per layer.
    fn flush(&mut self) -> Result<(), db::DbError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let results = self.committer.commit(self.conn, batch)?;
        let mut booked = 0;
        for (layer, result) in results {
            let tally = self.tallies.get_mut(&layer);
            match (result, tally) {
                (FrameResult::Booked, tally) => {
                    booked += 1;
                    if let Some(t) = tally {
                        t.booked += 1;
                    }
                }
                (FrameResult::Lost(Some(reason)), Some(t)) => t.reason = Some(reason),
                (FrameResult::Lost(_), _) => {}
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
