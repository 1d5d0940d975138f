//! `[reservations]`: hosts reserved for wide frames, and backfill around them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, check::within, duration};

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

impl ReservationsConfig {
    /// The section's rules: room for at least one reservation and one candidate host.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        within(
            "reservations.max_reservations",
            self.max_reservations,
            1..=100_000,
        )?;
        within("reservations.candidates", self.candidates, 1..=10_000)
    }
}
