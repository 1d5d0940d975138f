//! Seeding farms in one call: facilities, shows, allocations with tags, subscriptions,
//! folders with `folder_resource`, departments and `point`, hosts with `host_stat` and
//! `host_tag`, jobs with layers, frames, envs and limits — Cuebot-shaped rows, in Cuebot's
//! units (cores ×100, KB).
//!
//! Dependencies go in after the farm ([`seed_depends`]), as Cuebot adds them to launched jobs.
//!
//! Rows Cuebot's own triggers create on insert (`job_stat`, `job_resource`, `layer_stat`,
//! `layer_resource`, `folder_resource`, histories) are left to those triggers and then
//! updated, as Cuebot's job launcher does; frame counts in `layer_stat`/`job_stat` are set
//! explicitly because Cuebot sets them from Java, not from a trigger. Everything goes in with
//! multi-row `unnest` inserts in one transaction, so a 1,500-host farm seeds in a second.

use uuid::Uuid;

use crate::model::{CORE, TagType, ThreadMode};

mod depends;
mod insert;

pub use depends::{DependSpec, DependTarget, frame_by_frame, seed_depends};
pub use insert::{analyze, seed, submit};

/// KB in one GiB (Cuebot's memory unit is KB).
pub const GB: u64 = 1024 * 1024;

fn key() -> String {
    Uuid::new_v4().to_string()
}

/// An allocation and its tag.
#[derive(Clone, Debug)]
pub struct AllocSpec {
    /// `alloc.str_name` (Cuebot names them `facility.name`).
    pub name: String,
    /// `alloc.str_tag`.
    pub tag: String,
}

/// A show's subscription to an allocation, in cores.
#[derive(Clone, Debug)]
pub struct SubSpec {
    /// Index into [`FarmSpec::allocs`].
    pub alloc: usize,
    /// Size in cores.
    pub size: u32,
    /// Burst in cores.
    pub burst: u32,
}

/// A show.
#[derive(Clone, Debug)]
pub struct ShowSpec {
    /// `show.str_name`.
    pub name: String,
    /// `show.b_scheduler_managed`.
    pub managed: bool,
    /// Subscriptions.
    pub subs: Vec<SubSpec>,
    /// Root folder max cores (≤ 0 unlimited).
    pub folder_max_cores: i32,
}

/// A host.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// `host.str_name`.
    pub name: String,
    /// Index into [`FarmSpec::allocs`].
    pub alloc: usize,
    /// Whole cores.
    pub cores: u32,
    /// Memory in KB.
    pub mem_kb: u64,
    /// GPUs.
    pub gpus: u32,
    /// GPU memory in KB.
    pub gpu_mem_kb: u64,
    /// `host_stat.str_os`.
    pub os: String,
    /// `host.int_thread_mode`.
    pub thread_mode: ThreadMode,
    /// Extra tags besides the allocation's: (tag, type).
    pub tags: Vec<(String, TagType)>,
}

impl HostSpec {
    /// An open Linux host of `cores` cores and `mem_gb` GB in allocation `alloc`, no GPUs,
    /// `Auto` thread mode, no tags beyond the allocation's.
    pub fn linux(name: String, alloc: usize, cores: u32, mem_gb: u64) -> HostSpec {
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
}

/// A layer.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// `layer.str_name`.
    pub name: String,
    /// `layer.str_cmd`.
    pub command: String,
    /// `layer.str_range` (OpenCue frame-set syntax).
    pub range: String,
    /// `layer.int_chunk_size`.
    pub chunk: u32,
    /// `layer.int_cores_min` in centicores (0 whole host, < 0 all but N).
    pub cores_min: i64,
    /// `layer.int_cores_max` in centicores (0 unlimited).
    pub cores_max: i64,
    /// `layer.int_mem_min` in KB.
    pub mem_kb: u64,
    /// `layer.int_gpus_min`.
    pub gpus: u32,
    /// `layer.int_gpu_mem_min` in KB.
    pub gpu_mem_kb: u64,
    /// `layer.b_threadable`.
    pub threadable: bool,
    /// `layer.str_tags` (`|`-separated).
    pub tags: String,
    /// `layer.str_services`.
    pub services: String,
    /// `layer_env` rows.
    pub env: Vec<(String, String)>,
    /// Indices into [`FarmSpec::limits`].
    pub limits: Vec<usize>,
    /// Seconds the simulator runs each frame of this layer (mean).
    pub runtime_secs: f64,
}

impl LayerSpec {
    /// A one-core, 1 GB, threadable render layer over `range` with `tags`.
    pub fn simple(name: &str, range: &str, tags: &str) -> LayerSpec {
        LayerSpec {
            name: name.to_owned(),
            command: format!("/shots/bin/render -f #FRAME_START#-#FRAME_END# -l {name}"),
            range: range.to_owned(),
            chunk: 1,
            cores_min: i64::from(CORE),
            cores_max: 0,
            mem_kb: GB,
            gpus: 0,
            gpu_mem_kb: 0,
            threadable: true,
            tags: tags.to_owned(),
            services: "default".to_owned(),
            env: Vec::new(),
            limits: Vec::new(),
            runtime_secs: 5.0,
        }
    }

