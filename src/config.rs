//! The TOML configuration: schema, defaults, validation and the hot/cold split used by reload.
//!
//! Every key has a default, so an empty file is a valid configuration; unknown keys are
//! rejected so a typo never silently falls back to a default. `conf/stagehand.toml` ships
//! every key with its default and meaning, and a test keeps the two equal.
//!
//! Reload (SIGHUP) applies *hot* keys at once. *Cold* keys (database URL, pool size, listen
//! address, worker count) size resources built at start-up; a reload that changes them keeps
//! the running values and names them as needing a restart ([`Config::cold_changes`]), and a
//! reload is refused unless the configuration it would apply — the new file with the running
//! cold keys — passes [`Config::validate`].
//!
//! Durations use humantime's syntax (`30s`, `1m 30s`, `4h`) and are read by our own checked
//! parser (`duration`), so no value can panic; every duration must be greater than zero and at
//! most [`MAX_DURATION`], because the threads add them to `Instant::now()`.

use std::{fs, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

mod accounting;
mod check;
mod cluster;
mod database;
mod duration;
mod hosts;
mod http;
mod licenses;
mod memory;
mod reservations;
mod rqd;
mod scheduler;
mod service;

pub use accounting::AccountingConfig;
pub use cluster::ClusterConfig;
pub use database::DatabaseConfig;
pub use hosts::HostsConfig;
pub use http::HttpConfig;
pub use licenses::{LicensesConfig, Provider as LicenseProvider};
pub use memory::MemoryConfig;
pub use reservations::ReservationsConfig;
pub use rqd::RqdConfig;
pub use scheduler::{JobOrder, MIN_SPLIT, SchedulerConfig};
pub use service::ServiceConfig;

/// The environment variable whose value, when set, replaces `[database] url`.
pub(crate) const DATABASE_URL_ENV: &str = "STAGEHAND_DATABASE_URL";

/// The longest any duration key may be: far beyond any sensible interval or timeout, and far
/// below what `Instant + Duration` overflows at.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 86_400);

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (syntax, unknown key, wrong type).
    #[error("{path}:{line}: {key}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line of the offending text, 0 when unknown.
        line: usize,
        /// The key (with its section) or the offending text.
        key: String,
        /// The parser's explanation.
        message: String,
    },
    /// A value parsed but is out of range or inconsistent.
    #[error("{key} = {value}: {reason}")]
    Invalid {
        /// Section and key, e.g. `scheduler.worker_threads`.
        key: &'static str,
        /// The rejected value as written.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[database]`: where the Cuebot database is and how to talk to it.
    pub database: DatabaseConfig,
    /// `[scheduler]`: which shows and clusters, and how the worker threads pace themselves.
    pub scheduler: SchedulerConfig,
    /// `[hosts]`: how the host index is kept in step with the database.
    pub hosts: HostsConfig,
    /// `[rqd]`: how frames are launched.
    pub rqd: RqdConfig,
    /// `[accounting]`: caps and the bulk recompute.
    pub accounting: AccountingConfig,
    /// `[reservations]`: hosts reserved for wide frames, and backfill around them.
    pub reservations: ReservationsConfig,
    /// `[memory]`: memory booked from what a layer's frames used.
    pub memory: MemoryConfig,
    /// `[licenses]`: live application licenses.
    pub licenses: LicensesConfig,
    /// `[cluster]`: multi-instance coordination.
    pub cluster: ClusterConfig,
    /// `[http]`: metrics and health endpoints.
    pub http: HttpConfig,
    /// `[service]`: logging and lifecycle.
    pub service: ServiceConfig,
}

/// Pooled connections kept besides the booking threads': the feed's and the host refresher's.
const KEPT_BESIDE_WORKERS: usize = 2;

