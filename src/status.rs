//! The read-only handle on a running instance that the HTTP server and tests read
//! ([`StatusHandle`]).
//!
//! It sits apart from `service` (which composes the threads) so that the HTTP server reads
//! status without importing the composition root.

use std::sync::{Arc, atomic::AtomicU64};

use arc_swap::ArcSwap;

use crate::{cluster::feed::ClusterStatus, health::Health, lease, pipeline::Shared};

/// What `status` pages and tests read of a running service.
#[derive(Clone)]
pub struct StatusHandle {
    /// The pipeline's shared state.
    pub shared: Arc<Shared>,
    /// Thread liveness and readiness inputs.
    pub health: Arc<Health>,
    /// The feed's view of the clusters.
    pub clusters: Arc<ArcSwap<Vec<ClusterStatus>>>,
    /// Configuration generation (bumped by every applied reload).
    pub generation: Arc<AtomicU64>,
    /// Leases, when multi-instance coordination runs.
    pub leases: Option<Arc<lease::Leases>>,
}
