//! The battery's TAGS_GPU scenario at small scale: capability tags and a GPU slice, no
//! placement violation at any sample, every tag pool running work. `--ignored` runs it at full
//! scale and prints the battery's line.

use stagehand::sim::verify::tags_gpu::{self, TagsGpuSpec};

#[test]
fn tags_and_gpus_are_never_violated_and_every_pool_runs() {
    let spec = TagsGpuSpec::small();
    let (o, violations) = tags_gpu::tags_gpu(&spec).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let figure = tags_gpu::figure(&spec, &o);
    eprintln!("TAGS_GPU (small): {figure}");
    assert!(tags_gpu::holds(&o), "{figure}");
}

/// The battery's line at full scale (about two minutes).
#[test]
#[ignore = "full scale: run with --ignored"]
fn tags_gpu_full_scale() {
    let v = tags_gpu::verify(true).unwrap();
    let maestro = v.maestro.unwrap_or("-");
    let verdict = if v.pass { "PASS" } else { "FAIL" };
    eprintln!("{verdict} {} {} [Maestro: {maestro}]", v.name, v.figure);
    assert!(v.pass, "{v:?}");
}
