//! Deterministic (seeded) farm shapes: the OpenCue stress suite's `drain` and `saturation`,
//! Maestro's `coldfill` farm, a `steady` farm kept full, and the demo farm.
//!
//! `scale` shrinks every count (hosts, jobs) proportionally, so tests run each workload tiny
//! and benchmarks run it full size.

use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::{
    fake_rqd::RUNTIME_ENV,
    seed::{AllocSpec, FarmSpec, GB, HostSpec, JobSpec, LayerSpec, ShowSpec, SubSpec},
};
use crate::model::{CORE, TagType, ThreadMode};

/// The named workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// OpenCue stress drain: 1,200 hosts, 300 jobs × 4 layers × 5 frames, dry run.
    Drain,
    /// OpenCue stress saturation: 400 hosts, 150 jobs × 2 × 10, burst 150 cores, dry run.
    Saturation,
    /// Maestro's farm: 1,553 hosts (~57,000 cores) from idle to full, real gRPC launches.
    Coldfill,
    /// A farm kept full for a fixed time with completions flowing.
    Steady,
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
    /// The randomized adversarial soak (`sim::chaos`): three instances and a Cuebot
    /// stand-in racing under injected faults, invariants sampled every 100 ms; `--seed`
    /// replays a fault schedule, `--duration` is how long faults are injected.
    Chaos,
}