impl Config {
    /// Reads, parses and validates a file; `STAGEHAND_DATABASE_URL` replaces the URL.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Config::parse(&text, &path.display().to_string())?;
        if let Ok(url) = std::env::var(DATABASE_URL_ENV) {
            if !url.trim().is_empty() {
                config.database.url = url;
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text (no validation, no environment); `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| parse_error(text, origin, &e))
    }

    /// Checks ranges and consistency; the error names the key and the value. Sections are
    /// checked in file order after every duration, and the first rule broken is reported.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in self.durations() {
            check::bounded(key, value)?;
        }
        self.database.validate(self.cluster.lease_duration)?;
        self.scheduler.validate()?;
        self.reservations.validate()?;
        self.memory.validate()?;
        self.licenses.validate()?;
        self.rqd.validate()?;
        self.cluster.validate()?;
        self.http.validate()?;
        self.validate_pool()
    }

    /// Each booking thread, the cluster feed and the host refresher keep a pooled
    /// connection between their reads (`db::Kept`); at least one more serves the rest (the
    /// launchers' acknowledgements, full host reads, a split batch's parts, `/explain`).
    fn validate_pool(&self) -> Result<(), ConfigError> {
        let least = self.scheduler.worker_threads + KEPT_BESIDE_WORKERS + 1;
        if (self.database.pool_size as usize) < least {
            return Err(check::invalid(
                "database.pool_size",
                self.database.pool_size,
                &format!(
                    "must be at least scheduler.worker_threads + {} ({least}): each booking thread, the feed and the host refresher keep a connection",
                    KEPT_BESIDE_WORKERS + 1
                ),
            ));
        }
        Ok(())
    }

    /// Every duration key with its value, so that validation bounds each one.
    fn durations(&self) -> [(&'static str, Duration); 25] {
        let (d, s, h) = (&self.database, &self.scheduler, &self.hosts);
        let (a, v, c, svc) = (
            &self.accounting,
            &self.reservations,
            &self.cluster,
            &self.service,
        );
        [
            ("database.connect_timeout", d.connect_timeout),
            ("database.statement_timeout", d.statement_timeout),
            (
                "database.transaction_idle_timeout",
                d.transaction_idle_timeout,
            ),
            (
                "scheduler.cluster_reload_interval",
                s.cluster_reload_interval,
            ),
            ("scheduler.active_scan_interval", s.active_scan_interval),
            (
                "scheduler.new_work_probe_interval",
                s.new_work_probe_interval,
            ),
            ("scheduler.empty_sleep", s.empty_sleep),
            ("scheduler.saturated_sleep", s.saturated_sleep),
            ("scheduler.error_sleep", s.error_sleep),
            ("hosts.refresh_interval", h.refresh_interval),
            ("hosts.changes_interval", h.changes_interval),
            ("hosts.ping_timeout", h.ping_timeout),
            ("rqd.timeout", self.rqd.timeout),
            ("accounting.recompute_interval", a.recompute_interval),
            ("accounting.caps_interval", a.caps_interval),
            ("reservations.after", v.after),
            ("reservations.max_hold", v.max_hold),
            ("licenses.poll_interval", self.licenses.poll_interval),
            ("licenses.stale_after", self.licenses.stale_after),
            ("licenses.provider_timeout", self.licenses.provider_timeout),
            ("licenses.checkout_lag", self.licenses.checkout_lag),
            ("cluster.lease_duration", c.lease_duration),
            ("cluster.lease_renew_interval", c.lease_renew_interval),
            ("service.shutdown_grace", svc.shutdown_grace),
            ("service.heartbeat_interval", svc.heartbeat_interval),
        ]
    }

    /// The cold keys whose value differs in `new`: a reload keeps the running values of these.
    pub fn cold_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.database != new.database {
            keys.push("database");
        }
        if self.scheduler.worker_threads != new.scheduler.worker_threads {
            keys.push("scheduler.worker_threads");
        }
        if self.rqd.launch_threads != new.rqd.launch_threads {
            keys.push("rqd.launch_threads");
        }
        if self.http.listen != new.http.listen {
            keys.push("http.listen");
        }
        if self.cluster.instance_name != new.cluster.instance_name {
            keys.push("cluster.instance_name");
        }
        keys
    }

    /// `new` with every cold key reset to this configuration's value: what a reload applies.
    pub(crate) fn with_cold_keys_of(&self, mut new: Config) -> Config {
        new.database = self.database.clone();
        new.scheduler.worker_threads = self.scheduler.worker_threads;
        new.rqd.launch_threads = self.rqd.launch_threads;
        new.http.listen = self.http.listen.clone();
        new.cluster.instance_name = self.cluster.instance_name.clone();
        new
    }

    /// The RQD address of a host, from the `[rqd] endpoint` template.
    pub(crate) fn rqd_endpoint(&self, host_name: &str) -> String {
        self.rqd
            .endpoint
            .replace("{host}", host_name)
            .replace("{port}", &self.rqd.port.to_string())
    }
}

/// Turns a TOML error into one line naming the file, line, section and key.
fn parse_error(text: &str, origin: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().replace('\n', " ");
    let Some(span) = error.span() else {
        return ConfigError::Parse {
            path: origin.to_owned(),
            line: 0,
            key: "<file>".to_owned(),
            message,
        };
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or("").trim();
    // The section is the nearest `[header]` above the offending line.
    let section = text
        .lines()
        .take(line)
        .filter_map(|l| {
            let l = l.trim();
            (l.starts_with('[') && l.ends_with(']'))
                .then(|| l.trim_matches(|c| c == '[' || c == ']').trim())
        })
        .last();
    let key_text = line_text.split('=').next().unwrap_or(line_text).trim();
    let key = match section {
        Some(section) if !line_text.starts_with('[') => format!("{section}.{key_text}"),
        _ => key_text.to_owned(),
    };
    ConfigError::Parse {
        path: origin.to_owned(),
        line,
        key,
        message,
    }
}

#[cfg(test)]
mod tests;
