//! The core, memory and GPU sizing rules: how much of a host one frame takes.
//!
//! One pure function, `amount_for`, in database units (centicores, KB). The rules are
//! OpenCue's (inventory §4.5) with three fixes: a negative `int_cores_min` ("all but N cores")
//! is placeable; fractional core requests round *up* to whole cores instead of truncating to
//! zero (which the old scheduler then read as "whole host"); and every refusal says why.
//!
//! 1. Non-threadable layers take exactly one core.
//! 2. Requested cores: `cores_min > 0` as is (rounded up to whole cores); `0` the whole host;
//!    `< 0` the host's total minus that many.
//! 3. By host thread mode: ALL takes every idle core (capped by `cores_max`) and accepts only
//!    threadable layers; VARIABLE with ≤ 2 cores requested takes 2; AUTO (and VARIABLE above
//!    2) balances cores against memory — `floor(mem_min / (total_mem / total_cores))`, at
//!    least the request — and takes every idle core when the frame would leave at most
//!    `memory_stranded_threshold` of memory idle, or when its service is selfish.
//! 4. Capped by `cores_max` and by what the job may still take.
//! 5. Refused when that is zero, above the host's total, or above its idle cores; or when
//!    memory, GPUs or GPU memory do not fit.

use crate::model::{CORE, Resources, ThreadMode};

/// What a layer asks of a host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LayerShape {
    /// `layer.int_cores_min` (centicores; 0 = whole host; < 0 = all but that many).
    pub cores_min: i32,
    /// `layer.int_cores_max` (centicores; ≤ 0 = unlimited).
    pub cores_max: i32,
    /// `layer.int_mem_min` (KB).
    pub mem_min_kb: u64,
    /// `layer.int_gpus_min`.
    pub gpus_min: u32,
    /// `layer.int_gpu_mem_min` (KB).
    pub gpu_mem_min_kb: u64,
    /// `layer.b_threadable`.
    pub threadable: bool,
    /// One of the layer's services is configured selfish: it takes every idle core.
    pub selfish: bool,
}

/// The `layer` columns a shape is read from, as stored (centicores, KB).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LayerColumns {
    /// `int_cores_min`, `int_cores_max`.
    pub cores: (i64, i64),
    /// `int_mem_min`.
    pub mem_min: i64,
    /// `int_gpus_min`, `int_gpu_mem_min`.
    pub gpus: (i64, i64),
    /// `b_threadable`.
    pub threadable: bool,
}

impl LayerShape {
    /// The shape of a layer's columns, clamped into range so a bad row cannot wrap into a
    /// huge request; `selfish` when one of its services is configured so.
    pub(crate) fn from_columns(c: &LayerColumns, selfish: bool) -> LayerShape {
        let clamp_i32 = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
        LayerShape {
            cores_min: clamp_i32(c.cores.0),
            cores_max: clamp_i32(c.cores.1),
            mem_min_kb: c.mem_min.max(0) as u64,
            gpus_min: c.gpus.0.clamp(0, i64::from(u32::MAX)) as u32,
            gpu_mem_min_kb: c.gpus.1.max(0) as u64,
            threadable: c.threadable,
            selfish,
        }
    }
}

/// Tunables of the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rules {
    /// Leaving at most this much memory (KB) idle takes every idle core instead.
    pub memory_stranded_threshold_kb: u64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            memory_stranded_threshold_kb: 2 * 1024 * 1024,
        }
    }
}

/// A candidate host as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostShape {
    /// `host.int_thread_mode`.
    pub thread_mode: ThreadMode,
    /// Capacity.
    pub total: Resources,
    /// Idle now.
    pub free: Resources,
}

