//! The booking transaction: many placements committed in one guarded transaction, and the
//! compensation of a booking whose launch failed.
//!
//! Every guard is re-checked inside the transaction, so a stale host index or a second writer
//! (Cuebot, another instance) can cost a placement, never an over-booking:
//! - the host decrement runs only `WHERE idle >= amount` (per host, for the sum of its frames)
//!   on an OPEN host, and Cuebot's `verify_host_resources` trigger backs it up;
//! - a frame moves to RUNNING only `WHERE str_state = 'WAITING' AND int_version = v`, with no
//!   proc and its layer's start-after time passed;
//! - `proc.pk_frame` is unique;
//! - every layer limit of a frame must have room against live running counts;
//! - the subscription burst and the job and folder maxima must have room against what
//!   committed procs hold ([`super::caps`]);
//! - the show's lease epoch (multi-instance fencing) must still be ours;
//! - a host reserved for a wide frame takes other frames only if they leave the reserved room
//!   idle or are expected to end before its shadow time ([`crate::backfill`]).
//!
//! A placement that loses a guard drops out alone and the rest commits. Row locks are taken in
//! one fixed order — show and lease (shared), layer_stat, job_stat, limit_record, the cap rows
//! (shared), frames, hosts, each
//! sorted by key — so concurrent batches (ours or another instance's) cannot deadlock among
//! themselves, and stats-before-host is also the order of Cuebot's own booking and completion
//! paths. Host rows, the most contended, are held only from the host update to the commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use postgres::{Client, Transaction};

use super::{DbError, caps::InFlight, reservations::HOLD_BLOCKS};
use crate::model::Resources;

/// Exit statuses that do not count as a retry when a frame is booked again (Cuebot's list:
/// skip-retry, failed launch, 299 launch compensation, 301/302 kill codes, 399, never run).
pub const NO_RETRY_EXIT_STATUS: [i64; 7] = [286, 256, 299, 301, 302, 399, -1];

/// One frame placed on one host, ready to commit.
#[derive(Clone, Debug)]
pub struct Placement {
    /// `frame.pk_frame`.
    pub frame: String,
    /// `frame.int_version` when it was read.
    pub version: i32,
    /// `frame.pk_layer`.
    pub layer: String,
    /// `frame.pk_job`.
    pub job: String,
    /// `job.pk_show`.
    pub show: String,
    /// `job.pk_folder`.
    pub folder: String,
    /// `host.pk_host`.
    pub host: String,
    /// `host.str_name`.
    pub host_name: String,
    /// The allocation charged (`host.pk_alloc` when the host was matched): a host moved to
    /// another allocation since loses the guard.
    pub alloc: String,
    /// The new proc's key (RQD's `resource_id`).
    pub proc: String,
    /// What the frame reserves on the host.
    pub amount: Resources,
    /// The layer's limit records.
    pub limits: Vec<String>,
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
    pub epochs: HashMap<String, i64>,
    /// Per show, the ledger re-syncs that must have completed before it may be booked (a
    /// newly claimed show waits for counters that include its previous owner's bookings).
    pub bookable_after: HashMap<String, u64>,
}

