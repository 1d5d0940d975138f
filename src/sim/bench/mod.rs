//! `stagehand bench --workload <name>`: seeds a deterministic farm in a private PostgreSQL,
//! runs real `stagehand run` processes against it (real gRPC launches to the fake RQD fleet
//! where the workload launches), measures, audits, and prints the figures.
//!
//! Figures: frames booked; frames/s over the booking window (first to last `proc.ts_booked`,
//! as OpenCue's stress suite measures); time to 50/90/99 % utilization (coldfill); p50/p99
//! from frame eligible to booked; wasted placement attempts; statements and rows read per
//! booked frame (`pg_stat_statements`, stagehand's role only) and PostgreSQL and stagehand
//! CPU per booked frame, all from the first booking seen; rows PostgreSQL read per booked
//! frame (`pg_stat_database`, start-up included, the harness's polls left out, see `cost`);
//! peak RSS of each stagehand process; seconds from start to the first booking. Exits non-zero when the audit finds a violation.
//!
//! `--scales` and `--instance-counts` run one workload several times in one invocation and
//! print each run's per-frame costs as a ratio to the first run's (`sweep`);
//! `--workload newjob` measures how soon a job submitted onto a farm with room books
//! ([`newjob`]).
//!
//! `--workload ceiling` runs no stagehand: it measures the booking writes alone on the drain
//! farm ([`ceiling`]); `--workload drain --with-ceiling` (or `coldfill --with-ceiling`, on the
//! cold fill's farm) measures the ceiling right before and right after the run in one
//! invocation and prints the run as a ratio to it, a figure that survives a noisy machine
//! better than either rate alone.

pub mod ceiling;
mod cost;
pub mod newjob;
mod print;
mod rates;
mod scenarios;
mod sweep;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use super::{
    SimError,
    farm::{Progress, SimFarm, progress},
    instances::{Instance, metric_sum},
    pg::{Durability, PgOptions},
    seed::FarmSpec,
    workload::{self, Workload},
};
use crate::{accounting::audit::audit, config::Config};
use ceiling::{CONNECTIONS, CeilingReport, measure_ceiling};
use print::{print_ceiling, print_ceiling_ratios, print_report, print_top_statements};
pub use rates::Rates;
use rates::{PgCpu, proc_rates};
use scenarios::{chaos, scenario, verify};

/// Options of `stagehand bench`.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// The workload.
    #[arg(long, value_enum)]
    pub workload: Workload,
    /// Size multiplier (1.0 = the published shape).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Seed of the farm's shape.
    #[arg(long, default_value_t = 0x0C0FFEE)]
    pub seed: u64,
    /// stagehand instances to run against the same database.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// Book one frame per transaction (the comparison the batching is measured against).
    #[arg(long)]
    pub per_frame: bool,
    /// How long `steady` runs; the limit for the other workloads.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The stagehand binary to run (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Keep the database directory.
    #[arg(long)]
    pub keep: bool,
    /// Print the N statements that took the most database time and the N run most often,
    /// counted from the first booking the harness sees (from the start when it sees none).
    #[arg(long, default_value_t = 0)]
    pub top_statements: usize,
    /// Run with `[reservations] enabled = false` (to measure what the policy costs).
    #[arg(long)]
    pub no_reservations: bool,
    /// With `--workload verify`: run only this scenario of the battery (`PRIORITY`, …).
    #[arg(long)]
    pub scenario: Option<String>,
    /// With `--workload drain` or `coldfill`: also run the ceiling (the booking writes alone)
    /// right before and right after, each on its own freshly seeded farm of the same shape,
    /// and print the workload's rates and PostgreSQL CPU as ratios to it.
    #[arg(long)]
    pub with_ceiling: bool,
    /// Shows of the drain farm (0: one, and two more per further instance).
    #[arg(long, default_value_t = 0)]
    pub shows: usize,
    /// Run the workload once per scale, in this order, and print the per-frame costs of
    /// each as a ratio to the first (e.g. `1,4,10`).
    #[arg(long, value_delimiter = ',')]
    pub scales: Vec<f64>,
    /// Run the workload once per instance count, in this order, and print the rates of each
    /// as a ratio to the first (e.g. `1,2,3`).
    #[arg(long, value_delimiter = ',')]
    pub instance_counts: Vec<usize>,
    /// With `--scales` or `--instance-counts`: run the whole sweep this many times, in turn,
    /// and end with each figure's ratio to its own round's first run as a median and range
    /// over the rounds (a noisy machine moves one round's ratio by a quarter). With
    /// `--with-ceiling`: run the workload this many times between ceilings and end with the
    /// median and range of its ratios to them.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// `--workload newjob`: jobs submitted.
    #[arg(long, default_value_t = 50)]
    pub submissions: usize,
}