/// Why a host cannot take a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The computed core count is zero (e.g. "all but N" on a host with ≤ N cores).
    #[error("no cores to reserve")]
    NoCores,
    /// More cores than the host has.
    #[error("more cores than the host has")]
    ExceedsTotal,
    /// More cores than are idle.
    #[error("not enough idle cores")]
    ExceedsFree,
    /// Not enough idle memory.
    #[error("not enough idle memory")]
    Memory,
    /// Not enough idle GPUs.
    #[error("not enough idle GPUs")]
    Gpus,
    /// Not enough idle GPU memory.
    #[error("not enough idle GPU memory")]
    GpuMemory,
    /// ALL-mode hosts take threadable layers only.
    #[error("thread mode ALL takes threadable layers only")]
    ThreadModeAll,
    /// The job's remaining cores cannot hold the frame.
    #[error("job core cap reached")]
    JobCap,
}

/// Centicores rounded up to whole cores (a fractional request takes a whole core).
fn round_up_to_core(centicores: u64) -> u64 {
    centicores.div_ceil(u64::from(CORE)) * u64::from(CORE)
}

/// The smallest amount any host could be asked for: the search floor of the host index.
pub(crate) fn floor(layer: &LayerShape) -> Resources {
    let cores = if !layer.threadable {
        CORE
    } else if layer.cores_min > 0 {
        round_up_to_core(layer.cores_min as u64) as u32
    } else {
        // Whole host / all but N: at least one core, decided per host.
        CORE
    };
    Resources {
        cores,
        mem_kb: layer.mem_min_kb,
        gpus: layer.gpus_min,
        gpu_mem_kb: layer.gpu_mem_min_kb,
    }
}

/// What `layer` takes on `host`, or why it cannot go there. `job_remaining` is the job's
/// remaining core allowance in centicores (`None` = unlimited).
pub(crate) fn amount_for(
    layer: &LayerShape,
    host: &HostShape,
    job_remaining: Option<u32>,
    rules: &Rules,
) -> Result<Resources, Refusal> {
    fits_besides_cores(layer, host)?;
    let cores = cores_wanted(layer, host, rules);
    let cores = within_job_cap(layer, host, cores, job_remaining)?;
    check_cores(cores, host)?;
    Ok(Resources {
        cores: cores as u32,
        mem_kb: layer.mem_min_kb,
        gpus: layer.gpus_min,
        gpu_mem_kb: layer.gpu_mem_min_kb,
    })
}

/// Rule 3's thread-mode gate and rule 5's memory and GPU checks: everything but cores, which
/// depend on what fits here. Memory is checked first because [`cores_wanted`] subtracts it.
fn fits_besides_cores(layer: &LayerShape, host: &HostShape) -> Result<(), Refusal> {
    if host.thread_mode == ThreadMode::All && !layer.threadable {
        return Err(Refusal::ThreadModeAll);
    }
    if host.free.mem_kb < layer.mem_min_kb {
        return Err(Refusal::Memory);
    }
    if host.free.gpus < layer.gpus_min {
        return Err(Refusal::Gpus);
    }
    if host.free.gpu_mem_kb < layer.gpu_mem_min_kb {
        return Err(Refusal::GpuMemory);
    }
    Ok(())
}

/// Rules 1 to 3 and the `cores_max` cap of rule 4, in centicores: what the frame would take
/// on this host before the job's own allowance is applied.
fn cores_wanted(layer: &LayerShape, host: &HostShape, rules: &Rules) -> u64 {
    if !layer.threadable {
        return u64::from(CORE);
    }
    let cap = if layer.cores_max > 0 {
        round_up_to_core(layer.cores_max as u64)
    } else {
        u64::MAX
    };
    let idle = u64::from(host.free.cores);
    let requested = requested_cores(layer, u64::from(host.total.cores));
    let wanted = match host.thread_mode {
        ThreadMode::All => idle.min(cap),
        ThreadMode::Variable if requested <= 2 * u64::from(CORE) => 2 * u64::from(CORE),
        ThreadMode::Auto | ThreadMode::Variable => balanced_cores(layer, host, requested, rules),
    };
    wanted.min(cap)
}

