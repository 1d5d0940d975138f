//! LICENSE (and Maestro's LICENSE_NO_HOSTS, run as its second half): live application
//! licenses on a farm whose frames check seats out of a fake license server
//! ([`crate::sim::licenses`]) that artists draw on too.
//!
//! Four licensed layers and an unlicensed one flood a small farm; stagehand polls the server
//! every `poll`. Timeline, in phases of `phase`:
//! 0. `hengine` (floating) and `katana` (host-based) fill their pools; artists hold every
//!    `nuke` and `ambush` seat, so those layers wait `no_license`.
//! 1. Artists give `nuke` back (the farm must use the seats within one poll), and give
//!    `ambush` back only to take it again right after the next answer: the frames booked on
//!    that answer are denied, and must be requeued without spending a retry.
//! 2. Artists let `ambush` go for good (the denied frames run) and start taking `hengine`
//!    seats as they free.
//!
//! Passes when, in both variants (per-host seats reported, then counts only): no pool was
//! ever above its seats and the pools artists only give back saw no denial; host-based seats
//! were shared (more `katana` frames ran at once than it has seats); the unlicensed layer
//! ran at ≥ 95 % of the samples; `nuke` was full within one poll plus one frame run time
//! (the full farm freeing cores) of its release; `ambush` was denied, and its frames ran
//! with no retry spent.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use super::Verdict;
use crate::sim::{
    SimError,
    licenses::{FakeLicenseServer, LICENSE_DENIED_EXIT, LicenseSeats},
    scenario::{Run, flood_size, job, layer, pause},
    seed::FarmSpec,
};

/// The shape of the scenario.
#[derive(Clone, Debug)]
pub struct LicenseSpec {
    /// Hosts.
    pub hosts: usize,
    /// Cores per host.
    pub cores: u32,
    /// Mean run time of every frame.
    pub runtime: Duration,
    /// `[licenses] poll_interval`.
    pub poll: Duration,
    /// Length of each of the three phases.
    pub phase: Duration,
}

impl LicenseSpec {
    /// Test scale: 6 hosts × 4 cores, 3 s frames, a 2 s poll, 6 s phases. Frames run longer
    /// than the checkout lag (2 s) even at their shortest (−25 %), as at full scale: a
    /// counts-only sample cannot tell a start within the lag from an artist's checkout, so
    /// the start is charged on top of it until a sample taken after the lag, and a frame
    /// that ends before then never runs beside the last ones of its ramp.
    pub fn small() -> LicenseSpec {
        LicenseSpec {
            hosts: 6,
            cores: 4,
            runtime: Duration::from_secs(3),
            poll: Duration::from_secs(2),
            phase: Duration::from_secs(6),
        }
    }

    /// Bench scale: 64 hosts × 16 cores, 5 s frames, a 2 s poll, 20 s phases.
    pub fn full() -> LicenseSpec {
        LicenseSpec {
            hosts: 64,
            cores: 16,
            runtime: Duration::from_secs(5),
            poll: Duration::from_secs(2),
            phase: Duration::from_secs(20),
        }
    }

    fn cores_total(&self) -> u32 {
        self.hosts as u32 * self.cores
    }

    /// The pools: (name, seats, host-based).
    fn pools(&self) -> [(&'static str, i64, bool); 4] {
        let cores = i64::from(self.cores_total());
        [
            ("hengine", (cores / 4).max(2), false),
            ("katana", (self.hosts as i64 / 3).max(1), true),
            ("nuke", (cores / 8).max(2), false),
            ("ambush", 3, false),
        ]
    }

    fn farm(&self) -> FarmSpec {
        let total = self.cores_total();
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, total);
        let secs = self.phase.as_secs_f64() * 3.0 + 10.0;
        let frames = flood_size(f64::from(total), secs, self.runtime);
        let mut jobs: Vec<_> = self
            .pools()
            .iter()
            .map(|(name, _, _)| {
                let mut l = layer(name, frames, self.runtime);
                l.env.push(("CUE_LICENSES".into(), (*name).into()));
                job(0, &format!("lic-{name}"), 60, vec![l])
            })
            .collect();
        // Below the licensed jobs: it takes what they leave, so it shows they leave it.
        jobs.push(job(
            0,
            "free",
            40,
            vec![layer("free", frames, self.runtime)],
        ));
        farm.jobs = jobs;
        farm
    }
}

