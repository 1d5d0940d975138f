//! OOM of Maestro's battery at small scale: frames failing with Cuebot's out-of-memory exit
//! get their layer's memory raised by the completion path and are booked again with it.

use crate::common::timed_scenario;

#[test]
fn oom_frames_are_booked_again_with_the_raised_memory() {
    let _alone = timed_scenario();
    let v = stagehand::sim::verify::oom(false).unwrap();
    println!("{}: {}", v.name, v.figure);
    assert!(v.pass, "{v:?}");
}

/// OOM at full scale (64 × 16-core hosts, 20 jobs of 3 × 20 frames): the figure for
/// BENCHMARKS.md until `stagehand bench --workload verify` runs it.
#[test]
#[ignore = "full scale: minutes"]
fn oom_full_scale() {
    let _alone = timed_scenario();
    let v = stagehand::sim::verify::oom(true).unwrap();
    println!("{}: {}", v.name, v.figure);
    assert!(v.pass, "{v:?}");
}
