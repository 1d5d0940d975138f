//! Sweeps: one workload run at several scales (`--scales 1,4,10`) or instance counts
//! (`--instance-counts 1,2,3`) in one invocation, each on its own freshly seeded farm, then
//! one table of every run's figures with each figure as a ratio to the first run's, so a
//! cost that grows with the farm shows as a ratio that a noisy machine moves less than the
//! figures themselves. `--rounds N` repeats the whole sweep and ends with each ratio's median
//! and range over the rounds.

use super::{BenchArgs, BenchReport, measure};
use crate::sim::SimError;

/// What a sweep varies.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Axis {
    Scale,
    Instances,
}

/// Runs the sweep `args` asks for; returns every run's audit violations.
pub(super) fn sweep(args: &BenchArgs) -> Result<Vec<String>, SimError> {
    let axis = match (args.scales.is_empty(), args.instance_counts.is_empty()) {
        (false, true) => Axis::Scale,
        (true, false) => Axis::Instances,
        _ => {
            return Err(SimError::Other(
                "give --scales or --instance-counts, not both".into(),
            ));
        }
    };
    let runs: Vec<BenchArgs> = match axis {
        Axis::Scale => args
            .scales
            .iter()
            .map(|&k| with(args, k, args.instances))
            .collect(),
        Axis::Instances => args
            .instance_counts
            .iter()
            .map(|&n| with(args, args.scale, n))
            .collect(),
    };
    let mut rounds: Vec<Vec<BenchReport>> = Vec::new();
    for _ in 0..args.rounds.max(1) {
        let mut reports = Vec::new();
        for run in &runs {
            reports.push(measure(run)?);
            println!();
        }
        print_sweep(args, axis, &runs, &reports);
        rounds.push(reports);
    }
    if rounds.len() > 1 {
        print_rounds(axis, &runs, &rounds);
    }
    Ok(rounds
        .into_iter()
        .flatten()
        .flat_map(|r| r.violations)
        .collect())
}

/// `args` for one run of the sweep: `scale` and `instances`, no further sweep; a larger farm
/// gets a proportionally longer time limit.
fn with(args: &BenchArgs, scale: f64, instances: usize) -> BenchArgs {
    BenchArgs {
        scale,
        instances,
        duration: args.duration.mul_f64(scale.max(1.0)),
        scales: Vec::new(),
        instance_counts: Vec::new(),
        ..args.clone()
    }
}

