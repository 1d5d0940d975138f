//! PRIORITY: ten job classes at priorities 10, 20, … 100, statistically identical (one-core
//! frames of one run time) and with an equal backlog, released together onto a small farm
//! they oversubscribe many times over. Completed frames per class must be ordered by
//! priority: Spearman's ρ(priority, completions) ≥ 0.9 (Maestro's watcher asks 0.7 and
//! reports ~0.98). Strict priority orders them only by starving the tail: once the first
//! fill has turned over, the top class takes every freed core and the lowest complete nothing
//! (`balanced` without minimum cores is the same: ρ = 0.96 at full scale with three classes
//! at zero, 0.88 at test scale with six). The battery runs it under
//! `job_order = "proportional"`, where every class completes frames in proportion to its
//! priority.

use std::time::{Duration, Instant};

use super::{Verdict, spearman};
use crate::{
    config::JobOrder,
    sim::{
        SimError,
        scenario::{Run, job, layer},
        seed::FarmSpec,
    },
};

/// Spearman's ρ the scenario asks for.
pub const RHO_MIN: f64 = 0.9;

/// The priorities of the classes.
pub const PRIORITIES: [i32; 10] = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];

/// The shape of the PRIORITY scenario.
#[derive(Clone, Debug)]
pub struct PrioritySpec {
    /// Hosts.
    pub hosts: usize,
    /// Cores per host.
    pub cores: u32,
    /// Jobs per class (all of them fit one pass: `max_jobs_per_pass` is 20).
    pub jobs_per_class: usize,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// Completed frames (all classes) after which the shares are read.
    pub completions: i64,
    /// The longest the run may take to get them.
    pub limit: Duration,
}

impl PrioritySpec {
    /// Test scale: 6 hosts × 8 cores, 1 s frames, 900 completions.
    pub fn small() -> PrioritySpec {
        PrioritySpec {
            hosts: 6,
            cores: 8,
            jobs_per_class: 1,
            runtime: Duration::from_secs(1),
            completions: 900,
            limit: Duration::from_secs(90),
        }
    }

    /// Bench scale: 40 hosts × 16 cores (640 cores), 20 s frames, 1,300 completions: a
    /// backlog of 582 frames per class, 9.1× the farm in all, as Maestro's ~9×.
    pub fn full() -> PrioritySpec {
        PrioritySpec {
            hosts: 40,
            cores: 16,
            jobs_per_class: 2,
            runtime: Duration::from_secs(20),
            completions: 1_300,
            limit: Duration::from_secs(300),
        }
    }

    /// Frames per class: at least 0.9 × the farm's cores (10 classes: 9× oversubscribed),
    /// and enough that the top class (~18 % of the completions) never runs dry.
    pub fn per_class(&self) -> usize {
        let cores = self.hosts as f64 * f64::from(self.cores);
        let top = 0.3 * (self.completions as f64 + cores);
        (0.9 * cores).max(top).ceil() as usize
    }

    fn farm(&self) -> FarmSpec {
        let cores = self.hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, cores);
        let per_job = self.per_class().div_ceil(self.jobs_per_class);
        farm.jobs = PRIORITIES
            .iter()
            .flat_map(|p| {
                (0..self.jobs_per_class).map(move |n| {
                    job(
                        0,
                        &format!("pri{p:03}-{n}"),
                        *p,
                        vec![layer("l", per_job, self.runtime)],
                    )
                })
            })
            .collect();
        farm
    }
}

/// What the PRIORITY scenario saw.
#[derive(Clone, Debug)]
pub struct PriorityOutcome {
    /// The job order it ran under.
    pub order: JobOrder,
    /// Completed frames per class, in [`PRIORITIES`] order.
    pub completed: Vec<i64>,
    /// Spearman's ρ(priority, completions).
    pub rho: f64,
    /// Seconds the run took to reach the completions (or the limit).
    pub secs: f64,
    /// Audit violations at the end.
    pub violations: Vec<String>,
}

/// Runs the PRIORITY scenario under `order`: every class released at once (seeded unpaused
/// before stagehand starts), shares read once `spec.completions` frames completed.
pub fn priority(spec: &PrioritySpec, order: JobOrder) -> Result<PriorityOutcome, SimError> {
    let mut run = Run::start(&spec.farm(), |_| Ok(()), |c| c.scheduler.job_order = order)?;
    let started = Instant::now();
    while started.elapsed() < spec.limit {
        std::thread::sleep(Duration::from_millis(250));
        let done: i64 = run
            .client
            .query_one(
                "SELECT count(*) FROM frame WHERE str_state = 'SUCCEEDED'",
                &[],
            )?
            .get(0);
        if done >= spec.completions {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let mut completed = vec![0i64; PRIORITIES.len()];
    for r in run.client.query(
        "SELECT jr.int_priority::int, count(*) FROM frame f
           JOIN job_resource jr ON jr.pk_job = f.pk_job
          WHERE f.str_state = 'SUCCEEDED' GROUP BY 1",
        &[],
    )? {
        if let Some(i) = PRIORITIES.iter().position(|p| *p == r.get::<_, i32>(0)) {
            completed[i] = r.get(1);
        }
    }
    let violations = run.finish()?;
    let x: Vec<f64> = PRIORITIES.iter().map(|p| f64::from(*p)).collect();
    let y: Vec<f64> = completed.iter().map(|c| *c as f64).collect();
    Ok(PriorityOutcome {
        order,
        rho: spearman(&x, &y),
        completed,
        secs,
        violations,
    })
}

/// The battery's PRIORITY line, under `proportional`.
pub fn verify(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        PrioritySpec::full()
    } else {
        PrioritySpec::small()
    };
    let o = priority(&spec, JobOrder::Proportional)?;
    Ok(Verdict::judge(
        "PRIORITY",
        o.rho >= RHO_MIN && o.completed[9] > o.completed[0],
        figure(&spec, &o),
        Some("ρ ≈ 0.98 (criterion ρ ≥ 0.7)"),
        o.violations,
    ))
}

/// The verdict's figure: ρ, the job order and the completions per class.
pub fn figure(spec: &PrioritySpec, o: &PriorityOutcome) -> String {
    let total: i64 = o.completed.iter().sum();
    let shares: Vec<String> = o
        .completed
        .iter()
        .map(|c| format!("{:.1}", *c as f64 * 100.0 / total.max(1) as f64))
        .collect();
    let cores = spec.hosts as f64 * f64::from(spec.cores);
    format!(
        "ρ = {:.3} (≥ {RHO_MIN}) under {:?}; {total} completions on {cores:.0} cores, {:.1}× oversubscribed, in {:.0}s; share % p10…p100: {}",
        o.rho,
        o.order,
        spec.per_class() as f64 * PRIORITIES.len() as f64 / cores,
        o.secs,
        shares.join(" ")
    )
}
