//! A pass's guarded batch: the frames placed and charged but not yet committed, their commit
//! through [`db::booking::book_batch`], and what follows each frame's result — the launch
//! of a booked one, the give-back of one that lost a guard.
//!
//! Every planned frame holds its host earmark and its cap charge as RAII values: a batch
//! dropped on an error gives both back, so nothing leaks.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    time::Instant,
};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use super::{Shared, launch::LaunchTask, waiting::Reason};
use crate::{
    accounting::{Charge, Ticket},
    config::{Config, MIN_SPLIT},
    db::{
        self,
        booking::{BatchOutcome, BookOptions, Fence, GuardLoss, Placement},
        caps::InFlight,
    },
    ids::{HostId, JobId, LayerId},
    index::Earmark,
    metrics,
    rqd::FrameLaunch,
};

/// A frame placed and charged, waiting for its batch to commit.
pub(super) struct Planned {
    pub(super) placement: Placement,
    pub(super) earmark: Earmark,
    pub(super) ticket: Ticket,
    pub(super) charge: Charge,
    pub(super) launch: Option<FrameLaunch>,
    pub(super) waited_secs: f64,
    pub(super) show_name: String,
}

/// What one frame of a committed batch came to, for the layer's tally.
pub(super) enum FrameResult {
    /// Booked (and handed to the launchers).
    Booked,
    /// Lost a guard; the reason its layer waits, when the loss says one.
    Lost(Option<Reason>),
}

/// The pieces of the pass a batch commit needs.
pub(super) struct Committer<'a> {
    pub(super) shared: &'a Shared,
    pub(super) config: &'a Config,
    /// The lease fence captured at the start of the pass (`None`: single instance).
    pub(super) fence: Option<Fence>,
    pub(super) launches: &'a Sender<LaunchTask>,
}

