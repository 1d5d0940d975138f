//! The benchmark's printed figures: the report, one aligned line per figure, and the
//! statements that took the most database time.

use super::{BenchArgs, BenchReport};

/// Prints the `n` statements that took the most database time (all roles).
pub(super) fn print_top_statements(client: &mut postgres::Client, n: usize) {
    let rows = client.query(
        "SELECT calls, rows, round(total_exec_time::numeric, 1)::float8, shared_blks_hit + shared_blks_read,
                regexp_replace(left(query, 160), '\\s+', ' ', 'g')
           FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1",
        &[&(n as i64)],
    );
    match rows {
        Ok(rows) => {
            println!("top statements (calls, rows, ms, blocks, text):");
            for r in rows {
                println!(
                    "  {:>7} {:>9} {:>9.1} {:>10}  {}",
                    r.get::<_, i64>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, f64>(2),
                    r.get::<_, i64>(3),
                    r.get::<_, String>(4)
                );
            }
        }
        Err(e) => println!("top statements unavailable: {e}"),
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
        "throughput      : {:.0} frames/s over a {:.2}s booking window",
        r.frames_per_sec, r.window_secs
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
            "database        : per booked frame {s:.2} statements, {rows:.1} rows read, {pages:.0} buffer pages (stagehand's role only)"
        ),
        _ => println!("database        : pg_stat_statements unavailable"),
    }
    println!(
        "peak RSS        : {} MiB",
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
