//! The booking transaction: many placements committed in one guarded transaction. The host
//! guard's SQL is in `super::host_guard`; the undo of a booking whose launch failed is in
//! `super::compensation` (re-exported here).
//!
//! Every guard is re-checked inside the transaction, so a stale host index or a second writer
//! (Cuebot, another instance) can cost a placement, never an over-booking:
//! - the host decrement runs only `WHERE idle >= amount` (per host, for the sum of its frames)
//!   on an OPEN host, and Cuebot's `verify_host_resources` trigger backs it up;
//! - a frame moves to RUNNING only `WHERE str_state = 'WAITING' AND int_version = v`, with no
//!   proc, no depends left and its layer's start-after time passed, and with at least the
//!   memory its layer asks unless the layer may be sized from history;
//! - `proc.pk_frame` is unique;
//! - every layer limit of a frame (the layer's limits as they are now, not as the pass read
//!   them) must have room against live running counts;
//! - every license a frame's layer names (`CUE_LICENSES`) must have a fresh sample with a
//!   free seat, net of the farm's starts since the sample ([`super::licenses`]);
//! - the subscription burst and the job and folder maxima must have room against what
//!   committed procs hold, the folder being the job's folder now ([`super::caps`]);
//! - the show's lease epoch (multi-instance fencing) must still be ours;
//! - a host reserved for a wide frame takes other frames only if they leave the reserved room
//!   idle or are expected to end before its shadow time ([`crate::backfill`]).
//!
//! A placement that loses a guard drops out alone and the rest commits. Row locks are taken in
//! one fixed order — show and lease (shared), layer_stat, job_stat, limit_record,
//! `stagehand.license`, the cap rows (shared), frames, hosts, each
//! sorted by key — so concurrent batches (ours or another instance's) cannot deadlock among
//! themselves, and stats-before-host is also the order of Cuebot's own booking and completion
//! paths. Host rows, the most contended, are held only from the host update to the commit.
//! Cuebot takes some rows in the other order (a proc's release: host, then subscription; a
//! change of a waiting frame: frame, then stats), so the frame and host steps wait at most
//! half a second for a row: in such a deadlock the booking yields, not Cuebot.

use std::collections::{BTreeSet, HashMap};

use postgres::Client;

use super::session::{Prepared, Tx};

pub use super::compensation::{Compensation, compensate};
use super::{
    DbError,
    caps::InFlight,
    host_guard::{self, HostColumns, amounts},
};

mod guards;
mod outcome;

use crate::{
    ids::{AllocId, FolderId, FrameId, HostId, JobId, LayerId, ProcId, ShowId},
    model::Resources,
};
pub(crate) use guards::lock_stat_rows;
use guards::{
    guard_caps, guard_fence, guard_licenses, guard_limits, guard_managed, lock_batch_stats,
};
use outcome::commit;
pub use outcome::committed;
#[cfg(feature = "sim")]
pub(crate) use outcome::outcome_unknown;

/// Exit statuses that do not count as a retry when a frame is booked again (Cuebot's list:
/// skip-retry, failed launch, 299 launch compensation, 301/302 kill codes, 399, never run).
pub(crate) const NO_RETRY_EXIT_STATUS: [i64; 7] = [286, 256, 299, 301, 302, 399, -1];

/// One frame placed on one host, ready to commit.
#[derive(Clone, Debug)]
pub struct Placement {
    /// `frame.pk_frame`.
    pub frame: FrameId,
    /// `frame.int_version` when it was read.
    pub version: i32,
    /// `frame.pk_layer`.
    pub layer: LayerId,
    /// `frame.pk_job`.
    pub job: JobId,
    /// `job.pk_show`.
    pub show: ShowId,
    /// `job.pk_folder`.
    pub folder: FolderId,
    /// `host.pk_host`.
    pub host: HostId,
    /// `host.str_name`.
    pub host_name: String,
    /// The allocation charged (`host.pk_alloc` when the host was matched): a host moved to
    /// another allocation since loses the guard.
    pub alloc: AllocId,
    /// The new proc's key (RQD's `resource_id`).
    pub proc: ProcId,
    /// What the frame reserves on the host.
    pub amount: Resources,
    /// Expected run time in seconds (`None`: unknown), for the reservation rule.
    pub est_secs: Option<f64>,
    /// The frame holds a host reservation: booking it fulfils (and drops) that reservation.
    pub holds_reservation: bool,
}