/// What a benchmark run measured.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    /// Frames seeded.
    pub seeded: usize,
    /// Frames booked (procs created) during the run.
    pub booked: i64,
    /// Frames/s between the first and last booking.
    pub frames_per_sec: f64,
    /// Frames/s over the first 99 % of bookings (0 when completed frames' procs are gone).
    pub first99_per_sec: f64,
    /// PostgreSQL CPU milliseconds per booked frame, from the first booking seen (as the
    /// harness's poll saw it) to the end of the run, the harness's connections (its own, the
    /// fake RQD's) left out (None without `/proc`).
    pub pg_cpu_ms_per_frame: Option<f64>,
    /// The share of that CPU spent in the kernel.
    pub pg_kernel_share: Option<f64>,
    /// PostgreSQL's minor page faults per booked frame over the same window: a fresh
    /// backend faults once on each shared-buffer page it first touches.
    pub pg_faults_per_frame: Option<f64>,
    /// stagehand CPU milliseconds per booked frame over the same window (every instance).
    pub stagehand_cpu_ms_per_frame: Option<f64>,
    /// stagehand CPU seconds before the first booking seen (start-up: loads, leases).
    pub stagehand_startup_cpu_secs: Option<f64>,
    /// Rows PostgreSQL read (`tup_returned + tup_fetched`) per booked frame, from the
    /// instances' start to their stop, the harness's polls left out.
    pub db_rows_per_frame: Option<f64>,
    /// Seconds from the instances' start to the first booking (database clock).
    pub first_booking_secs: Option<f64>,
    /// Booking commit → RQD accepted the launch, p50 and p99, as histogram bucket bounds in
    /// seconds (`stagehand_booking_to_launch_seconds` of every instance); `None` in a dry run.
    pub booking_to_launch: Option<(f64, f64)>,
    /// Hosts seeded.
    pub hosts: usize,
    /// Seconds of that booking window.
    pub window_secs: f64,
    /// Seconds from start to 50 / 90 / 99 % of cores busy.
    pub time_to_util: [Option<f64>; 3],
    /// Highest utilization seen.
    pub peak_util: f64,
    /// p50 and p99 seconds from frame eligible to booked.
    pub wait_p50_p99: (f64, f64),
    /// Placement attempts that did not commit, in percent.
    pub wasted_pct: f64,
    /// stagehand's statements per booked frame from the first booking seen, as the CPU
    /// figures (None without pg_stat_statements). Several instances wait for their leases
    /// with the work held back: counting from their start charged those seconds of idle
    /// reads to the frames.
    pub statements_per_frame: Option<f64>,
    /// Rows fetched by stagehand's queries per booked frame, over the same window.
    pub rows_read_per_frame: Option<f64>,
    /// Buffer pages touched by stagehand's statements per booked frame, over the same window.
    pub pages_per_frame: Option<f64>,
    /// Peak RSS per instance, MiB.
    pub peak_rss_mib: Vec<f64>,
    /// Frames booked per instance (from each one's metrics).
    pub per_instance: Vec<u64>,
    /// Audit violations.
    pub violations: Vec<String>,
    /// Placements that did not commit, by reason (guard lost, cap refused).
    pub losses: Vec<String>,
    /// Booked and burst cores per subscription (show/alloc) at the end.
    pub subscriptions: Vec<(String, i64, i64)>,
}

