//! Deterministic (seeded) farm shapes: the OpenCue stress suite's `drain` and `saturation`,
//! Maestro's `coldfill` farm, a `steady` farm kept full, and the demo farm.
//!
//! `scale` shrinks every count (hosts, jobs) proportionally, so tests run each workload tiny
//! and benchmarks run it full size.

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::seed::{AllocSpec, FarmSpec, GB, HostSpec, JobSpec, LayerSpec, ShowSpec, SubSpec};
use crate::model::{CORE, TagType};

/// The named workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// OpenCue stress drain: 1,200 hosts, 300 jobs × 4 layers × 5 frames, dry run.
    Drain,
    /// The booking-write ceiling on the drain farm: only the guarded writes, 50 frames a
    /// transaction, on 1–4 connections with disjoint host shares (`sim::bench::ceiling`).
    Ceiling,
    /// OpenCue stress saturation: 400 hosts, 150 jobs × 2 × 10, burst 150 cores, dry run.
    Saturation,
    /// Maestro's farm: 1,553 hosts (~57,000 cores) from idle to full, real gRPC launches.
    Coldfill,
    /// A farm kept full for a fixed time with completions flowing.
    Steady,
    /// Jobs submitted at seeded random moments onto a farm with room and a background load:
    /// how soon each one's first frame books (`sim::bench::newjob`).
    Newjob,
    /// Scenario: a whole-host frame submitted into a flood of one-core frames, with
    /// reservations on and off (`sim::scenario::wide`).
    Wide,
    /// Scenario: two shows with subscription sizes 2:1 on a saturated allocation.
    FairShare,
    /// Scenario: a priority-10 job beside a stream of priority-90 work, `balanced` and
    /// `priority`.
    Stream,
    /// Scenario: a CPU flood, then a GPU job, with and without room kept on GPU hosts.
    Gpu,
    /// Maestro's verification battery (`sim::verify`): one PASS/FAIL line per scenario;
    /// `--scenario NAME` runs one, `--scale` below 1 the tests' small shapes.
    Verify,
    /// The randomized adversarial soak (`sim::chaos`): three instances and a Cuebot
    /// stand-in racing under injected faults, invariants sampled every 100 ms; `--seed`
    /// replays a fault schedule, `--duration` is how long faults are injected.
    Chaos,
}

impl Workload {
    /// True for the scheduling-quality scenarios (`sim::scenario`), which run in-process.
    pub(crate) fn is_scenario(self) -> bool {
        matches!(
            self,
            Workload::Wide | Workload::FairShare | Workload::Stream | Workload::Gpu
        )
    }
}

fn scaled(n: usize, scale: f64) -> usize {
    ((n as f64 * scale).round() as usize).max(1)
}

fn allocs(n: usize) -> Vec<AllocSpec> {
    (0..n)
        .map(|i| AllocSpec {
            name: format!("local.alloc{i}"),
            tag: format!("alloc{i}"),
        })
        .collect()
}

/// One subscription of `size` and `burst` cores on each of the first `n` allocations.
fn subs_on(n: usize, size: u32, burst: u32) -> Vec<SubSpec> {
    (0..n).map(|alloc| SubSpec { alloc, size, burst }).collect()
}

/// `tags` followed by the allocations' tags: what a stress-suite layer may ask for.
fn with_alloc_tags(tags: &[String], allocs: &[AllocSpec]) -> Vec<String> {
    tags.iter()
        .cloned()
        .chain(allocs.iter().map(|a| a.tag.clone()))
        .collect()
}

/// A stress-suite layer: `cores` cores and `mem_gb` GB per frame, each running ten minutes.
fn stress_layer(name: &str, range: &str, tags: &str, cores: u32, mem_gb: u64) -> LayerSpec {
    let mut layer = LayerSpec::simple(name, range, tags);
    layer.cores_min = i64::from(cores * CORE);
    layer.mem_kb = mem_gb * GB;
    layer.set_runtime_ms(600_000);
    layer
}