/// Why a placement dropped out of its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuardLoss {
    /// The host no longer had the idle resources, or is no longer open, UP, reporting
    /// within the ping timeout, or in the allocation charged.
    HostCapacity,
    /// The frame changed (version, state), has a proc, or its layer is not startable yet.
    Frame,
    /// A layer limit is full.
    Limit,
    /// The show's lease moved to another instance (or its epoch changed).
    Fence,
    /// The host is reserved for a wide frame and this frame would delay it.
    Reserved,
    /// The show was handed back to Cuebot (`show.b_scheduler_managed = false`).
    Unmanaged,
    /// A subscription burst or a job or folder maximum in the database has no room (it was
    /// lowered since the counters last read it).
    Cap,
    /// A license the layer needs has no free seat, or no fresh sample.
    License,
}

impl GuardLoss {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            GuardLoss::HostCapacity => "host_capacity",
            GuardLoss::Frame => "frame_changed",
            GuardLoss::Limit => "layer_limit",
            GuardLoss::Fence => "fence",
            GuardLoss::Reserved => "reserved",
            GuardLoss::Unmanaged => "unmanaged",
            GuardLoss::Cap => "cap",
            GuardLoss::License => "no_license",
        }
    }
}

/// The lease a show is booked under: (show, epoch). See `stagehand.show_lease`.
#[derive(Clone, Debug)]
pub struct Fence {
    /// This instance's key.
    pub instance: uuid::Uuid,
    /// Seconds a lease lives without a heartbeat of its owner.
    pub lease_secs: f64,
    /// The epoch per show the batch was planned under.
    pub epochs: HashMap<ShowId, i64>,
    /// Per show, the ledger re-syncs that must have completed before it may be booked (a
    /// newly claimed show waits for counters that include its previous owner's bookings).
    pub bookable_after: HashMap<ShowId, u64>,
}

impl Fence {
    /// The fence a pass over `show` books under, captured when the pass starts: only that
    /// show, at the epoch held now, and only once `resyncs` re-syncs have completed since its
    /// claim (`None`: not bookable now). Planning under one epoch and checking another at
    /// flush would let a show lost and re-claimed mid-pass book on counters of the old lease.
    pub(crate) fn for_pass(&self, show: &ShowId, resyncs: u64) -> Option<Fence> {
        let epoch = *self.epochs.get(show)?;
        let after = self.bookable_after.get(show).copied().unwrap_or(0);
        (resyncs >= after).then(|| Fence {
            instance: self.instance,
            lease_secs: self.lease_secs,
            epochs: HashMap::from([(show.clone(), epoch)]),
            bookable_after: HashMap::from([(show.clone(), after)]),
        })
    }
}

/// What a batch did: for every placement (same order), its new frame version or its loss.
#[derive(Clone, Debug, Default)]
pub struct BatchOutcome {
    /// `Ok(new int_version)` for committed frames, `Err(loss)` for the others.
    pub results: Vec<Result<i32, GuardLoss>>,
    /// Current idle resources of hosts that lost their guard (another writer booked them),
    /// so the index can correct just those hosts.
    pub stale_hosts: Vec<(String, Resources)>,
}

impl BatchOutcome {
    /// Number of committed frames.
    pub fn booked(&self) -> usize {
        self.results.iter().filter(|r| r.is_ok()).count()
    }
}

/// Static per-booking values.
#[derive(Clone, Debug)]
pub struct BookOptions {
    /// `proc.int_mem_used` at insert (KB).
    pub mem_reserved_min_kb: i64,
    /// A host whose `host_stat.ts_ping` is older than this (seconds) takes no frame.
    pub ping_timeout_secs: f64,
    /// Exit statuses that do not count as a retry besides `NO_RETRY_EXIT_STATUS`.
    pub no_retry_exit_statuses: Vec<i64>,
    /// Record the booked procs as not yet launched, owned by this instance (`Some(None)`:
    /// no instance, a single unfenced booker); `None` records nothing (dry run: nothing
    /// will be launched). See [`super::launches`].
    pub record_launches: Option<Option<uuid::Uuid>>,
    /// Live licenses (`[licenses]` with a provider): the rules their rooms are computed
    /// with; `None` ignores `CUE_LICENSES`.
    pub licenses: Option<super::licenses::LicenseRules>,
}

