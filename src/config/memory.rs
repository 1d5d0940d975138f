//! `[memory]`: booking memory from what a layer's frames used (Cuebot's `layer_mem`) instead of
//! what the layer asks (`layer.int_mem_min`) alone.

use serde::{Deserialize, Serialize};

use super::{ConfigError, check::invalid, check::within};

/// `[memory]`: memory sizing from history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Size memory from history: once a layer has `min_frames` successful frames, a frame
    /// books the most any of them used (`layer_mem.int_max_rss`) plus `headroom`, never below
    /// `floor_kb` and never above what the layer asks. A frame that runs out of memory turns
    /// this off for its layer (Cuebot clears `layer.b_optimize` and raises `int_mem_min`).
    pub from_history: bool,
    /// Successful frames (`layer_usage.int_frame_success_count`) a layer needs first.
    pub min_frames: u32,
    /// Fraction added to the most used: 0.2 books 120 % of it.
    pub headroom: f64,
    /// Never book less than this (KB), whatever the history says.
    pub floor_kb: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            from_history: true,
            min_frames: 10,
            headroom: 0.2,
            floor_kb: 512 * 1024,
        }
    }
}

impl MemoryConfig {
    /// The section's rules: a history of at least one frame, a headroom between 0 and 10
    /// (1,000 %), a floor of at least 64 MB (a frame booked with almost nothing would
    /// oversubscribe its host's memory).
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        within("memory.min_frames", self.min_frames as usize, 1..=1_000_000)?;
        if !(self.headroom.is_finite() && (0.0..=10.0).contains(&self.headroom)) {
            return Err(invalid(
                "memory.headroom",
                self.headroom,
                "must be between 0 and 10",
            ));
        }
        if self.floor_kb < 64 * 1024 {
            return Err(invalid(
                "memory.floor_kb",
                self.floor_kb,
                "must be at least 65536 (64 MB)",
            ));
        }
        Ok(())
    }
}
