//! Which shows have waiting work on which allocations: what the cluster feed's active-work
//! scan publishes for the ledger's fair-share rule ([`super::Ledger`] yields only to a show
//! that is hungry where it books).
//!
//! The feed owns the [`HungryBoard`] and is its only writer; the ledger reads it through a
//! [`HungryView`]. A ledger whose view nobody publishes to (no feed: tests, tools) sees no
//! show hungry and never yields.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

use crate::ids::{AllocId, ShowId};

/// Shows with waiting work per allocation.
pub type HungryShows = HashMap<AllocId, Vec<ShowId>>;

/// The published map; written by the cluster feed after each scan.
#[derive(Default)]
pub struct HungryBoard(ArcSwap<HungryShows>);

impl HungryBoard {
    /// An empty board: nobody is hungry until the first publish.
    pub(crate) fn new() -> Arc<HungryBoard> {
        Arc::new(HungryBoard::default())
    }

    /// A read-only view for the ledger.
    pub(crate) fn view(self: &Arc<Self>) -> HungryView {
        HungryView(Arc::clone(self))
    }

    /// Replaces the map with the latest scan's (swapped whole: readers never lock).
    pub(crate) fn publish(&self, hungry: HungryShows) {
        self.0.store(Arc::new(hungry));
    }
}

/// The ledger's read-only view of the [`HungryBoard`].
#[derive(Clone)]
pub struct HungryView(Arc<HungryBoard>);

impl HungryView {
    /// A view of a board nobody writes: no show is ever hungry.
    pub(crate) fn none() -> HungryView {
        HungryBoard::new().view()
    }

    /// The map as last published (a guard, not a clone: read per candidate host).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<HungryShows>> {
        self.0.0.load()
    }
}

impl Default for HungryView {
    fn default() -> HungryView {
        HungryView::none()
    }
}