/// Commits as many of `placements` as pass their guards, in one transaction.
///
/// The steps run in the lock order of the module doc; each drops the placements that lose
/// its guard, and the later (costlier, more contended) steps only see what is left.
pub fn book_batch(
    client: &mut Client,
    placements: &[Placement],
    options: &BookOptions,
    fence: Option<&Fence>,
    inflight: &InFlight,
) -> Result<BatchOutcome, DbError> {
    let mut prepared = Prepared::uncached();
    book_batch_prepared(client, &mut prepared, placements, options, fence, inflight)
}

/// [`book_batch`] with the statements kept prepared in `prepared` (a pooled session's).
pub fn book_batch_prepared(
    client: &mut Client,
    prepared: &mut Prepared,
    placements: &[Placement],
    options: &BookOptions,
    fence: Option<&Fence>,
    inflight: &InFlight,
) -> Result<BatchOutcome, DbError> {
    if placements.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let mut batch = Batch::new(placements);
    let mut tx = Tx::begin(client, prepared)?;
    guard_managed(&mut tx, &mut batch)?;
    if let Some(fence) = fence {
        guard_fence(&mut tx, &mut batch, fence)?;
    }
    lock_batch_stats(&mut tx, &batch)?;
    guard_limits(&mut tx, &mut batch)?;
    if let Some(rules) = &options.licenses {
        guard_licenses(&mut tx, &mut batch, rules)?;
    }
    guard_caps(&mut tx, &mut batch, inflight)?;
    precheck_hosts(&mut tx, &mut batch, options)?;
    start_frames_on_hosts(&mut tx, &mut batch, options)?;
    let idx = batch.started_idx();
    if !idx.is_empty() {
        let inserted = insert_procs(&mut tx, &batch, &idx, options)?;
        if inserted != idx.len() {
            // Impossible while the frame guard holds (we hold the frame rows and checked for
            // procs); if it ever happens, commit nothing rather than a frame without a proc.
            tx.rollback()?;
            return Err(DbError::Schema(format!(
                "{} of {} procs conflicted on pk_frame",
                idx.len() - inserted,
                idx.len()
            )));
        }
        record_launches(&mut tx, &batch, &idx, options)?;
    }
    fulfil_reservations(&mut tx, &batch)?;
    commit(tx, batch.outcome())
}

/// A batch while its guards run: per placement, the guard it lost (`None` while it is still
/// in), the hosts found stale on the way and, once step 3 succeeded, the new version of every
/// frame that moved to RUNNING.
#[derive(Debug)]
struct Batch<'p> {
    placements: &'p [Placement],
    lost: Vec<Option<GuardLoss>>,
    stale_hosts: Vec<(String, Resources)>,
    started: HashMap<String, i32>,
}

impl<'p> Batch<'p> {
    fn new(placements: &'p [Placement]) -> Batch<'p> {
        Batch {
            placements,
            lost: vec![None; placements.len()],
            stale_hosts: Vec::new(),
            started: HashMap::new(),
        }
    }

    /// Indices of the placements that have lost no guard yet, in batch order.
    fn live(&self) -> Vec<usize> {
        (0..self.placements.len())
            .filter(|&i| self.lost[i].is_none())
            .collect()
    }

    /// Drops every live placement for which `lost` holds; the first loss of a placement is
    /// the one it reports.
    fn mark(&mut self, lost: impl Fn(&Placement) -> bool, loss: GuardLoss) {
        for (r, p) in self.lost.iter_mut().zip(self.placements) {
            if r.is_none() && lost(p) {
                *r = Some(loss);
            }
        }
    }

    /// Drops the placement `i`.
    fn drop_out(&mut self, i: usize, loss: GuardLoss) {
        self.lost[i] = Some(loss);
    }

    /// The distinct values of `key` over the live placements, sorted: the order their rows
    /// are locked in.
    fn live_keys(&self, key: fn(&Placement) -> &str) -> Vec<&'p str> {
        let placements = self.placements;
        let keys: BTreeSet<&'p str> = self.live().iter().map(|&i| key(&placements[i])).collect();
        keys.into_iter().collect()
    }

