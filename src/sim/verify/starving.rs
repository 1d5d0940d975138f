//! PRIORITY_STARVING: Maestro's two-class starvation test. A deep flood of high-priority jobs
//! (priority 300) fills the farm first; then a low-priority stream (priority 100) arrives
//! beside it, so the only way it runs is if the scheduler gives it cores that waiting
//! high-priority work also wants. It must keep at least 3 % of the completions while both
//! wait. Strict priority starves it (0 %); under `proportional` it gets about its weight.

use std::time::{Duration, Instant};

use super::Verdict;
use crate::{
    config::JobOrder,
    sim::{
        SimError,
        scenario::{Run, flood_size, job, layer, pause},
        seed::FarmSpec,
    },
};

/// The share of completions the low stream must keep.
pub const FLOOR: f64 = 0.03;

/// Priorities of the flood and of the stream (Maestro's defaults).
const HIGH: i32 = 300;
const LOW: i32 = 100;

/// The shape of the PRIORITY_STARVING scenario.
#[derive(Clone, Debug)]
pub struct StarvingSpec {
    /// Hosts.
    pub hosts: usize,
    /// Cores per host.
    pub cores: u32,
    /// Jobs in the high-priority flood.
    pub high_jobs: usize,
    /// Jobs in the low-priority stream.
    pub low_jobs: usize,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// How long completions are counted once the stream arrived (at least).
    pub window: Duration,
}

impl StarvingSpec {
    /// Test scale: 6 hosts × 8 cores, 1 s frames, a 10 s window.
    pub fn small() -> StarvingSpec {
        StarvingSpec {
            hosts: 6,
            cores: 8,
            high_jobs: 6,
            low_jobs: 2,
            runtime: Duration::from_secs(1),
            window: Duration::from_secs(10),
        }
    }

    /// Bench scale: 40 hosts × 16 cores (640 cores), 20 s frames, a 120 s window.
    pub fn full() -> StarvingSpec {
        StarvingSpec {
            hosts: 40,
            cores: 16,
            high_jobs: 6,
            low_jobs: 2,
            runtime: Duration::from_secs(20),
            window: Duration::from_secs(120),
        }
    }

    fn farm(&self) -> FarmSpec {
        let cores = self.hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, cores);
        // Deep enough for the fill (a minute at most) and the whole window, for both classes.
        let secs = self.window.as_secs_f64() * 2.0 + 60.0;
        let per_job = |jobs: usize| flood_size(f64::from(cores), secs, self.runtime) / jobs + 1;
        let classes = [("high", HIGH, self.high_jobs), ("low", LOW, self.low_jobs)];
        farm.jobs = classes
            .iter()
            .flat_map(|(name, priority, jobs)| {
                (0..*jobs).map(move |n| {
                    job(
                        0,
                        &format!("{name}{n:02}"),
                        *priority,
                        vec![layer("l", per_job(*jobs), self.runtime)],
                    )
                })
            })
            .collect();
        farm
    }
}

/// What the PRIORITY_STARVING scenario saw.
#[derive(Clone, Debug)]
pub struct StarvingOutcome {
    /// The job order it ran under.
    pub order: JobOrder,
    /// Frames of the low stream and of the flood completed during the window.
    pub completed: (i64, i64),
    /// Seconds the window lasted.
    pub secs: f64,
    /// Audit violations at the end.
    pub violations: Vec<String>,
}

impl StarvingOutcome {
    /// The low stream's share of the window's completions.
    pub fn low_share(&self) -> f64 {
        let (low, high) = self.completed;
        low as f64 / (low + high).max(1) as f64
    }
}

/// Completed frames of the low stream and of the flood so far.
fn completed(run: &mut Run) -> Result<(i64, i64), SimError> {
    let r = run.client.query_one(
        "SELECT count(*) FILTER (WHERE j.str_name LIKE 'low%'),
                count(*) FILTER (WHERE j.str_name LIKE 'high%')
           FROM frame f JOIN job j ON j.pk_job = f.pk_job WHERE f.str_state = 'SUCCEEDED'",
        &[],
    )?;
    Ok((r.get(0), r.get(1)))
}

/// Runs the scenario under `order`: the flood saturates the farm, then the stream arrives
/// and completions are counted for the window (and at least until the farm turned over
/// three times, so a slow machine still counts enough of them).
pub fn starving(spec: &StarvingSpec, order: JobOrder) -> Result<StarvingOutcome, SimError> {
    let mut run = Run::start(
        &spec.farm(),
        |c| {
            (0..spec.low_jobs).try_for_each(|n| pause(c, &format!("low{n:02}")))?;
            Ok(())
        },
        |c| c.scheduler.job_order = order,
    )?;
    run.saturate(0.95, 1, Duration::from_secs(60))?;
    for n in 0..spec.low_jobs {
        run.submit(&format!("low{n:02}"))?;
    }
    let before = completed(&mut run)?;
    let turnover = 3 * i64::from(spec.hosts as u32 * spec.cores);
    let submitted = Instant::now();
    let now = loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = completed(&mut run)?;
        let counted = now.0 - before.0 + now.1 - before.1;
        let elapsed = submitted.elapsed();
        if (elapsed >= spec.window && counted >= turnover) || elapsed >= spec.window * 6 {
            break now;
        }
    };
    let secs = submitted.elapsed().as_secs_f64();
    let violations = run.finish()?;
    Ok(StarvingOutcome {
        order,
        completed: (now.0 - before.0, now.1 - before.1),
        secs,
        violations,
    })
}

/// The battery's PRIORITY_STARVING line, under `proportional`.
pub fn verify(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        StarvingSpec::full()
    } else {
        StarvingSpec::small()
    };
    let o = starving(&spec, JobOrder::Proportional)?;
    Ok(Verdict::judge(
        "PRIORITY_STARVING",
        o.low_share() >= FLOOR,
        figure(&spec, &o),
        None,
        o.violations,
    ))
}

/// The verdict's figure: the low stream's share and what it was counted over.
pub fn figure(spec: &StarvingSpec, o: &StarvingOutcome) -> String {
    format!(
        "low stream {:.1} % of completions (≥ {:.0} %) under {:?}: {} of {} in {:.0}s; {} priority-{LOW} jobs beside {} priority-{HIGH} jobs on {} cores",
        o.low_share() * 100.0,
        FLOOR * 100.0,
        o.order,
        o.completed.0,
        o.completed.0 + o.completed.1,
        o.secs,
        spec.low_jobs,
        spec.high_jobs,
        spec.hosts as u32 * spec.cores
    )
}
