//! `stagehand bench --workload newjob`: how soon a job submitted onto a farm with room has
//! its first frame booked (issue 14, item 5).
//!
//! One `stagehand run` process books the `workload::newjob` farm with the scheduler's
//! default pacing (`[scheduler]` intervals and sleeps, `[hosts] refresh_interval` as a
//! production farm runs them), while a background load of capped jobs books and completes
//! frames on the fake RQD fleet. After a warm-up the harness submits `--submissions` jobs at
//! seeded random moments (gaps of 0.1–1.1 s), each inserted as Cuebot's job launcher inserts
//! one, and measures per job the time from its submitting COMMIT (the database's clock as
//! the transaction's last statement) to its first frame's booking: the booking transaction's
//! start (`frame.ts_started`) and its COMMIT (`pg_xact_commit_timestamp` of the frame row,
//! the server runs with `track_commit_timestamp`), and to the harness first seeing it
//! RUNNING (polls every 20 ms, an upper bound). Ends with the statements stagehand ran to
//! notice new work and the accounting audit.

use std::{
    collections::HashMap,
    process::ExitCode,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::{BenchArgs, exit_code};
use crate::{
    accounting::audit::audit,
    config::Config,
    sim::{
        SimError,
        farm::SimFarm,
        instances::Instance,
        pg::{Durability, PgOptions},
        seed::submit,
        workload,
    },
};

/// One submitted job: its key, its commit time (database clock: as text, and in seconds
/// since the epoch) and what was measured.
struct Submission {
    job: String,
    committed: String,
    committed_epoch: f64,
    /// Seconds from the commit to the harness seeing a frame RUNNING, and to the COMMIT of
    /// the booking that made it so.
    seen_after: Option<f64>,
    booking_committed_after: Option<f64>,
}

/// Runs the benchmark and prints its figures; exit 3 on audit violations.
pub(super) fn run(args: &BenchArgs) -> Result<ExitCode, SimError> {
    let spec = workload::newjob(args.scale, args.seed);
    let pg = PgOptions {
        durability: Durability::Default,
        keep: args.keep,
        max_connections: 300,
    };
    let mut farm = SimFarm::start(&spec, &pg, true, 0)?;
    commit_timestamps(&mut farm)?;
    let config = newjob_config(&farm);
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe().map_err(SimError::Io)?,
    };
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls)?;
    if args.top_statements > 0 {
        super::print::track_planning(&mut client);
    }
    let _ = client.execute("SELECT pg_stat_statements_reset()", &[]);
    let instance = Instance::spawn(&binary, &config, "newjob-0")?;
    warm_up(&mut client, Duration::from_secs(3))?;
    let mut rng = SmallRng::seed_from_u64(args.seed ^ 0x6e65_776a);
    let mut subs: Vec<Submission> = Vec::new();
    for n in 0..args.submissions {
        let gap = Duration::from_millis(rng.random_range(100..=1_100));
        watch_for(&mut client, &mut subs, gap)?;
        let job = workload::newjob_job(&mut rng, n, &spec);
        let (jobs, committed) = submit(&mut client, &spec, &farm.seeded, vec![job])?;
        let committed_epoch: f64 = client
            .query_one(
                "SELECT extract(epoch FROM $1::text::timestamptz)::float8",
                &[&committed],
            )?
            .get(0);
        subs.extend(jobs.into_iter().map(|job| Submission {
            job,
            committed: committed.clone(),
            committed_epoch,
            seen_after: None,
            booking_committed_after: None,
        }));
    }
    // The last ones: until every job was seen booked, 10 s at most.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && subs.iter().any(|s| s.seen_after.is_none()) {
        watch_for(&mut client, &mut subs, Duration::from_millis(100))?;
    }
    instance.stop(Duration::from_secs(30));
    let booked_after = booking_delays(&mut client, &subs)?;
    let seen: Vec<Option<f64>> = subs.iter().map(|s| s.seen_after).collect();
    let committed: Vec<Option<f64>> = subs.iter().map(|s| s.booking_committed_after).collect();
    print_newjob(args, &spec, &config, [&booked_after, &committed, &seen]);
    print_probe_cost(&mut client);
    if args.top_statements > 0 {
        super::print::print_top_statements(&mut client, args.top_statements);
    }
    let violations = audit(&mut client, None)?;
    crate::sim::scenario::print_audit(&violations);
    Ok(exit_code(&violations))
}