impl Fence {
    /// The fence a pass over `show` books under, captured when the pass starts: only that
    /// show, at the epoch held now, and only once `resyncs` re-syncs have completed since its
    /// claim (`None`: not bookable now). Planning under one epoch and checking another at
    /// flush would let a show lost and re-claimed mid-pass book on counters of the old lease.
    pub fn for_pass(&self, show: &str, resyncs: u64) -> Option<Fence> {
        let epoch = *self.epochs.get(show)?;
        let after = self.bookable_after.get(show).copied().unwrap_or(0);
        (resyncs >= after).then(|| Fence {
            instance: self.instance,
            lease_secs: self.lease_secs,
            epochs: HashMap::from([(show.to_owned(), epoch)]),
            bookable_after: HashMap::from([(show.to_owned(), after)]),
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
    /// Exit statuses that do not count as a retry besides [`NO_RETRY_EXIT_STATUS`].
    pub no_retry_exit_statuses: Vec<i64>,
    /// Record the booked procs as not yet launched, owned by this instance (`Some(None)`:
    /// no instance, a single unfenced booker); `None` records nothing (dry run: nothing
    /// will be launched). See [`super::launches`].
    pub record_launches: Option<Option<uuid::Uuid>>,
}

/// Commits as many of `placements` as pass their guards, in one transaction.
pub fn book_batch(
    client: &mut Client,
    placements: &[Placement],
    options: &BookOptions,
    fence: Option<&Fence>,
    inflight: &InFlight,
) -> Result<BatchOutcome, DbError> {
    let mut results: Vec<Option<Result<i32, GuardLoss>>> = vec![None; placements.len()];
    if placements.is_empty() {
        return Ok(BatchOutcome::default());
    }
    let mut tx = client.transaction()?;

    // 0a. Managed: a show handed back to Cuebot is Cuebot's from that commit on. FOR SHARE
    //     makes the flip wait for this batch (or this batch see the flip), never both book.
    let unmanaged = unmanaged_shows(&mut tx, placements)?;
    mark(
        &mut results,
        placements,
        |p| unmanaged.contains(&p.show),
        GuardLoss::Unmanaged,
    );

    // 0b. Fence: every show of the batch must still be ours at the planned epoch. Locking the
    //    lease rows FOR SHARE keeps a takeover from committing between this check and ours.
    if let Some(fence) = fence {
        let lost = fenced_out_shows(&mut tx, placements, fence)?;
        mark(
            &mut results,
            placements,
            |p| lost.contains(&p.show),
            GuardLoss::Fence,
        );
    }

    // 1. Stat rows the frame trigger will update, locked in key order before it runs.
    //    Stats before hosts is also the order of Cuebot's own booking and completion.
    let live = |results: &[Option<Result<i32, GuardLoss>>]| -> Vec<usize> {
        (0..placements.len())
            .filter(|&i| results[i].is_none())
            .collect()
    };
    let idx = live(&results);
    if !idx.is_empty() {
        let layers: BTreeSet<&str> = idx.iter().map(|&i| placements[i].layer.as_str()).collect();
        let jobs: BTreeSet<&str> = idx.iter().map(|&i| placements[i].job.as_str()).collect();
        let layers: Vec<&str> = layers.into_iter().collect();
        let jobs: Vec<&str> = jobs.into_iter().collect();
        lock_stat_rows(&mut tx, &layers, &jobs)?;
    }

    // 2. Layer limits: every limit of a frame must have room; rooms are consumed in order.
    let idx = live(&results);
    let limit_ids: BTreeSet<&str> = idx
        .iter()
        .flat_map(|&i| placements[i].limits.iter().map(String::as_str))
        .collect();
    if !limit_ids.is_empty() {
        let ids: Vec<&str> = limit_ids.into_iter().collect();
        let mut room = limit_room(&mut tx, &ids)?;
        for &i in &idx {
            let p = &placements[i];
            let fits = p
                .limits
                .iter()
                .all(|l| room.get(l).copied().unwrap_or(1) > 0);
            if fits {
                for l in &p.limits {
                    if let Some(r) = room.get_mut(l) {
                        *r -= 1;
                    }
                }
            } else {
                results[i] = Some(Err(GuardLoss::Limit));
            }
        }
    }

    // 2b. Caps: bursts and job/folder maxima as the database has them now.
    let idx = live(&results);
    let refused = super::caps::refused(&mut tx, placements, &idx, inflight)?;
    for i in refused {
        results[i] = Some(Err(GuardLoss::Cap));
    }

    // 3a. A cheap, unlocked look at the hosts first: a host another writer has filled would
    //     otherwise cost a frame update (and its triggers) that is then rolled back.
    let idx = live(&results);
    let mut stale_hosts: Vec<(String, Resources)> = Vec::new();
    if !idx.is_empty() {
        let per_host = HostColumns::of(idx.iter().map(|&i| &placements[i]));
        let (short, reserved) = read_short_hosts(&mut tx, &per_host, options, &mut stale_hosts)?;
        mark(
            &mut results,
            placements,
            |p| reserved.contains(&p.host),
            GuardLoss::Reserved,
        );
        mark(
            &mut results,
            placements,
            |p| short.contains(&p.host),
            GuardLoss::HostCapacity,
        );
    }

    // 3. Frames (version guard), then hosts (capacity guard, locked in key order, held only to
    //    commit). A host that lost its guard rolls the frames back to the savepoint and the
    //    batch is retried without that host's frames.
    let mut started: HashMap<String, i32> = HashMap::new();
    for _attempt in 0..4 {
        let idx = live(&results);
        if idx.is_empty() {
            break;
        }
        let mut sp = tx.savepoint("frames")?;
        started = start_frames(&mut sp, placements, &idx, options)?;
        let winners: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| started.contains_key(&placements[i].frame))
            .collect();
        let host_ok = decrement_hosts(&mut sp, placements, &winners, options)?;
        let lost_hosts: BTreeSet<&str> = winners
            .iter()
            .map(|&i| placements[i].host.as_str())
            .filter(|h| !host_ok.contains(*h))
            .collect();
        if lost_hosts.is_empty() {
            sp.commit()?;
            mark(
                &mut results,
                placements,
                |p| !started.contains_key(&p.frame),
                GuardLoss::Frame,
            );
            break;
        }
        drop(sp); // ROLLBACK TO SAVEPOINT: the frames are WAITING again.
        started.clear();
        let lost: Vec<&str> = lost_hosts.iter().copied().collect();
        for r in tx.query(
            "SELECT pk_host, int_cores_idle::bigint, int_mem_idle::bigint, int_gpus_idle::bigint, int_gpu_mem_idle::bigint
               FROM host WHERE pk_host = ANY($1)",
            &[&lost],
        )? {
            stale_hosts.push((r.get(0), idle_of(&r)));
        }
        mark(
            &mut results,
            placements,
            |p| lost_hosts.contains(p.host.as_str()),
            GuardLoss::HostCapacity,
        );
    }

    // 4. Procs for the started frames.
    let idx: Vec<usize> = (0..placements.len())
        .filter(|&i| started.contains_key(&placements[i].frame))
        .collect();
    if !idx.is_empty() {
        let col = |f: fn(&Placement) -> &str| -> Vec<&str> {
            idx.iter().map(|&i| f(&placements[i])).collect()
        };
        let procs = col(|p| &p.proc);
        let hosts = col(|p| &p.host);
        let shows = col(|p| &p.show);
        let layers = col(|p| &p.layer);
        let jobs = col(|p| &p.job);
        let frames = col(|p| &p.frame);
        let (cores, mem, gpus, gpu_mem) = amounts(idx.iter().map(|&i| placements[i].amount));
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
            &[&procs, &hosts, &shows, &layers, &jobs, &frames, &cores, &mem, &gpus, &gpu_mem, &options.mem_reserved_min_kb],
        )?;
        if inserted as usize != idx.len() {
            // Impossible while the frame guard holds (we hold the frame rows and checked for
            // procs); if it ever happens, commit nothing rather than a frame without a proc.
            tx.rollback()?;
            return Err(DbError::Schema(format!(
                "{} of {} procs conflicted on pk_frame",
                idx.len() - inserted as usize,
                idx.len()
            )));
        }
        if let Some(owner) = &options.record_launches {
            let versions: Vec<i32> = idx.iter().map(|&i| started[&placements[i].frame]).collect();
            super::launches::record(&mut tx, &procs, &frames, &shows, &versions, *owner)?;
        }
    }
    // 5. Reservations of wide frames that just booked are fulfilled.
    let fulfilled: Vec<&str> = placements
        .iter()
        .filter(|p| p.holds_reservation && started.contains_key(&p.frame))
        .map(|p| p.frame.as_str())
        .collect();
    super::reservations::fulfil(&mut tx, &fulfilled)?;
    let outcome = BatchOutcome {
        results: placements
            .iter()
            .zip(results)
            .map(|(p, r)| match r {
                Some(Err(loss)) => Err(loss),
                _ => started.get(&p.frame).copied().ok_or(GuardLoss::Frame),
            })
            .collect(),
        stale_hosts,
    };
    match tx.commit() {
        Ok(()) => Ok(outcome),
        Err(e) if outcome_unknown(&e) => Err(DbError::CommitUnknown {
            outcome: Box::new(outcome),
            source: e,
        }),
        Err(e) => Err(e.into()),
    }
}

/// True when a failed COMMIT may still have committed: the connection broke, or the server
/// ended the session (`pg_terminate_backend`, shutdown) after the commit record may have
/// been written but before the answer was sent. A statement error means it rolled back.
fn outcome_unknown(e: &postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
    }
}

