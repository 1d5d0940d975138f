//! What the lease keeper publishes for the booking path: the fence every booking
//! transaction proves, and this instance's share of the hosts.
//!
//! The keeper owns the [`LeaseBoard`] and is its only writer; the pipeline gets a
//! [`LeaseView`], which can only read. A service without leases (one instance) publishes
//! nothing: its view reads no fence and books unfenced.

use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::db::booking::Fence;

/// The published lease state; written by the lease keeper.
#[derive(Default)]
pub struct LeaseBoard {
    fence: ArcSwap<Option<Fence>>,
    host_share: Mutex<Option<(u32, u32)>>,
}

impl LeaseBoard {
    /// A new, empty board (no fence: bookings are unfenced until the first round).
    pub fn new() -> Arc<LeaseBoard> {
        Arc::new(LeaseBoard::default())
    }

    /// A read-only view for the booking path.
    pub fn view(self: &Arc<Self>) -> LeaseView {
        LeaseView(Arc::clone(self))
    }

    /// Publishes the fence of the round just finished (a test may stand in for the keeper).
    pub fn publish_fence(&self, fence: Fence) {
        self.fence.store(Arc::new(Some(fence)));
    }

    /// Publishes this instance's place among the live ones: `(n, k)`, k of n.
    pub(crate) fn publish_host_share(&self, share: Option<(u32, u32)>) {
        *self.host_share.lock() = share;
    }
}

/// The booking path's read-only view of the [`LeaseBoard`].
#[derive(Clone)]
pub struct LeaseView(Arc<LeaseBoard>);

impl LeaseView {
    /// A view of a board nobody writes: no fence, no host share (a single instance).
    pub fn unfenced() -> LeaseView {
        LeaseBoard::new().view()
    }

    /// The fence of the last lease round (`None`: book unfenced).
    pub fn fence(&self) -> Arc<Option<Fence>> {
        self.0.fence.load_full()
    }

    /// `(n, k)`: this instance is k of n live instances; the host index prefers share k.
    pub(crate) fn host_share(&self) -> Option<(u32, u32)> {
        *self.0.host_share.lock()
    }
}