/// The OpenCue stress suite's drain phase. `shows` > 1 spreads the jobs over several shows
/// (multi-instance runs need several shows to share out).
pub fn drain(scale: f64, shows: usize, seed: u64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let shows = shows.max(1);
    // Hosts are drawn before jobs: the seed's farm depends on that order.
    let (mut farm, all_tags) = tagged_farm(&mut rng, scaled(1200, scale), "drain", shows);
    farm.jobs = (0..scaled(300, scale))
        .map(|j| drain_job(&mut rng, j, shows, &all_tags))
        .collect();
    farm
}

/// A farm of `hosts` drain hosts on three allocations and `shows` managed shows named
/// `{prefix}N`, subscribed to all three, without jobs; and the tags its layers may ask for
/// (the eight manual tags, then the allocations' tags).
fn tagged_farm(
    rng: &mut SmallRng,
    hosts: usize,
    prefix: &str,
    shows: usize,
) -> (FarmSpec, Vec<String>) {
    let tags: Vec<String> = (0..8).map(|i| format!("manual{i}")).collect();
    let allocs = allocs(3);
    let hosts = (0..hosts).map(|i| drain_host(rng, i, &tags)).collect();
    let shows = (0..shows)
        .map(|s| ShowSpec {
            name: format!("{prefix}{s}"),
            managed: true,
            subs: subs_on(3, 90_000, 90_000),
            folder_max_cores: 0,
        })
        .collect();
    let all_tags = with_alloc_tags(&tags, &allocs);
    let farm = FarmSpec {
        facility: "local".into(),
        allocs,
        shows,
        hosts,
        jobs: Vec::new(),
        limits: Vec::new(),
    };
    (farm, all_tags)
}

/// The HARDWARE tags Cuebot gives every host RQD registers (its architecture and RQD's
/// version).
pub(crate) const HARDWARE_TAGS: [&str; 2] = ["64bit", "rqdv-1.0"];

/// Drain host `i`, tagged as Cuebot registers hosts: 16–128 cores, 32–256 GB, the HARDWARE
/// tags and up to two of the manual `tags` (the ALLOC and HOSTNAME tags come from seeding).
fn drain_host(rng: &mut SmallRng, i: usize, tags: &[String]) -> HostSpec {
    let cores = 16 + 8 * rng.random_range(0..15);
    let mem_gb = rng.random_range(32..=256);
    let mut h = HostSpec::linux(format!("drain{i:05}"), i % 3, cores, mem_gb);
    // Not drawn: the seed's farm stays the one it was before hosts carried them.
    h.tags.extend(
        HARDWARE_TAGS
            .iter()
            .map(|t| ((*t).to_owned(), TagType::Hardware)),
    );
    for _ in 0..rng.random_range(0..=2) {
        let t = tags[rng.random_range(0..tags.len())].clone();
        if !h.tags.iter().any(|(x, _)| *x == t) {
            h.tags.push((t, TagType::Manual));
        }
    }
    h
}

/// Drain job `j`: four five-frame layers, each asking for one to three of `all_tags`.
fn drain_job(rng: &mut SmallRng, j: usize, shows: usize, all_tags: &[String]) -> JobSpec {
    let priority = rng.random_range(1..=200);
    let layers = (0..4)
        .map(|l| {
            let n = rng.random_range(1..=3);
            let layer_tags: Vec<&str> = (0..n)
                .map(|_| all_tags[rng.random_range(0..all_tags.len())].as_str())
                .collect();
            let cores = [1u32, 2, 4, 8][rng.random_range(0..4)];
            let mem_gb = rng.random_range(2..=8);
            let tags = layer_tags.join(" | ");
            stress_layer(&format!("layer{l}"), "1-5", &tags, cores, mem_gb)
        })
        .collect();
    JobSpec {
        max_cores: 100_000,
        ..JobSpec::simple(j % shows, format!("drain-job{j:04}"), priority, layers)
    }
}

