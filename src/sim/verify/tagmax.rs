//! TAGMAX: many capability tags fragment the farm into many clusters, and a layer with
//! several tags is planned by several of them; the frames whose plan loses the commit race
//! (another plan took the frame or the host room first) stay at most [`MAX_LOST`] of those
//! planned.
//!
//! The farm carries 120 MANUAL capability tags (each host one or two of them besides its
//! ALLOC, HOSTNAME and HARDWARE tags, as Cuebot registers hosts); 30 % of the layers run
//! anywhere in the allocation (its tag), the rest ask for one to three capability tags. Every
//! manual tag is a cluster of its own (`manual_tags_chunk_size = 1`), so a three-tag layer
//! sits in three clusters that the booking threads serve at once. Frames complete through the
//! simulator, so the farm keeps being refilled for the whole window. Planned = booked + lost
//! to a guard, from the service's own counters.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::Verdict;
use crate::{
    model::TagType,
    sim::{
        SimError,
        scenario::{Run, job},
        seed::{FarmSpec, GB, LayerSpec},
        workload::HARDWARE_TAGS,
    },
};

/// The criterion (Maestro's): planned frames lost to the commit race, at most.
pub const MAX_LOST: f64 = 0.10;

/// Capability tags on the farm.
const TAGS: usize = 120;

/// Share of the layers that run anywhere in the allocation.
const ANYWHERE: f64 = 0.3;

/// Runs the scenario at full scale (400 hosts, 30 s) or at the tests' small scale (40 hosts,
/// 8 s). At full scale Maestro's volume applies too: at least 80 clusters and 5,000 planned.
pub fn tagmax(full: bool) -> Result<Verdict, SimError> {
    let (hosts, jobs, window) = if full {
        (400, 400, Duration::from_secs(30))
    } else {
        (40, 60, Duration::from_secs(8))
    };
    let spec = farm(hosts, jobs, 0x7a9);
    let run = Run::start(
        &spec,
        |_| Ok(()),
        |c| c.scheduler.manual_tags_chunk_size = 1,
    )?;
    std::thread::sleep(window);
    let (booked, lost, _) = run.service().shared().stats.totals();
    let clusters = run.service().status().clusters.load().len();
    let violations = run.finish()?;
    let planned = booked + lost;
    let share = lost as f64 / planned.max(1) as f64;
    let volume = !full || (clusters >= 80 && planned >= 5_000);
    let figure = format!(
        "{lost} of {planned} planned frames lost the commit race ({:.2} %), {clusters} clusters, \
         {TAGS} tags, {} s",
        share * 100.0,
        window.as_secs()
    );
    Ok(Verdict::judge(
        "TAGMAX",
        planned > 0 && share <= MAX_LOST && volume,
        figure,
        Some("races lost ≤ 10 % of planned, ≥ 80 groups, ≥ 5,000 planned"),
        violations,
    ))
}

/// The farm: `hosts` 16-core hosts with one or two of the capability tags, `jobs` jobs of two
/// 40-frame layers (one core, 2 GB, 2–6 s each).
fn farm(hosts: usize, jobs: usize, seed: u64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let tags: Vec<String> = (0..TAGS).map(|i| format!("cap{i:03}")).collect();
    let mut spec = FarmSpec::single(hosts, 16, 64, (hosts * 16) as u32);
    for h in &mut spec.hosts {
        h.tags = HARDWARE_TAGS
            .iter()
            .map(|t| ((*t).to_owned(), TagType::Hardware))
            .collect();
        for _ in 0..rng.random_range(1..=2) {
            let t = tags[rng.random_range(0..TAGS)].clone();
            if !h.tags.iter().any(|(x, _)| *x == t) {
                h.tags.push((t, TagType::Manual));
            }
        }
    }
    spec.jobs = (0..jobs)
        .map(|j| {
            let layers = (0..2).map(|l| layer(&mut rng, l, &tags)).collect();
            job(
                0,
                &format!("tagmax{j:04}"),
                rng.random_range(1..=100),
                layers,
            )
        })
        .collect();
    spec
}

/// Layer `l`: run anywhere (the allocation's tag) or one to three capability tags.
fn layer(rng: &mut SmallRng, l: usize, tags: &[String]) -> LayerSpec {
    let asked = if rng.random_bool(ANYWHERE) {
        "general".to_owned()
    } else {
        let n = rng.random_range(1..=3);
        (0..n)
            .map(|_| tags[rng.random_range(0..tags.len())].as_str())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut layer = LayerSpec::simple(&format!("l{l}"), "1-40", &asked);
    layer.mem_kb = 2 * GB;
    layer.set_runtime_ms(rng.random_range(2_000..=6_000));
    layer
}
