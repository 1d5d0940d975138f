//! `[hosts]`: how the host index is kept in step with the database.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

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