/// Runs a benchmark and returns its report (also printed).
pub fn measure(args: &BenchArgs) -> Result<BenchReport, SimError> {
    let (spec, launches) = workload_spec(args)?;
    let pg = PgOptions {
        durability: Durability::Default,
        keep: args.keep,
        max_connections: 300,
    };
    let farm = SimFarm::start(&spec, &pg, launches, 0)?;
    let config = bench_config(&farm, args, launches);
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(SimError::Io)?,
    };
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls)?;
    let rows_per_poll = cost::rows_per_poll(&mut client)?;
    if args.top_statements > 0 {
        print::track_planning(&mut client);
    }
    reset_statement_stats(&mut client);
    let data = farm.cluster.dir().join("data");
    let rows_before = cost::rows_read(&mut client);
    let start = cost::db_now(&mut client)?;
    let mut instances = spawn_instances(&mut client, &binary, &config, args.instances)?;
    let mut report = BenchReport {
        seeded: farm.seeded.frames,
        hosts: farm.seeded.hosts.len(),
        ..BenchReport::default()
    };
    let run = watch_run(&mut client, args, &mut report, &data, &mut instances)?;
    let harness = cost::harness_backends(&mut client)?;
    let pg_use = PgCpu::read(&data)
        .zip(run.cpu_at_first_booking.as_ref())
        .map(|(after, first)| first.use_until(&after, &harness));
    let stagehand_cpu_secs = cost::instances_cpu_secs(&instances)
        .zip(run.stagehand_cpu_at_first_booking)
        .map(|(after, first)| after - first);
    collect_metrics(&instances, &mut report);
    for inst in instances {
        inst.stop(Duration::from_secs(30));
    }
    let rows_after = cost::rows_read(&mut client);
    booking_window(&mut client, &mut report, launches, &run)?;
    report.first_booking_secs = cost::secs_to_first_booking(&mut client, &start)?;
    report.stagehand_startup_cpu_secs = run.stagehand_cpu_at_first_booking;
    if report.booked > 0 {
        let per_frame = |secs: f64| secs * 1000.0 / report.booked as f64;
        report.pg_cpu_ms_per_frame = pg_use.map(|u| per_frame(u.secs));
        report.pg_kernel_share = pg_use.filter(|u| u.secs > 0.0).map(|u| u.sys_secs / u.secs);
        report.pg_faults_per_frame = pg_use.map(|u| u.faults as f64 / report.booked as f64);
        report.stagehand_cpu_ms_per_frame = stagehand_cpu_secs.map(per_frame);
        report.db_rows_per_frame = match (rows_before, rows_after, rows_per_poll) {
            (Some(b), Some(a), Some(poll)) => {
                Some(((a - b) as f64 - poll * run.polls as f64).max(0.0) / report.booked as f64)
            }
            _ => None,
        };
    }
    database_figures(&mut client, &mut report, run.statements_at_first_booking)?;
    report.violations = audit(&mut client, None)?;
    print_report(args, &report);
    if args.top_statements > 0 {
        print_top_statements(&mut client, args.top_statements);
    }
    Ok(report)
}

/// The farm of a (non-scenario) workload, and whether it launches for real (the others are
/// dry runs).
fn workload_spec(args: &BenchArgs) -> Result<(FarmSpec, bool), SimError> {
    Ok(match args.workload {
        Workload::Drain => (drain_spec(args), false),
        Workload::Saturation => (workload::saturation(args.scale, args.seed), false),
        Workload::Coldfill => (workload::coldfill(args.scale, args.seed, 600_000), true),
        Workload::Steady => (
            workload::steady(args.scale, args.seed, args.duration.as_secs()),
            true,
        ),
        Workload::Ceiling
        | Workload::Newjob
        | Workload::Wide
        | Workload::FairShare
        | Workload::Stream
        | Workload::Gpu
        | Workload::Verify
        | Workload::Chaos => {
            return Err(SimError::Other(format!(
                "{:?} runs in-process: run it with `stagehand bench`",
                args.workload
            )));
        }
    })
}

