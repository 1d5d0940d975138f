//! DEPENDS of Maestro's battery at small scale: dependency trees (frame-by-frame,
//! layer-on-layer, layer-on-job, job-on-job) satisfied by the simulator's Cuebot-like
//! completion; no frame runs with a depend left and every gated frame runs.

use crate::common::timed_scenario;

#[test]
fn depends_no_frame_runs_before_its_depends_and_gated_frames_run() {
    let _alone = timed_scenario();
    let v = stagehand::sim::verify::depends(false).unwrap();
    println!("{}: {}", v.name, v.figure);
    assert!(v.pass, "{v:?}");
}

/// DEPENDS at full scale (64 × 16-core hosts, 40 trees of 3 × 20 frames): the figure for
/// BENCHMARKS.md until `stagehand bench --workload verify` runs it.
#[test]
#[ignore = "full scale: minutes"]
fn depends_full_scale() {
    let _alone = timed_scenario();
    let v = stagehand::sim::verify::depends(true).unwrap();
    println!("{}: {}", v.name, v.figure);
    assert!(v.pass, "{v:?}");
}
