//! Maestro's verification battery at the tests' small scale: the scenarios of the farm as a
//! whole (utilisation, failover of the instance holding the shows, many tags).

use std::path::Path;

use stagehand::sim::verify::{Verdict, failover, tagmax, utilisation};

use crate::common::timed_scenario;

fn assert_pass(v: &Verdict) {
    println!("{}: {}", v.name, v.figure);
    assert!(v.pass, "{} failed: {} {:?}", v.name, v.figure, v.violations);
}

#[test]
fn utilisation_keeps_the_demo_farms_binding_resource_busy() {
    let _alone = timed_scenario();
    let v = utilisation::utilisation(false).expect("scenario runs");
    assert_pass(&v);
}

#[test]
fn failover_survivors_book_the_killed_instances_shows() {
    let _alone = timed_scenario();
    let binary = Path::new(env!("CARGO_BIN_EXE_stagehand"));
    let v = failover::failover_with(binary, false).expect("scenario runs");
    assert_pass(&v);
}

#[test]
fn tagmax_plans_lost_to_the_commit_race_stay_few() {
    let _alone = timed_scenario();
    let v = tagmax::tagmax(false).expect("scenario runs");
    assert_pass(&v);
}