    /// Indices of the placements whose frame started, in batch order.
    fn started_idx(&self) -> Vec<usize> {
        (0..self.placements.len())
            .filter(|&i| self.started.contains_key(self.placements[i].frame.as_str()))
            .collect()
    }

    /// The outcome: the loss of every placement that lost a guard, the new frame version of
    /// the others (a frame that did not start lost the frame guard).
    fn outcome(self) -> BatchOutcome {
        let started = &self.started;
        BatchOutcome {
            results: self
                .placements
                .iter()
                .zip(self.lost)
                .map(|(p, lost)| match lost {
                    Some(loss) => Err(loss),
                    None => started
                        .get(p.frame.as_str())
                        .copied()
                        .ok_or(GuardLoss::Frame),
                })
                .collect(),
            stale_hosts: self.stale_hosts,
        }
    }
}

/// Step 3a: a cheap, unlocked look at the hosts. A host another writer has filled (or that
/// a reservation now refuses) would otherwise cost a frame update, and its triggers, that
/// step 3 then rolls back. Unlocked because it only saves work: step 3 re-checks under the
/// lock.
fn precheck_hosts(
    tx: &mut Tx<'_>,
    batch: &mut Batch<'_>,
    options: &BookOptions,
) -> Result<(), DbError> {
    let idx = batch.live();
    if idx.is_empty() {
        return Ok(());
    }
    let placements = batch.placements;
    let per_host = HostColumns::of(idx.iter().map(|&i| &placements[i]));
    let (short, reserved) = host_guard::read_short_hosts(
        tx,
        &per_host,
        options.ping_timeout_secs,
        &mut batch.stale_hosts,
    )?;
    batch.mark(|p| reserved.contains(p.host.as_str()), GuardLoss::Reserved);
    batch.mark(|p| short.contains(p.host.as_str()), GuardLoss::HostCapacity);
    Ok(())
}

/// Attempts of step 3 before the batch gives up on the frames still in.
const START_ATTEMPTS: usize = 4;

/// Step 3: frames (version guard: a frame another writer moved on since it was read is not
/// booked twice), then hosts (capacity guard, locked in key order last, so the most contended
/// rows are held the shortest, only to the commit). A host that lost its guard rolls the
/// frames back to the savepoint and the batch is retried without that host's frames.
fn start_frames_on_hosts(
    tx: &mut Tx<'_>,
    batch: &mut Batch<'_>,
    options: &BookOptions,
) -> Result<(), DbError> {
    for _attempt in 0..START_ATTEMPTS {
        let idx = batch.live();
        if idx.is_empty() {
            break;
        }
        match try_start(tx, batch.placements, &idx, options)? {
            Attempt::Started(started) => {
                batch.mark(
                    |p| !started.contains_key(p.frame.as_str()),
                    GuardLoss::Frame,
                );
                batch.started = started;
                break;
            }
            Attempt::HostsLost(lost_hosts) => {
                let lost: Vec<&str> = lost_hosts.iter().copied().collect();
                batch.stale_hosts.extend(host_guard::idle_now(tx, &lost)?);
                batch.mark(
                    |p| lost_hosts.contains(p.host.as_str()),
                    GuardLoss::HostCapacity,
                );
            }
        }
    }
    Ok(())
}

/// What one attempt of step 3 did.
enum Attempt<'p> {
    /// Every host of the frames that started had room: the new version per started frame.
    Started(HashMap<String, i32>),
    /// These hosts had no room; the attempt was rolled back.
    HostsLost(BTreeSet<&'p str>),
}

