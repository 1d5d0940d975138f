//! `[cluster]`: several stagehand instances on one database.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check::invalid, duration};

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

impl ClusterConfig {
    /// The section's rules: a lease is renewed at least twice per lease duration, so one late
    /// renewal never loses it.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.lease_renew_interval * 2 > self.lease_duration {
            return Err(invalid(
                "cluster.lease_renew_interval",
                humantime::format_duration(self.lease_renew_interval),
                "must be at most half of cluster.lease_duration",
            ));
        }
        Ok(())
    }
}