/// The `newjob` farm: the drain farm's hosts and tags (`scale` × 400 hosts, three shows on
/// three allocations) with a background load of `scale` × 6 capped jobs whose 2–8 s frames
/// keep booking and completing; the jobs the benchmark submits come from [`newjob_job`].
pub(crate) fn newjob(scale: f64, seed: u64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let (mut farm, all_tags) = tagged_farm(&mut rng, scaled(400, scale), "newjob", 3);
    farm.jobs = (0..scaled(6, scale))
        .map(|j| {
            let layers = (0..4)
                .map(|l| {
                    let name = format!("layer{l}");
                    newjob_layer(&mut rng, &name, "1-500", &all_tags, 2_000..=8_000)
                })
                .collect();
            JobSpec {
                // ~100 cores each: the background books and completes ~40 frames a second.
                max_cores: 100,
                ..JobSpec::simple(j % 3, format!("background{j:02}"), 100, layers)
            }
        })
        .collect();
    farm
}

/// Submitted job `n` of the `newjob` benchmark: one five-frame layer of 1–4 cores on one to
/// three of the farm's tags, running 5 s, in show `n % 3`, at a random priority.
pub(crate) fn newjob_job(rng: &mut SmallRng, n: usize, farm: &FarmSpec) -> JobSpec {
    let tags: Vec<String> = (0..8).map(|i| format!("manual{i}")).collect();
    let all_tags = with_alloc_tags(&tags, &farm.allocs);
    let layer = newjob_layer(rng, "render", "1-5", &all_tags, 5_000..=5_000);
    let priority = rng.random_range(1..=200);
    JobSpec::simple(n % 3, format!("submitted{n:03}"), priority, vec![layer])
}

/// A layer of `range` on one to three of `all_tags`, 1–4 cores and 2–4 GB per frame, each
/// frame running a time drawn from `runtime_ms`.
fn newjob_layer(
    rng: &mut SmallRng,
    name: &str,
    range: &str,
    all_tags: &[String],
    runtime_ms: std::ops::RangeInclusive<u64>,
) -> LayerSpec {
    let n = rng.random_range(1..=3);
    let tags: Vec<&str> = (0..n)
        .map(|_| all_tags[rng.random_range(0..all_tags.len())].as_str())
        .collect();
    let mut layer = LayerSpec::simple(name, range, &tags.join(" | "));
    layer.cores_min = i64::from(rng.random_range(1..=4u32) * CORE);
    layer.mem_kb = rng.random_range(2..=4) * GB;
    layer.set_runtime_ms(rng.random_range(runtime_ms));
    layer
}

/// The OpenCue stress suite's saturation phase: bursts of 150 cores per allocation, jobs
/// capped at 20 cores; bookings must stop exactly at the bursts.
pub fn saturation(scale: f64, seed: u64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let tags: Vec<String> = (0..4).map(|i| format!("manual{i}")).collect();
    let allocs = allocs(3);
    let hosts = (0..scaled(400, scale))
        .map(|i| {
            let cores = [8, 16, 32][rng.random_range(0..3)];
            let mem_gb = rng.random_range(32..=64);
            let mut h = HostSpec::linux(format!("sat{i:05}"), i % 3, cores, mem_gb);
            let tag = tags[rng.random_range(0..tags.len())].clone();
            h.tags.push((tag, TagType::Manual));
            h
        })
        .collect();
    let burst = (150.0 * scale.min(1.0)).round().max(8.0) as u32;
    let shows = vec![ShowSpec {
        name: "saturation".into(),
        managed: true,
        subs: subs_on(3, burst, burst),
        folder_max_cores: 0,
    }];
    let all_tags = with_alloc_tags(&tags, &allocs);
    let jobs = (0..scaled(150, scale))
        .map(|j| {
            let priority = rng.random_range(1..=200);
            let layers = (0..2)
                .map(|l| {
                    let t = all_tags[rng.random_range(0..all_tags.len())].clone();
                    let cores = [2u32, 4][rng.random_range(0..2)];
                    stress_layer(&format!("layer{l}"), "1-10", &t, cores, 2)
                })
                .collect();
            JobSpec {
                max_cores: 20,
                ..JobSpec::simple(0, format!("sat-job{j:04}"), priority, layers)
            }
        })
        .collect();
    FarmSpec {
        facility: "local".into(),
        allocs,
        shows,
        hosts,
        jobs,
        limits: Vec::new(),
    }
}