/// How long step 3 waits for one frame or host row before the batch gives up (a retryable
/// error; the next pass books again). Cuebot takes these rows in the other order — a proc's
/// release updates its host and then the show's subscription, which the cap guard holds
/// shared; a change of a waiting frame updates the frame and then its layer's and job's stat
/// rows, which step 1 holds — and when Cuebot's wait is the older one, PostgreSQL's deadlock
/// detector aborts Cuebot's transaction. Below `deadlock_timeout` (1 s by default), the
/// booking yields first. The steps before keep no such bound: batches of this scheduler
/// queue there on purpose (a limit's or a license's rows).
const START_LOCK_TIMEOUT_MS: u32 = 500;

/// One attempt of step 3 under a savepoint: starts the frames of `idx`, then takes the hosts
/// of those that started. Kept only if every such host had room, so a frame never stays
/// RUNNING on a host that was not charged.
fn try_start<'p>(
    tx: &mut Tx<'_>,
    placements: &'p [Placement],
    idx: &[usize],
    options: &BookOptions,
) -> Result<Attempt<'p>, DbError> {
    let mut sp = tx.savepoint("frames")?;
    sp.inner()
        .batch_execute(&format!("SET LOCAL lock_timeout = {START_LOCK_TIMEOUT_MS}"))?;
    let started = start_frames(&mut sp, placements, idx, options)?;
    let winners = idx
        .iter()
        .map(|&i| &placements[i])
        .filter(|p| started.contains_key(p.frame.as_str()));
    let per_host = HostColumns::of(winners.clone());
    let host_ok = host_guard::decrement_hosts(&mut sp, &per_host, options.ping_timeout_secs)?;
    let lost_hosts: BTreeSet<&'p str> = winners
        .map(|p| p.host.as_str())
        .filter(|h| !host_ok.contains(*h))
        .collect();
    if lost_hosts.is_empty() {
        sp.commit()?;
        Ok(Attempt::Started(started))
    } else {
        drop(sp); // ROLLBACK TO SAVEPOINT: the frames are WAITING again.
        Ok(Attempt::HostsLost(lost_hosts))
    }
}

/// Step 4: procs for the started frames (`idx`); returns how many were inserted. A proc per
/// frame is what Cuebot counts as booked; `ON CONFLICT` so a second proc for a frame is
/// counted, not raised, and the caller can refuse the whole batch.
fn insert_procs(
    tx: &mut Tx<'_>,
    batch: &Batch<'_>,
    idx: &[usize],
    options: &BookOptions,
) -> Result<usize, DbError> {
    let c = ProcColumns::of(batch.placements, idx);
    let (cores, mem, gpus, gpu_mem) = &c.amounts;
    let inserted = tx.execute(
        "INSERT INTO proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, int_cores_reserved,
                           int_mem_reserved, int_mem_pre_reserved, int_mem_used, int_gpus_reserved,
                           int_gpu_mem_reserved, int_gpu_mem_pre_reserved, int_gpu_mem_used, b_local)
         SELECT b.pk_proc, b.pk_host, b.pk_show, b.pk_layer, b.pk_job, b.pk_frame, b.cores, b.mem, b.mem,
                $11, b.gpus, b.gpu_mem, b.gpu_mem, 0, false
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])
                AS b(pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, cores, mem, gpus, gpu_mem)
         ON CONFLICT (pk_frame) DO NOTHING",
        &[&c.procs, &c.hosts, &c.shows, &c.layers, &c.jobs, &c.frames, cores, mem, gpus, gpu_mem, &options.mem_reserved_min_kb],
    )?;
    Ok(inserted as usize)
}

/// Step 4b: the new procs recorded as pending launch in the same transaction, so a booking
/// whose instance dies before RQD took it is found and undone ([`super::launches`]).
fn record_launches(
    tx: &mut Tx<'_>,
    batch: &Batch<'_>,
    idx: &[usize],
    options: &BookOptions,
) -> Result<(), DbError> {
    let Some(owner) = &options.record_launches else {
        return Ok(());
    };
    let c = ProcColumns::of(batch.placements, idx);
    let versions: Vec<i32> = c.frames.iter().map(|f| batch.started[*f]).collect();
    super::launches::record(tx, &c, &versions, *owner)
}

