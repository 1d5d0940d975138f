//! A pass's guarded batch: the frames placed and charged but not yet committed, their commit
//! through [`db::booking::book_batch`], and what follows each frame's result — the launch
//! of a booked one, the give-back of one that lost a guard.
//!
//! Every planned frame holds its host earmark and its cap charge as RAII values: a batch
//! dropped on an error gives both back, so nothing leaks.

use std::time::Instant;

use crossbeam_channel::Sender;

use super::{Shared, launch::LaunchTask, waiting::Reason};
use crate::{
    accounting::{Charge, Ticket},
    config::Config,
    db::{
        self,
        booking::{BatchOutcome, BookOptions, Fence, GuardLoss, Placement},
        caps::InFlight,
    },
    ids::{HostId, LayerId},
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
    /// Commits `batch`; returns each frame's layer and result, in order. On an error every
    /// earmark and charge of the batch is given back (unless the outcome is unknown and
    /// the database gone at shutdown: then they are kept, as over-counting is safe).
    pub(super) fn commit(
        &self,
        conn: &mut db::Conn,
        batch: Vec<Planned>,
    ) -> Result<Vec<(LayerId, FrameResult)>, db::DbError> {
        let placements: Vec<Placement> = batch.iter().map(|p| p.placement.clone()).collect();
        let ticket = self.shared.index.begin_refresh();
        let started = Instant::now();
        let outcome = match self.book(conn, &placements) {
            Ok(o) => o,
            Err(db::DbError::CommitUnknown { outcome, source }) => {
                match super::resolve::commit(self.shared, &placements, &outcome) {
                    Some(true) => *outcome,
                    resolved => {
                        metrics::BATCHES.with_label_values(&["error"]).inc();
                        if resolved.is_none() {
                            keep_all(batch);
                        }
                        return Err(db::DbError::Postgres(source));
                    }
                }
            }
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
        db::booking::book_batch(conn, placements, &options, self.fence.as_ref(), &inflight)
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

/// Keeps every hold and charge of a batch whose commit is unknown while the database is gone
/// at shutdown (over-counting is safe; the re-sync corrects it).
fn keep_all(batch: Vec<Planned>) {
    for planned in batch {
        let _ = planned.earmark.commit();
        planned.ticket.commit();
    }
}