/// Resolves a commit whose answer was lost, on a new connection: true if the batch
/// committed (its procs exist), false if it rolled back. A batch is one transaction, so
/// one proc decides; all are looked up in case Cuebot already released one.
pub fn committed(client: &mut Client, procs: &[&str]) -> Result<bool, DbError> {
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM proc WHERE pk_proc = ANY($1)",
            &[&procs],
        )?
        .get(0);
    Ok(found > 0)
}

/// Room left under each limit of `ids`, with the limit rows locked until commit.
///
/// Lock first, then count in a new statement: in READ COMMITTED a count in the locking
/// statement (a subquery in its select list) is evaluated on that statement's snapshot, taken
/// before the lock wait, so batches queued behind one another would all count the running
/// frames as they were before the first of them committed.
fn limit_room(tx: &mut Transaction<'_>, ids: &[&str]) -> Result<HashMap<String, i64>, DbError> {
    tx.execute(
        "SELECT 1 FROM limit_record WHERE pk_limit_record = ANY($1)
          ORDER BY pk_limit_record FOR UPDATE",
        &[&ids],
    )?;
    let rows = tx.query(
        "SELECT lr.pk_limit_record::text, coalesce(lr.int_max_value, 0)::bigint,
                coalesce((SELECT sum(ls.int_running_count) FROM layer_limit ll
                           JOIN layer_stat ls ON ls.pk_layer = ll.pk_layer
                          WHERE ll.pk_limit_record = lr.pk_limit_record), 0)::bigint
           FROM limit_record lr WHERE lr.pk_limit_record = ANY($1)",
        &[&ids],
    )?;
    Ok(rows
        .iter()
        .map(|r| (r.get(0), r.get::<_, i64>(1) - r.get::<_, i64>(2)))
        .collect())
}