/// What one variant saw.
#[derive(Clone, Debug, Default)]
pub struct LicenseOutcome {
    /// Per pool: denials, grants, peak seats held, seats, frames that shared a seat.
    pub pools: Vec<(String, u64, u64, i64, i64, u64)>,
    /// The most `katana` frames running at once.
    pub katana_peak_frames: i64,
    /// Samples after the first phase's warm-up, and those with no unlicensed frame running.
    pub warm_samples: usize,
    /// See `warm_samples`.
    pub free_idle_samples: usize,
    /// Seconds from `nuke`'s release to the farm holding all of it (`None`: never).
    pub nuke_fill_secs: Option<f64>,
    /// Until then, every 0.5 s: seconds since the release, `nuke` frames running in the
    /// database, seats the farm holds on the server, and the stored sample's free seats —
    /// printed when the refill misses its bound, to tell a slow pass from a held license.
    pub nuke_trace: Vec<String>,
    /// `ambush` frames that ended denied (exit status 330) at some point.
    pub ambush_denials: u64,
    /// `ambush` frames that ran to the end.
    pub ambush_done: i64,
    /// Frames of `ambush` with `int_retries > 0` or DEAD.
    pub ambush_retried: i64,
    /// Accounting-audit violations.
    pub violations: Vec<String>,
}

impl LicenseOutcome {
    /// The criteria, and the figure in words; freed seats must be used within `polls`
    /// polls (the battery's criterion is 1) plus one frame run time.
    pub fn judge(&self, spec: &LicenseSpec, polls: u32) -> (bool, String) {
        let pools = spec.pools();
        let seats = |n: &str| pools.iter().find(|p| p.0 == n).map_or(0, |p| p.1);
        let never_over = self.pools.iter().all(|p| p.3 <= p.4);
        let clean = self
            .pools
            .iter()
            .filter(|p| p.0 == "katana" || p.0 == "nuke")
            .all(|p| p.1 == 0);
        let shared = self.katana_peak_frames > seats("katana");
        // One poll, then as long as the full farm takes to free cores for the frames.
        let bound = (spec.poll * polls + spec.runtime).as_secs_f64();
        let unaffected = self.warm_samples > 0
            && self.free_idle_samples as f64 <= self.warm_samples as f64 * 0.05;
        let refilled = self.nuke_fill_secs.is_some_and(|s| s <= bound);
        let requeued = self.ambush_denials > 0 && self.ambush_done > 0 && self.ambush_retried == 0;
        let holds = never_over && clean && shared && unaffected && refilled && requeued;
        let denials: Vec<String> = self
            .pools
            .iter()
            .map(|p| format!("{} {}", p.0, p.1))
            .collect();
        let mut figure = format!(
            "pools never over: {never_over}, denials [{}]; katana {} frames on {} seats; unlicensed idle at {} of {} samples; nuke full {} s after release (bound {bound:.1} s); ambush denied {}, ran {}, retries spent {}",
            denials.join(", "),
            self.katana_peak_frames,
            seats("katana"),
            self.free_idle_samples,
            self.warm_samples,
            self.nuke_fill_secs
                .map_or("never".to_owned(), |s| format!("{s:.1}")),
            self.ambush_denials,
            self.ambush_done,
            self.ambush_retried,
        );
        if !refilled {
            figure.push_str(&format!(
                "; nuke after release: {}",
                self.nuke_trace.join(" ")
            ));
        }
        (holds, figure)
    }
}