/// Maestro's simulator farm: 1,553 hosts, about 57,000 cores, and more than enough long
/// frames to fill it. `runtime_ms` is how long each frame runs.
pub(crate) fn coldfill(scale: f64, seed: u64, runtime_ms: u64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let allocs = allocs(3);
    // 16/32/48/64-core hosts weighted to average ~36.7 cores: 1,553 hosts ≈ 57,000 cores.
    let hosts: Vec<HostSpec> = (0..scaled(1553, scale))
        .map(|i| {
            let cores = match i % 10 {
                0..=2 => 16,
                3..=5 => 32,
                6..=7 => 48,
                _ => 64,
            };
            HostSpec::linux(format!("cf{i:05}"), i % 3, cores, u64::from(cores) * 4)
        })
        .collect();
    let total_cores: u32 = hosts.iter().map(|h| h.cores).sum();
    let shows = (0..3)
        .map(|s| ShowSpec {
            name: format!("show{s}"),
            managed: true,
            subs: subs_on(3, total_cores, total_cores),
            folder_max_cores: 0,
        })
        .collect();
    // Demand ≈ 1.6× the farm: 1–8 core frames.
    let jobs = allocation_jobs(&mut rng, scaled(480, scale), "cf-job", |_| runtime_ms);
    FarmSpec {
        facility: "local".into(),
        allocs,
        shows,
        hosts,
        jobs,
        limits: Vec::new(),
    }
}

/// `n` jobs over three shows, each with three 40-frame layers on the three allocation tags,
/// 1–8 cores and 2 GB per frame, running `runtime_ms` each.
fn allocation_jobs(
    rng: &mut SmallRng,
    n: usize,
    prefix: &str,
    mut runtime_ms: impl FnMut(&mut SmallRng) -> u64,
) -> Vec<JobSpec> {
    (0..n)
        .map(|j| {
            let priority = rng.random_range(1..=100);
            let layers = (0..3)
                .map(|l| {
                    let tag = format!("alloc{}", (j + l) % 3);
                    let mut layer = LayerSpec::simple(&format!("layer{l}"), "1-40", &tag);
                    layer.cores_min = i64::from([1u32, 2, 4, 8][rng.random_range(0..4)] * CORE);
                    layer.mem_kb = 2 * GB;
                    let runtime = runtime_ms(rng);
                    layer.set_runtime_ms(runtime);
                    layer
                })
                .collect();
            JobSpec::simple(j % 3, format!("{prefix}{j:05}"), priority, layers)
        })
        .collect()
}

/// A farm kept full: short frames (2–8 s) and enough of them to last `secs` seconds.
pub fn steady(scale: f64, seed: u64, secs: u64) -> FarmSpec {
    let mut farm = coldfill(scale * 0.25, seed, 5_000);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let cores: u32 = farm.hosts.iter().map(|h| h.cores).sum();
    // Frames needed ≈ cores / avg 3.75 cores per frame × secs / 5 s runtime, with margin.
    let frames_needed = (f64::from(cores) / 3.75 * (secs as f64 / 5.0) * 1.5) as usize;
    let per_job = 3 * 40;
    let jobs_n = frames_needed / per_job + 1;
    farm.jobs = allocation_jobs(&mut rng, jobs_n, "steady-job", |rng| {
        rng.random_range(2_000..=8_000)
    });
    farm
}

