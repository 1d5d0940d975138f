//! The chaos farm: three allocations (render, lite, GPU), managed and unmanaged shows
//! subscribed tightly enough that bursts bind, folder and job caps, GPU jobs capped in GPUs,
//! and two layer limits shared by managed and unmanaged shows, with short frames so frames
//! complete and re-book all through the run.

use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::{
    model::{CORE, TagType},
    sim::seed::{AllocSpec, FarmSpec, GB, HostSpec, JobSpec, LayerSpec, ShowSpec, SubSpec},
};

/// Shows the soak starts managed (stagehand books them) and unmanaged (the stand-in does).
pub(crate) const MANAGED: [&str; 4] = ["m0", "m1", "m2", "m3"];
/// Shows Cuebot (the stand-in) books.
pub(crate) const UNMANAGED: [&str; 2] = ["u0", "u1"];

fn hosts(n: usize) -> Vec<HostSpec> {
    (0..n)
        .map(|i| match i % 6 {
            0 => {
                let mut h = HostSpec::linux(format!("gpu{i:04}"), 2, 16, 64);
                h.gpus = 2;
                h.gpu_mem_kb = 2 * 16 * GB;
                h
            }
            1 | 2 => HostSpec::linux(format!("lite{i:04}"), 1, 8, 32),
            _ => {
                let mut h = HostSpec::linux(format!("render{i:04}"), 0, 16, 64);
                if i % 3 == 0 {
                    h.tags.push(("fast".into(), TagType::Manual));
                }
                h
            }
        })
        .collect()
}

/// Cores per allocation of `hosts`.
fn alloc_cores(hosts: &[HostSpec]) -> [u32; 3] {
    let mut c = [0u32; 3];
    for h in hosts {
        c[h.alloc] += h.cores;
    }
    c
}

fn shows(cores: [u32; 3]) -> Vec<ShowSpec> {
    let names = MANAGED.iter().chain(UNMANAGED.iter());
    names
        .enumerate()
        .map(|(i, name)| {
            // Six shows at half an allocation each: the bursts, not the hosts, bind.
            let mut subs: Vec<SubSpec> = (0..2)
                .map(|a| SubSpec {
                    alloc: a,
                    size: (cores[a] / 4).max(1),
                    burst: (cores[a] / 2).max(2),
                })
                .collect();
            if i % 2 == 0 {
                subs.push(SubSpec {
                    alloc: 2,
                    size: (cores[2] / 4).max(1),
                    burst: (cores[2] / 2).max(2),
                });
            }
            ShowSpec {
                name: (*name).to_owned(),
                managed: MANAGED.contains(name),
                subs,
                // One managed and one unmanaged show under a folder cap.
                folder_max_cores: if *name == "m1" || *name == "u1" {
                    (cores[0] / 5).max(4) as i32
                } else {
                    0
                },
            }
        })
        .collect()
}

fn layer(name: &str, frames: usize, tags: &str, cores: u32, rng: &mut StdRng) -> LayerSpec {
    let mut l = LayerSpec::simple(name, &format!("1-{}", frames.max(1)), tags);
    l.cores_min = i64::from(cores * CORE);
    l.mem_kb = rng.random_range(1..=4) * GB;
    l.set_runtime_ms(rng.random_range(800..=3_000));
    l
}

/// The jobs of show `s`: renders (one job capped in cores), a lite job under a layer limit
/// and, on shows subscribed to the GPU allocation, a GPU job capped in GPUs.
fn jobs_of(s: usize, frames: usize, rng: &mut StdRng) -> Vec<JobSpec> {
    let limit = s % 2; // shared across managed and unmanaged shows
    let job = |name: String, max_cores: i32, max_gpus: i32, layers: Vec<LayerSpec>| JobSpec {
        max_cores,
        max_gpus,
        ..JobSpec::simple(s, name, 100, layers)
    };
    let mut out = vec![
        job(
            format!("s{s}-render"),
            12,
            0,
            vec![
                layer("beauty", frames, "render", 2, rng),
                layer("fastpass", frames, "fast", 1, rng),
            ],
        ),
        job(
            format!("s{s}-bulk"),
            0,
            0,
            vec![layer("bulk", frames, "render | lite", 1, rng)],
        ),
    ];
    let mut licensed = layer("licensed", frames, "lite", 1, rng);
    licensed.limits = vec![limit];
    out.push(job(format!("s{s}-lic"), 0, 0, vec![licensed]));
    if s % 2 == 0 {
        let mut g = layer("gpu", frames, "gpu", 2, rng);
        g.gpus = 1;
        g.gpu_mem_kb = 4 * GB;
        out.push(job(format!("s{s}-gpu"), 0, 2, vec![g]));
    }
    out
}

/// The farm at `scale` (1.0: 120 hosts), with frames enough to keep it busy for `secs`.
pub(crate) fn farm(scale: f64, seed: u64, secs: u64) -> FarmSpec {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xC4A0_5EED);
    let n = ((120.0 * scale).round() as usize).max(12);
    let hosts = hosts(n);
    let cores = alloc_cores(&hosts);
    let shows = shows(cores);
    // Running frames ≈ cores / 1.5; each runs ≈ 2 s; 6 shows × ~4 layers share the demand.
    let total: u32 = cores.iter().sum();
    let needed = (f64::from(total) / 1.5 * (secs.max(10) as f64 / 2.0) * 1.5) as usize;
    let per_layer = (needed / (shows.len() * 4)).clamp(20, 8_000);
    let jobs = (0..shows.len())
        .flat_map(|s| jobs_of(s, per_layer, &mut rng))
        .collect();
    let limit_max = |base: f64| ((base * scale).round() as i32).max(3);
    FarmSpec {
        facility: "local".into(),
        allocs: ["render", "lite", "gpu"]
            .iter()
            .map(|t| AllocSpec {
                name: format!("local.{t}"),
                tag: (*t).to_owned(),
            })
            .collect(),
        shows,
        hosts,
        jobs,
        limits: vec![
            ("license_a".into(), limit_max(24.0)),
            ("license_b".into(), limit_max(16.0)),
        ],
    }
}
