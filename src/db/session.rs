//! A pooled connection with its prepared statements, the booking transaction that uses
//! them, and [`Cached`] for the reads that run many times a second.
//!
//! A statement sent as text is parsed, analysed and planned on every call, and costs a round
//! trip of its own before it runs. A booking batch sends about fifteen (issue 14), and with
//! 50–200 frames in their arrays PostgreSQL spent more CPU planning the frame UPDATE than
//! running it (measured with pgbench on a drained farm: 1.2 ms a call as text, 0.18 ms
//! prepared). So each connection keeps the booking's statements prepared, and PostgreSQL may
//! cache their generic plans.
//!
//! [`Tx`] runs them on generic plans from the first call (`plan_cache_mode =
//! force_generic_plan`). Left to itself, PostgreSQL plans the first five calls of a statement
//! on each connection as custom plans — a cost every connection pays again, which a burst of
//! booking (a drain's 60–80 batches over eight connections) felt — and keeps planning a
//! statement whose generic estimate looks dearer on every call. So the booking SQL is written
//! to be planned once: every statement is driven by the keys in its arrays (the cap guard's
//! sums are one lateral subquery per key).
//!
//! A generic plan is made once and kept until a table it reads is analysed again, so it must
//! not depend on statistics that go stale as a farm drains. [`Tx`] therefore also plans with
//! `enable_seqscan = off` — the booking reaches every row by its key, and a scan the
//! statistics once made cheap (an empty `proc` table) must not be locked in — and the booking
//! SQL avoids indexes whose selectivity swings (see `start_frames`). Cuebot's triggers plan
//! their static statements under the same settings: each is a lookup by key.

use std::{
    collections::HashMap,
    ops::{Deref, DerefMut},
};

use postgres::{Client, GenericClient, NoTls, Row, Statement, Transaction, types::ToSql};
use r2d2_postgres::PostgresConnectionManager;

/// Statements kept per connection: the booking uses about fifteen, the frequent reads five; a
/// bound keeps a caller that builds SQL from values from growing the map (and the server's
/// memory) without end.
const MAX_PREPARED: usize = 64;

/// SQLSTATE `0A000`: PostgreSQL refuses to run a prepared statement whose result columns a
/// schema change altered; the statement is dropped and prepared again on the next call.
const CACHED_PLAN_CHANGED: &str = "0A000";

/// SQLSTATE `26000`: the server no longer knows the statement (a `DISCARD ALL`, or a pooler
/// that moved the session to another server connection): every kept statement is dropped.
const STATEMENT_GONE: &str = "26000";

/// Parameters of a statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The prepared statements of one connection, by SQL text. `uncached` prepares every call
/// again (what a plain client does): for callers that hold no pooled session.
#[derive(Default)]
pub struct Prepared {
    statements: HashMap<String, Statement>,
    uncached: bool,
}

impl Prepared {
    /// A cache that keeps nothing: each statement is prepared for one call.
    pub fn uncached() -> Prepared {
        Prepared {
            statements: HashMap::new(),
            uncached: true,
        }
    }

    /// The statement for `sql`, prepared on `client`'s connection the first time.
    fn get(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let statement = client.prepare(sql)?;
        if !self.uncached {
            if self.statements.len() >= MAX_PREPARED {
                self.statements.clear();
            }
            self.statements.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }

    /// Runs `sql` with `f` on its prepared statement on `client`, dropping the statement if
    /// the schema changed under it.
    fn run<C: GenericClient, T>(
        &mut self,
        client: &mut C,
        sql: &str,
        f: impl FnOnce(&mut C, &Statement) -> Result<T, postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let statement = self.get(client, sql)?;
        f(client, &statement).inspect_err(|e| self.forget_if_stale(sql, e))
    }

    /// Forgets `sql` when `e` says its plan no longer fits the schema, and every statement
    /// when the server lost them.
    fn forget_if_stale(&mut self, sql: &str, e: &postgres::Error) {
        match e.code().map(|c| c.code()) {
            Some(CACHED_PLAN_CHANGED) => {
                self.statements.remove(sql);
            }
            Some(STATEMENT_GONE) => {
                log::warn!(
                    "the database lost this connection's prepared statements; behind a pooler \
                     in transaction mode set [database] prepared_statements = false"
                );
                self.statements.clear();
            }
            _ => {}
        }
    }

    /// How many statements are kept.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// A pooled connection: the client and its prepared statements. Derefs to the client, so
/// code that only reads uses it as one.
pub struct Session {
    client: Client,
    prepared: Prepared,
}

impl Session {
    /// The client, for the functions that take any [`postgres::GenericClient`].
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The client and the statements, borrowed apart (a transaction borrows the client).
    pub fn parts(&mut self) -> (&mut Client, &mut Prepared) {
        (&mut self.client, &mut self.prepared)
    }

    /// The client with this connection's prepared statements, for reads that run often
    /// (see [`Cached`]).
    pub fn cached(&mut self) -> Cached<'_, Client> {
        Cached {
            client: &mut self.client,
            prepared: &mut self.prepared,
        }
    }
}

/// A client or transaction whose statements run prepared and kept with the connection, on
/// plans PostgreSQL's plan cache chooses (`plan_cache_mode` left as the server has it:
/// custom plans for the first five calls, then the generic plan where it is estimated no
/// dearer). For the reads a worker repeats many times a second — the host changes, the
/// new-work probe, the pass's reads: sent as text, each call was parsed and planned again
/// (issue 14: about 1 ms of planning a call on a busy server, as much as running them).
pub struct Cached<'a, C> {
    client: &'a mut C,
    prepared: &'a mut Prepared,
}

