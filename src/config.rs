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

use std::{fs, net::SocketAddr, path::Path, time::Duration};

use log::LevelFilter;
use serde::{Deserialize, Serialize};

use crate::index::Strategy;

mod duration;

/// The environment variable whose value, when set, replaces `[database] url`.
pub const DATABASE_URL_ENV: &str = "STAGEHAND_DATABASE_URL";

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
    /// `[cluster]`: multi-instance coordination.
    pub cluster: ClusterConfig,
    /// `[http]`: metrics and health endpoints.
    pub http: HttpConfig,
    /// `[service]`: logging and lifecycle.
    pub service: ServiceConfig,
}

/// `[database]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// libpq-style connection string or `postgresql://` URL. Cold.
    /// `STAGEHAND_DATABASE_URL` wins over this value.
    pub url: String,
    /// Connections in the pool. Cold.
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
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "host=127.0.0.1 port=5432 user=cuebot dbname=cuebot".to_owned(),
            pool_size: 12,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            transaction_idle_timeout: Duration::from_secs(5),
        }
    }
}

/// `[scheduler]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Booking worker threads. Cold.
    pub worker_threads: usize,
    /// Only book in this facility (`facility.str_name`); empty means every facility.
    pub facility: String,
    /// Host tags never turned into clusters.
    pub ignore_tags: Vec<String>,
    /// How often the cluster set is reloaded from the database.
    #[serde(with = "duration")]
    pub cluster_reload_interval: Duration,
    /// How often the cheap "which clusters have waiting work" scan runs.
    #[serde(with = "duration")]
    pub active_scan_interval: Duration,
    /// Sleep of a cluster whose pass found no job.
    #[serde(with = "duration")]
    pub empty_sleep: Duration,
    /// Sleep of a cluster whose pass found jobs but booked nothing.
    #[serde(with = "duration")]
    pub saturated_sleep: Duration,
    /// Sleep of a cluster whose pass failed (database error).
    #[serde(with = "duration")]
    pub error_sleep: Duration,
    /// Jobs considered per cluster pass.
    pub max_jobs_per_pass: u32,
    /// WAITING frames fetched per layer per pass.
    pub frames_per_layer: u32,
    /// Most frames committed in one booking transaction.
    pub batch_size: usize,
    /// MANUAL and HARDWARE tags per cluster.
    pub manual_tags_chunk_size: usize,
    /// HOSTNAME tags per cluster.
    pub hostname_tags_chunk_size: usize,
    /// Services (`layer.str_services` entries) whose frames take every idle core of a host.
    pub selfish_services: Vec<String>,
    /// When a frame would leave at most this much memory (KB) idle on an AUTO or VARIABLE
    /// host, it takes every idle core instead of stranding them.
    pub memory_stranded_threshold_kb: u64,
    /// A frame without GPUs on a GPU host (only when no other host fits) leaves this many
    /// cores idle per idle GPU, for GPU frames arriving later; 0 keeps none.
    pub gpu_host_cores_per_gpu: u32,
    /// Likewise memory (KB) per idle GPU.
    pub gpu_host_mem_per_gpu_kb: u64,
    /// Written to `proc.int_mem_used` at booking (KB), as Cuebot does.
    pub mem_reserved_min_kb: u64,
    /// Exit statuses that, like Cuebot's own (299, 301, …), do not count as a retry when the
    /// frame books again: the statuses of Cuebot's `dispatcher.layer_delay.rules` (e.g. 330
    /// for a license shortage), which Cuebot requeues without spending a retry.
    pub no_retry_exit_statuses: Vec<i64>,
    /// Host choice for a frame.
    pub placement: Strategy,
    /// Job order within a cluster pass.
    pub job_order: JobOrder,
}

/// How jobs of a show are ordered in a pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOrder {
    /// Strictly by `job_resource.int_priority`, oldest first among equals (OpenCue's scheduler).
    #[default]
    Priority,
    /// Oldest job first.
    Fifo,
    /// Cuebot's BALANCED: priority, plus up to 100 for a job below its minimum cores, plus one
    /// per day of age — low-priority work keeps a share and never starves.
    Balanced,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            worker_threads: 4,
            facility: String::new(),
            ignore_tags: Vec::new(),
            cluster_reload_interval: Duration::from_secs(60),
            active_scan_interval: Duration::from_secs(2),
            empty_sleep: Duration::from_secs(30),
            saturated_sleep: Duration::from_secs(3),
            error_sleep: Duration::from_secs(5),
            max_jobs_per_pass: 20,
            frames_per_layer: 50,
            batch_size: 200,
            manual_tags_chunk_size: 50,
            hostname_tags_chunk_size: 50,
            selfish_services: Vec::new(),
            memory_stranded_threshold_kb: 2 * 1024 * 1024,
            gpu_host_cores_per_gpu: 2,
            gpu_host_mem_per_gpu_kb: 8 * 1024 * 1024,
            mem_reserved_min_kb: 250 * 1024,
            no_retry_exit_statuses: Vec::new(),
            placement: Strategy::default(),
            job_order: JobOrder::default(),
        }
    }
}