/// The demo farm: mixed host sizes with a few GPU hosts, three allocations, three shows with
/// subscriptions, and jobs of varied layer shapes, chunk sizes and runtimes (seconds, times
/// `runtime_scale`).
pub fn demo(hosts: usize, jobs: usize, seed: u64, runtime_scale: f64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let allocs = ["general", "desktop", "gpu"]
        .iter()
        .map(|t| AllocSpec {
            name: format!("local.{t}"),
            tag: (*t).to_owned(),
        })
        .collect();
    let host_specs: Vec<HostSpec> = (0..hosts.max(3)).map(demo_host).collect();
    let cores: u32 = host_specs.iter().map(|h| h.cores).sum();
    let jobs = (0..jobs)
        .map(|j| demo_job(&mut rng, j, runtime_scale))
        .collect();
    FarmSpec {
        facility: "local".into(),
        allocs,
        shows: demo_shows(cores),
        hosts: host_specs,
        jobs,
        limits: Vec::new(),
    }
}

/// Demo host `i`: one in ten a 4-GPU host, two desktops, three mid-size render hosts, four
/// large ones (some tagged `sim`).
fn demo_host(i: usize) -> HostSpec {
    match i % 10 {
        0 => {
            let mut h = HostSpec::linux(format!("gpu{i:03}"), 2, 32, 128);
            h.gpus = 4;
            h.gpu_mem_kb = 4 * 24 * GB;
            h
        }
        1 | 2 => HostSpec::linux(format!("desk{i:03}"), 1, 8, 32),
        3..=5 => HostSpec::linux(format!("render{i:03}"), 0, 16, 64),
        _ => {
            let mut h = HostSpec::linux(format!("render{i:03}"), 0, 32, 128);
            if i % 4 == 0 {
                h.tags.push(("sim".into(), TagType::Manual));
            }
            h
        }
    }
}

/// A subscription of `size` and `burst` cores to allocation `alloc`.
fn sub(alloc: usize, size: u32, burst: u32) -> SubSpec {
    SubSpec { alloc, size, burst }
}

/// The demo's three shows, subscribed in fractions of the farm's `cores`. Every show holds a
/// subscription to every allocation, so no allocation sits idle while one show's work that
/// could run there waits (the desktops and the GPU hosts' spare cores included).
fn demo_shows(cores: u32) -> Vec<ShowSpec> {
    let show = |name: &str, subs: Vec<SubSpec>| ShowSpec {
        name: name.into(),
        managed: true,
        subs,
        folder_max_cores: 0,
    };
    let (eighth, quarter) = (cores / 8, cores / 4);
    vec![
        show(
            "feature",
            vec![
                sub(0, cores / 2, cores),
                sub(1, eighth, quarter),
                sub(2, eighth, quarter),
            ],
        ),
        show(
            "episodic",
            vec![
                sub(0, quarter, cores / 2),
                sub(1, eighth, quarter),
                sub(2, eighth, quarter),
            ],
        ),
        show(
            "commercial",
            vec![
                sub(0, eighth, quarter),
                sub(1, eighth, quarter),
                sub(2, eighth, quarter),
            ],
        ),
    ]
}

/// Demo job `j`: one of four kinds (comp, lighting, FX, GPU) in show `j % 3`.
fn demo_job(rng: &mut SmallRng, j: usize, runtime_scale: f64) -> JobSpec {
    let show = j % 3;
    let kind = rng.random_range(0..4);
    let layers = demo_layers(rng, kind, runtime_scale);
    let name = format!(
        "{}-sq{:02}-sh{:03}-{}",
        ["feat", "epi", "com"][show],
        j % 7,
        j,
        ["comp", "lgt", "fx", "gpu"][kind]
    );
    // Drawn after the layers, as the seeds' farms were first drawn.
    let priority = rng.random_range(50..=150);
    JobSpec {
        env: vec![("SHOW_ROOT".into(), "/shows".into())],
        ..JobSpec::simple(show, name, priority, layers)
    }
}