impl<'a, C: GenericClient> Cached<'a, C> {
    /// Statements on `client` kept in `prepared` (e.g. a transaction of a [`Session`]).
    pub fn new(client: &'a mut C, prepared: &'a mut Prepared) -> Cached<'a, C> {
        Cached { client, prepared }
    }

    /// [`GenericClient::query`], prepared.
    pub fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        self.prepared
            .run(self.client, sql, |c, s| c.query(s, params))
    }

    /// [`GenericClient::query_one`], prepared.
    pub fn query_one(&mut self, sql: &str, params: Params<'_>) -> Result<Row, postgres::Error> {
        self.prepared
            .run(self.client, sql, |c, s| c.query_one(s, params))
    }
}

impl Deref for Session {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// The pool's connection manager: r2d2_postgres's, with a [`Prepared`] per connection
/// (one that keeps nothing when `[database] prepared_statements` is off).
#[derive(Debug)]
pub struct Manager {
    inner: PostgresConnectionManager<NoTls>,
    keep: bool,
}

impl Manager {
    /// Connects with `config`; `keep`: keep statements prepared across transactions.
    pub fn new(config: postgres::Config, keep: bool) -> Manager {
        Manager {
            inner: PostgresConnectionManager::new(config, NoTls),
            keep,
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Session;
    type Error = postgres::Error;

    fn connect(&self) -> Result<Session, postgres::Error> {
        Ok(Session {
            client: self.inner.connect()?,
            prepared: if self.keep {
                Prepared::default()
            } else {
                Prepared::uncached()
            },
        })
    }

    fn is_valid(&self, s: &mut Session) -> Result<(), postgres::Error> {
        self.inner.is_valid(&mut s.client)
    }

    fn has_broken(&self, s: &mut Session) -> bool {
        self.inner.has_broken(&mut s.client)
    }
}

/// A transaction whose statements run prepared (see the module doc). Mirrors the
/// [`Transaction`] calls the booking uses.
pub struct Tx<'c> {
    tx: Transaction<'c>,
    prepared: &'c mut Prepared,
    xid: i64,
}

impl<'c> Tx<'c> {
    /// Begins a transaction on `client` that plans without sequential scans, on generic
    /// plans from the first call (see the module doc), and learns its transaction id in the
    /// same round trip (see [`Tx::xid`]).
    pub fn begin(
        client: &'c mut Client,
        prepared: &'c mut Prepared,
    ) -> Result<Tx<'c>, postgres::Error> {
        let mut tx = client.transaction()?;
        let replies = tx.simple_query(
            "SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan;
             SELECT txid_current()",
        )?;
        // The id is assigned now rather than at the first row lock a moment later: every
        // booking locks rows, so it costs no transaction id that was not spent anyway.
        let xid = replies
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                _ => None,
            })
            .unwrap_or(-1);
        Ok(Tx { tx, prepared, xid })
    }

    /// The transaction's id (`txid_current()`, with its epoch; -1 if the server's answer
    /// could not be read): what `txid_status` is asked when the answer to COMMIT is lost.
    pub fn xid(&self) -> i64 {
        self.xid
    }

    /// [`Transaction::query`], prepared.
    pub fn query(&mut self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, postgres::Error> {
        self.prepared
            .run(&mut self.tx, sql, |tx, s| tx.query(s, params))
    }

    /// [`Transaction::execute`], prepared.
    pub fn execute(&mut self, sql: &str, params: Params<'_>) -> Result<u64, postgres::Error> {
        self.prepared
            .run(&mut self.tx, sql, |tx, s| tx.execute(s, params))
    }

    /// A savepoint (a nested transaction) with the same statements; dropping it rolls back
    /// to the savepoint, [`Tx::commit`] releases it.
    pub fn savepoint(&mut self, name: &str) -> Result<Tx<'_>, postgres::Error> {
        Ok(Tx {
            tx: self.tx.savepoint(name)?,
            prepared: &mut *self.prepared,
            xid: self.xid,
        })
    }

    /// The plain transaction, for SQL shared with callers outside the booking.
    pub fn inner(&mut self) -> &mut Transaction<'c> {
        &mut self.tx
    }

    /// Commits.
    pub fn commit(self) -> Result<(), postgres::Error> {
        self.tx.commit()
    }

    /// Rolls back.
    pub fn rollback(self) -> Result<(), postgres::Error> {
        self.tx.rollback()
    }
}