/// Locks the `layer_stat` and `job_stat` rows Cuebot's frame trigger will update, in key
/// order, before any frame changes state. Every writer of frame states that shares hosts with
/// stagehand should take them this way (stats, then hosts) so none of them can deadlock.
pub fn lock_stat_rows<C: postgres::GenericClient>(
    tx: &mut C,
    layers: &[&str],
    jobs: &[&str],
) -> Result<(), DbError> {
    tx.execute(
        "SELECT 1 FROM layer_stat WHERE pk_layer = ANY($1) ORDER BY pk_layer FOR UPDATE",
        &[&layers],
    )?;
    tx.execute(
        "SELECT 1 FROM job_stat WHERE pk_job = ANY($1) ORDER BY pk_job FOR UPDATE",
        &[&jobs],
    )?;
    Ok(())
}

fn mark(
    results: &mut [Option<Result<i32, GuardLoss>>],
    placements: &[Placement],
    lost: impl Fn(&Placement) -> bool,
    loss: GuardLoss,
) {
    for (r, p) in results.iter_mut().zip(placements) {
        if r.is_none() && lost(p) {
            *r = Some(Err(loss));
        }
    }
}

/// The placements of a batch summed per host, as the columns of the host statements: the
/// amounts, the longest expected run time (unknown if any is) and the reserved frame among
/// them, if one is (its own reservation does not block it).
struct HostColumns<'a> {
    hosts: Vec<&'a str>,
    allocs: Vec<&'a str>,
    amounts: Columns,
    est: Vec<Option<f64>>,
    exempt: Vec<Option<&'a str>>,
}