/// The columns of the proc rows of placements `idx`.
pub(super) struct ProcColumns<'p> {
    pub(super) procs: Vec<&'p str>,
    pub(super) hosts: Vec<&'p str>,
    pub(super) shows: Vec<&'p str>,
    layers: Vec<&'p str>,
    jobs: Vec<&'p str>,
    pub(super) frames: Vec<&'p str>,
    amounts: host_guard::Columns,
}

impl<'p> ProcColumns<'p> {
    fn of(placements: &'p [Placement], idx: &[usize]) -> ProcColumns<'p> {
        let col = |f: fn(&Placement) -> &str| -> Vec<&'p str> {
            idx.iter().map(|&i| f(&placements[i])).collect()
        };
        ProcColumns {
            procs: col(|p| &p.proc),
            hosts: col(|p| &p.host),
            shows: col(|p| &p.show),
            layers: col(|p| &p.layer),
            jobs: col(|p| &p.job),
            frames: col(|p| &p.frame),
            amounts: amounts(idx.iter().map(|&i| placements[i].amount)),
        }
    }
}

/// Step 5: reservations of wide frames that just booked are fulfilled, in the booking's
/// transaction, so a reservation never outlives (or is dropped before) its frame's booking.
fn fulfil_reservations(tx: &mut Tx<'_>, batch: &Batch<'_>) -> Result<(), DbError> {
    let fulfilled: Vec<&str> = batch
        .placements
        .iter()
        .filter(|p| p.holds_reservation && batch.started.contains_key(p.frame.as_str()))
        .map(|p| p.frame.as_str())
        .collect();
    super::reservations::fulfil(tx.inner(), &fulfilled)?;
    Ok(())
}

