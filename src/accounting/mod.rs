//! Caps on the hot path: counters of booked cores and GPUs per subscription, folder and job,
//! checked and charged at planning time, confirmed when the booking commits and given back
//! when it does not.
//!
//! Each vertex has one short critical section (a `parking_lot::Mutex`, never held across I/O);
//! a charge locks its two or three vertices in a fixed order (subscription, folder, job), so
//! the check and the increment are one atomic step and concurrent charges can never exceed a
//! cap. Counters are hints kept honest by the recompute thread (see [`recompute`]): every
//! `recompute_interval` they are re-synced to `SUM(proc)`, carrying forward charges that are
//! in flight or committed after the snapshot began, so a just-booked frame is never forgotten
//! and a release by Cuebot reaches the counters within one interval (until then they read
//! high, which only under-books).
//!
//! Fail closed: a subscription whose burst has not been read rejects every charge.

pub mod audit;
pub mod hungry;
pub mod recompute;

use std::{
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::accounting::hungry::HungryView;
pub use crate::db::accounting::{Caps, Limits, Snapshot};
use crate::{
    ids::{AllocId, FolderId, JobId, ShowId},
    metrics,
    model::CoresGpus,
};

/// A cap that refused a charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cap {
    /// Subscription burst (cores) of the show on the host's allocation.
    Subscription,
    /// Folder maximum cores.
    Folder,
    /// Job maximum cores.
    Job,
    /// Folder maximum GPUs.
    FolderGpus,
    /// Job maximum GPUs.
    JobGpus,
}

impl Cap {
    /// The `table` label OpenCue's `scheduler_accounting_limit_exceeded_total` uses.
    pub fn label(self) -> &'static str {
        match self {
            Cap::Subscription => "subscription",
            Cap::Folder => "folder",
            Cap::Job => "job",
            Cap::FolderGpus => "folder_gpus",
            Cap::JobGpus => "job_gpus",
        }
    }
}

/// A subscription vertex's key: (show, the host's allocation).
pub type SubKey = (ShowId, AllocId);

/// What one booking charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charge {
    /// The job's show.
    pub show: ShowId,
    /// The host's allocation.
    pub alloc: AllocId,
    /// The job's folder.
    pub folder: FolderId,
    /// The job.
    pub job: JobId,
    /// What the frame takes.
    pub amount: CoresGpus,
}

impl Charge {
    /// The subscription the charge is counted under (two reference-count increments).
    fn sub_key(&self) -> SubKey {
        (self.show.clone(), self.alloc.clone())
    }
}

/// One vertex's state. `booked` = what the counter believes is booked (snapshot + carried);
/// `inflight` = charged and not yet committed; `settled[e % 2]` = committed during epoch e;
/// `releasing` = committed and being undone (still booked until the undo committed).
#[derive(Debug, Default)]
struct Tally {
    booked: CoresGpus,
    inflight: CoresGpus,
    settled: [CoresGpus; 2],
    releasing: CoresGpus,
    limits: Option<Limits>,
}

impl Tally {
    /// Books a charge that passed its checks: booked and in flight until it commits.
    fn take(&mut self, amount: CoresGpus) {
        self.booked += amount;
        self.inflight += amount;
    }
}

/// The first cap of the subscription `s`, folder `f` and job `j` that `charge` would take
/// past its limit, or `None` when every cap has room. The subscription fails closed: unseeded
/// counters, or a burst never read, refuse with limit -1. Checked in a fixed order (burst,
/// folder and job cores, folder and job GPUs) so a refusal always names the same cap; a
/// dimension the charge does not use (adds 0) never refuses, even over a lowered cap.
fn refusal(seeded: bool, s: &Tally, f: &Tally, j: &Tally, charge: &Charge) -> Option<Rejection> {
    let burst = match (seeded, s.limits.and_then(|l| l.cores)) {
        (true, Some(burst)) => burst,
        _ => {
            return Some(Rejection {
                cap: Cap::Subscription,
                current: s.booked.cores,
                limit: -1,
            });
        }
    };
    let (fl, jl) = (f.limits.unwrap_or_default(), j.limits.unwrap_or_default());
    let (cores, gpus) = (charge.amount.cores, charge.amount.gpus);
    let checks = [
        (Cap::Subscription, s.booked.cores, cores, Some(burst)),
        (Cap::Folder, f.booked.cores, cores, fl.cores),
        (Cap::Job, j.booked.cores, cores, jl.cores),
        (Cap::FolderGpus, f.booked.gpus, gpus, fl.gpus),
        (Cap::JobGpus, j.booked.gpus, gpus, jl.gpus),
    ];
    checks.into_iter().find_map(|(cap, current, add, limit)| {
        let limit = limit?;
        (add > 0 && current + add > limit).then_some(Rejection {
            cap,
            current,
            limit,
        })
    })
}