impl Committer<'_> {
    /// Commits `batch`: in one transaction on `conn`, or — while no other booking
    /// transaction of this instance runs — split by job into parts committed side by side
    /// on spare pool connections, so one busy cluster still keeps several PostgreSQL cores
    /// writing (issue 14: the tail of a drain was one cluster's batches, one at a time).
    /// Parts never share a job, so they never wait on each other's `job_stat` rows; a host
    /// two parts share is locked in key order by both.
    /// Returns each frame's layer and result; the first error of a part, after every other
    /// part has finished (their booked frames are launched either way).
    pub(super) fn commit(
        &self,
        conn: &mut db::Conn,
        batch: Vec<Planned>,
    ) -> Result<Vec<(LayerId, FrameResult)>, db::DbError> {
        let mut spare: Vec<db::Conn> = Vec::new();
        let wanted = self.parts_for(&batch);
        while spare.len() + 1 < wanted {
            match spare_connection(&self.shared.pool) {
                Some(c) => spare.push(c),
                None => break,
            }
        }
        if spare.is_empty() {
            return self.commit_part(conn, batch);
        }
        // By job, not also by host: a host two parts share costs a short wait at the end of
        // one transaction, while joining parts through their hosts left too few to split
        // (measured on the drain: 2,880–3,020 against 3,130–3,240 frames/s).
        let mut parts = split_by(batch, spare.len() + 1, |p| p.placement.job.clone()).into_iter();
        metrics::BATCH_PARTS.observe(parts.len() as f64);
        let first = parts.next().unwrap_or_default();
        let results = std::thread::scope(|scope| {
            let helpers: Vec<_> = parts
                .zip(spare.iter_mut())
                .map(|(part, c)| {
                    std::thread::Builder::new()
                        .name("booking-part".into())
                        .spawn_scoped(scope, move || self.commit_part(c, part))
                })
                .collect();
            let mut results = vec![self.commit_part(conn, first)];
            for helper in helpers {
                results.push(match helper {
                    Ok(h) => h.join().unwrap_or_else(|_| {
                        metrics::WORKER_PANICS.inc();
                        Err(db::DbError::Config("a batch part panicked".into()))
                    }),
                    // No thread: its part dropped unspawned, every hold given back.
                    Err(e) => Err(db::DbError::Config(format!(
                        "no thread for a batch part: {e}"
                    ))),
                });
            }
            results
        });
        let mut all = Vec::new();
        for part in results {
            all.extend(part?);
        }
        Ok(all)
    }

    /// Into how many parts `batch` may be split now: none while another booking
    /// transaction of this instance runs (then the database's cores are shared already,
    /// and smaller batches only cost more per frame: a cold fill paid ~6 % more PostgreSQL
    /// CPU per frame when every pass split into the free slots); otherwise this instance's
    /// slots, at least [`MIN_SPLIT`] frames a part, at most one part per job.
    fn parts_for(&self, batch: &[Planned]) -> usize {
        if self.shared.commit_gate.running() > 0 {
            return 1;
        }
        let jobs: HashSet<&JobId> = batch.iter().map(|p| &p.placement.job).collect();
        self.slots()
            .min(batch.len() / MIN_SPLIT)
            .min(jobs.len())
            .max(1)
    }

    /// This instance's share of `batches_in_flight`: the setting divided among the live
    /// instances, rounded down and at least one, so several instances together never keep
    /// more transactions running than the setting (the database server's cores) unless
    /// there are more instances than that. Rounded up, three instances kept six against
    /// one instance's four, and paid for it in PostgreSQL CPU per frame (issue 14).
    fn slots(&self) -> usize {
        share_of(self.config.scheduler.batches_in_flight, self.instances())
    }

    /// The live instances, as the lease keeper last counted them (1 when alone).
    fn instances(&self) -> usize {
        self.shared
            .lease
            .host_share()
            .map_or(1, |(n, _)| n.max(1) as usize)
    }

    /// How many booking transactions may run before the next one waits: this instance's
    /// slots while other instances write to the same server, no bound when it is alone.
    /// Alone, waiting bought nothing measurable, and Maestro's TAGS_GPU test (small scale)
    /// left a tag pool without work in 4 of 18 runs with the wait against 0 of 23 without
    /// it; the cause was not found.
    fn gate_limit(&self) -> usize {
        if self.instances() > 1 {
            self.slots()
        } else {
            usize::MAX
        }
    }

    /// Commits `batch` in one transaction; returns each frame's layer and result, in order.
    /// On an error every earmark and charge of the batch is given back (unless the outcome
    /// is unknown and the database gone at shutdown: then they are kept, as over-counting is
    /// safe).
    fn commit_part(
        &self,
        conn: &mut db::Conn,
        batch: Vec<Planned>,
    ) -> Result<Vec<(LayerId, FrameResult)>, db::DbError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Waited for before the transaction begins: a waiting batch holds no row lock.
        let _slot = self.shared.commit_gate.enter(self.gate_limit());
        let placements: Vec<Placement> = batch.iter().map(|p| p.placement.clone()).collect();
        let ticket = self.shared.index.begin_refresh();
        let started = Instant::now();
        let outcome = match self.book(conn, &placements) {
            Ok(o) => o,
            Err(db::DbError::CommitUnknown {
                outcome,
                xid,
                source,
            }) => match super::resolve::commit(self.shared, &placements, &outcome, xid) {
                Some(true) => *outcome,
                resolved => {
                    metrics::BATCHES.with_label_values(&["error"]).inc();
                    if resolved.is_none() {
                        keep_all(batch);
                    }
                    return Err(db::DbError::Postgres(source));
                }
            },
            Err(e) => {
                metrics::BATCHES.with_label_values(&["error"]).inc();
                return Err(e); // `batch` drops here: every earmark and charge is released.
            }
        };
        metrics::BATCH_SECONDS.observe(started.elapsed().as_secs_f64());
        metrics::BATCH_SIZE.observe(placements.len() as f64);
        metrics::BATCHES.with_label_values(&["ok"]).inc();
        // Another writer took hosts we counted on: correct just those from the transaction's
        // own read (no farm-wide refresh; the CAS/guard protocol keeps this conservative).
        for (host, idle) in &outcome.stale_hosts {
            // Rare (a host another writer took): converting its key here costs nothing.
            let host = HostId::from(host.as_str());
            self.shared.index.refresh_host(ticket, &host, *idle);
        }
        Ok(batch
            .into_iter()
            .zip(outcome.results)
            .map(|(planned, result)| {
                let layer = planned.placement.layer.clone();
                let result = match result {
                    Ok(version) => {
                        self.booked(planned, version, started);
                        FrameResult::Booked
                    }
                    Err(loss) => FrameResult::Lost(self.lost(loss)),
                };
                (layer, result)
            })
            .collect())
    }

    /// The guarded batch itself, with this pass's options and in-flight charges.
    fn book(
        &self,
        conn: &mut db::Conn,
        placements: &[Placement],
    ) -> Result<BatchOutcome, db::DbError> {
        let s = &self.config.scheduler;
        let options = BookOptions {
            mem_reserved_min_kb: s.mem_reserved_min_kb as i64,
            ping_timeout_secs: self.config.hosts.ping_timeout.as_secs_f64(),
            no_retry_exit_statuses: s
                .no_retry_exit_statuses
                .iter()
                .chain(&self.config.licenses.denied_exit_statuses)
                .copied()
                .collect(),
            record_launches: (!self.config.rqd.dry_run)
                .then(|| self.fence.as_ref().map(|f| f.instance)),
            licenses: crate::licenses::rules(&self.config.licenses),
        };
        let inflight = self.inflight(placements);
        let (client, prepared) = conn.parts();
        db::booking::book_batch_prepared(
            client,
            prepared,
            placements,
            &options,
            self.fence.as_ref(),
            &inflight,
        )
    }

    /// What this instance has charged and not committed under the batch's shared caps, read
    /// before the batch's transaction counts what is committed (see [`db::caps`]).
    fn inflight(&self, placements: &[Placement]) -> InFlight {
        let ledger = &self.shared.ledger;
        let mut inflight = InFlight::default();
        // One entry per distinct cap of the batch (the keys are shared ids: no copies).
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

    /// A frame committed: its hold and charge become permanent and it goes to the launchers.
    /// `began` is a moment before the booking's transaction began: its pending-launch row
    /// was written claimed at that transaction's start, so the claim is at most that old.
    fn booked(&self, planned: Planned, version: i32, began: Instant) {
        let Planned {
            placement,
            earmark,
            ticket,
            charge,
            launch,
            waited_secs,
            show_name,
        } = planned;
        let warm = earmark.commit();
        metrics::LOCALITY_BOOKINGS
            .with_label_values(&[warm.label()])
            .inc();
        ticket.commit();
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
        let Some(launch) = launch else {
            return;
        };
        let task = LaunchTask {
            placement,
            version,
            launch,
            charge,
            claimed_before: began,
            committed: Instant::now(),
        };
        if let Err(refused) = self.launches.send(task) {
            // No launcher will take it: undo it here, never leave a committed frame RUNNING
            // without a process.
            log::warn!("launch queue closed; undoing a committed booking");
            super::launch::undo(self.shared, &refused.0);
        }
    }

    /// A frame that lost a guard (its earmark and charge are given back as it drops):
    /// counts it, asks for what the loss says is stale, and names why its layer waits.
    fn lost(&self, loss: GuardLoss) -> Option<Reason> {
        metrics::GUARD_LOSSES
            .with_label_values(&[loss.label()])
            .inc();
        self.shared.stats.rejected(1);
        match loss {
            GuardLoss::HostCapacity => {
                self.shared.host_refresh.request();
                None
            }
            // A wide-frame reservation this instance did not know yet: re-read them.
            GuardLoss::Reserved => {
                self.shared.host_refresh.request();
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
            GuardLoss::License => Some(Reason::NoLicense),
        }
    }
}

/// How long a split waits for a connection the pool is opening for it: about what opening
/// one takes on a local network; a pool that cannot open one that fast is not spare.
const SPARE_CONNECT: std::time::Duration = std::time::Duration::from_millis(50);

/// A pooled connection nobody is using, or one the pool may still open (below its size);
/// `None` rather than waiting for one to be given back.
fn spare_connection(pool: &db::Pool) -> Option<db::Conn> {
    if let Some(c) = pool.try_get() {
        return Some(c);
    }
    // The pool opens connections on demand (`min_idle` 0): below its size, ask for one.
    if pool.state().connections < pool.max_size() {
        return pool.get_timeout(SPARE_CONNECT).ok();
    }
    None
}

/// One instance's share of `slots` among `instances`: rounded down, at least one.
fn share_of(slots: usize, instances: usize) -> usize {
    (slots / instances.max(1)).max(1)
}

/// The booking transactions of this instance running now, and the wait for a free one
/// while several instances share the database: at most `batches_in_flight` divided among
/// them (the setting is the database server's), at least one.
#[derive(Default)]
pub(crate) struct CommitGate {
    running: Mutex<usize>,
    freed: Condvar,
}

impl CommitGate {
    /// Transactions running now.
    pub(crate) fn running(&self) -> usize {
        *self.running.lock()
    }

    /// Waits until fewer than `limit` run, then counts one more until the slot drops.
    fn enter(&self, limit: usize) -> CommitSlot<'_> {
        let mut running = self.running.lock();
        while *running >= limit.max(1) {
            self.freed.wait(&mut running);
        }
        *running += 1;
        CommitSlot(self)
    }
}

