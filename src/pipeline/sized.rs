//! Layers whose memory the passes booked from history (`[memory] from_history`): what each
//! asks, what its frames book instead. `/status` lists them and `/metrics` exports them
//! (`stagehand_memory_from_history_kb`), so an operator sees which layers are sized from
//! history and by how much. A layer drops out when a pass books it at its asked value again
//! (a frame ran out of memory, or its history no longer books less) or when no pass has seen
//! it for `waiting::STALE_AFTER`.

use std::time::Instant;

use dashmap::DashMap;

use crate::ids::LayerId;

/// One layer booked from history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizedLayer {
    /// `job.str_name`.
    pub job: String,
    /// `layer.str_name`.
    pub layer: String,
    /// `layer.int_mem_min` (KB).
    pub asked_kb: u64,
    /// What its frames book (KB).
    pub booked_kb: u64,
}

/// The layers the passes sized from history, with when each was last seen.
#[derive(Default)]
pub struct SizedLayers {
    layers: DashMap<LayerId, (SizedLayer, Instant)>,
}

impl SizedLayers {
    /// A pass books `layer` at `sized.booked_kb` instead of `sized.asked_kb`.
    pub(crate) fn record(&self, layer: &LayerId, sized: SizedLayer) {
        self.layers.insert(layer.clone(), (sized, Instant::now()));
    }

    /// A pass books `layer` at what it asks.
    pub(crate) fn clear(&self, layer: &LayerId) {
        self.layers.remove(layer);
    }

    /// The layers seen within `STALE_AFTER`, by job then layer name; stale ones are dropped.
    pub fn snapshot(&self) -> Vec<SizedLayer> {
        self.layers
            .retain(|_, (_, seen)| seen.elapsed() < super::waiting::STALE_AFTER);
        let mut out: Vec<SizedLayer> = self.layers.iter().map(|e| e.value().0.clone()).collect();
        out.sort_by(|a, b| (&a.job, &a.layer).cmp(&(&b.job, &b.layer)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sized(job: &str, asked: u64, booked: u64) -> SizedLayer {
        SizedLayer {
            job: job.into(),
            layer: "render".into(),
            asked_kb: asked,
            booked_kb: booked,
        }
    }

    #[test]
    fn the_latest_sizing_of_a_layer_is_kept_until_it_books_its_ask_again() {
        let board = SizedLayers::default();
        board.record(&"l1".into(), sized("b", 8, 3));
        board.record(&"l1".into(), sized("b", 8, 2));
        board.record(&"l2".into(), sized("a", 4, 1));
        assert_eq!(board.snapshot(), vec![sized("a", 4, 1), sized("b", 8, 2)]);
        board.clear(&"l2".into());
        assert_eq!(board.snapshot(), vec![sized("b", 8, 2)]);
    }
}