/// Rule 2: the cores a threadable layer asks for on a host of `total` centicores.
fn requested_cores(layer: &LayerShape, total: u64) -> u64 {
    match layer.cores_min {
        m if m > 0 => round_up_to_core(m as u64),
        0 => total,
        m => total.saturating_sub(round_up_to_core(u64::from(m.unsigned_abs()))),
    }
}

/// Rule 3 for AUTO (and VARIABLE above 2 cores): every idle core when the frame is selfish
/// or would strand the host's memory, else cores in proportion to the memory it takes (at
/// least `requested`). The caller has checked that the memory fits.
fn balanced_cores(layer: &LayerShape, host: &HostShape, requested: u64, rules: &Rules) -> u64 {
    let leftover = host.free.mem_kb - layer.mem_min_kb;
    if layer.selfish || leftover <= rules.memory_stranded_threshold_kb {
        return u64::from(host.free.cores);
    }
    // Cores in proportion to the memory taken, so memory and cores run out together: mem per
    // core = total_mem / total_cores (rounded).
    let total_cores = (u64::from(host.total.cores) / u64::from(CORE)).max(1);
    let mem_per_core = (host.total.mem_kb as f64 / total_cores as f64)
        .round()
        .max(1.0) as u64;
    let balanced = (layer.mem_min_kb / mem_per_core) * u64::from(CORE);
    balanced.max(requested)
}

/// Rule 4's job cap: `cores` trimmed to the whole cores the job may still take. A frame that
/// needs more than the job has left waits; an elastic one (on an ALL host) shrinks.
fn within_job_cap(
    layer: &LayerShape,
    host: &HostShape,
    cores: u64,
    job_remaining: Option<u32>,
) -> Result<u64, Refusal> {
    let Some(remaining) = job_remaining else {
        return Ok(cores);
    };
    if u64::from(remaining) < u64::from(CORE) {
        return Err(Refusal::JobCap);
    }
    let remaining = u64::from(remaining) / u64::from(CORE) * u64::from(CORE);
    if !layer.threadable || host.thread_mode != ThreadMode::All {
        let minimum = if layer.threadable && layer.cores_min > 0 {
            round_up_to_core(layer.cores_min as u64)
        } else {
            u64::from(CORE)
        };
        if remaining < minimum {
            return Err(Refusal::JobCap);
        }
    }
    Ok(cores.min(remaining))
}

/// Rule 5 for cores: something to take, and no more than the host has or has idle.
fn check_cores(cores: u64, host: &HostShape) -> Result<(), Refusal> {
    if cores == 0 {
        return Err(Refusal::NoCores);
    }
    if cores > u64::from(host.total.cores) {
        return Err(Refusal::ExceedsTotal);
    }
    if cores > u64::from(host.free.cores) {
        return Err(Refusal::ExceedsFree);
    }
    Ok(())
}

/// What a layer's finished frames used, as Cuebot keeps it: `layer_mem.int_max_rss` (the most
/// any frame used, KB), `layer_usage.int_frame_success_count`, and `layer.b_optimize` (cleared
/// by Cuebot's completion when a frame of the layer ran out of memory).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct MemoryHistory {
    /// `layer_mem.int_max_rss` (KB).
    pub max_rss_kb: u64,
    /// `layer_usage.int_frame_success_count`.
    pub successes: u64,
    /// `layer.b_optimize`.
    pub optimize: bool,
}

/// The tunables of sizing from history (`[memory]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct HistoryRules {
    /// Successful frames needed first.
    pub min_frames: u64,
    /// Fraction added to the most used.
    pub headroom: f64,
    /// Never book less (KB).
    pub floor_kb: u64,
}