/// The farm's configuration with the scheduler's and the host refresh's production pacing
/// (the simulated farms shorten them), so the delays are those a real farm sees.
fn newjob_config(farm: &SimFarm) -> Config {
    let mut config = farm.config(false);
    let defaults = Config::default();
    let (s, d) = (&mut config.scheduler, &defaults.scheduler);
    s.active_scan_interval = d.active_scan_interval;
    s.new_work_probe_interval = d.new_work_probe_interval;
    s.cluster_reload_interval = d.cluster_reload_interval;
    s.empty_sleep = d.empty_sleep;
    s.saturated_sleep = d.saturated_sleep;
    config.hosts.refresh_interval = defaults.hosts.refresh_interval;
    config.service.log_level = log::LevelFilter::Warn;
    config
}

/// Restarts the farm's server with `track_commit_timestamp` on, so a booking's COMMIT time
/// can be read back from its rows.
fn commit_timestamps(farm: &mut SimFarm) -> Result<(), SimError> {
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls)?;
    client.batch_execute("ALTER SYSTEM SET track_commit_timestamp = on")?;
    drop(client);
    farm.cluster.stop()?;
    farm.cluster.restart()?;
    Ok(())
}

/// Waits for the background load's first booking (60 s at most), then `settle` more.
fn warm_up(client: &mut postgres::Client, settle: Duration) -> Result<(), SimError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let running: i64 = client.query_one("SELECT count(*) FROM proc", &[])?.get(0);
        if running > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(settle);
    Ok(())
}

