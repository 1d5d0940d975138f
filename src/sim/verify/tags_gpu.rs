//! TAGS_GPU: capability tags and a GPU slice fragment the farm. Hosts of one allocation carry
//! manual tags (`maya`, `nuke`, none) or GPUs (tag `gpu`); layers ask for one tag, for
//! either of two, for the allocation's tag (anywhere), or for GPUs (one, or two, per frame).
//! Sampled every 200 ms from the database, no proc may ever sit on a host without one of its
//! layer's tags, and no host's GPUs or GPU memory may be booked beyond what it has (by the
//! procs' sum, and by its idle columns); by the end every tag pool (every layer) has run
//! frames.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use super::Verdict;
use crate::{
    model::{CORE, TagType},
    sim::{
        SimError,
        scenario::{Run, flood_size, job, layer},
        seed::{FarmSpec, GB, LayerSpec},
    },
};

/// Procs on a host without any of their layer's tags.
const TAG_VIOLATIONS: &str = "SELECT count(*) FROM proc p JOIN layer l ON l.pk_layer = p.pk_layer
     WHERE NOT EXISTS (SELECT 1 FROM host_tag ht WHERE ht.pk_host = p.pk_host
                          AND ht.str_tag = ANY(string_to_array(replace(l.str_tags, ' ', ''), '|')))";

/// Hosts whose GPUs or GPU memory are booked beyond what they have.
const GPU_VIOLATIONS: &str = "SELECT count(*) FROM host h
     LEFT JOIN (SELECT pk_host, sum(int_gpus_reserved) AS gpus, sum(int_gpu_mem_reserved) AS gpu_mem
                  FROM proc GROUP BY pk_host) p ON p.pk_host = h.pk_host
     WHERE h.int_gpus_idle < 0 OR h.int_gpu_mem_idle < 0
        OR coalesce(p.gpus, 0) > h.int_gpus OR coalesce(p.gpu_mem, 0) > h.int_gpu_mem";

/// Layers (`job/layer`) that have started at least one frame.
const POOLS_RUN: &str = "SELECT DISTINCT j.str_name || '/' || l.str_name FROM frame f
     JOIN layer l ON l.pk_layer = f.pk_layer JOIN job j ON j.pk_job = f.pk_job
     WHERE f.str_state IN ('RUNNING', 'SUCCEEDED')";

/// The shape of the TAGS_GPU scenario.
#[derive(Clone, Debug)]
pub struct TagsGpuSpec {
    /// Hosts of each manual tag (`maya`, `nuke`) and untagged: `3 × per_tag` CPU hosts.
    pub per_tag: usize,
    /// Cores per CPU host.
    pub cores: u32,
    /// GPU hosts (twice the cores, `gpus` GPUs of 16 GB each).
    pub gpu_hosts: usize,
    /// GPUs per GPU host: odd, so a host running two-GPU frames keeps one for a one-GPU
    /// frame (with an even count the two pools would only share hosts by luck, and the
    /// narrower one starving the wider is the RESERVATIONS scenario's business).
    pub gpus: u32,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// How long the farm is sampled.
    pub window: Duration,
}

impl TagsGpuSpec {
    /// Test scale: 3 × 3 CPU hosts × 8 cores, 3 GPU hosts of 3 GPUs, 2 s frames, 10 s.
    pub fn small() -> TagsGpuSpec {
        TagsGpuSpec {
            per_tag: 3,
            cores: 8,
            gpu_hosts: 3,
            gpus: 3,
            runtime: Duration::from_secs(2),
            window: Duration::from_secs(10),
        }
    }

    /// Bench scale: 3 × 40 CPU hosts × 16 cores, 30 GPU hosts of 3 GPUs, 10 s frames, 60 s.
    pub fn full() -> TagsGpuSpec {
        TagsGpuSpec {
            per_tag: 40,
            cores: 16,
            gpu_hosts: 30,
            gpus: 3,
            runtime: Duration::from_secs(10),
            window: Duration::from_secs(60),
        }
    }