/// The layers of a demo job of `kind`, runtimes drawn in milliseconds and scaled. CPU layers
/// that fit a GPU host's spare cores may run there (`gpu`), and light ones on the desktops
/// (`desktop`), as a studio lets them: GPU frames keep their room on GPU hosts by the
/// `gpu_host_*` rules, not by tags.
fn demo_layers(rng: &mut SmallRng, kind: usize, runtime_scale: f64) -> Vec<LayerSpec> {
    let scale = |ms: u64| ((ms as f64 * runtime_scale).round() as u64).max(1);
    match kind {
        // Comp: many light one-core frames, chunked.
        0 => {
            let mut l = LayerSpec::simple("comp", "1-120", "general | desktop | gpu");
            l.chunk = 5;
            l.threadable = false;
            l.mem_kb = 2 * GB;
            l.set_runtime_ms(scale(rng.random_range(2_000..6_000)));
            vec![l]
        }
        // Lighting: heavy threadable renders, then a light denoise.
        1 => {
            let mut r = LayerSpec::simple("beauty", "1001-1048", "general | gpu");
            r.cores_min = 8 * i64::from(CORE);
            r.mem_kb = 24 * GB;
            r.set_runtime_ms(scale(rng.random_range(8_000..20_000)));
            let mut d = LayerSpec::simple("denoise", "1001-1048", "general | desktop | gpu");
            d.cores_min = 2 * i64::from(CORE);
            d.mem_kb = 4 * GB;
            d.set_runtime_ms(scale(rng.random_range(2_000..5_000)));
            vec![r, d]
        }
        // FX sims on the tagged hosts.
        2 => {
            let mut s = LayerSpec::simple("sim", "1-24", "sim");
            s.cores_min = 16 * i64::from(CORE);
            s.mem_kb = 48 * GB;
            s.set_runtime_ms(scale(rng.random_range(10_000..25_000)));
            vec![s]
        }
        // GPU renders.
        _ => {
            let mut g = LayerSpec::simple("gpu_render", "1-36", "gpu");
            g.cores_min = 4 * i64::from(CORE);
            g.gpus = 1;
            g.gpu_mem_kb = 12 * GB;
            g.mem_kb = 16 * GB;
            g.set_runtime_ms(scale(rng.random_range(5_000..15_000)));
            vec![g]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_their_sources() {
        let d = drain(1.0, 1, 7);
        assert_eq!(d.hosts.len(), 1200);
        assert_eq!(d.jobs.len() * 4 * 5, 6000);
        let c = coldfill(1.0, 7, 1000);
        let cores: u32 = c.hosts.iter().map(|h| h.cores).sum();
        assert_eq!(c.hosts.len(), 1553);
        assert!((55_000..=59_000).contains(&cores), "{cores}");
        assert_eq!(saturation(1.0, 7).hosts.len(), 400);
    }

    #[test]
    fn drain_tags_hosts_and_layers_as_cuebot_does() {
        let d = drain(0.25, 1, 7);
        let manual = |h: &HostSpec| h.tags.iter().filter(|(_, k)| *k == TagType::Manual).count();
        for h in &d.hosts {
            let hardware: Vec<&str> = h
                .tags
                .iter()
                .filter(|(_, k)| *k == TagType::Hardware)
                .map(|(t, _)| t.as_str())
                .collect();
            assert_eq!(hardware, HARDWARE_TAGS, "{}", h.name);
            assert!(manual(h) <= 2, "{}: {:?}", h.name, h.tags);
        }
        // Every count of manual tags occurs on a farm this size.
        for n in 0..=2 {
            assert!(d.hosts.iter().any(|h| manual(h) == n), "no host with {n}");
        }
        let allowed: Vec<String> = (0..8)
            .map(|i| format!("manual{i}"))
            .chain((0..3).map(|i| format!("alloc{i}")))
            .collect();
        for layer in d.jobs.iter().flat_map(|j| &j.layers) {
            let tags: Vec<String> = crate::model::split_tags(&layer.tags).collect();
            assert!((1..=3).contains(&tags.len()), "{}", layer.tags);
            assert!(tags.iter().all(|t| allowed.contains(t)), "{}", layer.tags);
        }
    }

    #[test]
    fn seeded_shapes_are_deterministic() {
        let a = drain(0.1, 1, 42);
        let b = drain(0.1, 1, 42);
        assert_eq!(format!("{:?}", a.hosts), format!("{:?}", b.hosts));
    }
}
