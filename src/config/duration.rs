//! Durations in the configuration: humantime's syntax (`90s`, `1m 30s`, `1.5h`, `2days`),
//! parsed with checked arithmetic so that no value can panic.
//!
//! humantime 2.4 itself panics on some values (`"18446744073709551615s 1000000000ns"` builds a
//! `Duration` with a carry past `u64::MAX` seconds), and a configuration file is input, so the
//! parser is ours: every span is summed in `u128` nanoseconds and anything a [`Duration`]
//! cannot hold is an error. How large a value may sensibly be is [`super::Config::validate`]'s
//! business ([`super::MAX_DURATION`]); this module only guarantees a value or an error.
//! Values are written back with `humantime::format_duration`, which this parser reads.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration, expected e.g. \"30s\"")]
    Empty,
    /// A number was expected at this byte.
    #[error("expected a number at byte {0}")]
    NumberExpected(usize),
    /// A number without a unit after it.
    #[error("time unit needed after the number at byte {0}, e.g. 30s or 5min")]
    UnitExpected(usize),
    /// Not one of humantime's units.
    #[error(
        "unknown time unit {0:?}; units are ns, us, ms, s, min/m, h, d, w, M (months), y (years)"
    )]
    UnknownUnit(String),
    /// A fraction of a nanosecond, or more decimals than are meaningful.
    #[error("too many decimals in {0:?}")]
    Precision(String),
    /// The value does not fit in a `Duration` (about 584 billion years).
    #[error("duration is too large")]
    Overflow,
}

/// Nanoseconds in one of humantime's units (months are 30.44 days, years 365.25 days).
fn unit_nanos(unit: &str) -> Option<u128> {
    const S: u128 = 1_000_000_000;
    Some(match unit {
        "nanos" | "nsec" | "ns" => 1,
        "usec" | "us" | "µs" => 1_000,
        "millis" | "msec" | "ms" => 1_000_000,
        "seconds" | "second" | "secs" | "sec" | "s" => S,
        "minutes" | "minute" | "min" | "mins" | "m" => 60 * S,
        "hours" | "hour" | "hr" | "hrs" | "h" => 3_600 * S,
        "days" | "day" | "d" => 86_400 * S,
        "weeks" | "week" | "wk" | "wks" | "w" => 604_800 * S,
        "months" | "month" | "M" => 2_630_016 * S,
        "years" | "year" | "yr" | "yrs" | "y" => 31_557_600 * S,
        _ => return None,
    })
}

/// Decimals kept at most: 18 keeps `numerator × unit` inside `u128` and is finer than a
/// nanosecond for every unit.
const MAX_DECIMALS: usize = 18;

/// Parses `text` (e.g. `1h 30min`, `1m30s`, `4.2s`, `0`) into a duration, or says why not.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let b = text.as_bytes();
    let (mut p, mut total) = (0usize, 0u128);
    let skip_ws = |mut p: usize| {
        while p < b.len() && b[p].is_ascii_whitespace() {
            p += 1;
        }
        p
    };
    p = skip_ws(p);
    if p == b.len() {
        return Err(DurationError::Empty);
    }
    while p < b.len() {
        let (nanos, next) = span(text, p)?;
        total = total.checked_add(nanos).ok_or(DurationError::Overflow)?;
        p = skip_ws(next);
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// One `<digits>[.<digits>] [whitespace] <unit>` starting at byte `p`: its nanoseconds and the
/// byte after it.
fn span(text: &str, p: usize) -> Result<(u128, usize), DurationError> {
    let b = text.as_bytes();
    let digits = |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int_end = digits(p);
    if int_end == p {
        return Err(DurationError::NumberExpected(p));
    }
    let mut q = int_end;
    let frac = if b.get(q) == Some(&b'.') {
        let end = digits(q + 1);
        let frac = &text[q + 1..end];
        if frac.is_empty() {
            return Err(DurationError::NumberExpected(q + 1));
        }
        q = end;
        frac
    } else {
        ""
    };
    while q < b.len() && b[q].is_ascii_whitespace() {
        q += 1;
    }
    // A unit is letters (and `µ`); a digit right after it starts the next span (`1m30s`).
    let unit_end = q + text[q..]
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphabetic() || *c == 'µ'))
        .map_or(text.len() - q, |(i, _)| i);
    let unit = &text[q..unit_end];
    if unit.is_empty() {
        return Err(DurationError::UnitExpected(int_end));
    }
    let per = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit(unit.to_owned()))?;
    let int: u128 = text[p..int_end]
        .parse()
        .map_err(|_| DurationError::Overflow)?;
    let mut nanos = int.checked_mul(per).ok_or(DurationError::Overflow)?;
    if !frac.is_empty() {
        let whole = || DurationError::Precision(text[p..unit_end].to_owned());
        if frac.len() > MAX_DECIMALS || per == 1 {
            return Err(whole());
        }
        let numerator: u128 = frac.parse().map_err(|_| whole())?;
        nanos = nanos
            .checked_add(numerator * per / 10u128.pow(frac.len() as u32))
            .ok_or(DurationError::Overflow)?;
    }
    Ok((nanos, unit_end))
}

/// `#[serde(with = "duration")]`: reads with [`parse`], writes humantime's format.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Writes `value` as `humantime::format_duration` does (`1m 30s`).
pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*value))
}
