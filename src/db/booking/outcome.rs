//! The end of a booking transaction: its COMMIT, and — when COMMIT's answer is lost — the
//! question whether it committed after all, asked of the transaction's own status.

use postgres::Client;

use super::{BatchOutcome, DbError, Tx};

/// Commits; a COMMIT whose answer was lost returns the outcome with the error, for
/// [`committed`] to decide on a new connection.
pub(super) fn commit(tx: Tx<'_>, outcome: BatchOutcome) -> Result<BatchOutcome, DbError> {
    let xid = tx.xid();
    match tx.commit() {
        Ok(()) => Ok(outcome),
        Err(e) if outcome_unknown(&e) => Err(DbError::CommitUnknown {
            outcome: Box::new(outcome),
            xid,
            source: e,
        }),
        Err(e) => Err(e.into()),
    }
}

/// True when a failed COMMIT may still have committed: the connection broke, or the server
/// ended the session (`pg_terminate_backend`, shutdown) after the commit record may have
/// been written but before the answer was sent. A statement error means it rolled back.
pub(crate) fn outcome_unknown(e: &postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
    }
}

/// Resolves a commit whose answer was lost, on a new connection: `Some(true)` if the batch
/// (transaction `xid`, see [`Tx::xid`]) committed, `Some(false)` if it rolled back, `None`
/// while it is still in progress — ask again.
///
/// The transaction's own status decides, not whether its procs are visible: a lost answer
/// does not mean the server is done. The old session may still be committing (a slow flush,
/// a synchronous standby) or may not even have read the COMMIT yet (a network that delays
/// it), and a proc count taken meanwhile reads 0 — a "rollback" whose frames then commit,
/// never launched and no longer charged. Until the old session commits or ends (at worst
/// after `idle_in_transaction_session_timeout`), the status stays "in progress". Only a
/// transaction too old for the status (or of unknown id) falls back to its procs: one
/// transaction, so they all exist or none do, all looked up in case Cuebot released one.
pub fn committed(client: &mut Client, xid: i64, procs: &[&str]) -> Result<Option<bool>, DbError> {
    if xid >= 0 {
        let status: Option<String> = client.query_one("SELECT txid_status($1)", &[&xid])?.get(0);
        match status.as_deref() {
            Some("committed") => return Ok(Some(true)),
            Some("aborted") => return Ok(Some(false)),
            Some(_) => return Ok(None),
            None => {}
        }
    }
    let found: i64 = client
        .query_one(
            "SELECT count(*) FROM proc WHERE pk_proc = ANY($1)",
            &[&procs],
        )?
        .get(0);
    Ok(Some(found > 0))
}
