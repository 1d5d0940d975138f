//! RESERVATIONS: a stranded wide frame — as wide as the largest host, so at least half of
//! it — submitted into a flood of one-core frames that keeps every host busy. It must be
//! reserved a host, the flood must keep booking around the reservation (backfill) while it
//! waits, and it must run. The run is the wide-frame scenario's (`sim::scenario::wide`) with
//! reservations on.

use super::Verdict;
use crate::sim::{
    SimError,
    scenario::wide::{WideOutcome, WideSpec, wide_frame},
};

/// The battery's RESERVATIONS line.
pub fn verify(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        WideSpec::full()
    } else {
        WideSpec::small()
    };
    let o = wide_frame(&spec, true)?;
    Ok(Verdict::judge(
        "RESERVATIONS",
        holds(&o),
        figure(&spec, &o),
        None,
        o.violations.clone(),
    ))
}

/// The criterion: reserved, backfilled around (flood frames booked while it waited) and run.
pub fn holds(o: &WideOutcome) -> bool {
    o.reserved.is_some() && o.flood_frames_per_sec > 0.0 && o.started_after.is_some()
}

/// The verdict's figure: when it was reserved and started, and the backfill around it.
pub fn figure(spec: &WideSpec, o: &WideOutcome) -> String {
    let reserved = match o.reserved {
        Some((at, drain)) => format!("reserved after {at:.1}s (host free {drain:.1}s later)"),
        None => "never reserved".into(),
    };
    let started = match o.started_after {
        Some(s) => format!("ran after {s:.1}s (bound {:.1}s)", o.bound),
        None => format!("not run within {:.0}s", spec.limit.as_secs_f64()),
    };
    format!(
        "{}-core frame on {} hosts x {} cores: {reserved}, {started}; backfill {:.1} frames/s, {:.0} % busy while it waited",
        spec.cores,
        spec.hosts,
        spec.cores,
        o.flood_frames_per_sec,
        o.utilization * 100.0
    )
}
