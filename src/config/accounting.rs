//! `[accounting]`: caps and the bulk recompute.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;

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
