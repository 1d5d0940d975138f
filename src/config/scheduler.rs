//! `[scheduler]`: which shows and clusters, and how the worker threads pace themselves.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    ConfigError,
    check::{invalid, within},
    duration,
};
use crate::index::{Locality, Strategy};

/// The fewest frames a split batch's part holds: below it, a transaction's fixed cost (its
/// guards' statements) outweighs what running beside another batch gains.
pub const MIN_SPLIT: usize = 50;

/// `[scheduler]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Booking worker threads. Cold.
    pub worker_threads: usize,
    /// Only book in this facility (`facility.str_name`); empty means every facility.
    pub facility: String,
    /// Host tags never turned into clusters.
    pub ignore_tags: Vec<String>,
    /// How often the cluster set is reloaded from the database.
    #[serde(with = "duration")]
    pub cluster_reload_interval: Duration,
    /// How often the cheap "which clusters have waiting work" scan runs.
    #[serde(with = "duration")]
    pub active_scan_interval: Duration,
    /// How often a cheap probe of pending jobs looks for new work between active scans
    /// (a job submitted, unpaused, frames become waiting), running the scan at once when it
    /// finds some: a new job's first frame waits for this, not for the scan interval. 0 turns
    /// the probe off.
    #[serde(with = "duration")]
    pub new_work_probe_interval: Duration,
    /// Sleep of a cluster whose pass found no job.
    #[serde(with = "duration")]
    pub empty_sleep: Duration,
    /// Sleep of a cluster whose pass found jobs but booked nothing.
    #[serde(with = "duration")]
    pub saturated_sleep: Duration,
    /// Sleep of a cluster whose pass failed (database error).
    #[serde(with = "duration")]
    pub error_sleep: Duration,
    /// Jobs considered per cluster pass.
    pub max_jobs_per_pass: u32,
    /// WAITING frames fetched per layer per pass.
    pub frames_per_layer: u32,
    /// Most frames committed in one booking transaction.
    pub batch_size: usize,
    /// Guarded batches committed at once against the database server, divided among the
    /// live instances (rounded down, at least one); with several live instances a batch
    /// waits for a free slot of its instance's share before its transaction begins. While no
    /// other batch of the instance is in flight, a pass splits its batch by job over its
    /// slots (at least [`MIN_SPLIT`] frames each), so a lone busy cluster still uses several
    /// PostgreSQL cores. Size it to the database server's cores.
    pub batches_in_flight: usize,
    /// MANUAL and HARDWARE tags per cluster.
    pub manual_tags_chunk_size: usize,
    /// HOSTNAME tags per cluster.
    pub hostname_tags_chunk_size: usize,
    /// Services (`layer.str_services` entries) whose frames take every idle core of a host.
    pub selfish_services: Vec<String>,
    /// When a frame would leave at most this much memory (KB) idle on an AUTO or VARIABLE
    /// host, it takes every idle core instead of stranding them.
    pub memory_stranded_threshold_kb: u64,
    /// A frame without GPUs on a GPU host (only when no other host fits) leaves this many
    /// cores idle per idle GPU, for GPU frames arriving later; 0 keeps none.
    pub gpu_host_cores_per_gpu: u32,
    /// Likewise memory (KB) per idle GPU.
    pub gpu_host_mem_per_gpu_kb: u64,
    /// Written to `proc.int_mem_used` at booking (KB), as Cuebot does.
    pub mem_reserved_min_kb: u64,
    /// Exit statuses that, like Cuebot's own (299, 301, …), do not count as a retry when the
    /// frame books again: the statuses of Cuebot's `dispatcher.layer_delay.rules` (e.g. 330
    /// for a license shortage), which Cuebot requeues without spending a retry.
    pub no_retry_exit_statuses: Vec<i64>,
    /// Host choice for a frame.
    pub placement: Strategy,
    /// Locality: among the hosts that fit, prefer those warm for the frame's layer or job.
    pub locality: Locality,
    /// Job order within a cluster pass.
    pub job_order: JobOrder,
}

/// How jobs of a show are ordered in a pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOrder {
    /// Strictly by `job_resource.int_priority`, oldest first among equals (OpenCue's scheduler).
    #[default]
    Priority,
    /// Oldest job first.
    Fifo,
    /// Cuebot's BALANCED: priority, plus up to 100 for a job below its minimum cores, plus one
    /// per day of age — low-priority work keeps a share and never starves.
    Balanced,
    /// Priority as a rate: the jobs of a pass are drawn by a weighted lottery
    /// (Efraimidis–Spirakis, `random()^(1/priority)`) and share the pass's frames in
    /// proportion to their priorities, so a job of priority 20 books about twice the frames
    /// of one of priority 10 beside it and every job keeps a nonzero share.
    Proportional,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            worker_threads: 4,
            facility: String::new(),
            ignore_tags: Vec::new(),
            cluster_reload_interval: Duration::from_secs(60),
            active_scan_interval: Duration::from_secs(2),
            new_work_probe_interval: Duration::from_millis(100),
            empty_sleep: Duration::from_secs(30),
            saturated_sleep: Duration::from_secs(3),
            error_sleep: Duration::from_secs(5),
            max_jobs_per_pass: 20,
            frames_per_layer: 50,
            batch_size: 200,
            batches_in_flight: 4,
            manual_tags_chunk_size: 50,
            hostname_tags_chunk_size: 50,
            selfish_services: Vec::new(),
            memory_stranded_threshold_kb: 2 * 1024 * 1024,
            gpu_host_cores_per_gpu: 2,
            gpu_host_mem_per_gpu_kb: 8 * 1024 * 1024,
            mem_reserved_min_kb: 250 * 1024,
            no_retry_exit_statuses: Vec::new(),
            placement: Strategy::default(),
            locality: Locality::default(),
            job_order: JobOrder::default(),
        }
    }
}

impl SchedulerConfig {
    /// The section's rules: every count at least 1, and a valid placement strategy.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        within("scheduler.worker_threads", self.worker_threads, 1..=256)?;
        for (key, value) in [
            (
                "scheduler.max_jobs_per_pass",
                self.max_jobs_per_pass as usize,
            ),
            ("scheduler.frames_per_layer", self.frames_per_layer as usize),
            ("scheduler.batch_size", self.batch_size),
            ("scheduler.batches_in_flight", self.batches_in_flight),
            (
                "scheduler.manual_tags_chunk_size",
                self.manual_tags_chunk_size,
            ),
            (
                "scheduler.hostname_tags_chunk_size",
                self.hostname_tags_chunk_size,
            ),
        ] {
            within(key, value, 1..=100_000)?;
        }
        if let Err(reason) = self.placement.validate() {
            return Err(invalid(
                "scheduler.placement",
                format!("{:?}", self.placement),
                &reason,
            ));
        }
        if let Err(reason) = self.locality.validate() {
            return Err(invalid(
                "scheduler.locality",
                format!("{:?}", self.locality),
                &reason,
            ));
        }
        Ok(())
    }
}
