//! PostgreSQL access: the r2d2 pool, the error type every stage's SQL returns, and the
//! migrations. The SQL of each stage lives in its own submodule so a reader finds a statement
//! by the stage that runs it.

pub mod accounting;
pub mod booking;
pub mod caps;
mod compensation;
pub(crate) mod explain;
mod host_guard;
pub mod hosts;
pub mod jobs;
pub mod launches;
pub mod licenses;
pub mod migrate;
pub mod recompute;
pub mod reservations;
pub mod session;
pub(crate) mod status;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use postgres::NoTls;

use crate::{config::DatabaseConfig, model::Resources};

/// The connection pool shared by the worker threads.
pub type Pool = r2d2::Pool<session::Manager>;

/// A connection checked out of the [`Pool`].
pub(crate) type Conn = r2d2::PooledConnection<session::Manager>;

/// A pooled connection a worker thread keeps between its reads or passes. The statements a
/// pooled session keeps prepared are planned per connection — five custom plans before the
/// plan cache settles, once for a generic plan — so work taken on whichever connection the
/// pool hands out is planned again on each one in turn: with three instances most of the
/// new-work probe's calls in a drain were planned (issue 14). Kept, it is planned on one.
/// A kept connection goes back to the pool after an error (the pool drops it if it broke)
/// and every [`KEEP_AT_MOST`], so the pool's lifetime rule still renews it.
#[derive(Default)]
pub(crate) struct Kept(Option<(Conn, std::time::Instant)>);

/// How long a [`Kept`] connection is used before it goes back to the pool.
const KEEP_AT_MOST: Duration = Duration::from_secs(300);

impl Kept {
    /// Runs `work` on the kept connection, checking one out first if none is kept (or the
    /// kept one is due back).
    pub(crate) fn run<T>(
        &mut self,
        pool: &Pool,
        work: impl FnOnce(&mut Conn) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        if self
            .0
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= KEEP_AT_MOST)
        {
            self.0 = None;
        }
        let (conn, _) = match &mut self.0 {
            Some(kept) => kept,
            empty => empty.insert((pool.get()?, std::time::Instant::now())),
        };
        let result = work(conn);
        if result.is_err() {
            self.0 = None;
        }
        result
    }
}

/// A failed database operation.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had from the pool in time (database down or pool exhausted).
    #[error("no database connection: {0}")]
    Pool(#[from] r2d2::Error),
    /// A statement or the connection failed.
    #[error("database error: {}", migrate::describe(.0))]
    Postgres(#[from] postgres::Error),
    /// The connection string is unusable.
    #[error("bad database connection string: {0}")]
    Config(String),
    /// The database lacks something stagehand needs (for example an old Cuebot schema).
    #[error("database schema: {0}")]
    Schema(String),
    /// A booking's COMMIT lost its answer: it may or may not have committed. Carries what
    /// the batch did if it did, for [`booking::committed`] to decide.
    #[error("commit outcome unknown: {}", migrate::describe(.source))]
    CommitUnknown {
        /// The batch's outcome, valid if it committed.
        outcome: Box<booking::BatchOutcome>,
        /// The transaction's id, for [`booking::committed`] to ask about.
        xid: i64,
        /// The error the COMMIT returned.
        source: postgres::Error,
    },
}

impl DbError {
    /// True when trying again later can succeed: connection loss, timeouts, serialization
    /// failures and deadlocks. Constraint violations and schema problems are not retryable.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            DbError::Pool(_) | DbError::CommitUnknown { .. } => true,
            DbError::Postgres(e) => match e.code() {
                None => true, // connection-level: closed, I/O, timeout
                Some(code) => {
                    let c = code.code();
                    // 40xxx transaction rollback (serialization, deadlock), 08xxx connection,
                    // 57Pxx operator intervention (admin shutdown, cannot connect now),
                    // 53xxx insufficient resources, 57014 query canceled (statement timeout), 25P03 the
                    // idle-in-transaction timeout ended a frozen session (an undo must be retried),
                    // 55P03 a lock not had within the lock timeout (the booking yielded).
                    c.starts_with("40")
                        || c.starts_with("08")
                        || c.starts_with("57P")
                        || c.starts_with("53")
                        || c == "57014"
                        || c == "25P03"
                        || c == "55P03"
                }
            },
            DbError::Config(_) | DbError::Schema(_) => false,
        }
    }

    /// A short, stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DbError::Pool(_) => "pool",
            DbError::Postgres(e) if e.code().is_none() => "connection",
            DbError::Postgres(_) => "statement",
            DbError::Config(_) => "config",
            DbError::Schema(_) => "schema",
            DbError::CommitUnknown { .. } => "commit_unknown",
        }
    }
}