    fn farm(&self) -> FarmSpec {
        let cpu = 3 * self.per_tag;
        let total = cpu as u32 * self.cores + self.gpu_hosts as u32 * self.cores * 2;
        let mut farm = FarmSpec::single(
            cpu + self.gpu_hosts,
            self.cores,
            u64::from(self.cores) * 4,
            total,
        );
        for (i, h) in farm.hosts.iter_mut().enumerate() {
            let tag = match i / self.per_tag {
                0 => "maya",
                1 => "nuke",
                2 => continue,
                _ => {
                    h.cores = self.cores * 2;
                    h.mem_kb = u64::from(h.cores) * 4 * GB;
                    h.gpus = self.gpus;
                    h.gpu_mem_kb = u64::from(self.gpus) * 16 * GB;
                    "gpu"
                }
            };
            h.tags.push((tag.into(), TagType::Manual));
        }
        // Enough of everything to keep every pool busy through the window, and then some.
        let secs = self.window.as_secs_f64() + 30.0;
        let frames = flood_size(f64::from(total), secs, self.runtime) / 4;
        let tagged = |name: &str, tags: &str, cores: u32| {
            let mut l = layer(name, frames, self.runtime);
            l.tags = tags.into();
            l.cores_min = i64::from(cores * CORE);
            l
        };
        let gpu = |name: &str, gpus: u32| {
            let mut l = tagged(name, "gpu", 2);
            l.gpus = gpus;
            l.gpu_mem_kb = u64::from(gpus) * 8 * GB;
            l.mem_kb = 4 * GB;
            l
        };
        let one = |name: &str, l: LayerSpec| job(0, name, 50, vec![l]);
        // The two-GPU job goes first, so a GPU host it frees is its own again.
        let mut wide = one("gpu2", gpu("gpu2", 2));
        wide.priority = 60;
        farm.jobs = vec![
            one("maya", tagged("maya", "maya", 1)),
            one("nuke", tagged("nuke", "nuke", 2)),
            one("either", tagged("either", "maya | nuke", 1)),
            one("anywhere", tagged("anywhere", "general", 1)),
            one("gpu1", gpu("gpu1", 1)),
            wide,
        ];
        farm
    }
}

/// What the samples saw.
#[derive(Clone, Debug, Default)]
pub struct TagsGpuOutcome {
    /// Samples taken.
    pub samples: usize,
    /// Procs on a host without their tag, summed over the samples.
    pub tag_violations: i64,
    /// Hosts with GPUs or GPU memory over-booked, summed over the samples.
    pub gpu_violations: i64,
    /// Most GPUs booked at one sample, and the farm's GPUs.
    pub gpus_busy: (i64, i64),
    /// Pools (`job/layer`) that ran frames, of all.
    pub pools_run: (usize, usize),
    /// Pools that did not.
    pub idle_pools: Vec<String>,
}

/// Runs the scenario: samples the farm every 200 ms for the window.
pub fn tags_gpu(spec: &TagsGpuSpec) -> Result<(TagsGpuOutcome, Vec<String>), SimError> {
    let farm = spec.farm();
    let pools: BTreeSet<String> = farm
        .jobs
        .iter()
        .flat_map(|j| {
            j.layers
                .iter()
                .map(move |l| format!("{}/{}", j.name, l.name))
        })
        .collect();
    let mut run = Run::start(&farm, |_| Ok(()), |_| {})?;
    let mut o = TagsGpuOutcome {
        gpus_busy: (0, spec.gpu_hosts as i64 * i64::from(spec.gpus)),
        ..TagsGpuOutcome::default()
    };
    let started = Instant::now();
    while started.elapsed() < spec.window {
        std::thread::sleep(Duration::from_millis(200));
        o.samples += 1;
        o.tag_violations += run.client.query_one(TAG_VIOLATIONS, &[])?.get::<_, i64>(0);
        o.gpu_violations += run.client.query_one(GPU_VIOLATIONS, &[])?.get::<_, i64>(0);
        let busy: i64 = run
            .client
            .query_one(
                "SELECT coalesce(sum(int_gpus_reserved), 0)::bigint FROM proc",
                &[],
            )?
            .get(0);
        o.gpus_busy.0 = o.gpus_busy.0.max(busy);
    }
    let ran: BTreeSet<String> = run
        .client
        .query(POOLS_RUN, &[])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    o.idle_pools = pools.difference(&ran).cloned().collect();
    o.pools_run = (pools.len() - o.idle_pools.len(), pools.len());
    Ok((o, run.finish()?))
}

/// The battery's TAGS_GPU line.
pub fn verify(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        TagsGpuSpec::full()
    } else {
        TagsGpuSpec::small()
    };
    let (o, violations) = tags_gpu(&spec)?;
    Ok(Verdict::judge(
        "TAGS_GPU",
        holds(&o),
        figure(&spec, &o),
        None,
        violations,
    ))
}

/// The criterion: no tag or GPU violation at any sample, and every pool ran work.
pub fn holds(o: &TagsGpuOutcome) -> bool {
    o.samples > 0 && o.tag_violations == 0 && o.gpu_violations == 0 && o.idle_pools.is_empty()
}

/// The verdict's figure.
pub fn figure(spec: &TagsGpuSpec, o: &TagsGpuOutcome) -> String {
    let idle = if o.idle_pools.is_empty() {
        String::new()
    } else {
        format!(" (idle: {})", o.idle_pools.join(", "))
    };
    format!(
        "{} tag and {} GPU violations in {} samples (every 200 ms); {} of {} tag pools ran work{idle}; up to {} of {} GPUs busy; {} maya + {} nuke + {} plain hosts, {} GPU hosts",
        o.tag_violations,
        o.gpu_violations,
        o.samples,
        o.pools_run.0,
        o.pools_run.1,
        o.gpus_busy.0,
        o.gpus_busy.1,
        spec.per_tag,
        spec.per_tag,
        spec.per_tag,
        spec.gpu_hosts
    )
}