/// Polls every 20 ms for `span`: submitted jobs not yet seen booked that now have a frame
/// RUNNING (or done) get the time since their commit.
fn watch_for(
    client: &mut postgres::Client,
    subs: &mut [Submission],
    span: Duration,
) -> Result<(), SimError> {
    let until = Instant::now() + span;
    loop {
        let open: Vec<&str> = subs
            .iter()
            .filter(|s| s.seen_after.is_none())
            .map(|s| s.job.as_str())
            .collect();
        if !open.is_empty() {
            // The frame row's version is the booking's until the frame ends (seconds later).
            let seen: HashMap<String, (f64, Option<f64>)> = client
                .query(
                    "SELECT f.pk_job, extract(epoch FROM clock_timestamp())::float8,
                            extract(epoch FROM min(pg_xact_commit_timestamp(f.xmin)))::float8
                       FROM frame f
                      WHERE f.pk_job = ANY($1) AND f.str_state <> 'WAITING' GROUP BY f.pk_job",
                    &[&open],
                )?
                .iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect();
            for s in subs.iter_mut().filter(|s| s.seen_after.is_none()) {
                if let Some((at, committed)) = seen.get(&s.job) {
                    s.seen_after = Some(at - s.committed_epoch);
                    s.booking_committed_after = committed.map(|c| c - s.committed_epoch);
                }
            }
        }
        if Instant::now() >= until {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}

/// Per submission, seconds from its commit to its first frame's booking (`None`: none
/// booked).
fn booking_delays(
    client: &mut postgres::Client,
    subs: &[Submission],
) -> Result<Vec<Option<f64>>, SimError> {
    subs.iter()
        .map(|s| {
            Ok(client
                .query_one(
                    "SELECT extract(epoch FROM min(ts_started) - $2::text::timestamptz)::float8
                       FROM frame WHERE pk_job = $1",
                    &[&s.job, &s.committed],
                )?
                .get(0))
        })
        .collect()
}

/// `p` (0–1) of `sorted` by rank ⌈p·n⌉.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `p50 … max` of the known `delays`, and how many are unknown.
fn summary(delays: &[Option<f64>]) -> String {
    let mut known: Vec<f64> = delays.iter().flatten().copied().collect();
    known.sort_by(f64::total_cmp);
    let missing = delays.len() - known.len();
    format!(
        "p50 {:.3}s  p90 {:.3}s  p99 {:.3}s  max {:.3}s  ({} of {} booked{})",
        percentile(&known, 0.5),
        percentile(&known, 0.9),
        percentile(&known, 0.99),
        known.last().copied().unwrap_or(f64::NAN),
        known.len(),
        delays.len(),
        if missing > 0 {
            format!(", {missing} not within 10 s of the last submission")
        } else {
            String::new()
        }
    )
}

/// Prints the farm, the pacing and the delays from each submission's commit to its first
/// booking's start, to that booking's commit, and to the harness seeing it.
fn print_newjob(
    args: &BenchArgs,
    spec: &crate::sim::seed::FarmSpec,
    config: &Config,
    [booked, committed, seen]: [&[Option<f64>]; 3],
) {
    let s = &config.scheduler;
    println!(
        "workload        : Newjob (scale {}, seed {:#x}): {} hosts, {} background jobs, {} jobs submitted at random moments",
        args.scale,
        args.seed,
        spec.hosts.len(),
        spec.jobs.len(),
        seen.len()
    );
    println!(
        "pacing          : active scan {:?}, new-work probe {:?}, empty sleep {:?}, saturated sleep {:?}, host refresh {:?}",
        s.active_scan_interval,
        s.new_work_probe_interval,
        s.empty_sleep,
        s.saturated_sleep,
        config.hosts.refresh_interval
    );
    println!(
        "commit→booking  : {} (the first frame's booking transaction start)",
        summary(booked)
    );
    println!(
        "commit→booked   : {} (that booking's COMMIT)",
        summary(committed)
    );
    println!(
        "commit→seen     : {} (the harness seeing it RUNNING, 20 ms polls)",
        summary(seen)
    );
}

/// What stagehand's statements that look for new work cost: the probe and the active scan
/// (calls, mean time, buffer pages a call).
fn print_probe_cost(client: &mut postgres::Client) {
    let rows = client.query(
        "SELECT CASE WHEN query LIKE '%CROSS JOIN LATERAL unnest%' THEN 'active scan' ELSE 'new-work probe' END,
                calls, (total_exec_time / greatest(calls, 1))::float8,
                ((shared_blks_hit + shared_blks_read)::float8 / greatest(calls, 1))
           FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid
          WHERE r.rolname = 'stagehand'
            AND (query LIKE '%count(*)::bigint, coalesce(sum(js.int_waiting_count)%'
                 OR query LIKE '%CROSS JOIN LATERAL unnest%')
          ORDER BY 1",
        &[],
    );
    if let Ok(rows) = rows {
        for r in rows {
            println!(
                "{:<16}: {} calls, {:.3} ms and {:.0} buffer pages a call",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, f64>(2),
                r.get::<_, f64>(3)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_rank_at_or_above() {
        let sorted: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 25.0);
        assert_eq!(percentile(&sorted, 0.9), 45.0);
        // With 50 samples the 99th percentile is the largest.
        assert_eq!(percentile(&sorted, 0.99), 50.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn a_summary_counts_what_never_booked() {
        let s = summary(&[Some(0.2), None, Some(0.1)]);
        assert!(s.contains("p50 0.100s"), "{s}");
        assert!(s.contains("max 0.200s"), "{s}");
        assert!(s.contains("2 of 3 booked, 1 not within 10 s"), "{s}");
    }
}