/// The drain farm of `args`: `--scale` and `--seed`, and one show for one instance, two
/// more per further instance (they need shows to share out). The ceiling seeds the same.
fn drain_spec(args: &BenchArgs) -> FarmSpec {
    let shows = if args.shows > 0 {
        args.shows
    } else {
        args.instances.max(1) * 2 - 1
    };
    workload::drain(args.scale, shows, args.seed)
}

/// The instances' configuration: the farm's, with the run's batching and policy switches,
/// and the production intervals of the reads that scan the whole farm (the full host read,
/// the recompute, the active scan, the cluster reload, the caps read). The simulator's shorter ones suit seconds-long scenarios;
/// in a benchmark they would charge every booked frame a read of the farm that grows with
/// its size, which production does not pay. Room a completion frees still reaches the index
/// within `[hosts] changes_interval`.
fn bench_config(farm: &SimFarm, args: &BenchArgs, launches: bool) -> Config {
    let mut config = farm.config(!launches);
    let production = Config::default();
    config.hosts.refresh_interval = production.hosts.refresh_interval;
    config.accounting.recompute_interval = production.accounting.recompute_interval;
    config.scheduler.active_scan_interval = production.scheduler.active_scan_interval;
    // The cluster reload joins every host's tags to every subscription (129 ms a call at
    // 1,200 hosts): at the simulator's 10 s it fell inside several instances' booking window
    // (they book after their lease wait), once per instance, and not inside one instance's.
    config.scheduler.cluster_reload_interval = production.scheduler.cluster_reload_interval;
    config.accounting.caps_interval = production.accounting.caps_interval;
    if args.per_frame {
        config.scheduler.batch_size = 1;
    }
    config.reservations.enabled = !args.no_reservations;
    config.service.log_level = log::LevelFilter::Warn;
    if !launches {
        // Nothing reports for the hosts of a dry run: a long one (a large farm on a busy
        // machine) would otherwise stop booking once the seed's pings are older than this.
        config.hosts.ping_timeout = Duration::from_secs(3600);
    }
    config
}

/// Starts `count` (at least one) instances named `bench-N`.
fn spawn_instances(
    client: &mut postgres::Client,
    binary: &Path,
    config: &Config,
    count: usize,
) -> Result<Vec<Instance>, SimError> {
    let several = count > 1;
    if several {
        // Hold the work back until every instance has its share of the shows, so the
        // measurement is of N instances booking together, not of the first one alone.
        client.execute(
            "UPDATE job SET b_paused = true WHERE str_state = 'PENDING'",
            &[],
        )?;
    }
    let mut instances = Vec::new();
    for n in 0..count.max(1) {
        instances.push(Instance::spawn(binary, config, &format!("bench-{n}"))?);
    }
    if several {
        wait_for_owners(client, count)?;
        client.execute(
            "UPDATE job SET b_paused = false WHERE str_state = 'PENDING'",
            &[],
        )?;
    }
    Ok(instances)
}