/// The connection settings of `[database]`: timeouts, keepalives and a statement timeout
/// applied to every connection, so a stuck database cannot hang a worker forever.
pub(crate) fn connection_config(db: &DatabaseConfig) -> Result<postgres::Config, DbError> {
    let mut config: postgres::Config = db
        .url
        .parse()
        .map_err(|e: postgres::Error| DbError::Config(e.to_string()))?;
    config.connect_timeout(db.connect_timeout);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.application_name("stagehand");
    // The idle-in-transaction timeout is what makes fencing safe against a frozen process:
    // its booking transaction holds the lease rows FOR SHARE, and only the server ending the
    // session releases them for the takeover.
    //
    // JIT compilation off: stagehand's statements are short, and the planner's cost alone
    // decides it. At 12,000 hosts the full host read crossed `jit_above_cost`, and its first
    // run spent 312 ms of 390 compiling (`pg_stat_statements.jit_*`, issue 14), before the
    // first booking of a start.
    config.options(&format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={} -c timezone=UTC -c jit=off",
        db.statement_timeout.as_millis(),
        db.transaction_idle_timeout.as_millis().max(1),
    ));
    Ok(config)
}

/// Builds the pool without waiting for the database: a service started while PostgreSQL is
/// down comes up, reports not ready, and connects when the database does.
pub fn pool(db: &DatabaseConfig) -> Result<Pool, DbError> {
    let manager = session::Manager::new(connection_config(db)?, db.prepared_statements);
    Ok(r2d2::Pool::builder()
        .max_size(db.pool_size)
        .min_idle(Some(0))
        .connection_timeout(db.connect_timeout)
        .test_on_check_out(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .max_lifetime(Some(Duration::from_secs(1800)))
        .error_handler(Box::new(QuietErrors::default()))
        .build_unchecked(manager))
}

/// Opens one connection outside the pool (migrations, the recompute thread's own session).
pub fn connect(db: &DatabaseConfig) -> Result<postgres::Client, DbError> {
    Ok(connection_config(db)?.connect(NoTls)?)
}

/// Resources from four bigint columns of `row` starting at `first` (cores, mem, gpus,
/// gpu_mem), as the host and proc tables hold them. A NULL (an outer join found no row) or a
/// negative value (a host Cuebot over-booked) reads as 0, and cores and GPUs saturate, so a
/// bad row can never wrap into a huge amount.
fn resources_at(row: &postgres::Row, first: usize) -> Resources {
    let v = |i: usize| row.get::<_, Option<i64>>(first + i).unwrap_or(0).max(0);
    Resources {
        cores: v(0).min(i64::from(u32::MAX)) as u32,
        mem_kb: v(1) as u64,
        gpus: v(2).min(i64::from(u32::MAX)) as u32,
        gpu_mem_kb: v(3) as u64,
    }
}

/// Logs connection errors at most once per ten seconds: r2d2's default handler logs every
/// failed attempt, which floods the log while the database is down.
#[derive(Default, Debug)]
struct QuietErrors {
    last_logged: AtomicU64,
}

impl r2d2::HandleError<postgres::Error> for QuietErrors {
    fn handle_error(&self, error: postgres::Error) {
        crate::metrics::DB_CONNECT_ERRORS.inc();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let last = self.last_logged.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .last_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("database connection failed: {error}");
        }
    }
}
