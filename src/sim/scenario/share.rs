//! Fair share: two shows with subscription sizes 2:1 (bursts large enough that no cap
//! decides) on one saturated allocation, frames completing continuously. The split of booked
//! cores must converge to 2:1 (± 10 %) and stay there.

use std::time::{Duration, Instant};

use super::{Run, flood_size, job, layer, print_audit};
use crate::sim::{
    SimError,
    seed::{FarmSpec, ShowSpec, SubSpec},
};

/// The shape of the fair-share scenario.
#[derive(Clone, Debug)]
pub struct ShareSpec {
    /// Hosts in the allocation.
    pub hosts: usize,
    /// Cores per host.
    pub cores: u32,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// Sampling starts after this (the first fill goes to whoever came first).
    pub warmup: Duration,
    /// Sampling window.
    pub window: Duration,
}

impl ShareSpec {
    /// Test scale: 30 one-core hosts, 5 s frames (the first fill turns over twice before
    /// sampling starts).
    pub fn small() -> ShareSpec {
        ShareSpec {
            hosts: 30,
            cores: 1,
            runtime: Duration::from_secs(5),
            warmup: Duration::from_secs(12),
            window: Duration::from_secs(10),
        }
    }

    /// Bench scale: 150 hosts × 16 cores (2,400 cores), 20 s frames.
    pub fn full() -> ShareSpec {
        ShareSpec {
            hosts: 150,
            cores: 16,
            runtime: Duration::from_secs(20),
            warmup: Duration::from_secs(45),
            window: Duration::from_secs(30),
        }
    }

    fn farm(&self) -> FarmSpec {
        let total = self.hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 8, total);
        let secs = (self.warmup + self.window).as_secs_f64() + 10.0;
        let frames = flood_size(f64::from(total), secs, self.runtime);
        farm.shows = [("big", total * 2 / 3), ("small", total / 3)]
            .into_iter()
            .map(|(name, size)| ShowSpec {
                name: name.into(),
                managed: true,
                subs: vec![SubSpec {
                    alloc: 0,
                    size,
                    burst: total,
                }],
                folder_max_cores: 0,
            })
            .collect();
        farm.jobs = vec![
            job(0, "big", 50, vec![layer("l", frames, self.runtime)]),
            job(1, "small", 50, vec![layer("l", frames, self.runtime)]),
        ];
        farm
    }
}

/// What the fair-share scenario saw.
#[derive(Clone, Debug)]
pub struct ShareOutcome {
    /// Booked cores big : small, summed over the window.
    pub ratio: f64,
    /// Seconds from start after which every sample's split stayed within 2 ± 10 %.
    pub settled_after: Option<f64>,
    /// Audit violations at the end.
    pub violations: Vec<String>,
}

/// Runs the fair-share scenario.
pub fn fair_share(spec: &ShareSpec) -> Result<ShareOutcome, SimError> {
    let mut run = Run::start(&spec.farm(), |_| Ok(()), |_| {})?;
    let started = Instant::now();
    let end = spec.warmup + spec.window;
    let (mut big, mut small) = (0i64, 0i64);
    let mut last_outside: Option<f64> = None;
    while started.elapsed() < end {
        std::thread::sleep(Duration::from_millis(250));
        let (mut b, mut s) = (0i64, 0i64);
        for r in run.client.query(
            "SELECT sh.str_name, sum(p.int_cores_reserved)::bigint FROM proc p
               JOIN show sh ON sh.pk_show = p.pk_show GROUP BY 1",
            &[],
        )? {
            match r.get::<_, &str>(0) {
                "big" => b = r.get(1),
                _ => s = r.get(1),
            }
        }
        let now = started.elapsed();
        let split = b as f64 / s.max(1) as f64;
        if !(1.8..=2.2).contains(&split) {
            last_outside = Some(now.as_secs_f64());
        }
        if now >= spec.warmup {
            big += b;
            small += s;
        }
    }
    let violations = run.finish()?;
    let settled_after = match last_outside {
        Some(t) if t >= end.as_secs_f64() - 0.5 => None,
        Some(t) => Some(t),
        None => Some(0.0),
    };
    Ok(ShareOutcome {
        ratio: big as f64 / small.max(1) as f64,
        settled_after,
        violations,
    })
}

/// Prints an outcome the way `stagehand bench` does.
pub fn print_share(spec: &ShareSpec, o: &ShareOutcome) {
    println!(
        "fair share      : {} hosts x {} cores, sizes 2:1, {:.0}s frames",
        spec.hosts,
        spec.cores,
        spec.runtime.as_secs_f64()
    );
    println!(
        "split           : {:.2} over {:.0}s after a {:.0}s warm-up (target 2 +- 10 %)",
        o.ratio,
        spec.window.as_secs_f64(),
        spec.warmup.as_secs_f64()
    );
    match o.settled_after {
        Some(t) => println!("settled after   : {t:.1}s (every later sample within 1.8-2.2)"),
        None => println!("settled after   : not within the run"),
    }
    print_audit(&o.violations);
}