/// A figure of the table: its label, how to read it from a report, its decimals.
type Figure = (&'static str, fn(&BenchReport) -> Option<f64>, usize);

/// The figures a sweep compares: rates, then costs per booked frame, then the run's fixed
/// costs.
const FIGURES: [Figure; 15] = [
    ("frames booked", |r| Some(r.booked as f64), 0),
    ("frames/s, first 99 %", |r| nonzero(r.first99_per_sec), 0),
    (
        "frames/s, (n-1)/(last-first)",
        |r| nonzero(r.frames_per_sec),
        0,
    ),
    ("99 % of cores busy after, s", |r| r.time_to_util[2], 2),
    ("PostgreSQL CPU per frame, ms", |r| r.pg_cpu_ms_per_frame, 3),
    ("… of it in the kernel", |r| r.pg_kernel_share, 2),
    (
        "PostgreSQL page faults per frame",
        |r| r.pg_faults_per_frame,
        1,
    ),
    (
        "stagehand CPU per frame, ms",
        |r| r.stagehand_cpu_ms_per_frame,
        3,
    ),
    ("statements per frame", |r| r.statements_per_frame, 3),
    ("rows returned per frame", |r| r.rows_read_per_frame, 2),
    ("buffer pages per frame", |r| r.pages_per_frame, 1),
    ("rows read (tup) per frame", |r| r.db_rows_per_frame, 1),
    (
        "peak RSS, MiB (max instance)",
        |r| r.peak_rss_mib.iter().copied().reduce(f64::max),
        1,
    ),
    ("first booking after start, s", |r| r.first_booking_secs, 2),
    (
        "stagehand start-up CPU, s",
        |r| r.stagehand_startup_cpu_secs,
        2,
    ),
];

fn nonzero(v: f64) -> Option<f64> {
    (v > 0.0).then_some(v)
}

/// Prints one column per run and, per figure, each run's ratio to the first run's.
fn print_sweep(args: &BenchArgs, axis: Axis, runs: &[BenchArgs], reports: &[BenchReport]) {
    let label = |a: &BenchArgs, r: &BenchReport| match axis {
        Axis::Scale => format!("K={} ({} hosts)", a.scale, r.hosts),
        Axis::Instances => format!("{} instance(s)", a.instances.max(1)),
    };
    println!(
        "sweep           : {:?} by {}, one invocation, seed {:#x}; ratios to the first run",
        args.workload,
        match axis {
            Axis::Scale => "scale",
            Axis::Instances => "instances",
        },
        args.seed
    );
    let header: Vec<String> = runs.iter().zip(reports).map(|(a, r)| label(a, r)).collect();
    println!("  {:<30} {}  ratios", "", row(&header));
    for (name, get, prec) in FIGURES {
        let values: Vec<Option<f64>> = reports.iter().map(get).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let cells: Vec<String> = values
            .iter()
            .map(|v| v.map_or_else(|| "-".into(), |v| format!("{v:.prec$}")))
            .collect();
        let ratios: Vec<String> = values
            .iter()
            .map(|v| match (v, values[0]) {
                (Some(v), Some(first)) if first > 0.0 => format!("{:.2}", v / first),
                _ => "-".into(),
            })
            .collect();
        println!("  {name:<30} {}  {}", row(&cells), ratios.join(" / "));
    }
    if axis == Axis::Instances {
        for (a, r) in runs.iter().zip(reports) {
            println!("  {:<30} {:?} frames", label(a, r), r.per_instance);
        }
    }
}

/// Prints, per figure and per run after the first, its ratio to the first run of the same
/// round as the median and range over `rounds`: each ratio is of two runs minutes apart,
/// the summary of several such pairs.
fn print_rounds(axis: Axis, runs: &[BenchArgs], rounds: &[Vec<BenchReport>]) {
    println!(
        "rounds          : {} rounds of the sweep; each run's ratio to its round's first run, median [lowest - highest]",
        rounds.len()
    );
    let header: Vec<String> = runs[1..]
        .iter()
        .map(|a| match axis {
            Axis::Scale => format!("K={}", a.scale),
            Axis::Instances => format!("{} instance(s)", a.instances.max(1)),
        })
        .collect();
    println!("  {:<30} {}", "", row(&header));
    for (name, get, _) in FIGURES {
        let cells: Vec<String> = (1..runs.len())
            .map(|j| {
                let ratios: Vec<f64> = rounds
                    .iter()
                    .filter_map(|r| match (get(&r[j]), get(&r[0])) {
                        (Some(v), Some(first)) if first > 0.0 => Some(v / first),
                        _ => None,
                    })
                    .collect();
                spread(ratios)
            })
            .collect();
        if cells.iter().any(|c| c != "-") {
            println!("  {name:<30} {}", row(&cells));
        }
    }
}

/// `values` as "median [lowest - highest]" ("-" when empty).
pub(super) fn spread(mut values: Vec<f64>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    format!("{median:.2} [{:.2} - {:.2}]", values[0], values[n - 1])
}

/// Cells right-aligned in columns wide enough for a run label.
fn row(cells: &[String]) -> String {
    cells
        .iter()
        .map(|c| format!("{c:>20}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::spread;

    #[test]
    fn spread_is_the_median_and_the_range() {
        assert_eq!(spread(vec![]), "-");
        assert_eq!(spread(vec![0.9, 0.7, 1.1]), "0.90 [0.70 - 1.10]");
        assert_eq!(spread(vec![0.8, 0.6, 1.0, 0.7]), "0.75 [0.60 - 1.00]");
    }
}