impl HistoryRules {
    /// The rules of `[memory]`, or `None` when sizing from history is off.
    pub(crate) fn of(config: &crate::config::MemoryConfig) -> Option<HistoryRules> {
        config.from_history.then_some(HistoryRules {
            min_frames: u64::from(config.min_frames),
            headroom: config.headroom,
            floor_kb: config.floor_kb,
        })
    }
}

/// What a frame of a layer asking `asked_kb` books (KB) under `[memory]`: from its history
/// (`Some`) or what it asks (`None`). The booking pass and `explain` both size by this.
pub(crate) fn booked_memory(
    asked_kb: u64,
    history: &MemoryHistory,
    config: &crate::config::MemoryConfig,
) -> Option<u64> {
    HistoryRules::of(config).and_then(|rules| memory_from_history(asked_kb, history, &rules))
}

/// The memory (KB) a frame of a layer asking `asked_kb` books from its history, or `None` when
/// it books what it asks: with too few successful frames, no usage recorded, the optimizer
/// off (a frame ran out of memory: the out-of-memory path wins over history), or a history
/// that would not book less than asked (history only ever lowers the request, so a layer
/// whose frames use more than they ask keeps the asked value RQD's limits were set from).
pub(crate) fn memory_from_history(
    asked_kb: u64,
    history: &MemoryHistory,
    rules: &HistoryRules,
) -> Option<u64> {
    if !history.optimize || history.successes < rules.min_frames || history.max_rss_kb == 0 {
        return None;
    }
    let with_headroom = (history.max_rss_kb as f64 * (1.0 + rules.headroom)).ceil();
    let booked = (with_headroom.min(u64::MAX as f64) as u64).max(rules.floor_kb);
    (booked < asked_kb).then_some(booked)
}

/// GPU protection beyond "last resort": a frame that takes no GPU may use a GPU host (the
/// host index offers one only when no other host fits) only if it leaves `per_gpu` of room
/// for every idle GPU, so GPU work arriving later finds a place at once.
pub(crate) fn leaves_gpu_room(free: &Resources, amount: &Resources, per_gpu: &Resources) -> bool {
    if amount.gpus > 0 || free.gpus == 0 {
        return true;
    }
    let keep = Resources {
        cores: per_gpu.cores.saturating_mul(free.gpus),
        mem_kb: per_gpu.mem_kb.saturating_mul(u64::from(free.gpus)),
        gpus: 0,
        gpu_mem_kb: 0,
    };
    free.saturating_sub(amount).fits(&keep)
}

#[cfg(test)]
mod tests {
    //! Unit tests of the sizing rules, as a table.

    use super::*;

    const HISTORY: HistoryRules = HistoryRules {
        min_frames: 10,
        headroom: 0.2,
        floor_kb: GB / 2,
    };

    fn used(max_rss_gb: f64, successes: u64) -> MemoryHistory {
        MemoryHistory {
            max_rss_kb: (max_rss_gb * GB as f64) as u64,
            successes,
            optimize: true,
        }
    }

    #[test]
    fn a_layer_that_asks_8_gb_and_uses_2_books_the_most_used_plus_headroom() {
        let booked = memory_from_history(8 * GB, &used(2.0, 10), &HISTORY);
        assert_eq!(booked, Some((2.0 * 1.2 * GB as f64).ceil() as u64));
    }

    #[test]
    fn history_needs_enough_successful_frames_and_some_usage() {
        assert_eq!(memory_from_history(8 * GB, &used(2.0, 9), &HISTORY), None);
        assert_eq!(memory_from_history(8 * GB, &used(0.0, 50), &HISTORY), None);
    }

    #[test]
    fn a_layer_whose_frame_ran_out_of_memory_books_what_it_asks() {
        let mut h = used(2.0, 50);
        h.optimize = false;
        assert_eq!(memory_from_history(8 * GB, &h, &HISTORY), None);
    }

