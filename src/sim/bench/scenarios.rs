//! The workloads `stagehand bench` runs in-process instead of measuring instances: the
//! scheduling-quality scenarios and the adversarial soak.

use std::process::ExitCode;

use super::BenchArgs;
use crate::sim::{SimError, workload::Workload};

/// The adversarial soak: `--seed` replays a fault schedule, `--duration` is how long faults
/// are injected, `--instances` (three unless more are asked for) how many stagehands race.
/// Exit 3 on any violation.
pub(super) fn chaos(args: &BenchArgs) -> Result<ExitCode, SimError> {
    let opts = crate::sim::chaos::ChaosOptions {
        scale: args.scale,
        seed: args.seed,
        duration: args.duration,
        binary: match &args.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(SimError::Io)?,
        },
        instances: args.instances.max(3),
        keep: args.keep,
    };
    let report = crate::sim::chaos::run(&opts)?;
    crate::sim::chaos::print(&opts, &report);
    Ok(if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// Maestro's verification battery (`sim::verify`) at full scale (`--scale` below 1: the
/// tests' scale), or only `--scenario`: one PASS/FAIL line each, then a summary. Exit 3 when
/// any scenario fails.
pub(super) fn verify(args: &BenchArgs) -> Result<ExitCode, SimError> {
    let full = args.scale >= 1.0;
    println!(
        "verification battery at {} scale",
        if full { "full" } else { "test" }
    );
    let verdicts = crate::sim::verify::run_battery(full, args.scenario.as_deref())?;
    let passed = verdicts.iter().filter(|v| v.pass).count();
    println!("{passed} of {} scenarios passed", verdicts.len());
    Ok(if passed == verdicts.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// A scheduling-quality scenario at full scale (`--scale` below 1 runs the test scale), with
/// its policy on and then off.
pub(super) fn scenario(args: &BenchArgs) -> Result<ExitCode, SimError> {
    let full = args.scale >= 1.0;
    let violations = match args.workload {
        Workload::Wide => wide_scenario(full)?,
        Workload::FairShare => share_scenario(full)?,
        Workload::Stream => stream_scenario(full)?,
        Workload::Gpu => gpu_scenario(full)?,
        _ => unreachable!("not a scenario"),
    };
    Ok(if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The wide-frame scenario with reservations on, then off; returns the violations.
fn wide_scenario(full: bool) -> Result<Vec<String>, SimError> {
    use crate::sim::scenario::wide;
    let spec = if full {
        wide::WideSpec::full()
    } else {
        wide::WideSpec::small()
    };
    let mut violations = Vec::new();
    for on in [true, false] {
        let o = wide::wide_frame(&spec, on)?;
        wide::print_wide(&spec, &o);
        violations.extend(o.violations);
        println!();
    }
    Ok(violations)
}

/// The fair-share scenario; returns the violations.
fn share_scenario(full: bool) -> Result<Vec<String>, SimError> {
    use crate::sim::scenario::share;
    let spec = if full {
        share::ShareSpec::full()
    } else {
        share::ShareSpec::small()
    };
    let o = share::fair_share(&spec)?;
    share::print_share(&spec, &o);
    Ok(o.violations)
}

/// The priority-stream scenario under `balanced`, then `priority`; returns the violations.
fn stream_scenario(full: bool) -> Result<Vec<String>, SimError> {
    use crate::sim::scenario::stream;
    let spec = if full {
        stream::StreamSpec::full()
    } else {
        stream::StreamSpec::small()
    };
    let mut violations = Vec::new();
    for order in [
        crate::config::JobOrder::Balanced,
        crate::config::JobOrder::Priority,
    ] {
        let o = stream::priority_stream(&spec, order)?;
        stream::print_stream(&spec, &o);
        violations.extend(o.violations);
        println!();
    }
    Ok(violations)
}

/// The GPU scenario keeping 2 cores per idle GPU, then none; returns the violations.
fn gpu_scenario(full: bool) -> Result<Vec<String>, SimError> {
    use crate::sim::scenario::gpu;
    let spec = if full {
        gpu::GpuSpec::full()
    } else {
        gpu::GpuSpec::small()
    };
    let mut violations = Vec::new();
    for cores in [2, 0] {
        let o = gpu::gpu_flood(&spec, cores)?;
        gpu::print_gpu(&spec, &o);
        violations.extend(o.violations);
        println!();
    }
    Ok(violations)
}