/// One booking transaction counted in a [`CommitGate`] while it lives.
struct CommitSlot<'a>(&'a CommitGate);

impl Drop for CommitSlot<'_> {
    fn drop(&mut self) {
        *self.0.running.lock() -= 1;
        self.0.freed.notify_one();
    }
}

/// `items` cut into at most `parts` parts that never split a key: the keys in the order they
/// first appear, each whole group to the part that is smallest so far. Items keep their
/// order within a part.
fn split_by<T, K: Eq + Hash>(items: Vec<T>, parts: usize, key: impl Fn(&T) -> K) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    let mut group_of: HashMap<K, usize> = HashMap::new();
    for item in items {
        let next = groups.len();
        let g = *group_of.entry(key(&item)).or_insert(next);
        if g == next {
            groups.push(Vec::new());
        }
        groups[g].push(item);
    }
    let mut out: Vec<Vec<T>> = (0..parts.clamp(1, groups.len().max(1)))
        .map(|_| Vec::new())
        .collect();
    for group in groups {
        if let Some(smallest) = out.iter_mut().min_by_key(|p| p.len()) {
            smallest.extend(group);
        }
    }
    out
}

/// Keeps every hold and charge of a batch whose commit is unknown while the database is gone
/// at shutdown (over-counting is safe; the re-sync corrects it).
fn keep_all(batch: Vec<Planned>) {
    for planned in batch {
        let _ = planned.earmark.commit();
        planned.ticket.commit();
    }
}

