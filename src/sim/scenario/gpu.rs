//! GPU protection under a CPU flood: more one-core CPU frames than the CPU hosts hold, so
//! they overflow onto the GPU hosts; then a GPU job arrives. With room kept per idle GPU
//! (`gpu_host_cores_per_gpu`, `gpu_host_mem_per_gpu_kb`) its frames start at once; with none
//! kept they wait for CPU frames on the GPU hosts to end, racing the flood for the cores.

use std::time::{Duration, Instant};

use super::{Run, flood_size, job, layer, pause, print_audit};
use crate::{
    model::CORE,
    sim::{
        SimError,
        seed::{FarmSpec, GB},
    },
};

/// The shape of the GPU scenario.
#[derive(Clone, Debug)]
pub struct GpuSpec {
    /// CPU-only hosts.
    pub cpu_hosts: usize,
    /// GPU hosts.
    pub gpu_hosts: usize,
    /// Cores per host (both kinds).
    pub cores: u32,
    /// GPUs per GPU host; the GPU job has one frame per GPU of the farm.
    pub gpus: u32,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// How long to wait for every GPU frame to start.
    pub limit: Duration,
}

impl GpuSpec {
    /// Test scale: 4 CPU + 2 GPU hosts × 8 cores, 2 GPUs each, 2 s frames.
    pub fn small() -> GpuSpec {
        GpuSpec {
            cpu_hosts: 4,
            gpu_hosts: 2,
            cores: 8,
            gpus: 2,
            runtime: Duration::from_secs(2),
            limit: Duration::from_secs(15),
        }
    }

    /// Bench scale: 100 CPU + 10 GPU hosts × 32 cores, 4 GPUs each, 20 s frames.
    pub fn full() -> GpuSpec {
        GpuSpec {
            cpu_hosts: 100,
            gpu_hosts: 10,
            cores: 32,
            gpus: 4,
            runtime: Duration::from_secs(20),
            limit: Duration::from_secs(60),
        }
    }

    fn farm(&self) -> FarmSpec {
        let hosts = self.cpu_hosts + self.gpu_hosts;
        let total = hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(hosts, self.cores, u64::from(self.cores) * 4, total);
        for h in farm.hosts.iter_mut().skip(self.cpu_hosts) {
            h.gpus = self.gpus;
            h.gpu_mem_kb = u64::from(self.gpus) * 16 * GB;
        }
        let secs = self.limit.as_secs_f64() + 60.0;
        let flood = layer(
            "flood",
            flood_size(f64::from(total), secs, self.runtime),
            self.runtime,
        );
        let frames = (self.gpu_hosts as u32 * self.gpus) as usize;
        let mut gpu = layer("gpu", frames, self.runtime * 5);
        gpu.gpus = 1;
        gpu.gpu_mem_kb = 8 * GB;
        gpu.cores_min = i64::from(2 * CORE);
        gpu.mem_kb = 4 * GB;
        farm.jobs = vec![
            job(0, "gpu", 90, vec![gpu]),
            job(0, "flood", 50, vec![flood]),
        ];
        farm
    }
}

/// What the GPU scenario saw.
#[derive(Clone, Debug)]
pub struct GpuOutcome {
    /// Cores kept per idle GPU.
    pub cores_per_gpu: u32,
    /// Centicores of CPU frames on GPU hosts when the GPU job arrived.
    pub cpu_on_gpu_hosts: i64,
    /// Seconds from submission until every GPU frame ran, if within the limit.
    pub all_started_after: Option<f64>,
    /// GPU frames started within the limit, of all.
    pub started: (i64, i64),
    /// Audit violations at the end.
    pub violations: Vec<String>,
}

/// Runs the GPU scenario keeping `cores_per_gpu` cores (and 4 GB) per idle GPU.
pub fn gpu_flood(spec: &GpuSpec, cores_per_gpu: u32) -> Result<GpuOutcome, SimError> {
    let mut run = Run::start(
        &spec.farm(),
        |c| pause(c, "gpu"),
        |c| {
            c.scheduler.gpu_host_cores_per_gpu = cores_per_gpu;
            c.scheduler.gpu_host_mem_per_gpu_kb = 4 * GB;
        },
    )?;
    // Full: every host has a CPU frame and the farm is busy up to the kept room.
    let hosts = (spec.cpu_hosts + spec.gpu_hosts) as f64 * f64::from(spec.cores);
    let kept = spec.gpu_hosts as f64 * f64::from(cores_per_gpu * spec.gpus);
    run.saturate(
        (hosts - kept) / hosts * 0.95,
        spec.cores,
        Duration::from_secs(120),
    )?;
    let cpu_on_gpu_hosts: i64 = run
        .client
        .query_one(
            "SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p
               JOIN host h ON h.pk_host = p.pk_host WHERE h.int_gpus > 0",
            &[],
        )?
        .get(0);
    run.submit("gpu")?;
    let submitted = Instant::now();
    let frames = (spec.gpu_hosts as u32 * spec.gpus) as i64;
    let mut all_started_after = None;
    let mut started = 0;
    while submitted.elapsed() < spec.limit {
        std::thread::sleep(Duration::from_millis(100));
        started = run.started("gpu")?;
        if started >= frames {
            all_started_after = Some(submitted.elapsed().as_secs_f64());
            break;
        }
    }
    let violations = run.finish()?;
    Ok(GpuOutcome {
        cores_per_gpu,
        cpu_on_gpu_hosts,
        all_started_after,
        started: (started, frames),
        violations,
    })
}

/// Prints an outcome the way `stagehand bench` does.
pub fn print_gpu(spec: &GpuSpec, o: &GpuOutcome) {
    println!(
        "gpu flood       : {} CPU + {} GPU hosts x {} cores ({} GPUs each), room kept {} cores per idle GPU",
        spec.cpu_hosts, spec.gpu_hosts, spec.cores, spec.gpus, o.cores_per_gpu
    );
    println!(
        "cpu on gpu hosts: {:.0} cores when the GPU job arrived",
        o.cpu_on_gpu_hosts as f64 / 100.0
    );
    match o.all_started_after {
        Some(t) => println!(
            "gpu frames      : all {} started after {t:.1}s",
            o.started.1
        ),
        None => println!(
            "gpu frames      : {} of {} started within {:.0}s",
            o.started.0,
            o.started.1,
            spec.limit.as_secs_f64()
        ),
    }
    print_audit(&o.violations);
}
