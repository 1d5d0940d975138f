//! Issue 12's adversarial soak at tiny scale: three stagehand instances and a Cuebot
//! stand-in racing on one farm while every kind of fault is injected at least once; the
//! invariants sampled every 100 ms, the settle check and the strict audit must find nothing.

use std::{path::PathBuf, time::Duration};

use stagehand::sim::chaos::{self, ChaosOptions, faults::Fault};

#[test]
fn a_seeded_soak_with_every_fault_finds_no_violation() {
    let opts = ChaosOptions {
        scale: 0.1,
        seed: 12,
        duration: Duration::from_secs(25),
        binary: PathBuf::from(env!("CARGO_BIN_EXE_stagehand")),
        instances: 3,
        keep: false,
    };
    let report = chaos::run(&opts).expect("the soak runs");
    chaos::print(&opts, &report);
    for fault in Fault::ALL {
        assert!(
            report.faults.get(fault.label()).copied().unwrap_or(0) >= 1,
            "fault {:?} injected: {:?}",
            fault,
            report.faults
        );
    }
    assert!(report.samples.0 > 0, "the sampler took samples");
    assert!(
        report.standin.get("book").copied().unwrap_or(0) > 0,
        "the stand-in booked: {:?}",
        report.standin
    );
    assert!(report.completed > 0, "frames completed on the fake RQD");
    let violations: Vec<String> = report
        .violations
        .iter()
        .map(|v| format!("{} ({} samples): {}", v.kind, v.samples, v.evidence))
        .chain(report.audit.iter().map(|a| format!("audit: {a}")))
        .collect();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}
