//! A low-priority job beside a stream of high-priority work: one priority-10 job with a
//! minimum of cores and enough priority-90 work to fill the farm for the whole run. Under
//! `balanced` the low job keeps booking (about its minimum); under strict `priority` it gets
//! nothing while the stream lasts.

use std::time::{Duration, Instant};

use super::{Run, flood_size, job, layer, print_audit};
use crate::{
    config::JobOrder,
    sim::{SimError, seed::FarmSpec},
};

/// The shape of the priority-stream scenario.
#[derive(Clone, Debug)]
pub struct StreamSpec {
    /// Hosts.
    pub hosts: usize,
    /// Cores per host.
    pub cores: u32,
    /// Priority-90 jobs in the stream.
    pub high_jobs: usize,
    /// The low job's minimum cores (`job_resource.int_min_cores`).
    pub low_min_cores: i32,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// How long the low job's share is watched once the farm is full.
    pub window: Duration,
}

impl StreamSpec {
    /// Test scale: 8 hosts × 4 cores, 2 s frames.
    pub fn small() -> StreamSpec {
        StreamSpec {
            hosts: 8,
            cores: 4,
            high_jobs: 4,
            low_min_cores: 4,
            runtime: Duration::from_secs(2),
            window: Duration::from_secs(10),
        }
    }

    /// Bench scale: 100 hosts × 16 cores (1,600 cores), 20 high jobs, 10 s frames.
    pub fn full() -> StreamSpec {
        StreamSpec {
            hosts: 100,
            cores: 16,
            high_jobs: 20,
            low_min_cores: 64,
            runtime: Duration::from_secs(10),
            window: Duration::from_secs(60),
        }
    }

    fn farm(&self) -> FarmSpec {
        let total = self.hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, total);
        let secs = self.window.as_secs_f64() + 30.0;
        let per_job = flood_size(f64::from(total), secs, self.runtime) / self.high_jobs.max(1) + 1;
        farm.jobs = (0..self.high_jobs)
            .map(|i| {
                job(
                    0,
                    &format!("high{i:02}"),
                    90,
                    vec![layer("l", per_job, self.runtime)],
                )
            })
            .collect();
        let mut low = job(0, "low", 10, vec![layer("l", per_job, self.runtime)]);
        low.min_cores = self.low_min_cores;
        farm.jobs.push(low);
        farm
    }
}

/// What the priority-stream scenario saw.
#[derive(Clone, Debug)]
pub struct StreamOutcome {
    /// The job order used.
    pub order: JobOrder,
    /// The low job's cores, averaged over the window.
    pub low_cores: f64,
    /// Frames of the low job booked during the window.
    pub low_frames: i64,
    /// Farm utilization over the window.
    pub utilization: f64,
    /// Audit violations at the end.
    pub violations: Vec<String>,
}

/// Runs the priority-stream scenario under `order`.
pub fn priority_stream(spec: &StreamSpec, order: JobOrder) -> Result<StreamOutcome, SimError> {
    let mut run = Run::start(&spec.farm(), |_| Ok(()), |c| c.scheduler.job_order = order)?;
    run.saturate(0.95, 1, Duration::from_secs(60))?;
    let total = run.total()?;
    let before = run.started("low")?;
    let started = Instant::now();
    let (mut samples, mut low_sum, mut busy_sum) = (0i64, 0i64, 0i64);
    while started.elapsed() < spec.window {
        std::thread::sleep(Duration::from_millis(250));
        samples += 1;
        busy_sum += run.busy()?;
        low_sum += run
            .client
            .query_one(
                "SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p
                   JOIN job j ON j.pk_job = p.pk_job WHERE j.str_name = 'low'",
                &[],
            )?
            .get::<_, i64>(0);
    }
    let booked = run.started("low")? - before;
    let violations = run.finish()?;
    Ok(StreamOutcome {
        order,
        low_cores: low_sum as f64 / samples.max(1) as f64 / 100.0,
        low_frames: booked,
        utilization: busy_sum as f64 / samples.max(1) as f64 / total.max(1) as f64,
        violations,
    })
}

/// Prints an outcome the way `stagehand bench` does.
pub fn print_stream(spec: &StreamSpec, o: &StreamOutcome) {
    println!(
        "priority stream : {} hosts x {} cores, {} priority-90 jobs + 1 priority-10 job (min {} cores), order {:?}",
        spec.hosts, spec.cores, spec.high_jobs, spec.low_min_cores, o.order
    );
    println!(
        "low job         : {:.1} cores on average, {} frames booked in {:.0}s",
        o.low_cores,
        o.low_frames,
        spec.window.as_secs_f64()
    );
    println!("utilization     : {:.1} %", o.utilization * 100.0);
    print_audit(&o.violations);
}
