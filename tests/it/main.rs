//! The integration tests: one binary, one module per area, all against a real PostgreSQL
//! (see `tests/common`) and, where frames launch, an in-process fake RQD over real gRPC.

#[path = "../common/mod.rs"]
mod common;

mod accounting;
mod adversity;
mod answers;
mod battery;
mod chaos;
mod explain;
mod licenses;
mod memory;
mod multi;
mod ops;
mod page;
mod pipeline;
mod quality;
mod schema;
mod service;
mod sim;
mod stranded;
mod verify;
mod verify_depends;
mod verify_locality;
mod verify_oom;
mod verify_tags_gpu;
