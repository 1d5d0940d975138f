//! The battery's LOCALITY scenario at small scale: refill affinity with locality on (the
//! default) and off. `--ignored` runs it at full scale and prints the battery's line.

use stagehand::{
    index::Locality,
    sim::verify::locality::{self, LocalitySpec},
};

/// Frames replacing finished ones land on a host that just ran their layer: at least 30 %
/// of them with locality on, at most half that with it off.
#[test]
fn locality_refills_the_hosts_that_ran_the_layer() {
    let spec = LocalitySpec::small();
    let (on, violations) = locality::affinity(&spec, Locality::default()).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let (off, violations) = locality::affinity(&spec, Locality::OFF).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let figure = locality::figure(&spec, &on, &off);
    eprintln!("LOCALITY (small): {figure}");
    assert!(locality::holds(&on, &off), "{figure}");
}

/// The battery's line at full scale (about three minutes).
#[test]
#[ignore = "full scale: run with --ignored"]
fn locality_full_scale() {
    let v = locality::verify(true).unwrap();
    let maestro = v.maestro.unwrap_or("-");
    let verdict = if v.pass { "PASS" } else { "FAIL" };
    eprintln!("{verdict} {} {} [Maestro: {maestro}]", v.name, v.figure);
    assert!(v.pass, "{v:?}");
}