    #[test]
    fn history_never_books_below_the_floor_nor_at_or_above_the_ask() {
        // 10 MB used: the floor (512 MB) is booked.
        assert_eq!(
            memory_from_history(8 * GB, &used(0.01, 10), &HISTORY),
            Some(GB / 2)
        );
        // 7 GB used: 8.4 GB with headroom is not below the 8 GB asked.
        assert_eq!(memory_from_history(8 * GB, &used(7.0, 10), &HISTORY), None);
        // A floor above the ask: the ask.
        let high_floor = HistoryRules {
            floor_kb: 9 * GB,
            ..HISTORY
        };
        assert_eq!(
            memory_from_history(8 * GB, &used(1.0, 10), &high_floor),
            None
        );
    }

    #[test]
    fn zero_headroom_books_exactly_the_most_used() {
        let exact = HistoryRules {
            headroom: 0.0,
            ..HISTORY
        };
        assert_eq!(
            memory_from_history(8 * GB, &used(3.0, 10), &exact),
            Some(3 * GB)
        );
    }

    #[test]
    fn cpu_frames_leave_room_for_each_idle_gpu() {
        let per_gpu = Resources {
            cores: 2 * CORE,
            mem_kb: 8 * GB,
            ..Resources::ZERO
        };
        let free = Resources {
            cores: 8 * CORE,
            mem_kb: 32 * GB,
            gpus: 2,
            gpu_mem_kb: 16 * GB,
        };
        let cpu = |cores: u32, mem_gb: u64| Resources {
            cores: cores * CORE,
            mem_kb: mem_gb * GB,
            ..Resources::ZERO
        };
        assert!(leaves_gpu_room(&free, &cpu(4, 16), &per_gpu));
        assert!(!leaves_gpu_room(&free, &cpu(5, 1), &per_gpu), "cores");
        assert!(!leaves_gpu_room(&free, &cpu(1, 17), &per_gpu), "memory");
        let gpu_frame = Resources {
            gpus: 1,
            ..cpu(8, 32)
        };
        assert!(leaves_gpu_room(&free, &gpu_frame, &per_gpu));
        let no_idle_gpu = Resources { gpus: 0, ..free };
        assert!(leaves_gpu_room(&no_idle_gpu, &cpu(8, 32), &per_gpu));
        assert!(leaves_gpu_room(&free, &cpu(8, 32), &Resources::ZERO));
    }

    const GB: u64 = 1024 * 1024;

    fn host(mode: ThreadMode, cores: u32, idle: u32, mem_gb: u64, free_mem_gb: u64) -> HostShape {
        HostShape {
            thread_mode: mode,
            total: Resources {
                cores: cores * CORE,
                mem_kb: mem_gb * GB,
                gpus: 2,
                gpu_mem_kb: 16 * GB,
            },
            free: Resources {
                cores: idle * CORE,
                mem_kb: free_mem_gb * GB,
                gpus: 1,
                gpu_mem_kb: 8 * GB,
            },
        }
    }

    fn layer(cores_min: i32, mem_gb: u64, threadable: bool) -> LayerShape {
        LayerShape {
            cores_min,
            mem_min_kb: mem_gb * GB,
            threadable,
            ..LayerShape::default()
        }
    }

