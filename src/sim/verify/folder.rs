//! FOLDER: a show whose folder has `folder_resource.int_max_cores` well below the farm's
//! cores, with a deep backlog of one- and two-core frames in several jobs, so the folder's
//! cap is all that holds them back. Sampled every 50 ms from the database, the cores its
//! jobs' procs hold must never be above the cap, and must sit at or near it (within 10 %)
//! most of the time once they reached it (≥ 80 % of the samples): a cap that holds because
//! the folder is starved would be a failure too. Cores a finished frame gives back count
//! toward the folder again only when the cap counters re-read the database
//! (`[accounting] recompute_interval`), so the folder runs a little below its cap while its
//! frames turn over; the frames run long against that, as renders do.

use std::time::Duration;

use super::{CapWatch, Verdict};
use crate::{
    model::CORE,
    sim::{
        SimError,
        scenario::{flood_size, job, layer},
        seed::FarmSpec,
    },
};

/// The share of samples (once saturated) that must be within 10 % of the cap.
pub const NEAR_CAP: f64 = 0.8;

/// Cores held by procs of jobs in the capped folder, in centicores.
const FOLDER_CORES: &str = "SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p
       JOIN job j ON j.pk_job = p.pk_job
       JOIN folder_resource fr ON fr.pk_folder = j.pk_folder WHERE fr.int_max_cores > 0";

/// The shape of the FOLDER scenario.
#[derive(Clone, Debug)]
pub struct FolderSpec {
    /// Hosts.
    pub hosts: usize,
    /// Cores per host.
    pub cores: u32,
    /// The folder's `int_max_cores`, in cores.
    pub max_cores: u32,
    /// Jobs in the folder.
    pub jobs: usize,
    /// Mean run time of every frame (±25 % jitter).
    pub runtime: Duration,
    /// How long the folder is sampled.
    pub window: Duration,
}

impl FolderSpec {
    /// Test scale: 8 hosts × 8 cores, a 40-core folder, 4 jobs, 10 s frames, sampled 20 s.
    pub fn small() -> FolderSpec {
        FolderSpec {
            hosts: 8,
            cores: 8,
            max_cores: 40,
            jobs: 4,
            runtime: Duration::from_secs(10),
            window: Duration::from_secs(20),
        }
    }

    /// Bench scale: 20 hosts × 16 cores (320 cores), a 200-core folder, 10 jobs, 60 s
    /// frames, sampled 180 s (three turnovers of the folder).
    pub fn full() -> FolderSpec {
        FolderSpec {
            hosts: 20,
            cores: 16,
            max_cores: 200,
            jobs: 10,
            runtime: Duration::from_secs(60),
            window: Duration::from_secs(180),
        }
    }

    /// Cores within which a sample counts as near the cap: 10 % of it, at least one frame.
    pub fn near(&self) -> u32 {
        (self.max_cores / 10).max(2)
    }

    fn farm(&self) -> FarmSpec {
        let cores = self.hosts as u32 * self.cores;
        let mut farm = FarmSpec::single(self.hosts, self.cores, u64::from(self.cores) * 4, cores);
        farm.shows[0].folder_max_cores = self.max_cores as i32;
        // The cap's worth of cores turning over through the window, ten times over.
        let secs = self.window.as_secs_f64() + 30.0;
        let frames = flood_size(f64::from(self.max_cores), secs, self.runtime) * 10 / self.jobs;
        farm.jobs = (0..self.jobs)
            .map(|j| {
                let mut one = layer("one", frames, self.runtime);
                one.threadable = false;
                let mut two = layer("two", frames / 2, self.runtime);
                two.cores_min = i64::from(2 * CORE);
                two.threadable = false;
                job(0, &format!("folder{j:02}"), 50, vec![one, two])
            })
            .collect();
        farm
    }
}

/// Runs the FOLDER scenario: the backlog is released at once; the folder's cores are
/// sampled every 50 ms for the window.
pub fn folder(spec: &FolderSpec) -> Result<(CapWatch, Vec<String>), SimError> {
    let cap = i64::from(spec.max_cores * CORE);
    let near = i64::from(spec.near() * CORE);
    CapWatch::run(&spec.farm(), FOLDER_CORES, cap, near, spec.window)
}

/// The battery's FOLDER line.
pub fn verify(full: bool) -> Result<Verdict, SimError> {
    let spec = if full {
        FolderSpec::full()
    } else {
        FolderSpec::small()
    };
    let (w, violations) = folder(&spec)?;
    Ok(Verdict::judge(
        "FOLDER",
        holds(&spec, &w),
        figure(&spec, &w),
        None,
        violations,
    ))
}

/// The criterion: never above the cap, reached (within 10 %), and near it in ≥ 80 % of
/// the samples since.
pub fn holds(spec: &FolderSpec, w: &CapWatch) -> bool {
    w.max <= i64::from(spec.max_cores * CORE) && w.saturated > 0 && w.near_cap_share() >= NEAR_CAP
}

/// The verdict's figure, in cores.
pub fn figure(spec: &FolderSpec, w: &CapWatch) -> String {
    let c = f64::from(CORE);
    format!(
        "folder max {} cores: max {:.0} held in {} samples (every 50 ms); within {} cores of the cap in {:.1} % of {} samples once reached (≥ {:.0} %), at it in {:.1} %, mean {:.1}; {} jobs on {} cores, {:.0}s frames",
        spec.max_cores,
        w.max as f64 / c,
        w.samples,
        spec.near(),
        w.near_cap_share() * 100.0,
        w.saturated,
        NEAR_CAP * 100.0,
        w.at_cap_share() * 100.0,
        w.mean / c,
        spec.jobs,
        spec.hosts as u32 * spec.cores,
        spec.runtime.as_secs_f64()
    )
}
