//! LIMIT: one global limit (`limit_record.int_max_value` 50; 20 at test scale) linked to
//! every layer of a deep
//! flood of one-core frames (`layer_limit`), on a farm with more cores than the limit, so the
//! limit is all that holds the flood back. Sampled every 50 ms from the database, the frames
//! running under the limit (RUNNING frames of limited layers, and their procs) must never be
//! above 50, and must sit at 50 most of the time once the flood reached it: in ≥ 80 % of
//! the samples at 50, or one frame below it while a frame that just ended is replaced (the
//! figure gives the share exactly at 50 too). A held limit that is not used fails as well.
//! The frames run long against the booking passes, as renders do (a flood of frames ending
//! every few milliseconds would measure the pass interval, not the limit).

use std::time::Duration;

use super::{CapWatch, Verdict};
use crate::sim::{
    SimError,
    scenario::{flood_size, job, layer},
    seed::FarmSpec,
};

/// The share of samples (once saturated) that must be at the limit (or one frame below).
pub const AT_LIMIT: f64 = 0.8;

/// Both counts of one sample: RUNNING frames of limited layers, procs of limited layers; the
/// larger is what the sample says (a booking makes both at once, a completion both at once).
const RUNNING: &str = "SELECT greatest(
        (SELECT count(*) FROM frame f WHERE f.str_state = 'RUNNING'
            AND f.pk_layer IN (SELECT pk_layer FROM layer_limit)),
        (SELECT count(*) FROM proc p WHERE p.pk_layer IN (SELECT pk_layer FROM layer_limit)))";

/// The shape of the LIMIT scenario.
#[derive(Clone, Debug)]
pub struct LimitSpec {
    /// Hosts.
    pub hosts: usize,
    /// Cores per host (hosts × cores > `limit`).
    pub cores: u32,
    /// `limit_record.int_max_value`.
    pub limit: i64,
    /// Jobs of the flood, each with `layers` limited layers.
    pub jobs: usize,
    /// Layers per job.
    pub layers: usize,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// How long the limit is sampled.
    pub window: Duration,
}

impl LimitSpec {
    /// Test scale: 8 hosts × 8 cores, a limit of 20, 4 jobs × 2 layers, 10 s frames,
    /// sampled 25 s.
    pub fn small() -> LimitSpec {
        LimitSpec {
            hosts: 8,
            cores: 8,
            limit: 20,
            jobs: 4,
            layers: 2,
            runtime: Duration::from_secs(10),
            window: Duration::from_secs(25),
        }
    }

    /// Bench scale: 20 hosts × 16 cores (320 cores), a limit of 50, 10 jobs × 4 layers, 60 s frames,
    /// sampled 180 s (three turnovers of the limit).
    pub fn full() -> LimitSpec {
        LimitSpec {
            hosts: 20,
            cores: 16,
            limit: 50,
            jobs: 10,
            layers: 4,
            runtime: Duration::from_secs(60),
            window: Duration::from_secs(180),
        }
    }

    fn farm(&self) -> FarmSpec {
        let cores = self.hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, cores);
        farm.limits = vec![("simlic".into(), self.limit as i32)];
        // The limit's worth of frames turning over through the window, ten times over.
        let secs = self.window.as_secs_f64() + 30.0;
        let frames =
            flood_size(self.limit as f64, secs, self.runtime) * 10 / (self.jobs * self.layers);
        farm.jobs = (0..self.jobs)
            .map(|j| {
                let layers = (0..self.layers)
                    .map(|n| {
                        let mut l = layer(&format!("l{n}"), frames, self.runtime);
                        l.limits = vec![0];
                        l
                    })
                    .collect();
                job(0, &format!("limited{j:02}"), 50, layers)
            })
            .collect();
        farm
    }
}

/// Runs the LIMIT scenario: the flood is released at once; the limit is sampled every
/// 50 ms for the window.
pub fn limit(spec: &LimitSpec) -> Result<(CapWatch, Vec<String>), SimError> {
    CapWatch::run(&spec.farm(), RUNNING, spec.limit, 1, spec.window)
}

/// The battery's LIMIT line.
pub fn verify(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        LimitSpec::full()
    } else {
        LimitSpec::small()
    };
    let (w, violations) = limit(&spec)?;
    Ok(Verdict::judge(
        "LIMIT",
        holds(&spec, &w),
        figure(&spec, &w),
        None,
        violations,
    ))
}

/// The criterion: never above the limit, reached, and at it (or one frame below) in ≥ 80 %
/// of the samples since.
pub fn holds(spec: &LimitSpec, w: &CapWatch) -> bool {
    w.max <= spec.limit && w.saturated > 0 && w.near_cap_share() >= AT_LIMIT
}

/// The verdict's figure.
pub fn figure(spec: &LimitSpec, w: &CapWatch) -> String {
    format!(
        "limit {}: max {} running in {} samples (every 50 ms); at {} or {} in {:.1} % of {} samples once reached (≥ {:.0} %), exactly {} in {:.1} %, mean {:.2}; {} limited layers on {} cores, {:.0}s frames",
        spec.limit,
        w.max,
        w.samples,
        spec.limit,
        spec.limit - 1,
        w.near_cap_share() * 100.0,
        w.saturated,
        AT_LIMIT * 100.0,
        spec.limit,
        w.at_cap_share() * 100.0,
        w.mean,
        spec.jobs * spec.layers,
        spec.hosts as u32 * spec.cores,
        spec.runtime.as_secs_f64()
    )
}
