//! Issue 12's randomized adversarial soak (`stagehand bench --workload chaos`): three
//! `stagehand run` processes, each with several booking threads, race a Cuebot stand-in
//! (`standin`, `admin`) on one farm of managed and unmanaged shows with tags, GPU hosts,
//! job and folder caps and layer limits shared across shows, with real launches to the fake
//! RQD fleet completing frames — while [`faults`] breaks RQD, the database and the
//! instances, and [`invariants`] samples every promise every 100 ms. After the faults stop
//! and the run settles, nothing may be stranded (`settle`) and the strict audit must be
//! clean. Everything random is drawn from `--seed`, so a seed replays its fault schedule.

pub(crate) mod admin;
pub mod faults;
pub mod invariants;
pub(crate) mod settle;
pub(crate) mod shape;
pub(crate) mod standin;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use super::{
    SimError,
    fake_rqd::RqdHandle,
    farm::SimFarm,
    instances::Instance,
    pg::{Durability, PgOptions},
};
use crate::accounting::audit::audit;
pub use invariants::Violation;

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// Farm size (1.0: 120 hosts; the test runs 0.1).
    pub scale: f64,
    /// Seed of the farm, the fault schedule and the stand-in.
    pub seed: u64,
    /// How long faults are injected (the settling comes after).
    pub duration: Duration,
    /// The stagehand binary the instances run.
    pub binary: PathBuf,
    /// stagehand instances.
    pub instances: usize,
    /// Keep the database directory.
    pub keep: bool,
}

/// What the soak did and found.
#[derive(Clone, Debug, Default)]
pub struct ChaosReport {
    /// Checks made, by invariant.
    pub checks: BTreeMap<&'static str, u64>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// What the faults hit (or missed).
    pub fault_notes: BTreeMap<String, u64>,
    /// Operations of the Cuebot stand-in, by kind.
    pub standin: BTreeMap<&'static str, u64>,
    /// Samples taken and samples that failed (database down).
    pub samples: (u64, u64),
    /// Launches the fake RQD received and frames it completed.
    pub launches: usize,
    /// Frames the fake RQD completed.
    pub completed: u64,
    /// Every fault applied: (seconds into the run, kind, seconds it lasted).
    pub timeline: Vec<(f64, &'static str, f64)>,
    /// Invariant violations, each with its evidence.
    pub violations: Vec<Violation>,
    /// The strict audit at the end.
    pub audit: Vec<String>,
}

impl ChaosReport {
    /// True when nothing was violated.
    pub fn clean(&self) -> bool {
        self.violations.is_empty() && self.audit.is_empty()
    }
}

/// The instances' configuration: several booking threads, a short RQD deadline (so slow
/// answers time out), a lease short enough to move during the run.
fn instance_config(farm: &SimFarm) -> crate::config::Config {
    let mut c = farm.config(false);
    c.scheduler.worker_threads = 2;
    c.rqd.timeout = Duration::from_millis(400);
    c.database.pool_size = 8;
    c.cluster.lease_duration = Duration::from_secs(3);
    c.service.log_level = log::LevelFilter::Warn;
    c.service.shutdown_grace = Duration::from_secs(10);
    c
}

/// A started soak: the farm, the instances' configuration, show keys by name, the instances.
struct Started {
    farm: SimFarm,
    config: crate::config::Config,
    shows: BTreeMap<String, String>,
    instances: Vec<Instance>,
}

/// Seeds the farm (durable PostgreSQL, fake RQD fleet) and starts the instances.
fn start(opts: &ChaosOptions) -> Result<Started, SimError> {
    let spec = shape::farm(opts.scale, opts.seed, opts.duration.as_secs() + 30);
    let pg = PgOptions {
        // Durable commits take long enough to be caught (and killed) in the act.
        durability: Durability::Default,
        keep: opts.keep,
        max_connections: 300,
    };
    let farm = SimFarm::start(&spec, &pg, true, 30)?;
    let config = instance_config(&farm);
    let shows: BTreeMap<String, String> = shape::MANAGED
        .iter()
        .chain(shape::UNMANAGED.iter())
        .map(|n| n.to_string())
        .zip(farm.seeded.shows.iter().cloned())
        .collect();
    let mut instances = Vec::new();
    for n in 0..opts.instances.max(1) {
        let name = format!("chaos-{n}");
        instances.push(Instance::spawn(&opts.binary, &config, &name)?);
    }
    for i in &instances {
        if !i.wait_ready(Duration::from_secs(60)) {
            return Err(SimError::Other(format!("instance {} never ready", i.name)));
        }
    }
    Ok(Started {
        farm,
        config,
        shows,
        instances,
    })
}

/// Runs the fault schedule, then brings every instance back (a dead one is a violation).
fn inject(
    injector: &mut faults::Injector<'_>,
    plan: &[faults::Planned],
    watch: &invariants::Watch,
    report: &mut ChaosReport,
) {
    injector.epoch = watch.started();
    injector.run(plan);
    for name in injector.recover() {
        watch.violate(
            "instance exited",
            name.clone(),
            format!("instance {name} had exited by the end of the faults (a crash?)"),
        );
    }
    report.faults = std::mem::take(&mut injector.injected);
    report.fault_notes = std::mem::take(&mut injector.notes);
    report.timeline = std::mem::take(&mut injector.timeline);
}

/// Runs the soak and returns its report (not printed; see [`print()`]).
pub fn run(opts: &ChaosOptions) -> Result<ChaosReport, SimError> {
    let Started {
        mut farm,
        config,
        shows,
        mut instances,
    } = start(opts)?;
    let deadline = config.rqd.timeout * 2 + Duration::from_secs(2);
    let watch = invariants::Watch::new(config.accounting.caps_interval);
    let url = farm.url.clone();
    let handle = farm
        .rqd
        .as_ref()
        .map(|r| r.handle())
        .ok_or_else(|| SimError::Other("no fake RQD".into()))?;
    let rqd = &handle;
    let cluster = &mut farm.cluster;
    let mut report = ChaosReport::default();
    let (active, drained, sampled) = (
        AtomicBool::new(true),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    let period = Duration::from_millis(100);
    std::thread::scope(|s| -> Result<(), SimError> {
        let sampler =
            s.spawn(|| invariants::sample_loop(&url, &watch, rqd, deadline, period, &sampled));
        let unmanaged: Vec<String> = shape::UNMANAGED.iter().map(|n| shows[*n].clone()).collect();
        let mut standin = standin::StandIn::new(&url, &watch, rqd, opts.seed, &unmanaged);
        // One managed show handed to Cuebot and back, whatever the dice say.
        let t0 = Instant::now();
        standin.flips = vec![
            (t0 + opts.duration / 3, shows["m3"].clone(), false),
            (t0 + opts.duration * 2 / 3, shows["m3"].clone(), true),
        ];
        let (active_ref, drained_ref) = (&active, &drained);
        let cuebot = s.spawn(move || {
            standin.run(active_ref, drained_ref);
            standin.actions
        });
        let binary = opts.binary.clone();
        let mut injector = faults::Injector::new(
            cluster,
            rqd,
            &mut instances,
            binary,
            config.clone(),
            opts.seed,
        );
        inject(
            &mut injector,
            &faults::schedule(opts.seed, opts.duration),
            &watch,
            &mut report,
        );
        drop(injector);
        // Settle: the stand-in finishes its own frames, leases move, launches land.
        report.standin = wind_down(cuebot, &active, &drained);
        std::thread::sleep(config.cluster.lease_duration * 2 + deadline);
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        settle::stranded(&mut client, &watch, rqd, deadline, Duration::from_secs(45))?;
        sampled.store(true, Ordering::Release);
        report.samples = sampler.join().unwrap_or_default();
        Ok(())
    })?;
    conclude(&farm.url, &handle, &watch, &mut report)?;
    for i in instances {
        i.stop(Duration::from_secs(15));
    }
    Ok(report)
}

/// The report's final figures: the strict audit, the fake RQD's counts, the checks made and
/// the violations found.
fn conclude(
    url: &str,
    rqd: &RqdHandle,
    watch: &invariants::Watch,
    report: &mut ChaosReport,
) -> Result<(), SimError> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    report.audit = audit(&mut client, None)?;
    report.launches = rqd.launch_count();
    report.completed = rqd.completed();
    report.checks = watch.checks();
    report.violations = watch.violations();
    Ok(())
}

/// Stops the stand-in's new work and waits (30 s at most) until its own frames are done.
fn wind_down(
    cuebot: std::thread::ScopedJoinHandle<'_, BTreeMap<&'static str, u64>>,
    active: &AtomicBool,
    drained: &AtomicBool,
) -> BTreeMap<&'static str, u64> {
    active.store(false, Ordering::Release);
    let stop_at = Instant::now() + Duration::from_secs(30);
    while !cuebot.is_finished() && Instant::now() < stop_at {
        std::thread::sleep(Duration::from_millis(50));
    }
    drained.store(true, Ordering::Release);
    cuebot.join().unwrap_or_default()
}