/// Waits (30 s at most) until `count` instances hold show leases.
fn wait_for_owners(client: &mut postgres::Client, count: usize) -> Result<(), SimError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let owners: i64 = client
            .query_one("SELECT count(DISTINCT pk_instance) FROM stagehand.show_lease WHERE pk_instance IS NOT NULL", &[])?
            .get(0);
        if owners as usize >= count {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// When the measured run saw its first booking (and PostgreSQL's and stagehand's CPU then),
/// when it ended, and how many progress polls the harness made.
struct RunTimes {
    first_booking: Option<Instant>,
    cpu_at_first_booking: Option<PgCpu>,
    stagehand_cpu_at_first_booking: Option<f64>,
    /// stagehand's statement totals then ([`stagehand_statement_totals`]).
    statements_at_first_booking: Option<(i64, i64, i64)>,
    end: Instant,
    polls: u64,
}

/// Polls progress until the workload is done (or `--duration` passes, 5 s at least),
/// recording utilization milestones in `report`. The poll scans every host and job, so it
/// paces itself as stagehand's farm-wide reads do ([`crate::worker::stretched`]): every
/// 50 ms, or 19 times what the last poll took, at most 200 ms, once the first booking was
/// seen (the CPU window opens then). At ten times the drain farm, polls every 50 ms took
/// 3.7 s of statement time in a 25 s run, CPU the run it measures did not get (the ceiling
/// runs no poll). `data`: the cluster's data directory, whose CPU is read at the first
/// booking seen (start-up reads are not bookings), as is the `instances`' CPU. When every
/// instance has exited (a configuration it refused, a crash) the run fails at once rather
/// than report a run that booked nothing.
fn watch_run(
    client: &mut postgres::Client,
    args: &BenchArgs,
    report: &mut BenchReport,
    data: &Path,
    instances: &mut [Instance],
) -> Result<RunTimes, SimError> {
    let started = Instant::now();
    let thresholds = [0.5, 0.9, 0.99];
    let mut last_change = Instant::now();
    let mut last_booked = -1i64;
    let mut first_booking: Option<Instant> = None;
    let mut cpu_at_first_booking = None;
    let mut stagehand_cpu_at_first_booking = None;
    let mut statements_at_first_booking = None;
    let mut polls = 0;
    let mut wait = POLL;
    loop {
        std::thread::sleep(wait);
        let poll = Instant::now();
        let p = progress(client)?;
        polls += 1;
        report.peak_util = report.peak_util.max(p.utilization);
        for (i, t) in thresholds.iter().enumerate() {
            if report.time_to_util[i].is_none() && p.utilization >= *t {
                report.time_to_util[i] = Some(started.elapsed().as_secs_f64());
            }
        }
        let booked = p.done + p.running + p.dead;
        if instances.iter_mut().all(|i| !i.alive()) {
            return Err(SimError::Other(
                "every stagehand instance exited before the run ended (its log is above)".into(),
            ));
        }
        if booked > 0 && first_booking.is_none() {
            first_booking = Some(Instant::now());
            cpu_at_first_booking = PgCpu::read(data);
            stagehand_cpu_at_first_booking = cost::instances_cpu_secs(instances);
            statements_at_first_booking = stagehand_statement_totals(client);
            if args.top_statements > 0 {
                print::snapshot_statements(client);
            }
        }
        // The CPU window opens at the first booking seen: until then, no stretching.
        if first_booking.is_some() {
            wait = crate::worker::stretched(POLL, poll.elapsed());
        }
        if booked != last_booked {
            last_booked = booked;
            last_change = Instant::now();
        }
        let elapsed = started.elapsed();
        if finished(args.workload, &p, last_change.elapsed())
            || elapsed >= args.duration.max(Duration::from_secs(5))
        {
            break;
        }
    }
    Ok(RunTimes {
        first_booking,
        cpu_at_first_booking,
        stagehand_cpu_at_first_booking,
        statements_at_first_booking,
        end: Instant::now(),
        polls,
    })
}

/// How often the harness polls progress, at the least.
const POLL: Duration = Duration::from_millis(50);

/// Whether `workload` is done, given its progress and how long bookings have not changed.
fn finished(workload: Workload, p: &Progress, unchanged: Duration) -> bool {
    match workload {
        Workload::Drain => p.waiting == 0 || unchanged > Duration::from_secs(20),
        Workload::Saturation => unchanged > Duration::from_secs(5),
        Workload::Coldfill => p.utilization >= 0.99 && unchanged > Duration::from_secs(1),
        Workload::Steady
        | Workload::Ceiling
        | Workload::Newjob
        | Workload::Wide
        | Workload::FairShare
        | Workload::Stream
        | Workload::Gpu
        | Workload::Verify
        | Workload::Chaos => false,
    }
}

/// Peak RSS, frames booked and lost placements of every instance (from its metrics).
fn collect_metrics(instances: &[Instance], report: &mut BenchReport) {
    let mut launch_buckets = Vec::new();
    for inst in instances {
        report.peak_rss_mib.push(inst.peak_rss_mib());
        let metrics = inst.metrics();
        launch_buckets.push(crate::sim::instances::histogram_buckets(
            &metrics,
            "stagehand_booking_to_launch_seconds",
        ));
        report
            .per_instance
            .push(metric_sum(&metrics, "stagehand_frames_booked_total") as u64);
        let booked = metric_sum(&metrics, "stagehand_frames_booked_total");
        let lost = metric_sum(&metrics, "stagehand_guard_losses_total")
            + metric_sum(&metrics, "scheduler_accounting_limit_exceeded_total");
        report.wasted_pct += lost;
        report.booked += booked as i64;
        report.losses.extend(
            metrics
                .lines()
                .filter(|l| {
                    l.starts_with("stagehand_guard_losses_total{")
                        || l.starts_with("scheduler_accounting_limit_exceeded_total{")
                })
                .map(|l| {
                    l.replace("stagehand_guard_losses_total", "guard")
                        .replace("scheduler_accounting_limit_exceeded_total", "cap")
                }),
        );
    }
    let bound = |q| crate::sim::instances::quantile_bound(&launch_buckets, q);
    report.booking_to_launch = bound(0.5).zip(bound(0.99));
    // Until here `wasted_pct` summed the lost placements.
    let attempts = report.booked as f64 + report.wasted_pct;
    report.wasted_pct = if attempts > 0.0 {
        report.wasted_pct / attempts * 100.0
    } else {
        0.0
    };
}

/// Frames booked, the booking window and frames/s over it.
fn booking_window(
    client: &mut postgres::Client,
    report: &mut BenchReport,
    launches: bool,
    run: &RunTimes,
) -> Result<(), SimError> {
    let rates = proc_rates(client)?;
    let procs = rates.booked as i64;
    report.window_secs = rates.window_secs;
    if !launches {
        // Dry run: every booking left a proc; the database is the count (the instances'
        // metrics can trail a just-committed batch by a moment).
        report.booked = procs;
        report.first99_per_sec = rates.first99_per_sec;
    } else {
        // Nothing completed yet (a cold fill's frames outlast it): the procs are every
        // booking, and their times give the rate as for a dry run.
        if procs >= report.booked {
            report.first99_per_sec = rates.first99_per_sec;
        }
        // Completed frames' procs are gone: the window runs from the first booking seen to
        // the end of the run.
        report.window_secs = run
            .first_booking
            .map(|f| run.end.saturating_duration_since(f).as_secs_f64())
            .unwrap_or(0.0);
    }
    let counted = if launches {
        report.booked.max(procs)
    } else {
        procs
    };
    report.frames_per_sec = if report.window_secs > 0.0 {
        (counted - 1).max(0) as f64 / report.window_secs
    } else {
        0.0
    };
    Ok(())
}

/// Wait percentiles, statements per frame and subscription usage, from the database.
fn database_figures(
    client: &mut postgres::Client,
    report: &mut BenchReport,
    since: Option<(i64, i64, i64)>,
) -> Result<(), SimError> {
    let waits = client.query_one(
        "SELECT coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY w), 0)::float8,
                coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY w), 0)::float8
           FROM (SELECT extract(epoch FROM f.ts_started - f.ts_eligible) AS w FROM frame f
                  WHERE f.ts_started IS NOT NULL AND f.ts_eligible IS NOT NULL) t",
        &[],
    )?;
    report.wait_p50_p99 = (waits.get(0), waits.get(1));
    let frames = report.booked.max(1) as f64;
    if let Some((statements, rows, pages)) = stagehand_statement_totals(client) {
        let (s0, r0, p0) = since.unwrap_or_default();
        let (statements, rows, pages) = (statements - s0, rows - r0, pages - p0);
        report.statements_per_frame = Some(statements as f64 / frames);
        report.rows_read_per_frame = Some(rows as f64 / frames);
        report.pages_per_frame = Some(pages as f64 / frames);
    }
    report.subscriptions = client
        .query(
            "SELECT sh.str_name || '/' || a.str_name, coalesce(sum(p.int_cores_reserved), 0)::bigint / 100,
                    s.int_burst::bigint / 100
               FROM subscription s JOIN show sh ON sh.pk_show = s.pk_show JOIN alloc a ON a.pk_alloc = s.pk_alloc
               LEFT JOIN host h ON h.pk_alloc = s.pk_alloc
               LEFT JOIN proc p ON p.pk_host = h.pk_host AND p.pk_show = s.pk_show
              GROUP BY 1, s.int_burst ORDER BY 1",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(())
}

