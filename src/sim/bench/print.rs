//! The benchmark's printed figures: the report, one aligned line per figure, the
//! statements that took the most database time, the ceiling's runs and drain's ratios to
//! them.

use super::{BenchArgs, BenchReport, CeilingReport, Rates};

/// Turns on `pg_stat_statements.track_planning`, so that the lists show each statement's
/// planning time beside its execution time (a statement sent as text is planned on every
/// call). Only for `--top-statements`: tracking costs a little on every statement.
pub(super) fn track_planning(client: &mut postgres::Client) {
    // ALTER SYSTEM may not run in a transaction, so not in one batch with the reload.
    let on = client
        .batch_execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
        .and_then(|()| client.batch_execute("SELECT pg_reload_conf()"));
    if let Err(e) = on {
        log::warn!("planning time not tracked: {e}");
    }
}

/// Keeps this session's copy of `pg_stat_statements` (a temporary table), so that
/// [`print_top_statements`] counts from here: with several instances, the run's statements
/// before the first booking are their wait for leases, not bookings.
pub(super) fn snapshot_statements(client: &mut postgres::Client) {
    let snapshot = client.batch_execute(
        "DROP TABLE IF EXISTS pg_temp.statements_before;
         CREATE TEMP TABLE statements_before AS
         SELECT userid, dbid, queryid, calls, rows, total_exec_time,
                shared_blks_hit + shared_blks_read AS blocks, total_plan_time
           FROM pg_stat_statements",
    );
    if let Err(e) = snapshot {
        log::warn!("statements at the first booking not kept: {e}");
    }
}

/// Prints the `n` statements that took the most database time and the `n` run most often
/// (all roles), since [`snapshot_statements`] when it ran in this session, else since the
/// statistics' reset. The second list shows what the first hides: cheap statements whose
/// count grows with the number of instances or passes.
pub(super) fn print_top_statements(client: &mut postgres::Client, n: usize) {
    let since_snapshot = client
        .query_one(
            "SELECT to_regclass('pg_temp.statements_before') IS NOT NULL",
            &[],
        )
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(false);
    let since = if since_snapshot {
        "since the first booking seen"
    } else {
        "since the statistics' reset"
    };
    for (order, what) in [("ms", "by database time"), ("calls", "by calls")] {
        println!("top statements {what}, {since} (calls, rows, ms, planning ms, blocks, text):");
        match statements_since(client, since_snapshot, order, n) {
            Ok(rows) => {
                for r in rows {
                    println!(
                        "  {:>7} {:>9} {:>9.1} {:>8.1} {:>10}  {}",
                        r.get::<_, i64>(0),
                        r.get::<_, i64>(1),
                        r.get::<_, f64>(2),
                        r.get::<_, f64>(3),
                        r.get::<_, i64>(4),
                        r.get::<_, String>(5)
                    );
                }
            }
            Err(e) => println!("  unavailable: {e}"),
        }
    }
    match statements_since(client, since_snapshot, "total", 1) {
        Ok(r) => {
            if let Some(t) = r.first() {
                println!(
                    "stagehand's     : {} statements, {:.1} ms executing, {:.1} ms planning",
                    t.get::<_, Option<i64>>(0).unwrap_or(0),
                    t.get::<_, Option<f64>>(2).unwrap_or(0.0),
                    t.get::<_, Option<f64>>(3).unwrap_or(0.0)
                );
            }
        }
        Err(e) => println!("stagehand's     : totals unavailable: {e:?}"),
    }
    print_top_tables(client, n);
}