impl<'a> HostColumns<'a> {
    fn of(placements: impl Iterator<Item = &'a Placement>) -> HostColumns<'a> {
        type Sum<'a> = (Resources, Option<f64>, Option<&'a str>, &'a str);
        let mut per_host: BTreeMap<&'a str, Sum<'a>> = BTreeMap::new();
        for p in placements {
            let (sum, est, exempt, _) = per_host.entry(p.host.as_str()).or_insert((
                Resources::ZERO,
                Some(0.0),
                None,
                p.alloc.as_str(),
            ));
            *sum = sum.saturating_add(&p.amount);
            *est = match (*est, p.est_secs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            if p.holds_reservation {
                *exempt = Some(p.frame.as_str());
            }
        }
        HostColumns {
            hosts: per_host.keys().copied().collect(),
            allocs: per_host.values().map(|v| v.3).collect(),
            amounts: amounts(per_host.values().map(|v| v.0)),
            est: per_host.values().map(|v| v.1).collect(),
            exempt: per_host.values().map(|v| v.2).collect(),
        }
    }
}

type Columns = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>);

fn amounts(items: impl Iterator<Item = Resources>) -> Columns {
    let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for a in items {
        c.0.push(i64::from(a.cores));
        c.1.push(a.mem_kb as i64);
        c.2.push(i64::from(a.gpus));
        c.3.push(a.gpu_mem_kb as i64);
    }
    c
}

fn idle_of(r: &postgres::Row) -> Resources {
    let v = |i: usize| r.get::<_, i64>(i).max(0);
    Resources {
        cores: v(1).min(i64::from(u32::MAX)) as u32,
        mem_kb: v(2) as u64,
        gpus: v(3).min(i64::from(u32::MAX)) as u32,
        gpu_mem_kb: v(4) as u64,
    }
}

/// The hosts of `c` that no longer have room, and those whose reservation refuses the
/// frames, read without locks; the current idle values of the short ones go to `stale`.
fn read_short_hosts(
    tx: &mut Transaction<'_>,
    c: &HostColumns<'_>,
    options: &BookOptions,
    stale: &mut Vec<(String, Resources)>,
) -> Result<(BTreeSet<String>, BTreeSet<String>), DbError> {
    let (cores, mem, gpus, gpu_mem) = &c.amounts;
    let rows = tx.query(
        &format!(
            "SELECT h.pk_host, h.int_cores_idle::bigint, h.int_mem_idle::bigint, h.int_gpus_idle::bigint,
                    h.int_gpu_mem_idle::bigint,
                    NOT ({HOST_TAKES})
               FROM host h JOIN unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                                       $6::float8[], $7::text[], $8::text[])
                    AS b(pk_host, cores, mem, gpus, gpu_mem, est, exempt, alloc) ON h.pk_host = b.pk_host
              WHERE NOT ({HOST_TAKES}) OR {HOLD_BLOCKS}"
        ),
        &[&c.hosts, cores, mem, gpus, gpu_mem, &c.est, &c.exempt, &c.allocs, &options.ping_timeout_secs],
    )?;
    let (mut short, mut reserved) = (BTreeSet::new(), BTreeSet::new());
    for r in rows {
        let id: String = r.get(0);
        if r.get::<_, bool>(5) {
            stale.push((id.clone(), idle_of(&r)));
            short.insert(id);
        } else {
            reserved.insert(id);
        }
    }
    Ok((short, reserved))
}

