//! Scheduling-quality scenarios on a simulated farm, run in-process: each is a test at small
//! scale (`tests/it/quality.rs`) and `stagehand bench --workload <scenario>` at full scale.
//!
//! **Wide frame.** A farm saturated by a flood of one-core frames of jittered run time; a
//! frame as wide as a whole host is submitted into it. Without reservations it waits as long
//! as the flood lasts, since cores free one at a time and the flood takes each; with them it
//! must start within [`WideSpec::bound`]: the wait before reserving, plus the longest a
//! running flood frame can still run (runtime + 25 % jitter), plus slack for the passes.

use std::time::{Duration, Instant};

use super::{
    SimError,
    farm::SimFarm,
    pg::PgOptions,
    seed::{FarmSpec, GB, JobSpec, LayerSpec},
};
use crate::{accounting::audit::audit, model::CORE, service::Service, sim::fake_rqd::RUNTIME_ENV};

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

    /// Bench scale: 64 hosts × 64 cores (4,096 cores), 20 s frames.
    pub fn full() -> WideSpec {
        WideSpec {
            hosts: 64,
            cores: 64,
            runtime: Duration::from_secs(20),
            after: Duration::from_secs(10),
            limit: Duration::from_secs(120),
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
        // Enough flood to stay saturated through the fill and the whole limit, with margin.
        let secs = self.limit.as_secs_f64() + 30.0;
        let flood_frames = (total_cores * secs / self.runtime.as_secs_f64() * 1.5) as usize;
        let millis = self.runtime.as_millis().to_string();
        let mut flood = LayerSpec::simple("flood", &format!("1-{flood_frames}"), "general");
        flood.env = vec![(RUNTIME_ENV.into(), millis.clone())];
        flood.runtime_secs = self.runtime.as_secs_f64();
        let mut wide = LayerSpec::simple("wide", "1", "general");
        wide.cores_min = i64::from(self.cores * CORE);
        wide.mem_kb = 4 * GB;
        wide.env = vec![(RUNTIME_ENV.into(), millis)];
        wide.runtime_secs = self.runtime.as_secs_f64();
        let job = |name: &str, priority: i32, layer: LayerSpec| JobSpec {
            show: 0,
            name: name.into(),
            priority,
            max_cores: 0,
            min_cores: 0,
            max_gpus: 0,
            os: String::new(),
            env: Vec::new(),
            layers: vec![layer],
        };
        let mut farm =
            FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, 1_000_000);
        // The wide job has the higher priority: it is looked at first in every pass.
        farm.jobs = vec![job("wide", 90, wide), job("flood", 50, flood)];
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
    let farm = SimFarm::start(&spec.farm(), &PgOptions::default(), true, 0)?;
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls)?;
    client.execute(
        "UPDATE job SET b_paused = true WHERE str_name = 'wide'",
        &[],
    )?;
    let mut config = farm.config(false);
    config.reservations.enabled = reservations;
    config.reservations.after = spec.after;
    config.hosts.refresh_interval = Duration::from_millis(250);
    config.scheduler.saturated_sleep = Duration::from_millis(250);
    config.accounting.recompute_interval = Duration::from_millis(500);
    let total_cores = spec.hosts as i64 * i64::from(spec.cores) * i64::from(CORE);
    let service = Service::start(config)?;
    let busy = |c: &mut postgres::Client| -> Result<i64, postgres::Error> {
        Ok(c.query_one(
            "SELECT coalesce(sum(int_cores_reserved), 0)::bigint FROM proc",
            &[],
        )?
        .get(0))
    };
    // Saturate the farm with the flood first: busy, and no host with room for the wide frame.
    let roomy = |c: &mut postgres::Client| -> Result<i64, postgres::Error> {
        Ok(c.query_one(
            "SELECT count(*) FROM host WHERE int_cores_idle >= $1",
            &[&i64::from(spec.cores * CORE)],
        )?
        .get(0))
    };
    let fill_deadline = Instant::now() + Duration::from_secs(120);
    while (busy(&mut client)? * 100 < total_cores * 95 || roomy(&mut client)? > 0)
        && Instant::now() < fill_deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // Submit the wide frame into the busy farm.
    client.execute(
        "UPDATE frame SET ts_updated = now() WHERE pk_job IN (SELECT pk_job FROM job WHERE str_name = 'wide')",
        &[],
    )?;
    client.execute(
        "UPDATE job SET b_paused = false WHERE str_name = 'wide'",
        &[],
    )?;
    let flood_done = |c: &mut postgres::Client| -> Result<i64, postgres::Error> {
        Ok(c.query_one(
            "SELECT count(*) FROM frame f JOIN job j ON j.pk_job = f.pk_job
              WHERE j.str_name = 'flood' AND f.str_state IN ('RUNNING', 'SUCCEEDED')",
            &[],
        )?
        .get(0))
    };
    let submitted = Instant::now();
    let flood_before = flood_done(&mut client)?;
    let (mut samples, mut busy_sum) = (0u64, 0i64);
    let mut started_after = None;
    let mut reserved = None;
    while submitted.elapsed() < spec.limit {
        std::thread::sleep(Duration::from_millis(100));
        samples += 1;
        busy_sum += busy(&mut client)?;
        if reserved.is_none() {
            if let Some(r) = client.query_opt(
                "SELECT extract(epoch FROM ts_shadow - ts_created)::float8 FROM stagehand.host_reservation",
                &[],
            )? {
                reserved = Some((submitted.elapsed().as_secs_f64(), r.get(0)));
            }
        }
        let state: String = client
            .query_one(
                "SELECT f.str_state FROM frame f JOIN job j ON j.pk_job = f.pk_job WHERE j.str_name = 'wide'",
                &[],
            )?
            .get(0);
        if state != "WAITING" {
            started_after = Some(submitted.elapsed().as_secs_f64());
            break;
        }
    }
    let waited = submitted.elapsed().as_secs_f64();
    let flood_rate = (flood_done(&mut client)? - flood_before) as f64 / waited.max(1e-9);
    service.shutdown(Duration::from_secs(15));
    let violations = audit(&mut client, None)?;
    Ok(WideOutcome {
        reservations,
        started_after,
        bound: spec.bound().as_secs_f64(),
        reserved,
        flood_frames_per_sec: flood_rate,
        utilization: busy_sum as f64 / samples.max(1) as f64 / total_cores as f64,
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
    if o.violations.is_empty() {
        println!("audit           : clean");
    } else {
        for v in &o.violations {
            println!("audit violation : {v}");
        }
    }
}