fn reset_statement_stats(client: &mut postgres::Client) {
    let _ = client.execute("SELECT pg_stat_statements_reset()", &[]);
}

/// What stagehand's own role executed since the reset: (statements, rows its queries
/// returned, buffer pages touched). Rows are counted for reading statements only (SELECT,
/// and UPDATE … RETURNING is counted as written, not read).
fn stagehand_statement_totals(client: &mut postgres::Client) -> Option<(i64, i64, i64)> {
    let r = client
        .query_one(
            "SELECT coalesce(sum(calls), 0)::bigint,
                    coalesce(sum(rows) FILTER (WHERE query ~* '^\\s*(select|with)'), 0)::bigint,
                    coalesce(sum(shared_blks_hit + shared_blks_read), 0)::bigint
               FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
              WHERE r.rolname = 'stagehand'",
            &[],
        )
        .ok()?;
    Some((r.get(0), r.get(1), r.get(2)))
}

/// `stagehand bench`: runs [`measure`]; exit 3 on audit violations (`verify`: on any FAIL).
pub fn run(args: &BenchArgs) -> Result<ExitCode, SimError> {
    crate::service::init_logging(log::LevelFilter::Warn);
    if args.workload.is_scenario() {
        return scenario(args);
    }
    if args.workload == Workload::Chaos {
        return chaos(args);
    }
    if args.workload == Workload::Verify {
        return verify(args);
    }
    if args.workload == Workload::Ceiling {
        let ceiling = ceiling_of(args, "")?;
        return Ok(exit_code(&ceiling.violations()));
    }
    if args.workload == Workload::Newjob {
        return newjob::run(args);
    }
    if !args.scales.is_empty() || !args.instance_counts.is_empty() {
        return Ok(exit_code(&sweep::sweep(args)?));
    }
    if args.with_ceiling && !matches!(args.workload, Workload::Drain | Workload::Coldfill) {
        return Err(SimError::Other(
            "--with-ceiling goes with --workload drain or coldfill".into(),
        ));
    }
    if !args.with_ceiling {
        return Ok(exit_code(&measure(args)?.violations));
    }
    // The ceiling right before and right after each run: the ratio is to their mean. With
    // `--rounds`, one run's ceiling after is the next one's before.
    let mut before = ceiling_of(args, " before")?;
    let mut violations = before.violations();
    let mut rounds = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let report = measure(args)?;
        let after = ceiling_of(args, " after")?;
        rounds.push(print_ceiling_ratios(args, &report, &before, &after));
        violations.extend(report.violations);
        violations.extend(after.violations());
        before = after;
    }
    if rounds.len() > 1 {
        print::print_ceiling_rounds(&rounds);
    }
    Ok(exit_code(&violations))
}

/// Measures the ceiling of the farm of `args` (drain's unless the workload is another's) and
/// prints it, labelled `when`.
fn ceiling_of(args: &BenchArgs, when: &str) -> Result<CeilingReport, SimError> {
    let spec = match args.workload {
        Workload::Coldfill => workload_spec(args)?.0,
        _ => drain_spec(args),
    };
    let ceiling = measure_ceiling(&spec, &CONNECTIONS)?;
    print_ceiling(args, &ceiling, when);
    Ok(ceiling)
}

/// Success, or 3 when an audit found `violations`.
fn exit_code(violations: &[String]) -> ExitCode {
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}
