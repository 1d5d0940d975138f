//! Placement strategies: which of the hosts that fit a frame gets it.
//!
//! - `saturation`: OpenCue's first fit, per axis best-fit (pack: the tightest host first) or
//!   worst-fit (spread: the emptiest host first) — `core_saturation` / `memory_saturation`.
//! - `scored`: E-PVM-like. Among up to `max_candidates` fitting hosts, the one whose leftover
//!   resources would be least stranded (lowest score), with a soft reservation of GPU hosts:
//!   non-GPU work pays for every GPU it would sit beside, so it lands on GPU hosts only when
//!   nothing else fits.
//!
//! Both strategies keep non-GPU work off GPU hosts while other hosts fit (GPU protection).

use serde::{Deserialize, Serialize};

use crate::model::{CORE, Resources};

/// Weights of the scored strategy (OpenCue's E-PVM weights).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Weights {
    /// Stranded cores.
    pub cores: f64,
    /// Stranded memory.
    pub mem: f64,
    /// Stranded GPUs (GPU work).
    pub gpus: f64,
    /// Stranded GPU memory (GPU work).
    pub gpu_mem: f64,
    /// Per idle GPU next to non-GPU work.
    pub gpu_count_reservation: f64,
    /// Per idle GB of GPU memory next to non-GPU work.
    pub gpu_mem_reservation: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            cores: 1.0,
            mem: 1.0,
            gpus: 2.0,
            gpu_mem: 1.0,
            gpu_count_reservation: 2.0,
            gpu_mem_reservation: 2.0,
        }
    }
}

/// How a host is chosen among those that fit. A configuration value, changeable on reload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    /// First fit in a per-axis order.
    Saturation {
        /// Best-fit on cores (true) or worst-fit (false).
        core_saturation: bool,
        /// Best-fit on memory (true) or worst-fit (false).
        memory_saturation: bool,
    },
    /// Lowest stranding score among up to `max_candidates` fitting hosts.
    Scored {
        /// How many fitting hosts to score.
        max_candidates: usize,
        /// Score weights.
        #[serde(default)]
        weights: Weights,
    },
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::Saturation {
            core_saturation: true,
            memory_saturation: false,
        }
    }
}

impl Strategy {
    /// Checks the values; the message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Strategy::Saturation { .. } => Ok(()),
            Strategy::Scored {
                max_candidates,
                weights,
            } => {
                if *max_candidates == 0 || *max_candidates > 100_000 {
                    return Err("max_candidates must be between 1 and 100000".into());
                }
                let w = [
                    weights.cores,
                    weights.mem,
                    weights.gpus,
                    weights.gpu_mem,
                    weights.gpu_count_reservation,
                    weights.gpu_mem_reservation,
                ];
                if w.iter().any(|v| !v.is_finite() || *v < 0.0) {
                    return Err("weights must be finite and not negative".into());
                }
                Ok(())
            }
        }
    }

    /// True when cores are searched in ascending order (best-fit).
    pub(crate) fn cores_ascending(&self) -> bool {
        match self {
            Strategy::Saturation {
                core_saturation, ..
            } => *core_saturation,
            Strategy::Scored { .. } => true,
        }
    }

    /// True when, among equal cores, less free memory comes first (best-fit).
    pub(crate) fn memory_ascending(&self) -> bool {
        match self {
            Strategy::Saturation {
                memory_saturation, ..
            } => *memory_saturation,
            Strategy::Scored { .. } => true,
        }
    }
}

/// The stranding score of putting `amount` on a host with `free` (lower is better). Each
/// term is the part of a resource left over after packing as many more such frames as fit,
/// relative to the frame's own size (E-PVM with OpenCue's "W3" normalisation).
pub(crate) fn score(free: &Resources, amount: &Resources, w: &Weights) -> f64 {
    let left = free.saturating_sub(amount);
    let dims: [(f64, f64); 4] = [
        (f64::from(left.cores), f64::from(amount.cores.max(CORE))),
        (left.mem_kb as f64, amount.mem_kb.max(1) as f64),
        (f64::from(left.gpus), f64::from(amount.gpus.max(1))),
        (left.gpu_mem_kb as f64, amount.gpu_mem_kb.max(1) as f64),
    ];
    // How many more identical frames would still fit: bounded by the scarcest dimension.
    let more = dims
        .iter()
        .take(if amount.gpus > 0 { 4 } else { 2 })
        .map(|(l, a)| (l / a).floor())
        .fold(f64::INFINITY, f64::min);
    let waste = |(l, a): (f64, f64)| ((l - more * a) / a).max(0.0);
    let mut s = w.cores * waste(dims[0]) + w.mem * waste(dims[1]);
    if amount.gpus > 0 {
        s += w.gpus * waste(dims[2]) + w.gpu_mem * waste(dims[3]);
    } else {
        s += w.gpu_count_reservation * f64::from(free.gpus)
            + w.gpu_mem_reservation * (free.gpu_mem_kb as f64 / (1024.0 * 1024.0));
    }
    s
}

#[cfg(test)]
mod tests {
    //! Unit tests of the scores and the strategy's configuration form.

    use super::*;

    const GB: u64 = 1024 * 1024;

    /// `cores` whole cores, `mem_gb` GB, and `gpus` GPUs of 8 GB each.
    fn res(cores: u32, mem_gb: u64, gpus: u32) -> Resources {
        Resources {
            cores: cores * CORE,
            mem_kb: mem_gb * GB,
            gpus,
            gpu_mem_kb: u64::from(gpus) * 8 * GB,
        }
    }

    #[test]
    fn gpu_hosts_score_worse_for_cpu_work() {
        let w = Weights::default();
        let frame = res(1, 1, 0);
        let (cpu, gpu) = (res(8, 8, 0), res(8, 8, 2));
        assert!(score(&cpu, &frame, &w) < score(&gpu, &frame, &w));
    }

    #[test]
    fn a_perfect_fit_scores_zero() {
        let (frame, host) = (res(4, 4, 0), res(8, 8, 0));
        assert_eq!(score(&host, &frame, &Weights::default()), 0.0);
    }

    #[test]
    fn strategy_serde() {
        let s: Strategy = toml::from_str("kind = \"scored\"\nmax_candidates = 64\n").unwrap();
        assert_eq!(
            s,
            Strategy::Scored {
                max_candidates: 64,
                weights: Weights::default()
            }
        );
        assert!(
            Strategy::Scored {
                max_candidates: 0,
                weights: Weights::default()
            }
            .validate()
            .is_err()
        );
    }
}