/// `[hosts]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostsConfig {
    /// How often the host index is re-read from the database.
    #[serde(with = "duration")]
    pub refresh_interval: Duration,
    /// A host whose `host_stat.ts_ping` is older than this is not booked.
    #[serde(with = "duration")]
    pub ping_timeout: Duration,
}

impl Default for HostsConfig {
    fn default() -> Self {
        HostsConfig {
            refresh_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(120),
        }
    }
}

/// `[rqd]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RqdConfig {
    /// RQD's gRPC port.
    pub port: u16,
    /// Address template of a host's RQD: `{host}` is `host.str_name`, `{port}` is `port`.
    /// Pointing every host at one address (`"127.0.0.1:{port}"`) sends a farm to a test RQD.
    pub endpoint: String,
    /// Book in the database but do not call RQD.
    pub dry_run: bool,
    /// Deadline of one RQD call.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Threads launching frames in parallel across hosts. Cold.
    pub launch_threads: usize,
    /// RunFrame soft memory limit as a multiple of the layer's minimum memory.
    pub memory_soft_limit: f64,
    /// RunFrame hard memory limit as a multiple of the layer's minimum memory.
    pub memory_hard_limit: f64,
}

impl Default for RqdConfig {
    fn default() -> Self {
        RqdConfig {
            port: 8444,
            endpoint: "{host}:{port}".to_owned(),
            dry_run: false,
            timeout: Duration::from_secs(10),
            launch_threads: 8,
            memory_soft_limit: 1.6,
            memory_hard_limit: 2.0,
        }
    }
}

/// `[accounting]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountingConfig {
    /// Period of the bulk recompute of the resource tables and counters from `proc`.
    #[serde(with = "duration")]
    pub recompute_interval: Duration,
    /// Period of the re-read of caps (bursts, folder and job maxima).
    #[serde(with = "duration")]
    pub caps_interval: Duration,
}

impl Default for AccountingConfig {
    fn default() -> Self {
        AccountingConfig {
            recompute_interval: Duration::from_secs(3),
            caps_interval: Duration::from_secs(30),
        }
    }
}

/// `[reservations]`: EASY-style host reservations so wide frames never starve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReservationsConfig {
    /// Reserve hosts for frames that fit no host; off, a wide frame may wait forever while
    /// narrow frames take every freed core.
    pub enabled: bool,
    /// A frame must have waited this long, fitting no host, before it reserves one.
    #[serde(with = "duration")]
    pub after: Duration,
    /// Most hosts reserved at once by this instance's shows (each reservation idles a host
    /// while it drains).
    pub max_reservations: usize,
    /// A reservation is dropped (and may be taken again) after this long.
    #[serde(with = "duration")]
    pub max_hold: Duration,
    /// Successful frames a layer needs before its average run time counts as an estimate;
    /// below that, `layer.int_timeout` is the estimate, and without one the layer's frames
    /// never backfill a reserved host.
    pub min_history: u32,
    /// Hosts compared (by expected free time) when choosing the one to reserve.
    pub candidates: usize,
}

impl Default for ReservationsConfig {
    fn default() -> Self {
        ReservationsConfig {
            enabled: true,
            after: Duration::from_secs(120),
            max_reservations: 16,
            max_hold: Duration::from_secs(4 * 3600),
            min_history: 3,
            candidates: 32,
        }
    }
}

/// `[cluster]`: several stagehand instances on one database.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This instance's name in the registry and logs; empty means the host name and pid.
    pub instance_name: String,
    /// How long a show lease lasts without renewal.
    #[serde(with = "duration")]
    pub lease_duration: Duration,
    /// How often leases are renewed and rebalanced.
    #[serde(with = "duration")]
    pub lease_renew_interval: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            instance_name: String::new(),
            lease_duration: Duration::from_secs(15),
            lease_renew_interval: Duration::from_secs(3),
        }
    }
}

/// `[http]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of /metrics, /healthz, /readyz, /status and /. Cold. Keep it internal.
    pub listen: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9090".to_owned(),
        }
    }
}

