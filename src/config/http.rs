//! `[http]`: the metrics and health endpoints.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check::invalid};

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

impl HttpConfig {
    /// The section's rules: `listen` is a socket address (not a host name, which would need a
    /// resolver at start-up).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<SocketAddr>().is_err() {
            return Err(invalid(
                "http.listen",
                &self.listen,
                "must be an address such as 127.0.0.1:9090",
            ));
        }
        Ok(())
    }
}
