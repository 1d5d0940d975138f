//! `[service]`: logging and lifecycle.

use std::time::Duration;

use log::LevelFilter;
use serde::{Deserialize, Serialize};

use super::duration;

/// `[service]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`); `RUST_LOG` overrides it.
    pub log_level: LevelFilter,
    /// How long shutdown may take to drain in-flight bookings and launches (launching
    /// stops at three quarters of it; what is still queued is undone in the rest).
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