/// The `n` statements with the most of `order` (`ms` or `calls`), net of the snapshot when
/// `since_snapshot`; `total`: one row, the sums over every statement.
fn statements_since(
    client: &mut postgres::Client,
    since_snapshot: bool,
    order: &str,
    n: usize,
) -> Result<Vec<postgres::Row>, postgres::Error> {
    let before = if since_snapshot {
        "pg_temp.statements_before"
    } else {
        "(SELECT userid, dbid, queryid, calls, rows, total_exec_time, 0::bigint AS blocks,
                 total_plan_time
            FROM pg_stat_statements WHERE false)"
    };
    let (select, tail) = if order == "total" {
        (
            "SELECT sum(calls)::bigint, sum(rows)::bigint, sum(ms), sum(plan_ms), \
             sum(blocks)::bigint, '', 0::oid",
            "WHERE userid = (SELECT oid FROM pg_roles WHERE rolname = 'stagehand')".to_owned(),
        )
    } else {
        ("SELECT *", format!("ORDER BY {order} DESC"))
    };
    client.query(
        &format!(
            "{select} FROM (
               SELECT s.calls - coalesce(b.calls, 0) AS calls, s.rows - coalesce(b.rows, 0) AS rows,
                      round((s.total_exec_time - coalesce(b.total_exec_time, 0))::numeric, 1)::float8 AS ms,
                      round((s.total_plan_time - coalesce(b.total_plan_time, 0))::numeric, 1)::float8 AS plan_ms,
                      s.shared_blks_hit + s.shared_blks_read - coalesce(b.blocks, 0) AS blocks,
                      regexp_replace(left(s.query, 160), '\\s+', ' ', 'g'), s.userid
                 FROM pg_stat_statements s LEFT JOIN {before} b USING (userid, dbid, queryid)) t
              {tail} LIMIT $1"
        ),
        &[&(n as i64)],
    )
}

/// Prints the `n` tables whose rows were read most since the cluster started (sequential
/// scans' rows, index scans' fetches; the seeding and the harness's polls included).
fn print_top_tables(client: &mut postgres::Client, n: usize) {
    let rows = client.query(
        "SELECT relname::text, seq_scan, seq_tup_read, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0)
           FROM pg_stat_user_tables ORDER BY seq_tup_read + coalesce(idx_tup_fetch, 0) DESC LIMIT $1",
        &[&(n as i64)],
    );
    if let Ok(rows) = rows {
        println!("top tables by rows read (seq scans, rows, index scans, rows fetched):");
        for r in rows {
            println!(
                "  {:<24} {:>8} {:>12} {:>9} {:>12}",
                r.get::<_, String>(0),
                r.get::<_, i64>(1),
                r.get::<_, i64>(2),
                r.get::<_, i64>(3),
                r.get::<_, i64>(4)
            );
        }
    }
}

/// Prints the report, one aligned line per figure, the audit last.
pub(super) fn print_report(args: &BenchArgs, r: &BenchReport) {
    print_booking(args, r);
    print_costs(r);
    if r.violations.is_empty() {
        println!("audit           : clean");
    } else {
        for v in &r.violations {
            println!("audit violation : {v}");
        }
    }
}

/// The report's first lines: what ran, and how fast and how well it booked.
fn print_booking(args: &BenchArgs, r: &BenchReport) {
    let fmt_t = |t: Option<f64>| t.map(|s| format!("{s:.2}s")).unwrap_or_else(|| "-".into());
    println!(
        "workload        : {:?} (scale {}, seed {:#x}, {} instance(s){})",
        args.workload,
        args.scale,
        args.seed,
        args.instances.max(1),
        if args.per_frame {
            ", one transaction per frame"
        } else {
            ""
        }
    );
    println!("frames          : {} seeded, {} booked", r.seeded, r.booked);
    println!(
        "throughput      : {:.0} frames/s over a {:.2}s booking window{}",
        r.frames_per_sec,
        r.window_secs,
        if r.first99_per_sec > 0.0 {
            format!(", {:.0} frames/s over the first 99 %", r.first99_per_sec)
        } else {
            String::new()
        }
    );
    println!(
        "utilization     : 50% {}  90% {}  99% {}  (peak {:.1}%)",
        fmt_t(r.time_to_util[0]),
        fmt_t(r.time_to_util[1]),
        fmt_t(r.time_to_util[2]),
        r.peak_util * 100.0
    );
    println!(
        "eligible→booked : p50 {:.3}s  p99 {:.3}s",
        r.wait_p50_p99.0, r.wait_p50_p99.1
    );
    println!(
        "wasted attempts : {:.1}%{}",
        r.wasted_pct,
        if r.losses.is_empty() {
            String::new()
        } else {
            format!("  ({})", r.losses.join(", "))
        }
    );
}