/// Moves the frames of `idx` from WAITING to RUNNING under the version guard; returns the new
/// version of each frame that moved. A frame with depends left never moves, and a frame
/// booked with less memory than its layer asks moves only while the layer may be sized from
/// history (`b_optimize`): a frame that ran out of memory made Cuebot clear that and raise
/// `int_mem_min`, and a booking planned from the layer as it was before loses here. The job is re-read here too: a pause (or a kill) that
/// committed after the pass read the job but before this statement wins, so a frame of a job
/// paused meanwhile is not started; a pause committing while this transaction runs is
/// ordered after the booking, as if the user had paused a moment later.
///
/// The state test is written `(…) IS TRUE` so no index can serve it: the frames are reached
/// by their keys only. Otherwise a plan made while statistics say few frames wait (a farm
/// just drained) walks the state index over every WAITING frame, and a prepared statement
/// keeps that plan until the table is analysed again.
///
/// A frame whose earlier launch is unresolved (a `stagehand.pending_launch` row, V006) does
/// not move: Cuebot may have stopped it after that booking committed, with a kill that
/// reached RQD before the launch did, and the launch may still start it (see
/// `pipeline::launch`).
fn start_frames(
    tx: &mut Tx<'_>,
    placements: &[Placement],
    idx: &[usize],
    options: &BookOptions,
) -> Result<HashMap<String, i32>, DbError> {
    let frames: Vec<&str> = idx.iter().map(|&i| placements[i].frame.as_str()).collect();
    let versions: Vec<i32> = idx.iter().map(|&i| placements[i].version).collect();
    let hosts: Vec<&str> = idx
        .iter()
        .map(|&i| placements[i].host_name.as_str())
        .collect();
    let (cores, mem, gpus, gpu_mem) = amounts(idx.iter().map(|&i| placements[i].amount));
    let skip: Vec<i64> = NO_RETRY_EXIT_STATUS
        .iter()
        .chain(&options.no_retry_exit_statuses)
        .copied()
        .collect();
    let rows = tx.query(
        "UPDATE frame f
            SET str_state = 'RUNNING', str_host = b.host, int_cores = b.cores, int_mem_reserved = b.mem,
                int_gpus = b.gpus, int_gpu_mem_reserved = b.gpu_mem, ts_updated = now(),
                ts_started = now(), ts_stopped = NULL, int_version = coalesce(f.int_version, 0) + 1,
                int_retries = f.int_retries + CASE WHEN f.int_exit_status = ANY($7) THEN 0 ELSE 1 END
           FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $8::bigint[])
                AS b(pk_frame, version, host, cores, mem, gpus, gpu_mem)
          WHERE f.pk_frame = b.pk_frame AND (f.str_state = 'WAITING') IS TRUE
            AND coalesce(f.int_version, 0) = b.version
            AND NOT EXISTS (SELECT 1 FROM proc p WHERE p.pk_frame = f.pk_frame)
            AND NOT EXISTS (SELECT 1 FROM stagehand.pending_launch pl WHERE pl.pk_frame = f.pk_frame)
            AND f.int_depend_count = 0
            AND EXISTS (SELECT 1 FROM layer l WHERE l.pk_layer = f.pk_layer
                         AND (l.ts_start_after IS NULL OR l.ts_start_after <= now())
                         AND (b.mem >= l.int_mem_min OR l.b_optimize))
            AND EXISTS (SELECT 1 FROM job j WHERE j.pk_job = f.pk_job
                         AND j.str_state = 'PENDING' AND NOT j.b_paused)
      RETURNING f.pk_frame, f.int_version",
        &[&frames, &versions, &hosts, &cores, &mem, &gpus, &skip, &gpu_mem],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[cfg(test)]
mod tests {
    use super::{
        guards::{batch_shows, take_limit_room},
        *,
    };

    fn placement(frame: &str, show: &str, host: &str) -> Placement {
        Placement {
            frame: frame.into(),
            version: 0,
            layer: format!("l-{frame}").into(),
            job: "j".into(),
            show: show.into(),
            folder: "f".into(),
            host: host.into(),
            host_name: host.into(),
            alloc: "a".into(),
            proc: format!("p-{frame}").into(),
            amount: Resources::ZERO,
            est_secs: None,
            holds_reservation: false,
        }
    }

    #[test]
    fn limit_rooms_are_consumed_in_batch_order() {
        let ps = ["f1", "f2", "f3", "f4", "f5"].map(|f| placement(f, "s", "h"));
        // Keyed by layer (`l-<frame>`); f5's layer has no limit.
        let limits: HashMap<String, Vec<String>> = [
            ("l-f1", &["lic"][..]),
            ("l-f2", &["lic", "other"]),
            ("l-f3", &["lic"]),
            ("l-f4", &["unknown"]),
        ]
        .into_iter()
        .map(|(l, ids)| (l.to_owned(), ids.iter().map(|s| (*s).to_owned()).collect()))
        .collect();
        let mut room = HashMap::from([("lic".to_owned(), 2), ("other".to_owned(), 0)]);
        // f2 is refused by `other` and so takes nothing of `lic`: f3 still fits.
        assert_eq!(
            take_limit_room(&mut room, &ps, &[0, 1, 2, 3, 4], &limits),
            [1]
        );
        assert_eq!(room["lic"], 0);
        assert_eq!(take_limit_room(&mut room, &ps, &[2], &limits), [2]);
    }

    #[test]
    fn the_first_loss_is_the_one_reported() {
        let ps = [
            placement("f1", "gone", "h1"),
            placement("f2", "s", "h1"),
            placement("f3", "s", "h2"),
            placement("f4", "s", "h3"),
        ];
        let mut batch = Batch::new(&ps);
        batch.mark(|p| p.show == "gone", GuardLoss::Unmanaged);
        batch.mark(|p| p.host == "h1", GuardLoss::HostCapacity);
        assert_eq!(batch.live(), [2, 3]);
        assert_eq!(batch.live_keys(|p| &p.show), ["s"]);
        batch.started = HashMap::from([("f3".to_owned(), 7), ("f1".to_owned(), 9)]);
        assert_eq!(batch.started_idx(), [0, 2]);
        let outcome = batch.outcome();
        assert_eq!(
            outcome.results,
            [
                Err(GuardLoss::Unmanaged),
                Err(GuardLoss::HostCapacity),
                Ok(7),
                Err(GuardLoss::Frame),
            ]
        );
    }

    #[test]
    fn shows_are_distinct_and_sorted() {
        let ps = [
            placement("f1", "b", "h"),
            placement("f2", "a", "h"),
            placement("f3", "b", "h"),
        ];
        assert_eq!(batch_shows(&ps), ["a", "b"]);
    }
}
