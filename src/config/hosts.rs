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
    /// How often, between full reads, only the hosts whose rows changed are re-read (by
    /// `xmin`, one cheap pass over `host`): room a completion gives back is booked within
    /// this, not within `refresh_interval`. `0` turns it off.
    #[serde(with = "duration")]
    pub changes_interval: Duration,
    /// A host whose `host_stat.ts_ping` is older than this is not booked.
    #[serde(with = "duration")]
    pub ping_timeout: Duration,
}

impl Default for HostsConfig {
    fn default() -> Self {
        HostsConfig {
            refresh_interval: Duration::from_secs(10),
            changes_interval: Duration::from_millis(100),
            ping_timeout: Duration::from_secs(120),
        }
    }
}
