//! Deciding a booking whose COMMIT lost its answer.
//!
//! When the connection breaks (or the server ends the session) while COMMIT is in flight,
//! the batch may have committed: frames RUNNING with procs and host cores taken. Treating
//! that as a rollback would leave them never launched and the counters short; treating it as
//! a commit when it rolled back would launch frames the database does not have. So the
//! booking thread asks the database, on a new connection, for the status of the batch's
//! transaction (`txid_status`, see [`db::booking::committed`]) — asking again while it is
//! still in progress (the old session may not have read the COMMIT yet) and while the
//! database is unreachable. The batch's charges are kept all the while.

use std::time::Duration;

use super::Shared;
use crate::{
    db::{
        self,
        booking::{BatchOutcome, Placement},
    },
    metrics,
};

/// Whether the batch of `placements` (whose outcome-if-committed is `outcome`) committed:
/// `Some(true)` or `Some(false)` once the database answered, `None` if shutdown's grace ran
/// out first.
pub(crate) fn commit(
    shared: &Shared,
    placements: &[Placement],
    outcome: &BatchOutcome,
    xid: i64,
) -> Option<bool> {
    let procs: Vec<&str> = placements
        .iter()
        .zip(&outcome.results)
        .filter(|(_, r)| r.is_ok())
        .map(|(p, _)| p.proc.as_str())
        .collect();
    if procs.is_empty() {
        // Nothing was started: committed or not, nothing to launch and nothing to keep.
        return Some(false);
    }
    let mut delay = Duration::from_millis(100);
    loop {
        let answer = shared.with_conn(|conn| db::booking::committed(conn, xid, &procs));
        match answer {
            Ok(None) if !shared.past_grace() => {
                // Still in progress: the old session has not committed or ended yet.
                std::thread::sleep(IN_PROGRESS_POLL);
            }
            Ok(Some(committed)) => {
                let label = if committed {
                    "committed"
                } else {
                    "rolled_back"
                };
                metrics::COMMITS_UNKNOWN.with_label_values(&[label]).inc();
                log::warn!(
                    "a booking commit lost its answer; the database says it {}",
                    label.replace('_', " ")
                );
                return Some(committed);
            }
            Ok(None) => return unresolved(procs.len(), "its transaction is still in progress"),
            Err(e) if shared.past_grace() => return unresolved(procs.len(), &e.to_string()),
            Err(_) => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// How often a transaction still in progress is asked about again.
const IN_PROGRESS_POLL: Duration = Duration::from_millis(50);

/// Shutdown's grace ran out before the outcome was known: the charges stay (the batch may
/// hold its cores) and the frames are not launched; the pending-launch rows let the next
/// holder of the shows resolve them.
fn unresolved(frames: usize, why: &str) -> Option<bool> {
    metrics::COMMITS_UNKNOWN
        .with_label_values(&["unresolved"])
        .inc();
    log::error!(
        "could not learn whether a booking of {frames} frames committed ({why}); \
         keeping its charges, its frames are not launched"
    );
    None
}
