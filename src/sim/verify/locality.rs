//! LOCALITY: refill affinity — the share of newly booked frames that land on a host already
//! running (or that ran a moment ago) their layer — with locality on and off.
//!
//! Many one-layer jobs, each capped at a few cores (`job_resource.int_max_cores`), fill a
//! farm of small hosts with one-core frames that complete and are replaced continuously, so
//! every layer has only a few frames running at a time and a random host seldom runs it.
//! The database is sampled every 100 ms: a proc not in the previous sample is a new booking,
//! and it is *affine* when the previous sample had a proc of the same layer on the same host
//! (so a refill of the host a frame of the layer just vacated counts, as in Maestro's sim).
//! Beside it the scenario reports the random expectation: the share of the farm's hosts that
//! ran the layer in the previous sample.
//!
//! PASS: affinity ≥ 30 % with locality on (Maestro: 29 %), and with it off at most half of
//! that (Maestro: 1.3 %, near random).

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use super::Verdict;
use crate::{
    index::Locality,
    sim::{
        SimError,
        scenario::{Run, job, layer},
        seed::FarmSpec,
    },
};

/// Affinity with locality on must reach this.
pub const FLOOR: f64 = 0.30;

/// The shape of the LOCALITY scenario.
#[derive(Clone, Debug)]
pub struct LocalitySpec {
    /// Hosts.
    pub hosts: usize,
    /// Cores per host.
    pub cores: u32,
    /// One-layer jobs; `jobs × cap` is the farm's cores.
    pub jobs: usize,
    /// Cores per job (`job_resource.int_max_cores`): its frames running at once.
    pub cap: u32,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// How long new bookings are sampled once the farm is full.
    pub window: Duration,
}

impl LocalitySpec {
    /// Test scale: 32 hosts × 4 cores, 64 jobs of 2 cores, 2 s frames, sampled 10 s.
    pub fn small() -> LocalitySpec {
        LocalitySpec {
            hosts: 32,
            cores: 4,
            jobs: 64,
            cap: 2,
            runtime: Duration::from_secs(2),
            window: Duration::from_secs(10),
        }
    }

    /// Bench scale: 100 hosts × 16 cores, 200 jobs of 8 cores, 10 s frames, sampled 60 s.
    pub fn full() -> LocalitySpec {
        LocalitySpec {
            hosts: 100,
            cores: 16,
            jobs: 200,
            cap: 8,
            runtime: Duration::from_secs(10),
            window: Duration::from_secs(60),
        }
    }

    fn farm(&self) -> FarmSpec {
        let total = self.hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, total);
        // Each job's cap turning over through the fill and the window, twice over.
        let secs = self.window.as_secs_f64() + 60.0;
        let frames = (f64::from(self.cap) * secs / self.runtime.as_secs_f64() * 2.0) as usize;
        farm.jobs = (0..self.jobs)
            .map(|j| {
                let mut spec = job(
                    0,
                    &format!("loc{j:03}"),
                    50,
                    vec![layer("render", frames, self.runtime)],
                );
                spec.max_cores = self.cap as i32;
                spec
            })
            .collect();
        farm
    }
}

/// What one run saw of the new bookings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Affinity {
    /// New procs seen.
    pub booked: usize,
    /// Of those, on a host that ran their layer in the previous sample.
    pub affine: usize,
    /// Summed share of the farm's hosts that ran the new proc's layer in the previous
    /// sample: divided by `booked`, the affinity a random placement would have.
    pub random: f64,
}

impl Affinity {
    /// Share of new bookings that were affine.
    pub fn share(&self) -> f64 {
        self.affine as f64 / self.booked.max(1) as f64
    }

    /// The random expectation.
    pub fn random_share(&self) -> f64 {
        self.random / self.booked.max(1) as f64
    }
}

/// One sample: each proc's (host, layer).
type Sample = HashMap<String, (String, String)>;

fn sample(run: &mut Run) -> Result<Sample, SimError> {
    Ok(run
        .client
        .query("SELECT pk_proc, pk_host, pk_layer FROM proc", &[])?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect())
}