    /// Sets how long each frame runs, `millis`, both as the simulator's mean and in the
    /// environment the fake RQD reads it from (it never sees the spec).
    pub(crate) fn set_runtime_ms(&mut self, millis: u64) {
        self.runtime_secs = millis as f64 / 1000.0;
        self.env.push((
            crate::sim::fake_rqd::RUNTIME_ENV.to_owned(),
            millis.to_string(),
        ));
    }
}

/// `job_resource.int_max_cores` (centicores) of a seeded job given no maximum: 100,000 cores,
/// more than any simulated farm has. Cuebot's dispatch reads every job maximum as a cap (0
/// holds the job), so "no maximum" is a large one, as a pipeline that wants none sets it.
pub const UNCAPPED_JOB_CORES: i32 = 10_000_000;

/// `job_resource.int_max_gpus` of a seeded job given no maximum (see [`UNCAPPED_JOB_CORES`]).
pub const UNCAPPED_JOB_GPUS: i32 = 10_000;

/// A job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Index into [`FarmSpec::shows`].
    pub show: usize,
    /// `job.str_name`.
    pub name: String,
    /// `job_resource.int_priority`.
    pub priority: i32,
    /// `job_resource.int_max_cores` in cores (≤ 0: [`UNCAPPED_JOB_CORES`]).
    pub max_cores: i32,
    /// `job_resource.int_min_cores` in cores.
    pub min_cores: i32,
    /// `job_resource.int_max_gpus` (≤ 0: [`UNCAPPED_JOB_GPUS`]).
    pub max_gpus: i32,
    /// `job.str_os` (empty = any).
    pub os: String,
    /// `job_env` rows.
    pub env: Vec<(String, String)>,
    /// Layers in dispatch order.
    pub layers: Vec<LayerSpec>,
}

impl JobSpec {
    /// A job of `layers` in show `show`: no core or GPU cap, a minimum of one core, any OS,
    /// no environment.
    pub fn simple(show: usize, name: String, priority: i32, layers: Vec<LayerSpec>) -> JobSpec {
        JobSpec {
            show,
            name,
            priority,
            max_cores: 0,
            min_cores: 1,
            max_gpus: 0,
            os: String::new(),
            env: Vec::new(),
            layers,
        }
    }
}

/// A whole farm.
#[derive(Clone, Debug, Default)]
pub struct FarmSpec {
    /// `facility.str_name`.
    pub facility: String,
    /// Allocations.
    pub allocs: Vec<AllocSpec>,
    /// Shows.
    pub shows: Vec<ShowSpec>,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// Jobs.
    pub jobs: Vec<JobSpec>,
    /// Limits: (name, max running frames).
    pub limits: Vec<(String, i32)>,
}

impl FarmSpec {
    /// One show on one allocation (tag `general`) of `hosts` equal Linux hosts, subscribed
    /// with size and burst `cores`; no jobs yet.
    pub fn single(hosts: usize, host_cores: u32, host_mem_gb: u64, cores: u32) -> FarmSpec {
        FarmSpec {
            facility: "local".into(),
            allocs: vec![AllocSpec {
                name: "local.general".into(),
                tag: "general".into(),
            }],
            shows: vec![ShowSpec {
                name: "testshow".into(),
                managed: true,
                subs: vec![SubSpec {
                    alloc: 0,
                    size: cores,
                    burst: cores,
                }],
                folder_max_cores: 0,
            }],
            hosts: (0..hosts)
                .map(|i| HostSpec::linux(format!("host{i:03}"), 0, host_cores, host_mem_gb))
                .collect(),
            jobs: Vec::new(),
            limits: Vec::new(),
        }
    }
}

/// Keys of what was seeded, by spec index.
#[derive(Clone, Debug, Default)]
pub struct Seeded {
    /// `pk_facility`.
    pub facility: String,
    /// `pk_dept`.
    pub dept: String,
    /// `pk_alloc` per alloc.
    pub allocs: Vec<String>,
    /// `pk_show` per show.
    pub shows: Vec<String>,
    /// Root `pk_folder` per show.
    pub folders: Vec<String>,
    /// `pk_host` per host.
    pub hosts: Vec<String>,
    /// `pk_job` per job.
    pub jobs: Vec<String>,
    /// `pk_layer` per job, per layer.
    pub layers: Vec<Vec<String>>,
    /// `pk_limit_record` per limit.
    pub limits: Vec<String>,
    /// Total frames seeded.
    pub frames: usize,
}

/// Cuebot's frame name: the zero-padded frame number and the layer name, `0001-render`.
pub fn frame_name(number: i32, layer: &str) -> String {
    format!("{number:04}-{layer}")
}