    #[test]
    fn rules_table() {
        use Refusal::*;
        use ThreadMode::*;
        let rules = Rules::default();
        let selfish = LayerShape {
            selfish: true,
            ..layer(100, 1, true)
        };
        let capped = LayerShape {
            cores_max: 400,
            ..layer(0, 1, true)
        };
        let gpu = LayerShape {
            gpus_min: 2,
            ..layer(100, 1, true)
        };
        let gpu_mem = LayerShape {
            gpu_mem_min_kb: 9 * GB,
            ..layer(100, 1, true)
        };
        type Case = (
            &'static str,
            LayerShape,
            HostShape,
            Option<u32>,
            Result<u32, Refusal>,
        );
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            ("non-threadable takes one core", layer(800, 1, false), host(Auto, 16, 16, 64, 64), None, Ok(100)),
            ("fractional cores round up", layer(50, 1, true), host(Auto, 16, 16, 64, 64), None, Ok(100)),
            ("cores_min 0 = whole host", layer(0, 1, true), host(Auto, 16, 16, 64, 64), None, Ok(1600)),
            ("whole host needs an idle host", layer(0, 1, true), host(Auto, 16, 8, 64, 64), None, Err(ExceedsFree)),
            ("negative = all but N", layer(-200, 1, true), host(Auto, 16, 16, 64, 64), None, Ok(1400)),
            ("all but N on a small host", layer(-800, 1, true), host(Auto, 8, 8, 64, 64), None, Err(NoCores)),
            ("ALL takes every idle core", layer(100, 1, true), host(All, 16, 12, 64, 64), None, Ok(1200)),
            ("ALL capped by cores_max", capped, host(All, 16, 12, 64, 64), None, Ok(400)),
            ("ALL refuses non-threadable", layer(100, 1, false), host(All, 16, 16, 64, 64), None, Err(ThreadModeAll)),
            ("VARIABLE small request takes 2", layer(100, 1, true), host(Variable, 16, 16, 64, 64), None, Ok(200)),
            ("AUTO memory-balanced", layer(100, 16, true), host(Auto, 16, 16, 64, 64), None, Ok(400)),
            ("AUTO at least the request", layer(800, 4, true), host(Auto, 16, 16, 64, 64), None, Ok(800)),
            ("VARIABLE large request balances", layer(300, 16, true), host(Variable, 16, 16, 64, 64), None, Ok(400)),
            ("stranded memory takes all idle", layer(100, 63, true), host(Auto, 16, 10, 64, 64), None, Ok(1000)),
            ("selfish takes all idle", selfish, host(Auto, 16, 10, 64, 64), None, Ok(1000)),
            ("job cap shrinks an elastic frame", layer(0, 1, true), host(Auto, 16, 16, 64, 64), Some(400), Ok(400)),
            ("job cap trims to what is left", layer(100, 16, true), host(Auto, 16, 16, 64, 64), Some(300), Ok(300)),
            ("job cap below the minimum", layer(400, 1, true), host(Auto, 16, 16, 64, 64), Some(300), Err(JobCap)),
            ("job cap exhausted", layer(100, 1, false), host(Auto, 16, 16, 64, 64), Some(0), Err(JobCap)),
            ("more than the host has", layer(3200, 1, true), host(Auto, 16, 16, 64, 64), None, Err(ExceedsTotal)),
            ("more than idle", layer(800, 1, true), host(Auto, 16, 4, 64, 64), None, Err(ExceedsFree)),
            ("memory", layer(100, 65, true), host(Auto, 16, 16, 64, 64), None, Err(Memory)),
            ("gpus", gpu, host(Auto, 16, 16, 64, 64), None, Err(Gpus)),
            ("gpu memory", gpu_mem, host(Auto, 16, 16, 64, 64), None, Err(GpuMemory)),
        ];
        for (name, l, h, job, expected) in cases {
            let got = amount_for(&l, &h, job, &rules).map(|r| r.cores);
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn memory_gpus_pass_through_and_floor() {
        let l = LayerShape {
            gpus_min: 1,
            gpu_mem_min_kb: 4 * GB,
            ..layer(200, 2, true)
        };
        let got = amount_for(
            &l,
            &host(ThreadMode::Auto, 16, 16, 64, 64),
            None,
            &Rules::default(),
        )
        .unwrap();
        assert_eq!((got.mem_kb, got.gpus, got.gpu_mem_kb), (2 * GB, 1, 4 * GB));
        assert_eq!(floor(&l).cores, 200);
        assert_eq!(floor(&layer(-400, 1, true)).cores, 100);
        assert_eq!(floor(&layer(800, 1, false)).cores, 100);
    }
}