/// Counts the procs of `now` that `before` did not have into `a`.
fn tally(a: &mut Affinity, before: &Sample, now: &Sample, hosts: usize) {
    let pairs: HashSet<(&str, &str)> = before
        .values()
        .map(|(h, l)| (h.as_str(), l.as_str()))
        .collect();
    let mut hosts_of: HashMap<&str, usize> = HashMap::new();
    for (_, layer) in &pairs {
        *hosts_of.entry(layer).or_default() += 1;
    }
    for (proc, (host, layer)) in now {
        if before.contains_key(proc) {
            continue;
        }
        a.booked += 1;
        a.affine += usize::from(pairs.contains(&(host.as_str(), layer.as_str())));
        a.random += hosts_of.get(layer.as_str()).copied().unwrap_or(0) as f64 / hosts as f64;
    }
}

/// Runs the scenario with `locality`: waits for the farm to fill, then samples new bookings
/// every 100 ms for the window.
pub fn affinity(
    spec: &LocalitySpec,
    locality: Locality,
) -> Result<(Affinity, Vec<String>), SimError> {
    let jobs = spec.jobs as u32;
    let mut run = Run::start(
        &spec.farm(),
        |_| Ok(()),
        |c| {
            c.scheduler.locality = locality;
            c.scheduler.max_jobs_per_pass = jobs;
        },
    )?;
    run.saturate(0.9, 2, Duration::from_secs(60))?;
    let mut a = Affinity::default();
    let mut before = sample(&mut run)?;
    let started = Instant::now();
    while started.elapsed() < spec.window {
        std::thread::sleep(Duration::from_millis(100));
        let now = sample(&mut run)?;
        tally(&mut a, &before, &now, spec.hosts);
        before = now;
    }
    Ok((a, run.finish()?))
}

/// The battery's LOCALITY line: the scenario with locality on (the default), then off.
pub fn verify(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        LocalitySpec::full()
    } else {
        LocalitySpec::small()
    };
    let (on, mut violations) = affinity(&spec, Locality::default())?;
    let (off, more) = affinity(&spec, Locality::OFF)?;
    violations.extend(more);
    Ok(Verdict::judge(
        "LOCALITY",
        holds(&on, &off),
        figure(&spec, &on, &off),
        Some("29 % on, 1.3 % off"),
        violations,
    ))
}

/// The criterion: ≥ 30 % with locality on, and off at most half of that.
pub fn holds(on: &Affinity, off: &Affinity) -> bool {
    on.booked > 0 && off.booked > 0 && on.share() >= FLOOR && off.share() <= on.share() / 2.0
}

/// The verdict's figure.
pub fn figure(spec: &LocalitySpec, on: &Affinity, off: &Affinity) -> String {
    format!(
        "refill affinity {:.1} % on (≥ {:.0} %), {:.1} % off (random {:.1} %), of {} and {} new frames; {} jobs of {} cores on {} hosts x {}",
        on.share() * 100.0,
        FLOOR * 100.0,
        off.share() * 100.0,
        off.random_share() * 100.0,
        on.booked,
        off.booked,
        spec.jobs,
        spec.cap,
        spec.hosts,
        spec.cores
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(rows: &[(&str, &str, &str)]) -> Sample {
        rows.iter()
            .map(|(p, h, l)| ((*p).to_owned(), ((*h).to_owned(), (*l).to_owned())))
            .collect()
    }

    #[test]
    fn a_new_proc_is_affine_when_its_host_ran_its_layer_in_the_previous_sample() {
        let before = s(&[("p1", "h1", "A"), ("p2", "h2", "B")]);
        let now = s(&[("p2", "h2", "B"), ("p3", "h1", "A"), ("p4", "h1", "B")]);
        let mut a = Affinity::default();
        tally(&mut a, &before, &now, 4);
        assert_eq!((a.booked, a.affine), (2, 1));
        // A ran on one host of four, B on one: a random placement hits 25 % either way.
        assert!((a.random_share() - 0.25).abs() < 1e-9);
    }
}
