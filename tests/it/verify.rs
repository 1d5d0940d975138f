//! Maestro's verification battery at small scale (`stagehand bench --workload verify
//! --scale 0.1`): each scenario's criterion, and a clean accounting audit after it. The
//! criteria are about shares and caps, never about speed: a slow machine runs them longer.

use stagehand::sim::verify::{self, Verdict};

use crate::common::timed_scenario;

/// Runs the battery's scenario `name` at small scale and prints its line.
fn small(name: &str) -> Verdict {
    let _alone = timed_scenario();
    let (_, scenario) = verify::battery()
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("the scenario is in the battery");
    let verdict = scenario(false).expect("the scenario runs");
    verify::print_verdict(&verdict, std::time::Duration::ZERO);
    verdict
}

/// Ten classes at priorities 10…100 with equal backlogs, released together on a farm they
/// oversubscribe: completions are ordered by priority (ρ ≥ 0.9) under `proportional`.
#[test]
fn priority_completions_are_ordered_by_priority() {
    let v = small("PRIORITY");
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert!(v.pass, "{}", v.figure);
}

/// A low-priority stream arriving beside a deep high-priority flood keeps ≥ 3 % of the
/// completions.
#[test]
fn priority_starving_low_stream_keeps_its_floor() {
    let v = small("PRIORITY_STARVING");
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert!(v.pass, "{}", v.figure);
}

/// A whole-host frame stranded in a flood is reserved a host, backfilled around and run.
#[test]
fn reservations_rescue_a_stranded_wide_frame() {
    let v = small("RESERVATIONS");
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert!(v.pass, "{}", v.figure);
}

/// A global limit (20 at this scale) on a deep flood: never above it at any 50 ms sample,
/// at it (or one frame below while a frame is replaced) in ≥ 80 % of them once reached.
#[test]
fn limit_holds_at_its_cap_and_is_used() {
    let v = small("LIMIT");
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert!(v.pass, "{}", v.figure);
}

/// A folder's max cores under a deep backlog: never above at any 50 ms sample, within 10 %
/// of it in ≥ 80 % of them once reached.
#[test]
fn folder_max_cores_holds_and_is_used() {
    let v = small("FOLDER");
    assert!(v.violations.is_empty(), "{:?}", v.violations);
    assert!(v.pass, "{}", v.figure);
}