#[cfg(test)]
mod tests {
    use super::{share_of, split_by};

    #[test]
    fn instances_together_never_exceed_the_setting() {
        assert_eq!(share_of(4, 1), 4);
        assert_eq!(share_of(4, 2), 2);
        assert_eq!(share_of(4, 3), 1, "three instances keep three, not six");
        assert_eq!(share_of(4, 5), 1, "each instance can still book");
        assert_eq!(share_of(4, 0), 4);
    }

    #[test]
    fn a_split_never_cuts_a_key_and_balances_the_parts() {
        let items = vec![
            (1, 'a'),
            (1, 'b'),
            (2, 'c'),
            (3, 'd'),
            (3, 'e'),
            (3, 'f'),
            (2, 'g'),
        ];
        let parts = split_by(items, 2, |i| i.0);
        assert_eq!(parts.len(), 2);
        // Key 1 (2 items) to part 0, key 2 (2) to part 1, key 3 (3) to part 0 (a tie).
        assert_eq!(
            parts[0],
            vec![(1, 'a'), (1, 'b'), (3, 'd'), (3, 'e'), (3, 'f')]
        );
        assert_eq!(parts[1], vec![(2, 'c'), (2, 'g')]);
    }

    #[test]
    fn a_split_has_no_more_parts_than_keys() {
        let parts = split_by(vec![(1, 'a'), (1, 'b')], 4, |i| i.0);
        assert_eq!(parts, vec![vec![(1, 'a'), (1, 'b')]]);
        assert_eq!(split_by(Vec::<(u8, char)>::new(), 3, |i| i.0).len(), 1);
    }
}
