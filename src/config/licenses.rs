//! `[licenses]`: live application licenses — where the provider is, how often it is polled,
//! when a sample is too old to book on, the seats kept back per license, and the exit
//! statuses that mean "the license server refused the seat".

use std::{collections::BTreeMap, time::Duration};

use serde::{Deserialize, Serialize};

use super::{ConfigError, check::invalid, duration};

/// `[licenses]`: a layer that names licenses in its `CUE_LICENSES` environment books only
/// while a fresh sample of the provider says a seat is free.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicensesConfig {
    /// An `http://host:port/path` URL answering GET with the JSON sample, or the path of an
    /// executable printing it. Empty: licenses are not tracked and `CUE_LICENSES` is ignored.
    pub provider: String,
    /// How often the provider is asked; sooner (at most four times as often) while a license
    /// is out of room on starts its sample may hold already (see `licenses::poller`).
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// A license whose last sample was received longer ago than this holds its layers.
    #[serde(with = "duration")]
    pub stale_after: Duration,
    /// How long one provider call may take.
    #[serde(with = "duration")]
    pub provider_timeout: Duration,
    /// Frames started this long before a sample's `queried_at` are counted as not yet in it
    /// too (unless they stopped before it): a frame's application checks its seat out a
    /// moment after the booking. A sample listing the hosts holding seats shows which of them
    /// it holds.
    #[serde(with = "duration")]
    pub checkout_lag: Duration,
    /// Seats kept free of every license without an entry in `headroom`.
    pub default_headroom: u32,
    /// Seats kept free per license (for artists, or a margin against other consumers).
    pub headroom: BTreeMap<String, u32>,
    /// Exit statuses of a frame whose license was refused: the completion path puts such a
    /// frame back to WAITING and its next booking spends no retry.
    pub denied_exit_statuses: Vec<i64>,
}

impl Default for LicensesConfig {
    fn default() -> Self {
        LicensesConfig {
            provider: String::new(),
            poll_interval: Duration::from_secs(20),
            stale_after: Duration::from_secs(300),
            provider_timeout: Duration::from_secs(5),
            checkout_lag: Duration::from_secs(10),
            default_headroom: 0,
            headroom: BTreeMap::new(),
            denied_exit_statuses: Vec::new(),
        }
    }
}

/// Where the samples come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// GET of this URL (`http://` only).
    Http(String),
    /// The output of this executable.
    Script(String),
}

impl LicensesConfig {
    /// The provider, `None` when licenses are not tracked.
    pub fn provider(&self) -> Option<Provider> {
        let p = self.provider.trim();
        if p.is_empty() {
            None
        } else if p.starts_with("http://") {
            Some(Provider::Http(p.to_owned()))
        } else {
            Some(Provider::Script(p.to_owned()))
        }
    }

    /// Seats kept free of `license`.
    pub fn headroom_of(&self, license: &str) -> u32 {
        self.headroom
            .get(license)
            .copied()
            .unwrap_or(self.default_headroom)
    }

    /// The section's rules: an HTTP provider is plain `http://` (no TLS client here), a
    /// sample is polled at least once before it goes stale, and the denied statuses are not
    /// 0 (success).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let p = self.provider.trim();
        if p.starts_with("https://") || (p.contains("://") && !p.starts_with("http://")) {
            return Err(invalid(
                "licenses.provider",
                p,
                "must be an http:// URL or the path of an executable",
            ));
        }
        if self.stale_after <= self.poll_interval {
            return Err(invalid(
                "licenses.stale_after",
                humantime::format_duration(self.stale_after),
                "must be longer than licenses.poll_interval",
            ));
        }
        if let Some(zero) = self.denied_exit_statuses.iter().find(|s| **s == 0) {
            return Err(invalid(
                "licenses.denied_exit_statuses",
                zero,
                "0 is success, not a denial",
            ));
        }
        if let Some((name, _)) = self.headroom.iter().find(|(n, _)| !valid_name(n)) {
            return Err(invalid(
                "licenses.headroom",
                name,
                "license names are non-empty, without commas or blanks",
            ));
        }
        Ok(())
    }
}

/// A license name as `CUE_LICENSES` can spell it.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(',') && !name.contains(char::is_whitespace)
}
