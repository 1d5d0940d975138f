//! `[rqd]`: how frames are launched on the hosts' RQD daemons.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError,
    check::{invalid, within},
    duration,
};

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
    /// Deadline of one RQD call. A launch that timed out is killed again twice this long
    /// after its deadline before its booking is undone (it may have waited in RQD's queue).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Threads launching frames in parallel across hosts, one blocking call each. Enough
    /// that a committed batch is in flight at once rather than in line behind a few calls
    /// (issue 14: booking → launch p99). Cold.
    pub launch_threads: usize,
    /// RunFrame soft memory limit as a multiple of the memory booked (the layer's
    /// minimum, or its history with `[memory] from_history`).
    pub memory_soft_limit: f64,
    /// RunFrame hard memory limit as a multiple of the memory booked (the layer's
    /// minimum, or its history with `[memory] from_history`).
    pub memory_hard_limit: f64,
}

impl Default for RqdConfig {
    fn default() -> Self {
        RqdConfig {
            port: 8444,
            endpoint: "{host}:{port}".to_owned(),
            dry_run: false,
            timeout: Duration::from_secs(10),
            launch_threads: 64,
            memory_soft_limit: 1.6,
            memory_hard_limit: 2.0,
        }
    }
}

impl RqdConfig {
    /// The section's rules: a real port, an address template, and memory limits that never
    /// ask RQD for less than the layer's minimum.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.port == 0 {
            return Err(invalid(
                "rqd.port",
                self.port,
                "must be between 1 and 65535",
            ));
        }
        if !self.endpoint.contains("{host}")
            && !self.endpoint.contains("{port}")
            && !self.endpoint.contains(':')
        {
            return Err(invalid(
                "rqd.endpoint",
                &self.endpoint,
                "must be an address template such as \"{host}:{port}\"",
            ));
        }
        within("rqd.launch_threads", self.launch_threads, 1..=1024)?;
        // Written as negations so that NaN fails too.
        if !(self.memory_soft_limit >= 1.0 && self.memory_soft_limit.is_finite()) {
            return Err(invalid(
                "rqd.memory_soft_limit",
                self.memory_soft_limit,
                "must be at least 1.0",
            ));
        }
        if !(self.memory_hard_limit >= self.memory_soft_limit && self.memory_hard_limit.is_finite())
        {
            return Err(invalid(
                "rqd.memory_hard_limit",
                self.memory_hard_limit,
                "must be at least rqd.memory_soft_limit",
            ));
        }
        Ok(())
    }
}
