//! A wide frame in a flood: a farm saturated by one-core frames of jittered run time, and a
//! frame as wide as a whole host submitted into it. Without reservations it waits as long as
//! the flood lasts, since cores free one at a time and the flood takes each; with them it
//! must start within [`WideSpec::bound`]: the wait before reserving, plus the longest a
//! running flood frame can still run (runtime + 25 % jitter), plus slack for the passes.

use std::time::{Duration, Instant};

use super::{Run, flood_size, job, layer, pause, print_audit};
use crate::{
    model::CORE,
    sim::{
        SimError,
        seed::{FarmSpec, GB},
    },
};

/// The shape of the wide-frame scenario.
#[derive(Clone, Debug)]
pub struct WideSpec {
    /// Hosts in the farm.
    pub hosts: usize,
    /// Cores per host; the wide frame asks for all of them.
    pub cores: u32,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// `[reservations] after`.
    pub after: Duration,
    /// How long to wait for the wide frame before calling it starved.
    pub limit: Duration,
    /// Allowance in the bound for the booking passes, refreshes and completions around the
    /// reservation (a loaded test machine runs them late).
    pub slack: Duration,
}

impl WideSpec {
    /// Test scale: 4 hosts × 16 cores, 1.5 s frames.
    pub fn small() -> WideSpec {
        WideSpec {
            hosts: 4,
            cores: 16,
            runtime: Duration::from_millis(1500),
            after: Duration::from_secs(2),
            limit: Duration::from_secs(20),
            slack: Duration::from_secs(3),
        }
    }

    /// Bench scale: 32 hosts × 64 cores (2,048 cores), 30 s frames. The flood must keep the
    /// farm saturated (≈ 70 completions/s to re-book here); a flood the booking cannot keep up
    /// with leaves idle cores, and best-fit packing then drains hosts by itself.
    pub fn full() -> WideSpec {
        WideSpec {
            hosts: 32,
            cores: 64,
            runtime: Duration::from_secs(30),
            after: Duration::from_secs(10),
            limit: Duration::from_secs(150),
            slack: Duration::from_secs(5),
        }
    }

    /// The stated bound on the wide frame's wait with reservations on: `after`, plus the
    /// longest remaining run of a frame on the reserved host (1.25 × runtime), plus `slack`.
    pub fn bound(&self) -> Duration {
        self.after + self.runtime.mul_f64(1.25) + self.slack
    }

    fn farm(&self) -> FarmSpec {
        let total_cores = self.hosts as f64 * f64::from(self.cores);
        // Enough flood to stay saturated through the fill and the whole limit.
        let secs = self.limit.as_secs_f64() + 30.0;
        let flood = layer(
            "flood",
            flood_size(total_cores, secs, self.runtime),
            self.runtime,
        );
        let mut wide = layer("wide", 1, self.runtime);
        wide.cores_min = i64::from(self.cores * CORE);
        wide.mem_kb = 4 * GB;
        let mut farm =
            FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, 1_000_000);
        // The wide job has the higher priority: it is looked at first in every pass.
        farm.jobs = vec![
            job(0, "wide", 90, vec![wide]),
            job(0, "flood", 50, vec![flood]),
        ];
        farm
    }
}

/// What the wide-frame scenario saw.
#[derive(Clone, Debug)]
pub struct WideOutcome {
    /// Reservations on or off.
    pub reservations: bool,
    /// Seconds from submission to the wide frame RUNNING, if it started within the limit.
    pub started_after: Option<f64>,
    /// The stated bound (reservations on).
    pub bound: f64,
    /// Seconds from submission to its host reservation, and the expected drain time then.
    pub reserved: Option<(f64, f64)>,
    /// Flood frames booked per second while the wide frame waited (the throughput kept).
    pub flood_frames_per_sec: f64,
    /// Farm utilization (cores busy / cores) averaged over the wait.
    pub utilization: f64,
    /// Audit violations at the end.
    pub violations: Vec<String>,
}

/// Runs the wide-frame scenario once.
pub fn wide_frame(spec: &WideSpec, reservations: bool) -> Result<WideOutcome, SimError> {
    let mut run = Run::start(
        &spec.farm(),
        |c| pause(c, "wide"),
        |config| {
            config.reservations.enabled = reservations;
            config.reservations.after = spec.after;
        },
    )?;
    let total_cores = run.total()?;
    // Saturate the farm with the flood first: busy, and no host with room for the wide frame.
    run.saturate(0.95, spec.cores, Duration::from_secs(120))?;
    run.submit("wide")?;
    let submitted = Instant::now();
    let flood_before = run.started("flood")?;
    let (mut samples, mut busy_sum) = (0u64, 0i64);
    let mut started_after = None;
    let mut reserved = None;
    while submitted.elapsed() < spec.limit {
        std::thread::sleep(Duration::from_millis(100));
        samples += 1;
        busy_sum += run.busy()?;
        if reserved.is_none() {
            if let Some(r) = run.client.query_opt(
                "SELECT extract(epoch FROM ts_shadow - ts_created)::float8 FROM stagehand.host_reservation",
                &[],
            )? {
                reserved = Some((submitted.elapsed().as_secs_f64(), r.get(0)));
            }
        }
        if run.started("wide")? > 0 {
            started_after = Some(submitted.elapsed().as_secs_f64());
            break;
        }
    }
    let waited = submitted.elapsed().as_secs_f64();
    let flood_rate = (run.started("flood")? - flood_before) as f64 / waited.max(1e-9);
    let violations = run.finish()?;
    Ok(WideOutcome {
        reservations,
        started_after,
        bound: spec.bound().as_secs_f64(),
        reserved,
        flood_frames_per_sec: flood_rate,
        utilization: busy_sum as f64 / samples.max(1) as f64 / total_cores.max(1) as f64,
        violations,
    })
}

/// Prints an outcome the way `stagehand bench` does.
pub fn print_wide(spec: &WideSpec, o: &WideOutcome) {
    println!(
        "wide frame      : {} hosts x {} cores, {:.1}s frames, reservations {}",
        spec.hosts,
        spec.cores,
        spec.runtime.as_secs_f64(),
        if o.reservations { "on" } else { "off" }
    );
    match o.started_after {
        Some(s) => println!("started after   : {s:.1}s (bound {:.1}s)", o.bound),
        None => println!(
            "started after   : not within {:.0}s (starved)",
            spec.limit.as_secs_f64()
        ),
    }
    if let Some((at, drain)) = o.reserved {
        println!("reserved after  : {at:.1}s, host expected free {drain:.1}s later");
    }
    println!(
        "flood rate      : {:.1} frames/s while it waited",
        o.flood_frames_per_sec
    );
    println!(
        "utilization     : {:.1} % while it waited",
        o.utilization * 100.0
    );
    print_audit(&o.violations);
}
