//! Generated protobuf messages and grpcio stubs for OpenCue's RQD interface
//! (`proto/rqd.proto`, built by `build.rs`).

#![allow(missing_docs)]

#[allow(warnings, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/pb_mod.rs"));
}

pub use generated::{rqd, rqd_grpc};
