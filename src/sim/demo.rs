//! `stagehand demo`: a private PostgreSQL, a lively simulated farm, stagehand booking it with
//! real gRPC launches to the fake RQD fleet, and live progress on the terminal. Ctrl-C stops
//! cleanly and removes the database (unless `--keep`); the summary ends with why the frame
//! that waited longest is still waiting (`stagehand explain`) and the audit.

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use super::{
    SimError,
    farm::{SimFarm, progress},
    pg::PgOptions,
    workload,
};
use crate::{accounting::audit::audit, service::Service};

/// Options of `stagehand demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Simulated render hosts.
    #[arg(long, default_value_t = 200)]
    pub hosts: usize,
    /// Jobs submitted at the start.
    #[arg(long, default_value_t = 300)]
    pub jobs: usize,
    /// How long to run (the demo also ends when every frame is done).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Address of the status page (`127.0.0.1:0` picks a free port).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: String,
    /// Keep the database directory for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Seed of the farm's shape.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// Frames that fail, per thousand (they retry, then die).
    #[arg(long, default_value_t = 20)]
    pub failure_per_mille: u32,
    /// No live display: one line every 5 seconds (for logs and tests).
    #[arg(long)]
    pub quiet: bool,
    /// Multiplies every frame's runtime (0.1 runs the demo ten times faster).
    #[arg(long, default_value_t = 1.0)]
    pub runtime_scale: f64,
}

/// Runs the demo; exits non-zero when the final audit finds a violation.
pub fn run(args: &DemoArgs) -> Result<ExitCode, SimError> {
    let summary = run_demo(args)?;
    Ok(if summary.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// What a demo run ended with.
#[derive(Clone, Debug)]
pub struct DemoSummary {
    /// Frames booked.
    pub booked: u64,
    /// Frames done at the end.
    pub done: i64,
    /// Frames still waiting at the end.
    pub waiting: i64,
    /// Frames seeded.
    pub seeded: usize,
    /// Audit violations.
    pub violations: Vec<String>,
    /// The explanation of the frame that waited longest, as printed.
    pub why_waiting: String,
}

/// Runs the demo and returns its summary (also printed).
pub fn run_demo(args: &DemoArgs) -> Result<DemoSummary, SimError> {
    crate::service::init_logging(log::LevelFilter::Warn);
    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&interrupted)).map_err(SimError::Io)?;
    }
    eprintln!(
        "starting a private PostgreSQL and seeding {} hosts and {} jobs…",
        args.hosts, args.jobs
    );
    let spec = workload::demo(args.hosts, args.jobs, args.seed, args.runtime_scale);
    let farm = SimFarm::start(
        &spec,
        &PgOptions {
            keep: args.keep,
            ..PgOptions::default()
        },
        true,
        args.failure_per_mille,
    )?;
    let service = start_service(&farm, args)?;
    println!(
        "stagehand is booking {} frames on {} hosts",
        farm.seeded.frames, args.hosts
    );
    println!(
        "status page: http://{}/   (Ctrl-C stops)",
        service.http_address()
    );
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls)?;
    let started = Instant::now();
    show_progress(
        &mut client,
        &service,
        args,
        &interrupted,
        farm.seeded.frames,
    )?;
    let (booked, rejected, failures) = service.shared().stats.totals();
    // Asked while the service runs, so the answer has its last pass in it too.
    let why = explain_one_waiting_frame(&mut client, &service);
    let clean = service.shutdown(Duration::from_secs(15));
    let p = progress(&mut client)?;
    let violations = audit(&mut client, None)?;
    println!(
        "summary: {booked} frames booked, {} done, {} dead, {rejected} refused by caps or guards, {failures} failed launches",
        p.done, p.dead
    );
    println!(
        "         {:.1} frames/s booked on average over {:.0}s; shutdown {}",
        booked as f64 / started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        if clean { "clean" } else { "timed out" }
    );
    print!("{why}");
    if violations.is_empty() {
        println!("audit: clean");
    }
    for v in &violations {
        println!("audit violation: {v}");
    }
    Ok(DemoSummary {
        booked,
        done: p.done,
        waiting: p.waiting,
        seeded: farm.seeded.frames,
        violations,
        why_waiting: why,
    })
}

/// `stagehand explain` of a frame that has waited long, as the summary prints it: of the
/// longest-waiting frames (one per layer), the first that something holds back, else the
/// first.
fn explain_one_waiting_frame(client: &mut postgres::Client, service: &Service) -> String {
    use crate::explain::{Target, instance::explain_here, longest_waiting_frames};
    let status = service.status();
    let candidates = match longest_waiting_frames(client, 20) {
        Ok(c) => c,
        Err(e) => return format!("why waiting: {e}\n"),
    };
    let mut answers = candidates
        .iter()
        .filter_map(|t| Some((t, explain_here(&status, t).ok()?)));
    let Some(first) = answers.next() else {
        return "why waiting: no frame is waiting\n".to_owned();
    };
    let (target, e) = std::iter::once(first.clone())
        .chain(answers)
        .find(|(_, e)| e.headline().is_some_and(|w| w.code != "bookable"))
        .unwrap_or(first);
    let Target::Frame(name) = target else {
        return String::new();
    };
    let text: String = e.to_text().lines().map(|l| format!("    {l}\n")).collect();
    format!("why is {name} waiting? (stagehand explain frame {name})\n{text}")
}

/// Starts stagehand in-process on the farm, its status page on `--listen`.
fn start_service(farm: &SimFarm, args: &DemoArgs) -> Result<Service, SimError> {
    let mut config = farm.config(false);
    config.http.listen = args.listen.clone();
    Ok(match Service::start(config.clone()) {
        Ok(s) => s,
        Err(e) => {
            // The status port may be taken: fall back to any free port rather than fail.
            log::warn!("{e}; using a free port for the status page");
            config.http.listen = "127.0.0.1:0".into();
            Service::start(config)?
        }
    })
}

/// Prints progress (a live line on a terminal, a line every 5 s otherwise) until every
/// frame is done, the run is interrupted or `--duration` passes.
fn show_progress(
    client: &mut postgres::Client,
    service: &Service,
    args: &DemoArgs,
    interrupted: &AtomicBool,
    total: usize,
) -> Result<(), SimError> {
    let live = std::io::stdout().is_terminal() && !args.quiet;
    let started = Instant::now();
    let mut last_line = Instant::now() - Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let p = progress(client)?;
        let rate = service.shared().stats.rate(5);
        let line = format!(
            "{:>5.0}s  done {:>6}/{}  running {:>5}  waiting {:>6}  dead {:>3}  cores {:>5.1}% busy  binding {:>5.1}%  {:>7.1} frames/s booked",
            started.elapsed().as_secs_f64(),
            p.done,
            total,
            p.running,
            p.waiting,
            p.dead,
            p.utilization * 100.0,
            p.binding * 100.0,
            rate
        );
        if live {
            print!("\r{line}");
            let _ = std::io::stdout().flush();
        } else if last_line.elapsed() >= Duration::from_secs(5) {
            println!("{line}");
            last_line = Instant::now();
        }
        let finished = p.waiting == 0 && p.running == 0;
        if finished || interrupted.load(Ordering::Acquire) || started.elapsed() >= args.duration {
            break;
        }
    }
    if live {
        println!();
    }
    Ok(())
}