/// A read-only view of the ledger's generation: the cluster feed wakes clusters that slept
/// saturated once it moves (counters re-synced lower, a charge given back).
#[derive(Clone, Debug, Default)]
pub struct CapsView(Arc<AtomicU64>);

impl CapsView {
    /// The generation now; it only grows.
    pub fn generation(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A vertex's tally, shared by the map and the tickets charged under it.
type Vertex = Arc<Mutex<Tally>>;

/// The counters and caps of every vertex.
#[derive(Default)]
pub struct Ledger {
    subs: DashMap<SubKey, Vertex>,
    folders: DashMap<FolderId, Vertex>,
    jobs: DashMap<JobId, Vertex>,
    epoch: AtomicU64,
    seeded: AtomicBool,
    /// Bumped on every recompute and release, so a layer refused by a cap is retried only
    /// once something could have changed; the cluster feed watches it ([`CapsView`]).
    generation: Arc<AtomicU64>,
    /// Completed re-syncs; a newly leased show waits for one that began after its claim.
    resyncs: AtomicU64,
    /// Set to ask the recompute thread for a round now (a show was just leased).
    wake: AtomicBool,
    /// The re-sync count a leased show waits for: the recompute asks itself for another
    /// round at once while the count is below it.
    resync_target: AtomicU64,
    /// Set to ask the next round to re-read the caps (a booking found one lowered).
    caps_wanted: AtomicBool,
    /// Set to ask for a re-sync of the counters alone, soon (a pass found a subscription
    /// full by the counters; see [`Ledger::request_counters`]).
    counters_wanted: AtomicBool,
    /// The host index's capacity generation of the last such request.
    counters_gen: AtomicU64,
    /// Subscription sizes (centicores) per (show, alloc): the fair share.
    sizes: DashMap<SubKey, i64>,
    /// Shows with waiting work per allocation, as the cluster feed publishes them.
    hungry: HungryView,
}

/// Jobs and folders whose cores cap leaves less than a core (see [`Ledger::full`]).
#[derive(Debug, Default)]
pub(crate) struct Full {
    /// Jobs at their maximum cores.
    pub(crate) jobs: Vec<JobId>,
    /// Folders at their maximum cores.
    pub(crate) folders: Vec<FolderId>,
}

/// The keys of `map` whose cores cap leaves less than a core. The vertices are cloned out of
/// the map before any is locked: no shard guard is held under a vertex's lock.
fn full_of<K: Eq + Hash + Clone>(map: &DashMap<K, Vertex>) -> Vec<K> {
    let vertices: Vec<(K, Vertex)> = map
        .iter()
        .map(|e| (e.key().clone(), Arc::clone(e.value())))
        .collect();
    vertices
        .into_iter()
        .filter(|(_, v)| {
            let t = v.lock();
            t.limits
                .and_then(|l| l.cores)
                .is_some_and(|max| max - t.booked.cores < i64::from(crate::model::CORE))
        })
        .map(|(k, _)| k)
        .collect()
}

/// The vertex of `key` in `map`, created empty if it is new.
fn vertex<K: Eq + Hash + Clone>(map: &DashMap<K, Vertex>, key: &K) -> Vertex {
    // Keys are ids (reference-counted text): the clone below is a count increment.
    // Clone the Arc out and drop the shard guard before locking the vertex.
    if let Some(v) = map.get(key) {
        return Arc::clone(v.value());
    }
    Arc::clone(map.entry(key.clone()).or_default().value())
}

/// A charge in flight: dropped without [`Ticket::commit`] it gives everything back.
#[must_use = "dropping a ticket releases its charge"]
pub struct Ticket {
    ledger: Arc<Ledger>,
    vertices: Vec<Vertex>,
    amount: CoresGpus,
    done: bool,
}

impl Ticket {
    /// The booking committed: the charge stays, moving from in-flight to settled.
    pub fn commit(mut self) {
        let slot = (self.ledger.epoch.load(Ordering::Acquire) % 2) as usize;
        for v in &self.vertices {
            let mut t = v.lock();
            t.inflight -= self.amount;
            t.settled[slot] += self.amount;
        }
        self.done = true;
    }

    /// The charged centicores.
    pub fn cores(&self) -> i64 {
        self.amount.cores
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for v in &self.vertices {
            let mut t = v.lock();
            t.booked -= self.amount;
            t.inflight -= self.amount;
        }
    }
}

/// A committed charge being given back (the undo of a failed launch). Until [`done`] it
/// stays booked and is also counted as releasing, which a re-sync carries over its snapshot
/// the way it carries charges in flight: a snapshot read after the undo committed but
/// applied before `done` would otherwise drop the charge and `done` drop it again, leaving
/// the counter low (too permissive) until the next re-sync. Every interleaving now errs
/// high, never low. Dropped without `done` (the booking was not undone, or someone else
/// released its proc), the charge stays booked until a re-sync finds it gone.
///
/// [`done`]: Releasing::done
#[must_use = "dropping it keeps the charge booked"]
pub struct Releasing {
    ledger: Arc<Ledger>,
    vertices: Vec<Vertex>,
    amount: CoresGpus,
}

impl Releasing {
    /// The undo committed: the charge is no longer booked.
    pub fn done(self) {
        for v in &self.vertices {
            let mut t = v.lock();
            t.booked = t.booked.sub_floor(self.amount);
        }
        // The drop takes it out of `releasing`.
        self.ledger.generation.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for Releasing {
    fn drop(&mut self) {
        for v in &self.vertices {
            let mut t = v.lock();
            t.releasing = t.releasing.sub_floor(self.amount);
        }
    }
}

/// Keeps a job's vertex, and so its cap, in the ledger while held (see
/// [`Ledger::set_job_limits`]).
#[must_use = "a cap nobody pins can be forgotten by the next re-sync"]
pub(crate) struct CapPin(#[allow(dead_code)] Vertex);

/// A refused charge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The cap.
    pub cap: Cap,
    /// Booked before this charge.
    pub current: i64,
    /// The cap's value (`-1` when the subscription was never seeded).
    pub limit: i64,
}

impl Ledger {
    /// An empty ledger: every subscription rejects until it is seeded. No show is ever
    /// hungry for it (see `Ledger::with_hungry`), so it never yields for fair share.
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    /// An empty ledger whose fair-share rule reads the shows the cluster feed publishes as
    /// hungry.
    pub(crate) fn with_hungry(hungry: HungryView) -> Arc<Ledger> {
        Arc::new(Ledger {
            hungry,
            ..Ledger::default()
        })
    }

    /// True once counters and caps were loaded from the database.
    pub(crate) fn is_seeded(&self) -> bool {
        self.seeded.load(Ordering::Acquire)
    }

    /// Changes whenever counters may have gone down (recompute, release).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A read-only view of [`Ledger::generation`], for whoever waits for room under a cap.
    pub fn caps_view(&self) -> CapsView {
        CapsView(Arc::clone(&self.generation))
    }

    /// Sets the cap of a job (from the pending-job query, which reads it live) and pins it:
    /// while the returned [`CapPin`] lives, a re-sync cannot forget the job (and its cap)
    /// even if nothing of it is booked yet. A pass holds the pins of its jobs to its end, so a
    /// job whose first frame is charged after a re-sync is still capped.
    pub(crate) fn set_job_limits(&self, job: &JobId, limits: Limits) -> CapPin {
        let v = vertex(&self.jobs, job);
        v.lock().limits = Some(limits);
        CapPin(v)
    }

    /// Sets the cap of a folder.
    pub(crate) fn set_folder_limits(&self, folder: &FolderId, limits: Limits) {
        vertex(&self.folders, folder).lock().limits = Some(limits);
    }

    /// Sets a subscription's burst (centicores).
    pub fn set_burst(&self, show: &ShowId, alloc: &AllocId, burst: i64) {
        vertex(&self.subs, &(show.clone(), alloc.clone()))
            .lock()
            .limits = Some(Limits {
            cores: Some(burst.max(0)),
            gpus: None,
        });
    }

    /// Cores (centicores) the subscription can still take: 0 when unknown or full.
    pub(crate) fn sub_headroom(&self, show: &ShowId, alloc: &AllocId) -> i64 {
        self.with_sub(show, alloc, |t| match t.limits.and_then(|l| l.cores) {
            Some(burst) if self.is_seeded() => (burst - t.booked.cores).max(0),
            _ => 0,
        })
        .unwrap_or(0)
    }

    /// `f` of the subscription's tally, `None` when the subscription is unknown. The vertex is
    /// cloned out of the map before it is locked, so no shard guard is held under its lock.
    /// The key is built from two id clones: reference-count increments, no allocation.
    fn with_sub<T>(
        &self,
        show: &ShowId,
        alloc: &AllocId,
        f: impl FnOnce(&Tally) -> T,
    ) -> Option<T> {
        self.subs
            .get(&(show.clone(), alloc.clone()))
            .map(|v| Arc::clone(v.value()))
            .map(|v| f(&v.lock()))
    }

    /// Centicores booked by `show` on `alloc` (0 when unknown).
    pub fn sub_booked(&self, show: &ShowId, alloc: &AllocId) -> i64 {
        self.with_sub(show, alloc, |t| t.booked.cores).unwrap_or(0)
    }

    /// Fair share across shows: true when `show` booking `cores` more on `alloc` would take it
    /// past its subscription size while another show with waiting work there would, taking
    /// the same cores, stay at a lower share (booked / size) than `show` would reach. Within
    /// its size a show never yields, bursts stay the hard caps, and of two shows past their
    /// sizes the one further ahead yields, so the split converges to the sizes even while the
    /// counters lag completions (they lag in proportion to what each show runs). A show with
    /// size 0 has no share to defend: it yields to any hungry show with one.
    pub(crate) fn should_yield(&self, show: &ShowId, alloc: &AllocId, cores: i64) -> bool {
        let size = |s: &ShowId| {
            self.sizes
                .get(&(s.clone(), alloc.clone()))
                .map(|v| *v)
                .unwrap_or(0)
        };
        let share_after = |s: &ShowId| {
            let size = size(s);
            let booked = self.sub_booked(s, alloc) + cores;
            if size > 0 {
                booked as f64 / size as f64
            } else {
                f64::INFINITY
            }
        };
        if self.sub_booked(show, alloc) + cores <= size(show) {
            return false;
        }
        let mine = share_after(show);
        let hungry = self.hungry.load();
        hungry
            .get(alloc)
            .map(|shows| shows.iter().any(|t| t != show && share_after(t) < mine))
            .unwrap_or(false)
    }

    /// The jobs and folders at their maximum cores, by the counters: a pass's job query
    /// leaves them out, or a page of capped jobs at the head of a show's order would hold
    /// back every job behind it while hosts stand idle. Only cores count: a job at its GPU
    /// maximum may still run its CPU layers. Worked out anew for each pass (a walk over the
    /// capped jobs' vertices, some microseconds per thousand), so a job that just filled is
    /// left out of the very next pass.
    pub(crate) fn full(&self) -> Full {
        Full {
            jobs: full_of(&self.jobs),
            folders: full_of(&self.folders),
        }
    }

    /// Centicores a job can still take (`None` = unlimited).
    pub(crate) fn job_headroom(&self, job: &JobId) -> Option<i64> {
        let v = self.jobs.get(job).map(|v| Arc::clone(v.value()))?;
        let t = v.lock();
        t.limits
            .and_then(|l| l.cores)
            .map(|max| (max - t.booked.cores).max(0))
    }

    /// Checks every cap of `charge` and takes it, atomically; or says which cap refused.
    pub fn charge(self: &Arc<Self>, charge: &Charge) -> Result<Ticket, Rejection> {
        let sub = vertex(&self.subs, &charge.sub_key());
        let folder = vertex(&self.folders, &charge.folder);
        let job = vertex(&self.jobs, &charge.job);
        // Fixed lock order: subscription, folder, job. Held only for arithmetic.
        let mut s = sub.lock();
        let mut f = folder.lock();
        let mut j = job.lock();
        if let Some(r) = refusal(self.is_seeded(), &s, &f, &j, charge) {
            return Err(self.reject(r));
        }
        for t in [&mut *s, &mut *f, &mut *j] {
            t.take(charge.amount);
        }
        drop((s, f, j));
        Ok(Ticket {
            ledger: Arc::clone(self),
            vertices: vec![sub, folder, job],
            amount: charge.amount,
            done: false,
        })
    }

    /// Counts a refusal in OpenCue's metric and passes it on.
    fn reject(&self, r: Rejection) -> Rejection {
        metrics::LIMIT_EXCEEDED
            .with_label_values(&[r.cap.label()])
            .inc();
        r
    }

    /// Starts giving back a committed charge (our own compensation of a failed launch), before
    /// the undo's transaction begins; see [`Releasing`]. The commit's own share of the
    /// epoch's settled bucket is left alone: the bucket does not say which epoch the commit
    /// fell in, and taking it from the wrong one could hide a recent commit from a re-sync.
    pub fn begin_release(self: &Arc<Self>, charge: &Charge) -> Releasing {
        let vertices: Vec<Vertex> = [
            self.subs
                .get(&charge.sub_key())
                .map(|v| Arc::clone(v.value())),
            self.folders
                .get(&charge.folder)
                .map(|v| Arc::clone(v.value())),
            self.jobs.get(&charge.job).map(|v| Arc::clone(v.value())),
        ]
        .into_iter()
        .flatten()
        .collect();
        for v in &vertices {
            v.lock().releasing += charge.amount;
        }
        Releasing {
            ledger: Arc::clone(self),
            vertices,
            amount: charge.amount,
        }
    }

    /// Starts a re-sync: commits from now on land in the new epoch's bucket, which the
    /// overwrite keeps (they may be missing from the snapshot about to be read).
    pub(crate) fn begin_resync(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Overwrites every counter with `snapshot` (booked per vertex from `SUM(proc)`, read
    /// after `Ledger::begin_resync` returned `epoch`) plus what is in flight plus what
    /// committed since the epoch began. Returns the total absolute drift corrected.
    pub fn resync(&self, epoch: u64, snapshot: &Snapshot) -> i64 {
        let keep = (epoch % 2) as usize;
        let clear = 1 - keep;
        let mut drift = 0;
        let mut apply = |t: &mut Tally, base: CoresGpus| {
            let booked = base + t.inflight + t.releasing + t.settled[keep];
            drift += (booked.cores - t.booked.cores).abs();
            t.booked = booked;
            t.settled[clear] = CoresGpus::ZERO;
        };
        for e in self.subs.iter() {
            let base = snapshot.subs.get(e.key()).copied().unwrap_or_default();
            apply(&mut e.value().lock(), base);
        }
        for e in self.folders.iter() {
            let base = snapshot.folders.get(e.key()).copied().unwrap_or_default();
            apply(&mut e.value().lock(), base);
        }
        for e in self.jobs.iter() {
            let base = snapshot.jobs.get(e.key()).copied().unwrap_or_default();
            apply(&mut e.value().lock(), base);
        }
        // Vertices seen only in the snapshot (booked by someone before we knew them).
        for (k, v) in &snapshot.subs {
            if !self.subs.contains_key(k) {
                vertex(&self.subs, k).lock().booked = *v;
            }
        }
        for (k, v) in &snapshot.folders {
            if !self.folders.contains_key(k) {
                vertex(&self.folders, k).lock().booked = *v;
            }
        }
        for (k, v) in &snapshot.jobs {
            if !self.jobs.contains_key(k) {
                vertex(&self.jobs, k).lock().booked = *v;
            }
        }
        // Forget jobs with nothing booked, in flight or capped recently: bounded memory.
        self.jobs.retain(|_, v| {
            let t = v.lock();
            !t.booked.is_zero() || !t.inflight.is_zero() || Arc::strong_count(v) > 1
        });
        self.generation.fetch_add(1, Ordering::AcqRel);
        let done = self.resyncs.fetch_add(1, Ordering::AcqRel) + 1;
        if done < self.resync_target.load(Ordering::Acquire) {
            // Another round is wanted: run it now, not at the next lease round or interval.
            // Only a completed round re-arms, so a failing database is not retried in a loop.
            self.wake.store(true, Ordering::Release);
        }
        drift
    }

    /// Centicores charged under the subscription and not committed yet (every batch in
    /// flight), for the booking transaction's cap guard.
    pub(crate) fn inflight_sub(&self, show: &ShowId, alloc: &AllocId) -> i64 {
        self.with_sub(show, alloc, |t| t.inflight.cores)
            .unwrap_or(0)
    }

    /// What is charged under the folder and not committed yet.
    pub(crate) fn inflight_folder(&self, folder: &FolderId) -> CoresGpus {
        self.folders
            .get(folder)
            .map(|v| Arc::clone(v.value()))
            .map(|v| v.lock().inflight)
            .unwrap_or_default()
    }

    /// Asks the next recompute round to re-read the caps (and to run soon): a booking found
    /// the database's cap lower than the one the counters check, or a pass left every job
    /// with work out as full (a raised cap would not be read otherwise).
    pub(crate) fn request_caps(&self) {
        self.caps_wanted.store(true, Ordering::Release);
        self.request_resync();
    }

    /// Takes a pending caps request.
    pub(crate) fn take_caps_request(&self) -> bool {
        self.caps_wanted.swap(false, Ordering::AcqRel)
    }

    /// Asks the recompute thread to re-sync the counters from `SUM(proc)` soon, without a
    /// whole round: a pass found a subscription full by its counter. Cuebot's completions
    /// give cores back in the database only, so the counter of a show running at its burst
    /// reads high until the next re-sync: on a farm kept full, up to `recompute_interval` of
    /// completions sat idle while the show had work (Maestro's LICENSE, issue 14). The thread
    /// paces these re-syncs ([`recompute`]). Asked once per `capacity_gen`, the host index's
    /// capacity generation: only room given back on some host since the last request can
    /// make the counter read lower (a cold fill, where nothing completes, asks once).
    pub(crate) fn request_counters(&self, capacity_gen: u64) {
        if self.counters_gen.fetch_max(capacity_gen, Ordering::AcqRel) < capacity_gen {
            self.counters_wanted.store(true, Ordering::Release);
        }
    }

    /// Takes a pending counters request.
    pub(crate) fn take_counters_request(&self) -> bool {
        self.counters_wanted.swap(false, Ordering::AcqRel)
    }

    /// Asks the recompute thread for a round as soon as possible.
    pub(crate) fn request_resync(&self) {
        self.wake.store(true, Ordering::Release);
    }

    /// Asks for rounds until `target` re-syncs have completed: a show leased at count `c`
    /// books after `c + 2`, and each round asks for the next as it ends. Before, the second
    /// round could wait for the next lease round (`lease_renew_interval`, 3 s by default;
    /// 0.5 s in the benchmarks, where the first booking after start came at 0.55–0.58 s
    /// instead of 0.1 s in 4 of 14 measured starts).
    pub(crate) fn request_resyncs_until(&self, target: u64) {
        self.resync_target.fetch_max(target, Ordering::AcqRel);
        self.request_resync();
    }

    /// Takes a pending resync request.
    pub(crate) fn take_resync_request(&self) -> bool {
        self.wake.swap(false, Ordering::AcqRel)
    }

    /// Number of completed re-syncs.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Acquire)
    }

    /// Replaces the subscription bursts and folder caps (job caps come with each pass).
    pub(crate) fn set_caps(&self, caps: &Caps) {
        for ((show, alloc), burst) in &caps.bursts {
            self.set_burst(show, alloc, *burst);
        }
        for (sub, size) in &caps.sizes {
            self.sizes.insert(sub.clone(), *size);
        }
        for (folder, limits) in &caps.folders {
            self.set_folder_limits(folder, *limits);
        }
        for (job, limits) in &caps.jobs {
            drop(self.set_job_limits(job, *limits));
        }
    }

    /// Marks the ledger usable: called once counters and caps were loaded.
    pub(crate) fn mark_seeded(&self) {
        self.seeded.store(true, Ordering::Release);
    }

    /// Booked cores and GPUs per vertex, for the audit and `/status`.
    pub fn booked(&self) -> Snapshot {
        Snapshot {
            subs: self
                .subs
                .iter()
                .map(|e| (e.key().clone(), e.value().lock().booked))
                .collect(),
            folders: self
                .folders
                .iter()
                .map(|e| (e.key().clone(), e.value().lock().booked))
                .collect(),
            jobs: self
                .jobs
                .iter()
                .map(|e| (e.key().clone(), e.value().lock().booked))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