/// Runs one variant; `counts_only` leaves the per-host seats out of the server's answers.
pub fn run(spec: &LicenseSpec, counts_only: bool) -> Result<LicenseOutcome, SimError> {
    let seats = LicenseSeats::default();
    for (name, total, host_based) in spec.pools() {
        seats.add_pool(name, total, host_based);
    }
    seats.set_counts_only(counts_only);
    seats.set_artists("nuke", i64::MAX);
    seats.set_artists("ambush", i64::MAX);
    let server = FakeLicenseServer::start(seats.clone())?;
    let licensed: Vec<String> = spec
        .pools()
        .iter()
        .map(|p| format!("lic-{}", p.0))
        .collect();
    let mut run = Run::start(
        &spec.farm(),
        |c| licensed.iter().try_for_each(|j| pause(c, j)),
        |c| {
            c.licenses.provider = server.url().to_owned();
            c.licenses.poll_interval = spec.poll;
            c.licenses.stale_after = spec.poll * 10;
            // The fake RQD checks seats out when its completer next runs, which on a loaded
            // machine can be a second after the booking.
            c.licenses.checkout_lag = Duration::from_secs(2);
            c.licenses.provider_timeout = Duration::from_secs(2);
            c.licenses.denied_exit_statuses = vec![i64::from(LICENSE_DENIED_EXIT)];
        },
    )?;
    if let Some(rqd) = &run.farm.rqd {
        rqd.set_licenses(seats.clone());
    }
    for j in &licensed {
        run.submit(j)?;
    }
    let mut out = LicenseOutcome::default();
    let start = Instant::now();
    let phase = spec.phase;
    let (mut released, mut freed) = (None, false);
    // The last phase runs one frame time longer: the ambushed frames booked again after
    // `ambush` is let go must have time to end.
    while start.elapsed() < phase * 3 + spec.runtime {
        let t = start.elapsed();
        if t >= phase && released.is_none() {
            seats.set_artists("nuke", 0);
            seats.release_then_ambush("ambush");
            released = Some(Instant::now());
        }
        if t >= phase * 2 {
            if !freed {
                seats.set_artists("ambush", 0);
                freed = true;
            }
            // Artists take hengine seats as they free, up to two.
            seats.set_artists("hengine", 2);
        }
        sample(&mut run, &seats, t > phase / 2, released, &mut out)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    ambush_frames(&mut run, &mut out)?;
    out.pools = seats
        .stats()
        .into_iter()
        .map(|(n, s)| {
            let total = spec.pools().iter().find(|p| p.0 == n).map_or(0, |p| p.1);
            (n, s.denials, s.granted, s.peak_used, total, s.shared)
        })
        .collect();
    out.ambush_denials = seats.stats().get("ambush").map_or(0, |s| s.denials);
    out.violations = run.finish()?;
    drop(server);
    Ok(out)
}

/// One sample: running frames per layer from the database, the server's seats.
fn sample(
    run: &mut Run,
    seats: &LicenseSeats,
    warm: bool,
    released: Option<Instant>,
    out: &mut LicenseOutcome,
) -> Result<(), SimError> {
    let running: HashMap<String, i64> = run
        .client
        .query(
            "SELECT l.str_name, count(*) FROM frame f JOIN layer l ON l.pk_layer = f.pk_layer
                  WHERE f.str_state = 'RUNNING' GROUP BY l.str_name",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let get = |n: &str| running.get(n).copied().unwrap_or(0);
    if let (Some(at), None) = (released, out.nuke_fill_secs) {
        trace_nuke(run, seats, at, get("nuke"), out)?;
    }
    out.katana_peak_frames = out.katana_peak_frames.max(get("katana"));
    out.warm_samples += usize::from(warm);
    if warm && get("free") == 0 {
        out.free_idle_samples += 1;
    }
    if let (Some(at), None) = (released, out.nuke_fill_secs) {
        let usage = seats.usage();
        if usage
            .get("nuke")
            .is_some_and(|(farm, _, total)| farm >= total)
        {
            out.nuke_fill_secs = Some(at.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

/// One point of [`LicenseOutcome::nuke_trace`] every 0.5 s (of the 0.1 s samples, the
/// fifth).
fn trace_nuke(
    run: &mut Run,
    seats: &LicenseSeats,
    released: Instant,
    running: i64,
    out: &mut LicenseOutcome,
) -> Result<(), SimError> {
    let t = released.elapsed().as_secs_f64();
    if t < out.nuke_trace.len() as f64 * 0.5 {
        return Ok(());
    }
    let stored: Option<i64> = run
        .client
        .query_opt(
            "SELECT int_available FROM stagehand.license WHERE str_name = 'nuke'",
            &[],
        )?
        .map(|r| r.get(0));
    let farm = seats.usage().get("nuke").map_or(0, |u| u.0);
    out.nuke_trace.push(format!(
        "{t:.1}s:{running}/{farm}/{}",
        stored.map_or("-".to_owned(), |a| a.to_string())
    ));
    Ok(())
}

/// The `ambush` frames that ran to the end, and those that spent a retry or died.
fn ambush_frames(run: &mut Run, out: &mut LicenseOutcome) -> Result<(), SimError> {
    let row = run.client.query_one(
        "SELECT count(*) FILTER (WHERE f.str_state = 'SUCCEEDED'),
                count(*) FILTER (WHERE f.int_retries > 0 OR f.str_state = 'DEAD')
           FROM frame f JOIN layer l ON l.pk_layer = f.pk_layer WHERE l.str_name = 'ambush'",
        &[],
    )?;
    out.ambush_done = row.get(0);
    out.ambush_retried = row.get(1);
    Ok(())
}

/// The battery's LICENSE: both variants at the given scale; passes when both do.
pub fn license(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        LicenseSpec::full()
    } else {
        LicenseSpec::small()
    };
    let with_hosts = run(&spec, false)?;
    let counts_only = run(&spec, true)?;
    let (a, fa) = with_hosts.judge(&spec, 1);
    let (b, fb) = counts_only.judge(&spec, 1);
    let mut violations = with_hosts.violations;
    violations.extend(counts_only.violations);
    Ok(Verdict::judge(
        "LICENSE",
        a && b,
        format!("per-host: {fa} | counts only: {fb}"),
        None,
        violations,
    ))
}
