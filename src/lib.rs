//! stagehand: a distributed frame scheduler for OpenCue render farms.
//!
//! Data flows one way through the stages, one module each:
//!
//! ```text
//! config ─► cluster (feed + queue) ─► db::jobs (jobs, layers, frames)
//!        ─► index + sizing (matching, atomic earmarks), backfill (hosts reserved for
//!           wide frames) ─► db::booking (guarded batches)
//!        ─► rqd (launch over gRPC, compensation)
//! accounting (caps, recompute thread, audit), lease (multi-instance ownership), licenses
//! (the provider's samples, polled on their own thread) and
//! http/metrics sit beside the pipeline; service ties the threads together; sim seeds farms
//! and fakes RQD for tests, the demo and the benchmarks.
//! ```
//!
//! The database is the only truth: the host index and the cap counters are hints that keep the
//! hot path off PostgreSQL, and every booking is re-checked by guards inside its transaction.

#![warn(missing_docs)]

pub mod accounting;
pub mod backfill;
pub mod cluster;
pub mod config;
pub mod db;
pub mod explain;
pub mod frameset;
pub mod health;
pub mod http;
pub mod ids;
pub mod index;
pub mod lease;
pub mod licenses;
pub mod metrics;
pub mod model;
pub mod page;
pub mod pb;
pub mod pipeline;
pub mod rqd;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod sizing;
pub mod status;
mod worker;