/// Prints the report: checks, faults by kind, the stand-in's work, violations with evidence.
pub fn print(opts: &ChaosOptions, r: &ChaosReport) {
    println!(
        "chaos soak      : seed {:#x}, scale {}, {} instances, faults for {:?}",
        opts.seed, opts.scale, opts.instances, opts.duration
    );
    println!(
        "work            : {} launches on the fake RQD, {} frames completed there",
        r.launches, r.completed
    );
    println!(
        "samples         : {} (100 ms, REPEATABLE READ), {} failed while the database was away",
        r.samples.0, r.samples.1
    );
    let list = |m: &BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("checks made     : {}", list(&r.checks));
    println!("faults injected : {}", list(&r.faults));
    for (note, n) in &r.fault_notes {
        println!("  fault outcome : {note} ×{n}");
    }
    let timeline: Vec<String> = r
        .timeline
        .iter()
        .map(|(at, f, took)| format!("{at:.1}s {f} ({took:.1}s)"))
        .collect();
    println!("fault timeline  : {}", timeline.join(" · "));
    println!("cuebot stand-in : {}", list(&r.standin));
    if r.violations.is_empty() {
        println!("violations      : none");
    }
    for v in &r.violations {
        println!(
            "VIOLATION       : {} (first at {:.2}s, {} samples): {}",
            v.kind, v.at_secs, v.samples, v.evidence
        );
    }
    if r.audit.is_empty() {
        println!("audit           : clean");
    }
    for v in &r.audit {
        println!("audit violation : {v}");
    }
}
