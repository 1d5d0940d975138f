//! The simulator: a tiny demo runs to completion unattended with a clean audit, every
//! benchmark workload runs at a tiny scale through the real `stagehand` binary, and the
//! booking-write ceiling books what it planned.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use stagehand::sim::{
    bench::{
        BenchArgs,
        ceiling::{CONNECTIONS, measure_ceiling},
        measure, run,
    },
    demo::{DemoArgs, run_demo},
    workload::{self, Workload},
};

#[test]
fn tiny_demo_runs_to_completion_with_a_clean_audit() {
    let args = DemoArgs {
        hosts: 12,
        jobs: 6,
        duration: Duration::from_secs(90),
        listen: "127.0.0.1:0".into(),
        keep: false,
        seed: 7,
        failure_per_mille: 0,
        quiet: true,
        runtime_scale: 0.02,
    };
    let summary = run_demo(&args).expect("demo runs");
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    assert_eq!(summary.waiting, 0, "every frame ran: {summary:?}");
    assert_eq!(summary.done as usize, summary.seeded, "{summary:?}");
}

fn tiny(workload: Workload, scale: f64) -> BenchArgs {
    BenchArgs {
        workload,
        scale,
        seed: 11,
        instances: 1,
        per_frame: false,
        duration: Duration::from_secs(20),
        binary: Some(PathBuf::from(env!("CARGO_BIN_EXE_stagehand"))),
        keep: false,
        top_statements: 0,
        no_reservations: false,
        scenario: None,
        with_ceiling: false,
        shows: 0,
        scales: Vec::new(),
        instance_counts: Vec::new(),
        rounds: 1,
        submissions: 50,
    }
}

#[test]
fn drain_workload_books_everything_at_tiny_scale() {
    let report = measure(&tiny(Workload::Drain, 0.02)).expect("bench runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.booked as usize, report.seeded);
}

#[test]
fn saturation_workload_stops_at_the_bursts_at_tiny_scale() {
    let report = measure(&tiny(Workload::Saturation, 0.05)).expect("bench runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.booked > 0);
}

#[test]
fn coldfill_workload_fills_the_farm_at_tiny_scale() {
    let report = measure(&tiny(Workload::Coldfill, 0.01)).expect("bench runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(
        report.peak_util >= 0.9,
        "peak utilization {}",
        report.peak_util
    );
    // Its frames outlast the run: every booking is still a proc, so the rate is known.
    assert!(report.first99_per_sec > 0.0, "{report:?}");
}

#[test]
fn steady_workload_keeps_booking_at_tiny_scale() {
    let mut args = tiny(Workload::Steady, 0.02);
    args.duration = Duration::from_secs(8);
    let report = measure(&args).expect("bench runs");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.booked > 0);
}

#[test]
fn the_ceiling_books_what_it_planned_with_a_clean_audit_at_tiny_scale() {
    let spec = workload::drain(0.05, 1, 11);
    let report = measure_ceiling(&spec, &CONNECTIONS).expect("ceiling runs");
    assert_eq!(report.seeded, 300);
    assert_eq!(report.runs.len(), CONNECTIONS.len());
    for r in &report.runs {
        assert!(r.violations.is_empty(), "{r:?}");
        assert!(r.planned > 0, "{r:?}");
        assert_eq!((r.booked, r.lost), (r.planned, 0), "{r:?}");
        assert_eq!(r.rates.booked, r.planned, "one proc per planned frame");
    }
    assert!(report.violations().is_empty());
}

#[test]
fn drain_with_the_ceiling_runs_both_at_tiny_scale() {
    let mut args = tiny(Workload::Drain, 0.02);
    args.with_ceiling = true;
    assert_eq!(run(&args).expect("bench runs"), ExitCode::SUCCESS);
}

#[test]
fn coldfill_with_the_ceiling_runs_both_at_tiny_scale() {
    let mut args = tiny(Workload::Coldfill, 0.01);
    args.with_ceiling = true;
    assert_eq!(run(&args).expect("bench runs"), ExitCode::SUCCESS);
}