/// `[service]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`); `RUST_LOG` overrides it.
    pub log_level: LevelFilter,
    /// How long shutdown may take to drain in-flight bookings and launches.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Period of the info log line with frames booked, frames/s and rejections.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            log_level: LevelFilter::Info,
            shutdown_grace: Duration::from_secs(20),
            heartbeat_interval: Duration::from_secs(60),
        }
    }
}

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

    /// Checks ranges and consistency; the error names the key and the value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, value: impl ToString, reason: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                reason: reason.to_owned(),
            }
        }
        for (key, value) in self.durations() {
            bounded(key, value)?;
        }
        let d = &self.database;
        if d.url.trim().is_empty() {
            return Err(invalid(
                "database.url",
                "\"\"",
                "must name a database (or set STAGEHAND_DATABASE_URL)",
            ));
        }
        if d.url.parse::<postgres::Config>().is_err() {
            return Err(invalid(
                "database.url",
                "<hidden>",
                "is not a valid PostgreSQL connection string",
            ));
        }
        within("database.pool_size", d.pool_size as usize, 1..=1000)?;
        if d.transaction_idle_timeout >= self.cluster.lease_duration {
            return Err(invalid(
                "database.transaction_idle_timeout",
                humantime::format_duration(d.transaction_idle_timeout),
                "must be shorter than cluster.lease_duration",
            ));
        }

        let s = &self.scheduler;
        within("scheduler.worker_threads", s.worker_threads, 1..=256)?;
        for (key, value) in [
            ("scheduler.max_jobs_per_pass", s.max_jobs_per_pass as usize),
            ("scheduler.frames_per_layer", s.frames_per_layer as usize),
            ("scheduler.batch_size", s.batch_size),
            ("scheduler.manual_tags_chunk_size", s.manual_tags_chunk_size),
            (
                "scheduler.hostname_tags_chunk_size",
                s.hostname_tags_chunk_size,
            ),
        ] {
            within(key, value, 1..=100_000)?;
        }
        if let Err(reason) = s.placement.validate() {
            return Err(invalid(
                "scheduler.placement",
                format!("{:?}", s.placement),
                &reason,
            ));
        }

        let v = &self.reservations;
        within(
            "reservations.max_reservations",
            v.max_reservations,
            1..=100_000,
        )?;
        within("reservations.candidates", v.candidates, 1..=10_000)?;

        let r = &self.rqd;
        if r.port == 0 {
            return Err(invalid("rqd.port", r.port, "must be between 1 and 65535"));
        }
        if !r.endpoint.contains("{host}")
            && !r.endpoint.contains("{port}")
            && !r.endpoint.contains(':')
        {
            return Err(invalid(
                "rqd.endpoint",
                &r.endpoint,
                "must be an address template such as \"{host}:{port}\"",
            ));
        }
        within("rqd.launch_threads", r.launch_threads, 1..=1024)?;
        if !(r.memory_soft_limit >= 1.0 && r.memory_soft_limit.is_finite()) {
            return Err(invalid(
                "rqd.memory_soft_limit",
                r.memory_soft_limit,
                "must be at least 1.0",
            ));
        }
        if !(r.memory_hard_limit >= r.memory_soft_limit && r.memory_hard_limit.is_finite()) {
            return Err(invalid(
                "rqd.memory_hard_limit",
                r.memory_hard_limit,
                "must be at least rqd.memory_soft_limit",
            ));
        }

        let c = &self.cluster;
        if c.lease_renew_interval * 2 > c.lease_duration {
            return Err(invalid(
                "cluster.lease_renew_interval",
                humantime::format_duration(c.lease_renew_interval),
                "must be at most half of cluster.lease_duration",
            ));
        }

        if self.http.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                &self.http.listen,
                "must be an address such as 127.0.0.1:9090",
            ));
        }
        Ok(())
    }

    /// Every duration key with its value, so that validation bounds each one.
    fn durations(&self) -> [(&'static str, Duration); 19] {
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
            ("scheduler.empty_sleep", s.empty_sleep),
            ("scheduler.saturated_sleep", s.saturated_sleep),
            ("scheduler.error_sleep", s.error_sleep),
            ("hosts.refresh_interval", h.refresh_interval),
            ("hosts.ping_timeout", h.ping_timeout),
            ("rqd.timeout", self.rqd.timeout),
            ("accounting.recompute_interval", a.recompute_interval),
            ("accounting.caps_interval", a.caps_interval),
            ("reservations.after", v.after),
            ("reservations.max_hold", v.max_hold),
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
    pub fn with_cold_keys_of(&self, mut new: Config) -> Config {
        new.database = self.database.clone();
        new.scheduler.worker_threads = self.scheduler.worker_threads;
        new.rqd.launch_threads = self.rqd.launch_threads;
        new.http.listen = self.http.listen.clone();
        new.cluster.instance_name = self.cluster.instance_name.clone();
        new
    }

    /// The RQD address of a host, from the `[rqd] endpoint` template.
    pub fn rqd_endpoint(&self, host_name: &str) -> String {
        self.rqd
            .endpoint
            .replace("{host}", host_name)
            .replace("{port}", &self.rqd.port.to_string())
    }
}

fn within(
    key: &'static str,
    value: usize,
    range: std::ops::RangeInclusive<usize>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: format!("must be between {} and {}", range.start(), range.end()),
    })
}

/// A duration must be positive (a zero interval spins) and at most [`MAX_DURATION`] (timers
/// add it to `Instant::now()`, which panics on overflow).
fn bounded(key: &'static str, value: Duration) -> Result<(), ConfigError> {
    let reason = if value.is_zero() {
        "must be greater than zero".to_owned()
    } else if value > MAX_DURATION {
        format!(
            "must be at most {}",
            humantime::format_duration(MAX_DURATION)
        )
    } else {
        return Ok(());
    };
    Err(ConfigError::Invalid {
        key,
        value: humantime::format_duration(value).to_string(),
        reason,
    })
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