/// The report's cost lines: database work, memory, the split between instances, and the
/// subscriptions' usage.
fn print_costs(r: &BenchReport) {
    match (
        r.statements_per_frame,
        r.rows_read_per_frame,
        r.pages_per_frame,
    ) {
        (Some(s), Some(rows), Some(pages)) => println!(
            "database        : per booked frame {s:.2} statements, {rows:.1} rows read, {pages:.0} buffer pages (stagehand's role only, from the first booking seen)"
        ),
        _ => println!("database        : pg_stat_statements unavailable"),
    }
    if let Some(rows) = r.db_rows_per_frame {
        println!(
            "rows read       : {rows:.1} per booked frame (pg_stat_database tup_returned + tup_fetched, start-up and Cuebot's triggers included, the harness's polls left out)"
        );
    }
    if let Some(ms) = r.pg_cpu_ms_per_frame {
        println!(
            "PostgreSQL CPU  : {ms:.3} ms per booked frame (from the first booking seen, all backends but the harness's){}",
            match (r.pg_kernel_share, r.pg_faults_per_frame) {
                (Some(k), Some(f)) => format!(
                    ", {:.0} % in the kernel, {f:.1} page faults per frame",
                    k * 100.0
                ),
                _ => String::new(),
            }
        );
    }
    if let Some(ms) = r.stagehand_cpu_ms_per_frame {
        println!(
            "stagehand CPU   : {ms:.3} ms per booked frame (from the first booking seen), {} s before it",
            r.stagehand_startup_cpu_secs
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    if let Some((p50, p99)) = r.booking_to_launch {
        let ms = |s: f64| {
            if s.is_finite() {
                format!("≤ {:.0} ms", s * 1000.0)
            } else {
                "> 5 s".into()
            }
        };
        println!(
            "booking→launch  : p50 {} · p99 {} (commit to RQD's answer; histogram bucket bounds)",
            ms(p50),
            ms(p99)
        );
    }
    if let Some(secs) = r.first_booking_secs {
        println!("first booking   : {secs:.2}s after the instances started (database clock)");
    }
    println!(
        "peak RSS        : {} MiB (VmHWM of each stagehand process; the harness seeds)",
        r.peak_rss_mib
            .iter()
            .map(|m| format!("{m:.1}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    if r.per_instance.len() > 1 {
        println!("per instance    : {:?} frames", r.per_instance);
    }
    if r.subscriptions.len() <= 12 {
        let subs: Vec<String> = r
            .subscriptions
            .iter()
            .map(|(n, b, burst)| format!("{n} {b}/{burst}"))
            .collect();
        println!("subscriptions   : {} (booked/burst cores)", subs.join(", "));
    }
}

/// `ms` as `0.123 ms`, or `-` when unknown.
fn fmt_ms(ms: Option<f64>) -> String {
    ms.map(|m| format!("{m:.3} ms"))
        .unwrap_or_else(|| "-".into())
}

/// The workload whose farm a ceiling is measured on, as its lines name it.
fn farm_name(args: &BenchArgs) -> &'static str {
    match args.workload {
        super::Workload::Coldfill => "coldfill",
        _ => "drain",
    }
}

/// Prints the ceiling's runs, one line per connection count; `when` says when it ran.
pub(super) fn print_ceiling(args: &BenchArgs, c: &CeilingReport, when: &str) {
    println!(
        "ceiling{when:<9}: the guarded writes alone, {} frames a transaction, {} farm (scale {}, seed {:#x}), {} frames seeded",
        super::ceiling::BATCH,
        farm_name(args),
        args.scale,
        args.seed,
        c.seeded
    );
    println!(
        "  connections  planned  booked  lost  frames/s first 99 %  frames/s (n-1)/(last-first)  window   frames/s wall clock  PG CPU/frame  audit"
    );
    for r in &c.runs {
        let wall = if r.wall_secs > 0.0 {
            r.booked as f64 / r.wall_secs
        } else {
            0.0
        };
        println!(
            "  {:>11}  {:>7}  {:>6}  {:>4}  {:>19.0}  {:>27.0}  {:>6.2}s  {:>19.0}  {:>12}  {}",
            r.connections,
            r.planned,
            r.booked,
            r.lost,
            r.rates.first99_per_sec,
            r.rates.per_sec,
            r.rates.window_secs,
            wall,
            fmt_ms(r.pg_cpu_ms_per_frame),
            if r.violations.is_empty() {
                "clean".to_owned()
            } else {
                format!("{} violation(s)", r.violations.len())
            }
        );
    }
}

/// Prints the run beside the ceilings measured right before and right after it: per figure,
/// each sweep's best run and the run's ratio to their mean, so a machine that got busier or
/// quieter during the invocation moves both sides of the ratio alike.
pub(super) fn print_ceiling_ratios(
    args: &BenchArgs,
    report: &BenchReport,
    before: &CeilingReport,
    after: &CeilingReport,
) -> CeilingRatios {
    let ratio = |label: &str,
                 value: Option<f64>,
                 best: [Option<(f64, usize)>; 2],
                 unit: &str,
                 prec: usize| {
        let (Some(d), [Some(b), Some(a)]) = (value, best) else {
            return None;
        };
        let mean = (b.0 + a.0) / 2.0;
        let ratio = if mean > 0.0 { d / mean } else { 0.0 };
        println!(
            "{} / ceiling : {label}: {d:.prec$} / {mean:.prec$}{unit} (ceiling before {:.prec$}, {} conn; after {:.prec$}, {} conn) = {:.2}",
            farm_name(args),
            b.0,
            b.1,
            a.0,
            a.1,
            ratio
        );
        Some(ratio)
    };
    let rate_of = |c: &CeilingReport, rate: fn(&Rates) -> f64| {
        c.best(rate).map(|r| (rate(&r.rates), r.connections))
    };
    let first99 = |r: &Rates| r.first99_per_sec;
    let stress = |r: &Rates| r.per_sec;
    let first99_ratio = ratio(
        "frames/s, first 99 %",
        (report.first99_per_sec > 0.0).then_some(report.first99_per_sec),
        [rate_of(before, first99), rate_of(after, first99)],
        "",
        0,
    );
    let stress_ratio = ratio(
        "frames/s, (n-1)/(last-first)",
        Some(report.frames_per_sec),
        [rate_of(before, stress), rate_of(after, stress)],
        "",
        0,
    );
    // CPU of the run the rate ratio is quoted against (each sweep's best by the first 99 %).
    let cpu_of = |c: &CeilingReport| {
        c.best(first99)
            .and_then(|r| Some((r.pg_cpu_ms_per_frame?, r.connections)))
    };
    let cpu_ratio = ratio(
        "PostgreSQL CPU per booked frame",
        report.pg_cpu_ms_per_frame,
        [cpu_of(before), cpu_of(after)],
        " ms",
        3,
    );
    [first99_ratio, stress_ratio, cpu_ratio]
}

/// One run's ratios to the ceilings around it: frames/s over the first 99 %, frames/s by the
/// stress formula, PostgreSQL CPU per booked frame (`None` where a figure is missing).
pub(super) type CeilingRatios = [Option<f64>; 3];

/// The ratios of several runs, each to the ceilings measured around it, as the median and
/// range over the runs.
pub(super) fn print_ceiling_rounds(rounds: &[CeilingRatios]) {
    println!(
        "rounds          : {} runs, each against the ceilings right before and after it; median [lowest - highest]",
        rounds.len()
    );
    let labels = [
        "frames/s, first 99 %",
        "frames/s, (n-1)/(last-first)",
        "PostgreSQL CPU per booked frame",
    ];
    for (i, label) in labels.iter().enumerate() {
        let values = rounds.iter().filter_map(|r| r[i]).collect();
        println!("  {label:<32} {}", super::sweep::spread(values));
    }
}
