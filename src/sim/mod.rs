//! The farm simulator: a private PostgreSQL cluster, farm seeding, a fake RQD fleet, the
//! workloads of the demo and the benchmarks, and the adversarial soak (`chaos`). It lives in
//! the library, not under `tests/`, so tests, `stagehand demo` and `stagehand bench` share
//! one implementation.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod fake_rqd;
pub mod farm;
pub mod instances;
pub mod licenses;
pub mod pg;
pub mod scenario;
pub mod seed;
pub mod verify;
pub mod workload;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The private PostgreSQL cluster failed.
    #[error(transparent)]
    Pg(#[from] pg::PgError),
    /// A database step failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// A statement failed.
    #[error("database error: {}", crate::db::migrate::describe(.0))]
    Sql(#[from] postgres::Error),
    /// The fake RQD could not start.
    #[error("fake RQD: {0}")]
    Grpc(#[from] grpcio::Error),
    /// stagehand could not start.
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
    /// A file or process error.
    #[error("{0}")]
    Io(std::io::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