impl Workload {
    /// True for the scheduling-quality scenarios (`sim::scenario`), which run in-process.
    pub fn is_scenario(self) -> bool {
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

fn host(name: String, alloc: usize, cores: u32, mem_gb: u64) -> HostSpec {
    HostSpec {
        name,
        alloc,
        cores,
        mem_kb: mem_gb * GB,
        gpus: 0,
        gpu_mem_kb: 0,
        os: "linux".into(),
        thread_mode: ThreadMode::Auto,
        tags: Vec::new(),
    }
}

fn runtime_env(layer: &mut LayerSpec, millis: u64) {
    layer.runtime_secs = millis as f64 / 1000.0;
    layer.env.push((RUNTIME_ENV.to_owned(), millis.to_string()));
}

/// The OpenCue stress suite's drain phase. `shows` > 1 spreads the jobs over several shows
/// (multi-instance runs need several shows to share out).
pub fn drain(scale: f64, shows: usize, seed: u64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let tags: Vec<String> = (0..8).map(|i| format!("manual{i}")).collect();
    let allocs = allocs(3);
    let hosts = (0..scaled(1200, scale))
        .map(|i| {
            let a = i % 3;
            let mut h = host(
                format!("drain{i:05}"),
                a,
                16 + 8 * rng.random_range(0..15),
                rng.random_range(32..=256),
            );
            for _ in 0..rng.random_range(0..=2) {
                let t = tags[rng.random_range(0..tags.len())].clone();
                if !h.tags.iter().any(|(x, _)| *x == t) {
                    h.tags.push((t, TagType::Manual));
                }
            }
            h
        })
        .collect();
    let shows = shows.max(1);
    let show_specs = (0..shows)
        .map(|s| ShowSpec {
            name: format!("drain{s}"),
            managed: true,
            subs: (0..3)
                .map(|a| SubSpec {
                    alloc: a,
                    size: 90_000,
                    burst: 90_000,
                })
                .collect(),
            folder_max_cores: 0,
        })
        .collect();
    let all_tags: Vec<String> = tags
        .iter()
        .cloned()
        .chain(allocs.iter().map(|a| a.tag.clone()))
        .collect();
    let jobs = (0..scaled(300, scale))
        .map(|j| JobSpec {
            show: j % shows,
            name: format!("drain-job{j:04}"),
            priority: rng.random_range(1..=200),
            max_cores: 100_000,
            min_cores: 1,
            max_gpus: 0,
            os: String::new(),
            env: Vec::new(),
            layers: (0..4)
                .map(|l| {
                    let n = rng.random_range(1..=3);
                    let layer_tags: Vec<&str> = (0..n)
                        .map(|_| all_tags[rng.random_range(0..all_tags.len())].as_str())
                        .collect();
                    let mut layer =
                        LayerSpec::simple(&format!("layer{l}"), "1-5", &layer_tags.join(" | "));
                    layer.cores_min = i64::from([1u32, 2, 4, 8][rng.random_range(0..4)] * CORE);
                    layer.mem_kb = rng.random_range(2..=8) * GB;
                    runtime_env(&mut layer, 600_000);
                    layer
                })
                .collect(),
        })
        .collect();
    FarmSpec {
        facility: "local".into(),
        allocs,
        shows: show_specs,
        hosts,
        jobs,
        limits: Vec::new(),
    }
}

/// The OpenCue stress suite's saturation phase: bursts of 150 cores per allocation, jobs
/// capped at 20 cores; bookings must stop exactly at the bursts.
pub fn saturation(scale: f64, seed: u64) -> FarmSpec {
    let mut rng = SmallRng::seed_from_u64(seed);
    let tags: Vec<String> = (0..4).map(|i| format!("manual{i}")).collect();
    let allocs = allocs(3);
    let hosts = (0..scaled(400, scale))
        .map(|i| {
            let mut h = host(
                format!("sat{i:05}"),
                i % 3,
                [8, 16, 32][rng.random_range(0..3)],
                rng.random_range(32..=64),
            );
            h.tags.push((
                tags[rng.random_range(0..tags.len())].clone(),
                TagType::Manual,
            ));
            h
        })
        .collect();
    let burst = (150.0 * scale.min(1.0)).round().max(8.0) as u32;
    let shows = vec![ShowSpec {
        name: "saturation".into(),
        managed: true,
        subs: (0..3)
            .map(|a| SubSpec {
                alloc: a,
                size: burst,
                burst,
            })
            .collect(),
        folder_max_cores: 0,
    }];
    let all_tags: Vec<String> = tags
        .iter()
        .cloned()
        .chain(allocs.iter().map(|a| a.tag.clone()))
        .collect();
    let jobs = (0..scaled(150, scale))
        .map(|j| JobSpec {
            show: 0,
            name: format!("sat-job{j:04}"),
            priority: rng.random_range(1..=200),
            max_cores: 20,
            min_cores: 1,
            max_gpus: 0,
            os: String::new(),
            env: Vec::new(),
            layers: (0..2)
                .map(|l| {
                    let t = all_tags[rng.random_range(0..all_tags.len())].clone();
                    let mut layer = LayerSpec::simple(&format!("layer{l}"), "1-10", &t);
                    layer.cores_min = i64::from([2u32, 4][rng.random_range(0..2)] * CORE);
                    layer.mem_kb = 2 * GB;
                    runtime_env(&mut layer, 600_000);
                    layer
                })
                .collect(),
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
pub fn coldfill(scale: f64, seed: u64, runtime_ms: u64) -> FarmSpec {
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
            host(format!("cf{i:05}"), i % 3, cores, u64::from(cores) * 4)
        })
        .collect();
    let total_cores: u32 = hosts.iter().map(|h| h.cores).sum();
    let shows = (0..3)
        .map(|s| ShowSpec {
            name: format!("show{s}"),
            managed: true,
            subs: (0..3)
                .map(|a| SubSpec {
                    alloc: a,
                    size: total_cores,
                    burst: total_cores,
                })
                .collect(),
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
        .map(|j| JobSpec {
            show: j % 3,
            name: format!("{prefix}{j:05}"),
            priority: rng.random_range(1..=100),
            max_cores: 0,
            min_cores: 1,
            max_gpus: 0,
            os: String::new(),
            env: Vec::new(),
            layers: (0..3)
                .map(|l| {
                    let mut layer = LayerSpec::simple(
                        &format!("layer{l}"),
                        "1-40",
                        &format!("alloc{}", (j + l) % 3),
                    );
                    layer.cores_min = i64::from([1u32, 2, 4, 8][rng.random_range(0..4)] * CORE);
                    layer.mem_kb = 2 * GB;
                    let runtime = runtime_ms(rng);
                    runtime_env(&mut layer, runtime);
                    layer
                })
                .collect(),
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
    let scale = |ms: u64| ((ms as f64 * runtime_scale).round() as u64).max(1);
    let allocs = vec![
        AllocSpec {
            name: "local.general".into(),
            tag: "general".into(),
        },
        AllocSpec {
            name: "local.desktop".into(),
            tag: "desktop".into(),
        },
        AllocSpec {
            name: "local.gpu".into(),
            tag: "gpu".into(),
        },
    ];
    let host_specs: Vec<HostSpec> = (0..hosts.max(3))
        .map(|i| match i % 10 {
            0 => {
                let mut h = host(format!("gpu{i:03}"), 2, 32, 128);
                h.gpus = 4;
                h.gpu_mem_kb = 4 * 24 * GB;
                h
            }
            1 | 2 => host(format!("desk{i:03}"), 1, 8, 32),
            3..=5 => host(format!("render{i:03}"), 0, 16, 64),
            _ => {
                let mut h = host(format!("render{i:03}"), 0, 32, 128);
                if i % 4 == 0 {
                    h.tags.push(("sim".into(), TagType::Manual));
                }
                h
            }
        })
        .collect();
    let cores: u32 = host_specs.iter().map(|h| h.cores).sum();
    let shows = vec![
        ShowSpec {
            name: "feature".into(),
            managed: true,
            subs: vec![
                SubSpec {
                    alloc: 0,
                    size: cores / 2,
                    burst: cores,
                },
                SubSpec {
                    alloc: 1,
                    size: cores / 8,
                    burst: cores / 4,
                },
                SubSpec {
                    alloc: 2,
                    size: cores / 8,
                    burst: cores / 4,
                },
            ],
            folder_max_cores: 0,
        },
        ShowSpec {
            name: "episodic".into(),
            managed: true,
            subs: vec![
                SubSpec {
                    alloc: 0,
                    size: cores / 4,
                    burst: cores / 2,
                },
                SubSpec {
                    alloc: 1,
                    size: cores / 8,
                    burst: cores / 4,
                },
            ],
            folder_max_cores: 0,
        },
        ShowSpec {
            name: "commercial".into(),
            managed: true,
            subs: vec![
                SubSpec {
                    alloc: 0,
                    size: cores / 8,
                    burst: cores / 4,
                },
                SubSpec {
                    alloc: 2,
                    size: cores / 8,
                    burst: cores / 4,
                },
            ],
            folder_max_cores: 0,
        },
    ];
    let jobs = (0..jobs)
        .map(|j| {
            let show = j % 3;
            let kind = rng.random_range(0..4);
            let layers = match kind {
                // Comp: many light one-core frames, chunked.
                0 => {
                    let mut l = LayerSpec::simple("comp", "1-120", "general | desktop");
                    l.chunk = 5;
                    l.threadable = false;
                    l.mem_kb = 2 * GB;
                    runtime_env(&mut l, scale(rng.random_range(2_000..6_000)));
                    vec![l]
                }
                // Lighting: heavy threadable renders, then a light denoise.
                1 => {
                    let mut r = LayerSpec::simple("beauty", "1001-1048", "general");
                    r.cores_min = 8 * i64::from(CORE);
                    r.mem_kb = 24 * GB;
                    runtime_env(&mut r, scale(rng.random_range(8_000..20_000)));
                    let mut d = LayerSpec::simple("denoise", "1001-1048", "general");
                    d.cores_min = 2 * i64::from(CORE);
                    d.mem_kb = 4 * GB;
                    runtime_env(&mut d, scale(rng.random_range(2_000..5_000)));
                    vec![r, d]
                }
                // FX sims on the tagged hosts.
                2 => {
                    let mut s = LayerSpec::simple("sim", "1-24", "sim");
                    s.cores_min = 16 * i64::from(CORE);
                    s.mem_kb = 48 * GB;
                    runtime_env(&mut s, scale(rng.random_range(10_000..25_000)));
                    vec![s]
                }
                // GPU renders.
                _ => {
                    let mut g = LayerSpec::simple("gpu_render", "1-36", "gpu");
                    g.cores_min = 4 * i64::from(CORE);
                    g.gpus = 1;
                    g.gpu_mem_kb = 12 * GB;
                    g.mem_kb = 16 * GB;
                    runtime_env(&mut g, scale(rng.random_range(5_000..15_000)));
                    vec![g]
                }
            };
            JobSpec {
                show,
                name: format!(
                    "{}-sq{:02}-sh{:03}-{}",
                    ["feat", "epi", "com"][show],
                    j % 7,
                    j,
                    ["comp", "lgt", "fx", "gpu"][kind]
                ),
                priority: rng.random_range(50..=150),
                max_cores: 0,
                min_cores: 1,
                max_gpus: 0,
                os: String::new(),
                env: vec![("SHOW_ROOT".into(), "/shows".into())],
                layers,
            }
        })
        .collect();
    FarmSpec {
        facility: "local".into(),
        allocs,
        shows,
        hosts: host_specs,
        jobs,
        limits: Vec::new(),
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
    fn seeded_shapes_are_deterministic() {
        let a = drain(0.1, 1, 42);
        let b = drain(0.1, 1, 42);
        assert_eq!(format!("{:?}", a.hosts), format!("{:?}", b.hosts));
    }
}