/// Moves the frames of `idx` from WAITING to RUNNING under the version guard; returns the new
/// version of each frame that moved.
fn start_frames(
    tx: &mut Transaction<'_>,
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
          WHERE f.pk_frame = b.pk_frame AND f.str_state = 'WAITING'
            AND coalesce(f.int_version, 0) = b.version
            AND NOT EXISTS (SELECT 1 FROM proc p WHERE p.pk_frame = f.pk_frame)
            AND EXISTS (SELECT 1 FROM layer l WHERE l.pk_layer = f.pk_layer
                         AND (l.ts_start_after IS NULL OR l.ts_start_after <= now()))
      RETURNING f.pk_frame, f.int_version",
        &[&frames, &versions, &hosts, &cores, &mem, &gpus, &skip, &gpu_mem],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Locks the hosts of `idx` in key order and takes each host's total in one guarded update;
/// returns the hosts that had room (and are still OPEN).
fn decrement_hosts(
    tx: &mut Transaction<'_>,
    placements: &[Placement],
    idx: &[usize],
    options: &BookOptions,
) -> Result<BTreeSet<String>, DbError> {
    let c = HostColumns::of(idx.iter().map(|&i| &placements[i]));
    if c.hosts.is_empty() {
        return Ok(BTreeSet::new());
    }
    tx.execute(
        "SELECT 1 FROM host WHERE pk_host = ANY($1) ORDER BY pk_host FOR UPDATE",
        &[&c.hosts],
    )?;
    let (cores, mem, gpus, gpu_mem) = &c.amounts;
    // The reservation rule is checked here, under the host row lock, against the idle values
    // this update consumes: another instance's stale index cannot slip past it.
    let rows = tx.query(
        &format!(
            "UPDATE host h SET int_cores_idle = h.int_cores_idle - b.cores, int_mem_idle = h.int_mem_idle - b.mem,
                    int_gpus_idle = h.int_gpus_idle - b.gpus, int_gpu_mem_idle = h.int_gpu_mem_idle - b.gpu_mem
               FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                           $6::float8[], $7::text[], $8::text[])
                    AS b(pk_host, cores, mem, gpus, gpu_mem, est, exempt, alloc)
              WHERE h.pk_host = b.pk_host AND {HOST_TAKES} AND NOT {HOLD_BLOCKS}
          RETURNING h.pk_host"
        ),
        &[&c.hosts, cores, mem, gpus, gpu_mem, &c.est, &c.exempt, &c.allocs, &options.ping_timeout_secs],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Whether host `h` can take the per-host batch row `b` (columns `cores, mem, gpus, gpu_mem,
/// alloc`; `$9` the ping timeout in seconds), capacity and eligibility alike: OPEN, its RQD
/// UP and reporting, still in the allocation charged, and the idle resources there. The same
/// rules the host refresh reads hosts by, re-checked under the row lock.
const HOST_TAKES: &str = "h.str_lock_state = 'OPEN' AND h.pk_alloc = b.alloc
        AND h.int_cores_idle >= b.cores AND h.int_mem_idle >= b.mem
        AND h.int_gpus_idle >= b.gpus AND h.int_gpu_mem_idle >= b.gpu_mem
        AND EXISTS (SELECT 1 FROM host_stat hs WHERE hs.pk_host = h.pk_host AND hs.str_state = 'UP'
                     AND hs.ts_ping > now() - make_interval(secs => $9::float8))";

/// Step 0a: the shows of the batch no longer managed by stagehand, their rows locked FOR
/// SHARE so a flip waits for this transaction.
fn unmanaged_shows(
    tx: &mut Transaction<'_>,
    placements: &[Placement],
) -> Result<BTreeSet<String>, DbError> {
    let shows: BTreeSet<&str> = placements.iter().map(|p| p.show.as_str()).collect();
    let shows: Vec<&str> = shows.into_iter().collect();
    let managed: BTreeSet<String> = tx
        .query(
            "SELECT pk_show FROM show WHERE pk_show = ANY($1) AND b_scheduler_managed
              ORDER BY pk_show FOR SHARE",
            &[&shows],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(shows
        .into_iter()
        .filter(|s| !managed.contains(*s))
        .map(str::to_owned)
        .collect())
}

/// Step 0b: the shows whose lease is not held by `fence.instance` at the planned epoch.
fn fenced_out_shows(
    tx: &mut Transaction<'_>,
    placements: &[Placement],
    fence: &Fence,
) -> Result<BTreeSet<String>, DbError> {
    let shows: BTreeSet<&str> = placements.iter().map(|p| p.show.as_str()).collect();
    let shows: Vec<&str> = shows.into_iter().collect();
    let mut held: HashMap<String, i64> = HashMap::new();
    for r in tx.query(
        "SELECT l.pk_show, l.int_epoch FROM stagehand.show_lease l
           JOIN stagehand.instance i ON i.pk_instance = l.pk_instance
          WHERE l.pk_show = ANY($1) AND l.pk_instance = $2
            AND i.ts_heartbeat > now() - make_interval(secs => $3)
          ORDER BY l.pk_show FOR SHARE OF l",
        &[&shows, &fence.instance, &fence.lease_secs],
    )? {
        held.insert(r.get(0), r.get(1));
    }
    Ok(shows
        .into_iter()
        .filter(|s| !held.contains_key(*s) || held.get(*s) != fence.epochs.get(*s))
        .map(str::to_owned)
        .collect())
}

/// What undoing a failed launch found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compensation {
    /// Proc deleted, host given what the proc held, frame back to WAITING; carries what the
    /// proc held at the end (Cuebot may have raised its memory since the booking).
    Undone(Resources),
    /// The proc was already gone (Cuebot released it); nothing to undo.
    AlreadyReleased,
    /// The frame is no longer the one booked (another writer moved it on): nothing undone,
    /// the proc is left to whoever owns the frame now.
    FrameMoved,
}

/// Undoes one committed booking whose launch failed: deletes the proc, gives the host back
/// what the proc holds now (never above its totals) and puts the frame back to WAITING with
/// exit status 299, guarded by the version the booking produced. If the frame moved on, the
/// whole undo rolls back: a RUNNING frame never loses its proc.
pub fn compensate(
    client: &mut Client,
    p: &Placement,
    booked_version: i32,
) -> Result<Compensation, DbError> {
    let mut tx = client.transaction()?;
    // The booking's lock order: stats (the frame trigger updates them), then hosts.
    lock_stat_rows(&mut tx, &[p.layer.as_str()], &[p.job.as_str()])?;
    let Some(held) = tx.query_opt(
        "DELETE FROM proc WHERE pk_proc = $1
         RETURNING pk_host, int_cores_reserved::bigint, int_mem_reserved::bigint,
                   int_gpus_reserved::bigint, int_gpu_mem_reserved::bigint",
        &[&p.proc],
    )?
    else {
        super::launches::forget(&mut tx, &[p.proc.as_str()])?;
        tx.commit()?;
        return Ok(Compensation::AlreadyReleased);
    };
    let moved = tx.execute(
        "UPDATE frame SET str_state = 'WAITING', int_exit_status = 299, ts_stopped = now(), ts_updated = now(),
                int_version = int_version + 1
          WHERE pk_frame = $1 AND str_state = 'RUNNING' AND int_version = $2",
        &[&p.frame, &booked_version],
    )?;
    if moved == 0 {
        tx.rollback()?;
        // Whoever moved the frame owns its proc now: nothing of this booking is pending.
        super::launches::forget(client, &[p.proc.as_str()])?;
        return Ok(Compensation::FrameMoved);
    }
    let amount = idle_of(&held);
    let host: String = held.get(0);
    tx.execute(
        "UPDATE host SET int_cores_idle = least(int_cores, int_cores_idle + $2),
                int_mem_idle = least(int_mem, int_mem_idle + $3),
                int_gpus_idle = least(int_gpus, int_gpus_idle + $4),
                int_gpu_mem_idle = least(int_gpu_mem, int_gpu_mem_idle + $5)
          WHERE pk_host = $1",
        &[
            &host,
            &i64::from(amount.cores),
            &(amount.mem_kb as i64),
            &i64::from(amount.gpus),
            &(amount.gpu_mem_kb as i64),
        ],
    )?;
    super::launches::forget(&mut tx, &[p.proc.as_str()])?;
    tx.commit()?;
    Ok(Compensation::Undone(amount))
}
