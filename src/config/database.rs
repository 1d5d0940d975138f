//! `[database]`: where the Cuebot database is and how to talk to it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError,
    check::{invalid, within},
    duration,
};

/// `[database]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style connection string or `postgresql://` URL. Cold.
    /// `STAGEHAND_DATABASE_URL` wins over this value.
    pub url: String,
    /// Connections in the pool. Each booking thread, the cluster feed and the host refresher
    /// keep one, so at least `scheduler.worker_threads` + 3. Cold.
    pub pool_size: u32,
    /// How long to wait for a connection (pool checkout and TCP connect). Cold.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// `statement_timeout` set on every connection. Cold.
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of every connection: a process frozen inside a
    /// transaction (GC, SIGSTOP, VM pause) loses its session and its locks after this, so it
    /// cannot block a lease takeover. Must be shorter than `cluster.lease_duration`. Cold.
    #[serde(with = "duration")]
    pub transaction_idle_timeout: Duration,
    /// Keep the booking's statements and the frequent reads prepared on each pooled
    /// connection across transactions (parsed and planned once). Off behind a pooler in transaction mode that does not carry
    /// prepared statements between server connections (PgBouncer before 1.21, or without
    /// `max_prepared_statements`). Cold.
    pub prepared_statements: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "host=127.0.0.1 port=5432 user=cuebot dbname=cuebot".to_owned(),
            pool_size: 12,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            transaction_idle_timeout: Duration::from_secs(5),
            prepared_statements: true,
        }
    }
}

impl DatabaseConfig {
    /// The section's rules; `lease_duration` is `cluster.lease_duration`, which a frozen
    /// session must lose its locks before.
    pub(super) fn validate(&self, lease_duration: Duration) -> Result<(), ConfigError> {
        if self.url.trim().is_empty() {
            return Err(invalid(
                "database.url",
                "\"\"",
                "must name a database (or set STAGEHAND_DATABASE_URL)",
            ));
        }
        // The URL may carry a password: the error never repeats it.
        if self.url.parse::<postgres::Config>().is_err() {
            return Err(invalid(
                "database.url",
                "<hidden>",
                "is not a valid PostgreSQL connection string",
            ));
        }
        within("database.pool_size", self.pool_size as usize, 1..=1000)?;
        if self.transaction_idle_timeout >= lease_duration {
            return Err(invalid(
                "database.transaction_idle_timeout",
                humantime::format_duration(self.transaction_idle_timeout),
                "must be shorter than cluster.lease_duration",
            ));
        }
        Ok(())
    }
}
