//! The small checks every section validator is built from, so that each rejection names its
//! key and value the same way ([`ConfigError::Invalid`]).

use std::{ops::RangeInclusive, time::Duration};

use super::{ConfigError, MAX_DURATION};

/// The error for `key` holding `value`, with `reason` saying what a valid value looks like.
pub(super) fn invalid(key: &'static str, value: impl ToString, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_owned(),
    }
}

/// A count must lie in `range` (both ends included).
pub(super) fn within(
    key: &'static str,
    value: usize,
    range: RangeInclusive<usize>,
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
pub(super) fn bounded(key: &'static str, value: Duration) -> Result<(), ConfigError> {
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
